//! The plan stage: read the current state, compute each step's change
//! (simulating earlier steps for later ones), show the diff, and on request
//! have the API server dry-run every change. Changes nothing.

use super::*;

/// The name under which the whole plan is confirmed when a change comes
/// before any `confirm` step.
pub const PLAN_GATE: &str = "plan";

/// What a step will do, as planned against the current state.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    /// Step name.
    pub name: String,
    /// Step kind.
    pub kind: String,
    /// The object acted on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<ObjectRef>,
    /// The planned action.
    pub action: PlannedAction,
    /// The fields that will change.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<FieldChange>,
    /// Details (gate prompt, wait condition, note text, failure).
    pub detail: String,
}

/// The plan of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Run id.
    pub run_id: String,
    /// Playbook name.
    pub playbook: String,
    /// Namespace.
    pub namespace: String,
    /// Kubeconfig user.
    pub actor: String,
    /// Steps in order.
    pub steps: Vec<PlannedStep>,
}

/// A condition in words.
pub fn describe(check: &Check) -> String {
    match check {
        Check::Exists => "it exists".into(),
        Check::RolloutComplete => "the rollout is complete".into(),
        Check::Condition(name) => format!("condition {name} is True"),
        Check::Field { path, equals } => format!("{} == {equals}", display_path(path)),
    }
}

/// Permissions a playbook needs: (API group, resource, verb), besides those
/// every run needs ([`engine_permissions`]).
pub fn step_permissions(playbook: &BoundPlaybook) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for step in &playbook.steps {
        match &step.effect {
            Effect::Change(change) => {
                for verb in ["get", "update"] {
                    out.push((
                        change.target.group().to_owned(),
                        change.target.guessed_resource(),
                        verb.to_owned(),
                    ));
                }
            }
            Effect::Wait(wait) => out.push((
                wait.target.group().to_owned(),
                wait.target.guessed_resource(),
                "get".to_owned(),
            )),
            _ => {}
        }
    }
    for precondition in &playbook.preconditions {
        out.push((
            precondition.object.group().to_owned(),
            precondition.object.guessed_resource(),
            "get".to_owned(),
        ));
    }
    out.sort();
    out.dedup();
    out
}

/// Permissions every run needs: the run Lease and the run records.
pub fn engine_permissions() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for verb in ["get", "create", "update"] {
        out.push((
            "coordination.k8s.io".to_owned(),
            "leases".to_owned(),
            verb.to_owned(),
        ));
        out.push((String::new(), "configmaps".to_owned(), verb.to_owned()));
    }
    out.sort();
    out
}

impl Engine {
    /// Reads current state and computes what each step would do, simulating
    /// earlier steps' changes for later ones. Changes nothing.
    pub async fn plan(&self, playbook: &BoundPlaybook, run_id: &str) -> Result<Plan, RunError> {
        let mut state: HashMap<ObjectRef, Option<Value>> = HashMap::new();
        let mut changed: HashMap<&str, bool> = HashMap::new();
        let mut steps = Vec::new();
        for step in &playbook.steps {
            let skip = step
                .when_changed
                .as_deref()
                .is_some_and(|earlier| !changed.get(earlier).copied().unwrap_or(false));
            let planned = match &step.effect {
                Effect::Change(change) => {
                    let current = match state.get(&change.target) {
                        Some(known) => known.clone(),
                        None => self.kube.get(&change.target).await?,
                    };
                    let mut planned = PlannedStep {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: Some(change.target.clone()),
                        action: PlannedAction::Change,
                        changes: Vec::new(),
                        detail: String::new(),
                    };
                    match current {
                        None => {
                            planned.action = PlannedAction::Fail;
                            planned.detail = format!("{} not found", change.target);
                        }
                        Some(current) => match apply_edit(&current, &change.edit) {
                            Err(err) => {
                                planned.action = PlannedAction::Fail;
                                planned.detail = err;
                            }
                            Ok(desired) => {
                                planned.changes = diff(&current, &desired);
                                if let Some(reason) =
                                    planned.changes.iter().find_map(check::secret_in_change)
                                {
                                    // Never shown, never recorded: the values go.
                                    planned.changes.clear();
                                    planned.action = PlannedAction::Refuse;
                                    planned.detail = format!(
                                        "{} {reason}, and {}",
                                        change.target,
                                        check::SECRET_ADVICE
                                    );
                                } else if skip {
                                    planned.action = PlannedAction::Skip;
                                    planned.detail = format!(
                                        "only when `{}` changes something",
                                        step.when_changed.as_deref().unwrap_or_default()
                                    );
                                } else if planned.changes.is_empty() {
                                    planned.action = PlannedAction::Unchanged;
                                    planned.detail = match change.edit {
                                        Edit::Restore => "nothing recorded to restore".into(),
                                        _ => "already in place".into(),
                                    };
                                } else {
                                    state.insert(change.target.clone(), Some(desired));
                                }
                            }
                        },
                    }
                    changed.insert(&step.name, planned.action == PlannedAction::Change);
                    planned
                }
                Effect::Wait(wait) => PlannedStep {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: Some(wait.target.clone()),
                    action: if skip {
                        PlannedAction::Skip
                    } else {
                        PlannedAction::Wait
                    },
                    changes: Vec::new(),
                    detail: format!(
                        "until {} (timeout {:?})",
                        describe(&wait.until),
                        wait.timeout
                    ),
                },
                Effect::Gate(gate) => PlannedStep {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: None,
                    action: if skip {
                        PlannedAction::Skip
                    } else {
                        PlannedAction::Confirm
                    },
                    changes: Vec::new(),
                    detail: match &gate.answer {
                        Some(answer) => format!("{} (type {answer:?})", gate.prompt),
                        None => gate.prompt.clone(),
                    },
                },
                Effect::Note(text) => PlannedStep {
                    name: step.name.clone(),
                    kind: step.kind.into(),
                    target: None,
                    action: if skip {
                        PlannedAction::Skip
                    } else {
                        PlannedAction::Note
                    },
                    changes: Vec::new(),
                    detail: text.clone(),
                },
            };
            steps.push(planned);
        }
        Ok(Plan {
            run_id: run_id.to_owned(),
            playbook: playbook.name.clone(),
            namespace: playbook.namespace.clone(),
            actor: self.kube.user().to_owned(),
            steps,
        })
    }

    pub(super) async fn dry_run(
        &self,
        run: &Run<'_>,
        playbook: &BoundPlaybook,
        plan: &Plan,
        started: Instant,
    ) -> Result<RunReport, RunError> {
        let mut steps = Vec::new();
        let mut outcome = Outcome::DryRun;
        let mut message = format!("dry run of {} steps: nothing changed", plan.steps.len());
        let mut simulated: HashMap<ObjectRef, Value> = HashMap::new();
        for (step, planned) in playbook.steps.iter().zip(&plan.steps) {
            if self.halt().await.is_some() {
                break;
            }
            let Effect::Change(change) = &step.effect else {
                continue;
            };
            if planned.action != PlannedAction::Change {
                continue;
            }
            let current = match simulated.get(&change.target) {
                Some(known) => known.clone(),
                None => match self.kube.get(&change.target).await? {
                    Some(found) => found,
                    None => continue,
                },
            };
            let Ok(desired) = apply_edit(&current, &change.edit) else {
                continue;
            };
            let body = with_record(&current, &desired, &planned.changes, &run.stamp());
            match self.kube.replace(&change.target, &body, true).await {
                Ok(_) => {
                    run.emit(
                        StepPhase::DryRun,
                        &step.name,
                        step.kind,
                        Some(&change.target),
                        Some(&planned.changes),
                        "accepted by the API server (dry run)",
                    );
                    simulated.insert(change.target.clone(), desired);
                }
                Err(err) if err.is_unreachable() => return Err(RunError::Unreachable(err)),
                Err(err) => {
                    run.emit(
                        StepPhase::Failed,
                        &step.name,
                        step.kind,
                        Some(&change.target),
                        None,
                        err.to_string(),
                    );
                    outcome = Outcome::PlanFailed;
                    message = format!(
                        "the API server rejected step `{}` in a dry run: {err}",
                        step.name
                    );
                    steps.push(StepRecord {
                        name: step.name.clone(),
                        kind: step.kind.into(),
                        target: Some(change.target.clone()),
                        changes: planned.changes.clone(),
                        outcome: StepOutcome::Failed,
                        message: err.to_string(),
                    });
                    break;
                }
            }
        }
        if let Some(halt) = self.halt().await
            && outcome == Outcome::DryRun
        {
            outcome = Outcome::Stopped;
            message = format!("dry run stopped: {}; nothing was changed", halt.reason());
        }
        Ok(RunReport {
            plan: plan.clone(),
            outcome,
            steps,
            message: clean(&message),
            unreachable: false,
            elapsed_ms: started.elapsed().as_millis() as u64,
            waited_ms: 0,
            journal_error: self.events.failure(),
        })
    }
}
