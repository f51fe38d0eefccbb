//! The apply stage: one step at a time — a change is written at the
//! resourceVersion just read (a 409 reads again), read back and verified; a
//! wait polls with progress events, watching the Lease and the cancellation;
//! a gate asks the confirmer. Also the run records the undo reads.

use super::*;

/// How the apply stage ended.
pub(super) struct Applied {
    pub(super) outcome: Outcome,
    pub(super) message: String,
    pub(super) unreachable: bool,
    pub(super) waited: Duration,
}

pub(super) fn target_of(step: &BoundStep) -> Option<&ObjectRef> {
    match &step.effect {
        Effect::Change(change) => Some(&change.target),
        Effect::Wait(wait) => Some(&wait.target),
        _ => None,
    }
}

impl Engine {
    /// The apply stage of a run: each step in turn, stopping before a
    /// change when the journal failed or the run was cancelled, undoing
    /// after a failure or a cancellation; says how the run ended.
    pub(super) async fn apply_steps(
        &self,
        run: &Run<'_>,
        playbook: &BoundPlaybook,
        lease: &RunLease,
        record: &mut RunRecord,
    ) -> Applied {
        let mut waited = Duration::ZERO;
        let mut changed: HashMap<String, bool> = HashMap::new();
        let mut outcome = Outcome::Done;
        let mut message = String::new();
        let mut unreachable = false;
        let mut failures = Vec::new();
        // Why the run stopped early keeping what it applied, and where.
        let mut stopped: Option<(String, String)> = None;
        // Where the run was cancelled: (in words, step, kind).
        let mut cancelled_at: Option<(String, String, String)> = None;
        for step in &playbook.steps {
            if let Some(halt) = self.halt().await {
                let place = format!("before step `{}`", step.name);
                if let Halt::Cancelled(_) = halt {
                    cancelled_at = Some((place, step.name.clone(), step.kind.into()));
                } else {
                    outcome = Outcome::Stopped;
                    stopped = Some((place, halt.reason()));
                }
                break;
            }
            if lease.is_lost() {
                message = LEASE_LOST.into();
                outcome = self.fail_and_maybe_undo(run, record, OnFailure::Undo).await;
                break;
            }
            let skip = step
                .when_changed
                .as_deref()
                .is_some_and(|earlier| !changed.get(earlier).copied().unwrap_or(false));
            if skip {
                run.emit(
                    StepPhase::Skipped,
                    &step.name,
                    step.kind,
                    None,
                    None,
                    "earlier step changed nothing",
                );
                record.steps.push(StepRecord {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: None,
                    changes: Vec::new(),
                    outcome: StepOutcome::Skipped,
                    message: String::new(),
                });
                continue;
            }
            let step_started = Instant::now();
            let result = self.step(run, step, lease).await;
            if matches!(step.effect, Effect::Wait(_) | Effect::Gate(_)) {
                waited += step_started.elapsed();
            }
            match result {
                Ok(done) => {
                    changed.insert(step.name.clone(), done.outcome == StepOutcome::Applied);
                    record.steps.push(done);
                    if !record.steps.last().is_some_and(|s| s.changes.is_empty())
                        && let Err(err) = self.save_record(&playbook.namespace, record).await
                    {
                        // A change with no run record could not be undone
                        // later: stop and undo it now.
                        unreachable |= err.is_unreachable();
                        let text = format!("the run record could not be saved: {err}");
                        run.emit(
                            StepPhase::Failed,
                            &step.name,
                            step.kind,
                            target_of(step),
                            None,
                            text.clone(),
                        );
                        if let Some(last) = record.steps.last_mut() {
                            last.message = text.clone();
                        }
                        failures.push(format!("step `{}` failed: {text}", step.name));
                        outcome = self.fail_and_maybe_undo(run, record, OnFailure::Undo).await;
                        break;
                    }
                }
                Err(failure) if failure.interrupted => {
                    // Cut short by a cancellation: nothing of this step
                    // was written; what came before is undone below.
                    record.steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: target_of(step).cloned(),
                        changes: Vec::new(),
                        outcome: StepOutcome::Cancelled,
                        message: clean(&failure.message),
                    });
                    cancelled_at = Some((
                        format!("at step `{}`", step.name),
                        step.name.clone(),
                        step.kind.into(),
                    ));
                    break;
                }
                Err(failure) if failure.declined => {
                    // The operator said no (or could not be asked, or
                    // interrupted): stop here and keep what was applied.
                    // Putting it back is `warroom undo`'s job, when asked.
                    run.emit(
                        StepPhase::Skipped,
                        &step.name,
                        step.kind,
                        target_of(step),
                        None,
                        format!("{}; the run stops here", failure.message),
                    );
                    record.steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: target_of(step).cloned(),
                        changes: Vec::new(),
                        outcome: StepOutcome::Declined,
                        message: clean(&failure.message),
                    });
                    outcome = Outcome::Declined;
                    stopped = Some((format!("at step `{}`", step.name), failure.message));
                    break;
                }
                Err(failure) => {
                    unreachable |= failure.unreachable;
                    let landed = !failure.applied.is_empty();
                    run.emit(
                        StepPhase::Failed,
                        &step.name,
                        step.kind,
                        target_of(step),
                        landed.then_some(failure.applied.as_slice()),
                        failure.message.clone(),
                    );
                    record.steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: target_of(step).cloned(),
                        changes: failure.applied.clone(),
                        outcome: if landed {
                            StepOutcome::AppliedUnverified
                        } else {
                            StepOutcome::Failed
                        },
                        message: clean(&failure.message),
                    });
                    failures.push(format!("step `{}` failed: {}", step.name, failure.message));
                    if step.on_failure == OnFailure::Continue {
                        outcome = Outcome::Failed;
                        continue;
                    }
                    outcome = self.fail_and_maybe_undo(run, record, step.on_failure).await;
                    break;
                }
            }
        }
        if let Some((place, step, kind)) = &cancelled_at {
            outcome = Outcome::Cancelled;
            message = self
                .undo_cancelled(run, record, lease, place, (step, kind))
                .await;
        }
        let kept: Vec<&str> = record
            .steps
            .iter()
            .filter(|s| s.outcome.left_changes())
            .map(|s| s.name.as_str())
            .collect();
        message = match (&outcome, &stopped) {
            (Outcome::Done, _) if kept.is_empty() => format!(
                "all {} steps done, nothing changed: every change was already in place or had \
                 nothing recorded to restore",
                record.steps.len()
            ),
            (Outcome::Done, _) => format!(
                "all {} steps done and verified; {} step(s) changed the cluster",
                record.steps.len(),
                kept.len()
            ),
            (Outcome::Cancelled, _) => message.clone(),
            (Outcome::Declined | Outcome::Stopped, Some((place, why))) => {
                let kept_text = if kept.is_empty() {
                    "nothing was changed".to_owned()
                } else {
                    format!(
                        "the {} step(s) applied before are kept ({}); nothing was undone",
                        kept.len(),
                        kept.join(", ")
                    )
                };
                format!("stopped {place}: {why}; {kept_text}")
            }
            _ => {
                let mut text = failures.join("; ");
                if !message.is_empty() {
                    if !text.is_empty() {
                        text.push_str("; ");
                    }
                    text.push_str(&message);
                }
                let undone = record
                    .steps
                    .iter()
                    .filter(|s| s.outcome == StepOutcome::Undone)
                    .count();
                format!(
                    "{text}; {undone} applied step(s) undone, {} left in place",
                    kept.len()
                )
            }
        };
        Applied {
            outcome,
            message,
            unreachable,
            waited,
        }
    }

    pub(super) async fn step(
        &self,
        run: &Run<'_>,
        step: &BoundStep,
        lease: &RunLease,
    ) -> Result<StepRecord, StepFailure> {
        let mut done = StepRecord {
            name: step.name.clone(),
            kind: step.kind.into(),
            target: target_of(step).cloned(),
            changes: Vec::new(),
            outcome: StepOutcome::Done,
            message: String::new(),
        };
        match &step.effect {
            Effect::Change(change) => {
                let changes = self.change(run, step, change).await?;
                done.outcome = if changes.is_empty() {
                    StepOutcome::Unchanged
                } else {
                    StepOutcome::Applied
                };
                done.changes = changes;
            }
            Effect::Wait(wait) => {
                let deadline = Instant::now() + wait.timeout;
                let mut pause = Duration::from_millis(25);
                let mut shown: Option<String> = None;
                loop {
                    let object = self.kube.get(&wait.target).await?;
                    let (holds, seen) = wait.until.holds(object.as_ref());
                    if !holds && shown.as_deref() != Some(seen.as_str()) {
                        // Each new observation, so a screen shows the wait
                        // moving ("rollout 3/8 ready").
                        run.emit(
                            StepPhase::Progress,
                            &step.name,
                            step.kind,
                            Some(&wait.target),
                            None,
                            seen.clone(),
                        );
                        shown = Some(seen.clone());
                    }
                    if holds {
                        run.emit(
                            StepPhase::Verified,
                            &step.name,
                            step.kind,
                            Some(&wait.target),
                            None,
                            seen.clone(),
                        );
                        done.message = seen;
                        break;
                    }
                    if Instant::now() >= deadline {
                        return Err(StepFailure::new(format!(
                            "timed out after {:?} waiting for {} on {}: {seen}",
                            wait.timeout,
                            describe(&wait.until),
                            wait.target
                        )));
                    }
                    let nap = pause.min(deadline.saturating_duration_since(Instant::now()));
                    tokio::select! {
                        _ = tokio::time::sleep(nap) => {}
                        _ = self.until_cancelled() => {
                            return Err(StepFailure {
                                interrupted: true,
                                ..StepFailure::new(format!(
                                    "{} while waiting for {} on {}",
                                    cancelled_by(&self.cancel.reason()),
                                    describe(&wait.until),
                                    wait.target
                                ))
                            });
                        }
                        _ = lease.until_lost() => return Err(StepFailure::new(LEASE_LOST)),
                    }
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
            Effect::Gate(gate) => {
                let request = ConfirmRequest {
                    run_id: run.run_id.clone(),
                    playbook: run.playbook.clone(),
                    step: step.name.clone(),
                    prompt: gate.prompt.clone(),
                    answer: gate.answer.clone(),
                    default_yes: false,
                };
                run.emit(
                    StepPhase::Gate,
                    &step.name,
                    step.kind,
                    None,
                    None,
                    request.prompt.clone(),
                );
                let answer = tokio::select! {
                    answer = self.ask(&request) => answer,
                    _ = lease.until_lost() => return Err(StepFailure::new(LEASE_LOST)),
                };
                match answer {
                    Confirmation::Approved => {
                        run.emit(
                            StepPhase::Confirmed,
                            &step.name,
                            step.kind,
                            None,
                            None,
                            gate.prompt.clone(),
                        );
                    }
                    Confirmation::Declined if self.cancelled() => {
                        return Err(StepFailure {
                            interrupted: true,
                            ..StepFailure::new(format!(
                                "{} at the confirmation",
                                cancelled_by(&self.cancel.reason())
                            ))
                        });
                    }
                    Confirmation::Declined => {
                        return Err(StepFailure::declined("declined by the operator"));
                    }
                    Confirmation::Unavailable(reason) => {
                        return Err(StepFailure::declined(format!(
                            "needs a confirmation nobody could give: {reason}"
                        )));
                    }
                }
            }
            Effect::Note(text) => {
                run.emit(
                    StepPhase::Noted,
                    &step.name,
                    step.kind,
                    None,
                    None,
                    text.clone(),
                );
                done.message = clean(text);
            }
        }
        Ok(done)
    }

    /// Applies one change: read, compute, write conditionally (409: read
    /// again), read back and verify. Returns the fields changed (empty: the
    /// change was already in place).
    pub(super) async fn change(
        &self,
        run: &Run<'_>,
        step: &BoundStep,
        change: &Change,
    ) -> Result<Vec<FieldChange>, StepFailure> {
        let written = self
            .write(run, &change.target, &change.edit, change.record)
            .await?;
        let Some((changes, desired)) = written else {
            run.emit(
                StepPhase::Unchanged,
                &step.name,
                step.kind,
                Some(&change.target),
                None,
                match change.edit {
                    Edit::Restore => "nothing recorded to restore: nothing changed",
                    _ => "already in place: nothing changed",
                },
            );
            return Ok(Vec::new());
        };
        run.emit(
            StepPhase::Applied,
            &step.name,
            step.kind,
            Some(&change.target),
            Some(&changes),
            "written",
        );
        if let Err(failure) = self.verify(&change.target, &changes, &desired).await {
            // The write was accepted: whatever it changed is on the cluster
            // and must be undone like any applied change.
            return Err(failure.with_applied(changes));
        }
        run.emit(
            StepPhase::Verified,
            &step.name,
            step.kind,
            Some(&change.target),
            Some(&changes),
            "read back",
        );
        Ok(changes)
    }

    /// Writes an edit with conflict retries; `None` when nothing changes.
    pub(super) async fn write(
        &self,
        run: &Run<'_>,
        target: &ObjectRef,
        edit: &Edit,
        recorded: bool,
    ) -> Result<Option<(Vec<FieldChange>, Value)>, StepFailure> {
        for _ in 0..CONFLICT_RETRIES {
            let Some(current) = self.kube.get(target).await? else {
                return Err(StepFailure::new(format!("{target} not found")));
            };
            let desired = apply_edit(&current, edit).map_err(StepFailure::new)?;
            let changes = diff(&current, &desired);
            if changes.is_empty() {
                return Ok(None);
            }
            // The plan refused secrets as the cluster was then; it may have
            // changed since.
            if let Some(reason) = changes.iter().find_map(check::secret_in_change) {
                return Err(StepFailure::new(format!(
                    "refused to change {target}: {reason}, and {}; nothing was written",
                    check::SECRET_ADVICE
                )));
            }
            let body = with_record(
                &current,
                &desired,
                if recorded { &changes } else { &[] },
                &run.stamp(),
            );
            match self.kube.replace(target, &body, false).await {
                Ok(_) => return Ok(Some((changes, desired))),
                Err(KubeError::Conflict { .. }) => continue,
                Err(err) => return Err(self.after_failed_write(target, err, changes).await),
            }
        }
        Err(StepFailure::new(format!(
            "{target} kept changing: {CONFLICT_RETRIES} conflicting writes in a row"
        )))
    }

    /// A write answered with an error (not a conflict) may still have
    /// landed — the answer can be lost on the way back. Reads the object
    /// again: changes found in place, or a state that cannot be read, are
    /// carried as applied so they are undone (reverting a write that did
    /// not land changes nothing).
    pub(super) async fn after_failed_write(
        &self,
        target: &ObjectRef,
        err: KubeError,
        changes: Vec<FieldChange>,
    ) -> StepFailure {
        let failure = StepFailure::from(err);
        match self.kube.get(target).await {
            Ok(Some(now)) => {
                let landed: Vec<FieldChange> = changes
                    .into_iter()
                    .filter(|c| now.pointer(&c.path) == c.after.as_ref())
                    .collect();
                failure.with_applied(landed)
            }
            Ok(None) => failure,
            Err(read) => {
                let mut failure = failure.with_applied(changes);
                failure.unreachable |= read.is_unreachable();
                failure.message = format!(
                    "{}; whether the write landed is unknown ({read}), so it is undone as if it had",
                    failure.message
                );
                failure
            }
        }
    }

    pub(super) async fn verify(
        &self,
        target: &ObjectRef,
        changes: &[FieldChange],
        desired: &Value,
    ) -> Result<(), StepFailure> {
        let Some(read_back) = self.kube.get(target).await? else {
            return Err(StepFailure::new(format!(
                "{target} vanished after the write"
            )));
        };
        for change in changes {
            // Compare with what the server should now hold for this field.
            let want = desired.pointer(&change.path);
            let have = read_back.pointer(&change.path);
            if want != have {
                return Err(StepFailure::new(format!(
                    "read-back of {target} {}: want {}, found {}",
                    display_path(&change.path),
                    want.map(Value::to_string)
                        .unwrap_or_else(|| "absent".into()),
                    have.map(Value::to_string)
                        .unwrap_or_else(|| "absent".into()),
                )));
            }
        }
        Ok(())
    }

    /// Stores a run record in the namespace's `warroom-runs` ConfigMap.
    pub async fn save_record(&self, namespace: &str, record: &RunRecord) -> Result<(), KubeError> {
        let object = record::runs_configmap(namespace);
        for _ in 0..CONFLICT_RETRIES {
            let result = match self.kube.get(&object).await? {
                None => {
                    let empty = serde_json::json!({
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": record::RUNS_CONFIGMAP, "namespace": namespace,
                                     "labels": {"app.kubernetes.io/managed-by": "warroom"}},
                        "data": {}
                    });
                    let body = record::store_in(&empty, record).map_err(|message| {
                        KubeError::Malformed {
                            object: object.to_string(),
                            message,
                        }
                    })?;
                    self.kube.create(&object, &body, false).await
                }
                Some(current) => {
                    let body = record::store_in(&current, record).map_err(|message| {
                        KubeError::Malformed {
                            object: object.to_string(),
                            message,
                        }
                    })?;
                    self.kube.replace(&object, &body, false).await
                }
            };
            match result {
                Ok(_) => return Ok(()),
                Err(KubeError::Conflict { .. }) => continue,
                Err(err) => return Err(err),
            }
        }
        Err(KubeError::Conflict {
            object: object.to_string(),
            message: "run records kept changing".into(),
        })
    }

    /// The run records of a namespace, oldest first.
    pub async fn records(&self, namespace: &str) -> Result<Vec<RunRecord>, KubeError> {
        Ok(self
            .kube
            .get(&record::runs_configmap(namespace))
            .await?
            .map(|cm| record::records_in(&cm))
            .unwrap_or_default())
    }
}
