//! The undo stage: put back the values a run recorded, in reverse, while
//! holding the namespace's Lease — after a failure, after a cancellation
//! (asking first), or later from the run record (`warroom undo`).

use super::*;

/// What reverting a recorded run did.
struct Reverted {
    /// Each step reached, undone or failed.
    steps: Vec<StepRecord>,
    /// Why steps could not be undone.
    failed: Vec<String>,
    /// The API server stopped answering.
    unreachable: bool,
    /// Why the undo stopped early, and where.
    halted: Option<String>,
}

/// A value as shown in messages (`absent` for none).
pub(super) fn shown_value(value: Option<&Value>) -> String {
    value
        .map(Value::to_string)
        .unwrap_or_else(|| "absent".into())
}

/// Why `warroom undo` refuses to act on `record`, if it does (see
/// [`Engine::undo`]).
pub fn undo_record_problem(record: &RunRecord) -> Option<String> {
    let steps: Vec<&StepRecord> = record
        .steps
        .iter()
        .rev()
        .filter(|s| s.outcome.left_changes() && !s.changes.is_empty())
        .collect();
    record_problem(record, &steps)
}

/// What in a run record `warroom undo` must not act on: an id that cannot be
/// a record key, a step without a target, a target `validate` would refuse
/// (Secrets, names the API server refuses), a path that is not a JSON
/// pointer or touches a field no change may set, or a secret.
pub(super) fn record_problem(chosen: &RunRecord, steps: &[&StepRecord]) -> Option<String> {
    if let Err(err) = crate::kube::names::config_map_key(&chosen.id) {
        return Some(format!("the run id is not usable: {err}"));
    }
    for step in steps {
        let name = check::printable(&step.name);
        let Some(target) = &step.target else {
            return Some(format!("step `{name}` records changes but no object"));
        };
        if let Some(problem) = check::record_target_problem(target) {
            return Some(format!("step `{name}`: {problem}"));
        }
        for change in &step.changes {
            if !change.path.starts_with('/') {
                return Some(format!(
                    "step `{name}`: {} is not a JSON pointer",
                    crate::kube::names::shown(&change.path)
                ));
            }
            let tokens = record::pointer_tokens(&change.path);
            for value in [change.before.as_ref(), change.after.as_ref()] {
                if let Some(problem) = check::field_problems(target, &tokens, value).first() {
                    return Some(format!(
                        "step `{name}`: {}: {problem}",
                        record::display_tokens(&tokens)
                    ));
                }
            }
        }
    }
    None
}

impl Engine {
    /// After a cancellation: says so in the event stream, asks whether to
    /// undo the applied steps (default yes; nobody to ask means yes), and
    /// undoes them in reverse while holding the Lease. A second request
    /// ([`Cancel::abandon`]) or a lost Lease stops the undo before its next
    /// write. Returns the run's message, saying what is left.
    pub(super) async fn undo_cancelled(
        &self,
        run: &Run<'_>,
        record: &mut RunRecord,
        lease: &RunLease,
        place: &str,
        (step, kind): (&str, &str),
    ) -> String {
        let why = cancelled_by(&self.cancel.reason());
        let applied: Vec<usize> = (0..record.steps.len())
            .rev()
            .filter(|&i| {
                let step = &record.steps[i];
                step.outcome.left_changes() && !step.changes.is_empty() && step.target.is_some()
            })
            .collect();
        let names = |steps: &[StepRecord], indices: &[usize]| {
            indices
                .iter()
                .map(|&i| steps[i].name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let all = names(&record.steps, &applied);
        run.emit(
            StepPhase::Cancelled,
            step,
            kind,
            None,
            None,
            if applied.is_empty() {
                format!("{why} {place}; nothing had been changed")
            } else {
                format!(
                    "{why} {place}; undoing the {} applied step(s) ({all})",
                    applied.len()
                )
            },
        );
        if applied.is_empty() {
            return format!("{why} {place}; nothing had been changed");
        }
        let request = ConfirmRequest {
            run_id: run.run_id.clone(),
            playbook: run.playbook.clone(),
            step: "undo".into(),
            prompt: format!("Undo the {} applied change(s) ({all})?", applied.len()),
            answer: None,
            default_yes: true,
        };
        // The lines printed so far, the cancellation above among them, come
        // before the question, as for a gate (see `Engine::ask`): a printer
        // still writing them would otherwise land in the middle of it. A
        // second request does not wait for them.
        tokio::select! {
            _ = self.events.settle() => {}
            _ = self.cancel.abandoned() => {}
            _ = lease.until_lost() => {}
        }
        let answer = if self.cancel.is_abandoned() || lease.is_lost() {
            Confirmation::Declined
        } else if self.confirmer.can_ask().is_err() {
            Confirmation::Approved
        } else {
            tokio::select! {
                answer = self.confirmer.confirm(&request) => answer,
                _ = self.cancel.abandoned() => Confirmation::Declined,
                _ = lease.until_lost() => Confirmation::Declined,
            }
        };
        if answer == Confirmation::Declined {
            let reason = if lease.is_lost() {
                "the run lease was lost before the undo"
            } else if self.cancel.is_abandoned() {
                "the undo was stopped"
            } else {
                "the undo was declined"
            };
            return format!(
                "{why} {place}; {reason}: the {} applied step(s) are kept ({all})",
                applied.len()
            );
        }
        let mut left = Vec::new();
        let mut failures = Vec::new();
        let mut stop: Option<&str> = None;
        for &index in &applied {
            if stop.is_none() {
                if self.cancel.is_abandoned() {
                    stop = Some("the undo was stopped");
                } else if lease.is_lost() {
                    stop = Some("the run lease was lost during the undo");
                } else if self.events.settle().await.is_some() {
                    // The next change would be missing from the journal.
                    stop = Some("the incident journal could not be written");
                }
            }
            if stop.is_some() {
                left.push(index);
                continue;
            }
            let step = &record.steps[index];
            let Some(target) = step.target.clone() else {
                continue;
            };
            match self
                .revert(run, &step.name, &step.kind, &target, &step.changes)
                .await
            {
                Ok(_) => record.steps[index].outcome = StepOutcome::Undone,
                Err(failure) => {
                    run.emit(
                        StepPhase::Failed,
                        &record.steps[index].name,
                        &record.steps[index].kind,
                        Some(&target),
                        None,
                        format!("undo failed: {}", failure.message),
                    );
                    failures.push(format!(
                        "undoing `{}` failed: {}",
                        record.steps[index].name, failure.message
                    ));
                    left.push(index);
                }
            }
        }
        let undone = applied.len() - left.len();
        if left.is_empty() {
            return format!("{why} {place}; the {undone} applied step(s) were undone ({all})");
        }
        let mut text = format!("{why} {place}; {undone} applied step(s) undone");
        if let Some(stop) = stop {
            text.push_str(&format!("; {stop}"));
        }
        for failure in failures {
            text.push_str(&format!("; {failure}"));
        }
        text.push_str(&format!(
            "; {} step(s) left in place ({})",
            left.len(),
            names(&record.steps, &left)
        ));
        text
    }

    /// Undoes applied steps in reverse after a failure (unless `stop`).
    pub(super) async fn fail_and_maybe_undo(
        &self,
        run: &Run<'_>,
        record: &mut RunRecord,
        on_failure: OnFailure,
    ) -> Outcome {
        if on_failure != OnFailure::Undo {
            return Outcome::Failed;
        }
        let mut all = true;
        for index in (0..record.steps.len()).rev() {
            let step = &record.steps[index];
            if !step.outcome.left_changes() || step.changes.is_empty() {
                continue;
            }
            let Some(target) = step.target.clone() else {
                continue;
            };
            match self
                .revert(run, &step.name, &step.kind, &target, &step.changes)
                .await
            {
                Ok(_) => record.steps[index].outcome = StepOutcome::Undone,
                Err(failure) => {
                    all = false;
                    run.emit(
                        StepPhase::Failed,
                        &record.steps[index].name,
                        &record.steps[index].kind,
                        Some(&target),
                        None,
                        format!("undo failed: {}", failure.message),
                    );
                }
            }
        }
        if all {
            Outcome::FailedUndone
        } else {
            Outcome::Failed
        }
    }

    /// Puts back the `before` values of `changes` on `target`.
    pub(super) async fn revert(
        &self,
        run: &Run<'_>,
        step: &str,
        kind: &str,
        target: &ObjectRef,
        changes: &[FieldChange],
    ) -> Result<Vec<FieldChange>, StepFailure> {
        let edit = Edit::Set(
            changes
                .iter()
                .map(|c| (c.path.clone(), c.before.clone()))
                .collect(),
        );
        let written = self.write(run, target, &edit, false).await?;
        let Some((reverted, desired)) = written else {
            run.emit(
                StepPhase::Undone,
                step,
                kind,
                Some(target),
                None,
                "already as before",
            );
            return Ok(Vec::new());
        };
        self.verify(target, &reverted, &desired).await?;
        run.emit(
            StepPhase::Undone,
            step,
            kind,
            Some(target),
            Some(&reverted),
            "restored and read back",
        );
        Ok(reverted)
    }

    /// The run `warroom undo` would act on: `run_id`, or (`None`) the latest
    /// run that left changes.
    pub async fn undo_target(
        &self,
        namespace: &str,
        run_id: Option<&str>,
    ) -> Result<Option<RunRecord>, KubeError> {
        let records = self.records(namespace).await?;
        Ok(match run_id {
            Some(id) => records.into_iter().find(|r| r.id == id),
            None => records.into_iter().rev().find(|r| r.undoable()),
        })
    }

    /// Undoes a recorded run (`None`: the latest run that left changes),
    /// from the values in its record: checks the record (no Secret, no
    /// name the API server would refuse, no field warroom must not set, no
    /// secret value), asks the confirmer, holds the namespace's lease,
    /// reverts steps in reverse and marks the record.
    pub async fn undo(&self, namespace: &str, run_id: Option<&str>) -> Result<RunReport, RunError> {
        let mut report = self.undo_steps(namespace, run_id).await?;
        report.journal_error = self.events.settle().await;
        Ok(report)
    }

    /// The plan of an undo: each applied step of `chosen` in reverse, what
    /// it puts back, and what changed since the run (against its "after"),
    /// or why the undo is refused (it would write a secret).
    async fn plan_undo(
        &self,
        chosen: &RunRecord,
        reverted_steps: &[&StepRecord],
        mut plan: Plan,
    ) -> Result<Result<(Plan, Vec<String>), (Plan, String)>, RunError> {
        let mut drift = Vec::new();
        for step in reverted_steps {
            let Some(target) = &step.target else { continue };
            let current = self.kube.get(target).await?;
            let mut changes = Vec::new();
            for change in &step.changes {
                let now = current
                    .as_ref()
                    .and_then(|c| c.pointer(&change.path))
                    .cloned();
                let revert = FieldChange {
                    path: change.path.clone(),
                    before: now.clone(),
                    after: change.before.clone(),
                };
                if let Some(reason) = check::secret_in_change(&revert) {
                    return Ok(Err((
                        plan,
                        format!(
                            "refusing to undo step `{}` of run {}: {target} {reason}, and {}; \
                             nothing was changed",
                            check::printable(&step.name),
                            check::printable(&chosen.id),
                            check::SECRET_ADVICE
                        ),
                    )));
                }
                if now != change.after {
                    drift.push(format!(
                        "{target} {} is now {} (the run set {})",
                        display_path(&change.path),
                        shown_value(now.as_ref()),
                        shown_value(change.after.as_ref())
                    ));
                }
                if now != change.before {
                    changes.push(revert);
                }
            }
            let planned = PlannedStep {
                name: step.name.clone(),
                kind: step.kind.clone(),
                target: Some(target.clone()),
                action: if current.is_none() {
                    PlannedAction::Fail
                } else if changes.is_empty() {
                    PlannedAction::Unchanged
                } else {
                    PlannedAction::Change
                },
                changes,
                detail: if current.is_none() {
                    format!("{target} not found")
                } else {
                    "restore recorded values".into()
                },
            };
            plan.steps.push(planned);
        }
        Ok(Ok((plan, drift)))
    }

    /// Reverts the recorded steps in order (already reversed), stopping
    /// before the next one when the journal failed, the undo was
    /// cancelled or the Lease was lost.
    async fn revert_recorded(
        &self,
        run: &Run<'_>,
        reverted_steps: &[&StepRecord],
        lease: &RunLease,
    ) -> Reverted {
        let mut steps = Vec::new();
        let mut failed = Vec::new();
        let mut unreachable = false;
        let mut halted = None;
        for step in reverted_steps {
            let Some(target) = &step.target else { continue };
            if let Some(halt) = self.halt().await {
                halted = Some(format!("before `{}`: {}", step.name, halt.reason()));
                break;
            }
            if lease.is_lost() {
                halted = Some(format!("before `{}`: {LEASE_LOST}", step.name));
                break;
            }
            match self
                .revert(run, &step.name, &step.kind, target, &step.changes)
                .await
            {
                Ok(reverted) => steps.push(StepRecord {
                    name: step.name.clone(),
                    kind: step.kind.clone(),
                    target: Some(target.clone()),
                    changes: reverted,
                    outcome: StepOutcome::Undone,
                    message: String::new(),
                }),
                Err(failure) => {
                    unreachable |= failure.unreachable;
                    run.emit(
                        StepPhase::Failed,
                        &step.name,
                        &step.kind,
                        Some(target),
                        None,
                        failure.message.clone(),
                    );
                    failed.push(format!("`{}`: {}", step.name, failure.message));
                    steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.clone(),
                        target: Some(target.clone()),
                        changes: Vec::new(),
                        outcome: StepOutcome::Failed,
                        message: clean(&failure.message),
                    });
                }
            }
        }
        Reverted {
            steps,
            failed,
            unreachable,
            halted,
        }
    }

    pub(super) async fn undo_steps(
        &self,
        namespace: &str,
        run_id: Option<&str>,
    ) -> Result<RunReport, RunError> {
        let started = Instant::now();
        let chosen = self.undo_target(namespace, run_id).await?;
        let undo_id = new_run_id();
        let empty_plan = |playbook: &str| Plan {
            run_id: undo_id.clone(),
            playbook: playbook.to_owned(),
            namespace: namespace.to_owned(),
            actor: self.kube.user().to_owned(),
            steps: Vec::new(),
        };
        let refused = |plan: Plan, message: String| RunReport {
            plan,
            outcome: Outcome::Refused,
            steps: Vec::new(),
            message: clean(&message),
            unreachable: false,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        };
        let Some(chosen) = chosen else {
            let message = match run_id {
                Some(id) => format!(
                    "no run {} recorded in {namespace}/{}; nothing was changed",
                    check::printable(id),
                    record::RUNS_CONFIGMAP
                ),
                None => format!(
                    "no run with changes left to undo in namespace {namespace}; nothing was changed"
                ),
            };
            return Ok(refused(empty_plan("undo"), message));
        };
        let playbook = format!(
            "undo {} ({})",
            check::printable(&chosen.id),
            check::printable(&chosen.playbook)
        );
        let run = Run {
            run_id: undo_id.clone(),
            playbook: playbook.clone(),
            actor: self.kube.user().to_owned(),
            engine: self,
        };
        if !chosen.undoable() {
            return Ok(refused(
                empty_plan(&playbook),
                format!(
                    "run {} has no changes left to undo ({:?}); nothing was changed",
                    check::printable(&chosen.id),
                    chosen.outcome
                ),
            ));
        }
        // A record can be edited by hand: nothing in it is trusted further
        // than `validate` trusts a playbook.
        let reverted_steps: Vec<&StepRecord> = chosen
            .steps
            .iter()
            .rev()
            .filter(|s| s.outcome.left_changes() && !s.changes.is_empty())
            .collect();
        if let Some(problem) = record_problem(&chosen, &reverted_steps) {
            return Ok(refused(
                empty_plan(&playbook),
                format!(
                    "refusing to undo run {} from its record in {namespace}/{}: {problem}; \
                     nothing was changed",
                    check::printable(&chosen.id),
                    record::RUNS_CONFIGMAP
                ),
            ));
        }
        // Plan: each applied step in reverse, with drift against the run's "after".
        let (plan, drift) = match self
            .plan_undo(&chosen, &reverted_steps, empty_plan(&playbook))
            .await?
        {
            Ok(planned) => planned,
            Err((plan, message)) => return Ok(refused(plan, message)),
        };
        for planned in &plan.steps {
            run.emit(
                StepPhase::Planned,
                &planned.name,
                &planned.kind,
                planned.target.as_ref(),
                Some(&planned.changes),
                "undo",
            );
        }
        let mut prompt = format!(
            "Undo run {} of {} by {} ({} step(s))?",
            check::printable(&chosen.id),
            check::printable(&chosen.playbook),
            check::printable(&chosen.actor),
            plan.steps.len()
        );
        if !drift.is_empty() {
            prompt.push_str(&format!(" Changed since the run: {}.", drift.join("; ")));
        }
        let request = ConfirmRequest {
            run_id: undo_id.clone(),
            playbook: playbook.clone(),
            step: "undo".into(),
            prompt: clean(&prompt),
            answer: None,
            default_yes: false,
        };
        match self.ask(&request).await {
            Confirmation::Approved => {}
            Confirmation::Declined if self.cancelled() => {
                return Ok(refused(
                    plan,
                    format!(
                        "undo {} at the confirmation; nothing was changed",
                        cancelled_by(&self.cancel.reason())
                    ),
                ));
            }
            Confirmation::Declined => {
                return Ok(refused(
                    plan,
                    "undo declined by the operator; nothing was changed".into(),
                ));
            }
            Confirmation::Unavailable(reason) => {
                return Ok(refused(
                    plan,
                    format!("undo needs confirmation: {reason}; nothing was changed"),
                ));
            }
        }
        if let Some(halt) = self.halt().await {
            return Ok(RunReport {
                outcome: Outcome::Stopped,
                ..refused(plan, format!("{}; nothing was changed", halt.reason()))
            });
        }
        let holder = format!(
            "{} on {} (pid {}, undo of {})",
            run.actor,
            hostname(),
            std::process::id(),
            chosen.id
        );
        let lease =
            match RunLease::acquire(self.kube.clone(), namespace, &holder, self.lease_duration)
                .await
            {
                Ok(lease) => lease,
                Err(err @ LeaseError::Held { .. }) => return Ok(refused(plan, err.to_string())),
                Err(LeaseError::Kube(err)) => return Err(err.into()),
            };
        let Reverted {
            steps,
            failed,
            unreachable,
            halted,
        } = self.revert_recorded(&run, &reverted_steps, &lease).await;
        let restored = steps.iter().filter(|s| !s.changes.is_empty()).count();
        let outcome = if halted.is_some() {
            Outcome::Stopped
        } else if failed.is_empty() {
            let mut marked = chosen.clone();
            marked.outcome = RunOutcome::Undone;
            marked.undone = Some(run.stamp());
            for step in &mut marked.steps {
                if step.outcome.left_changes() {
                    step.outcome = StepOutcome::Undone;
                }
            }
            if let Err(err) = self.save_record(namespace, &marked).await {
                tracing::warn!("marking run {} undone: {err}", chosen.id);
            }
            Outcome::Undone
        } else {
            Outcome::Failed
        };
        let _ = lease.release().await;
        let message = match (&halted, failed.is_empty()) {
            (Some(halt), _) => format!(
                "undo of run {} stopped {halt}; {restored} step(s) restored before that, the \
                 rest left as the run set them",
                chosen.id
            ),
            (None, true) if restored == 0 => format!(
                "run {} undone, nothing changed: every field already held its value from \
                 before the run",
                chosen.id
            ),
            (None, true) => format!("run {} undone ({restored} step(s) restored)", chosen.id),
            (None, false) => format!(
                "undo of run {} incomplete: {}",
                chosen.id,
                failed.join("; ")
            ),
        };
        Ok(RunReport {
            plan,
            outcome,
            steps,
            message: clean(&message),
            unreachable,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        })
    }
}
