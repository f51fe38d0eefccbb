//! `patch`: change any object by apiVersion/kind/name — custom resources
//! included — with a JSON merge patch or a JSON patch. How to point a
//! rate limit at Envoy Gateway or Kong instead of ingress-nginx is shown in
//! `playbooks/gateway-rate-limit.yaml`.

use schemars::JsonSchema;
use serde::Deserialize;

use super::{Change, Edit, Effect, Resolve, StepSpec};
use crate::playbook::check;
use crate::playbook::template::{Body, Text};

/// `patch: {apiVersion, kind, name, namespace?, merge | json}`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Patch {
    /// API version of the object.
    #[serde(rename = "apiVersion")]
    pub api_version: Text,
    /// Kind of the object.
    pub kind: Text,
    /// Object name.
    pub name: Text,
    /// Namespace (default: the run's namespace).
    #[serde(default)]
    pub namespace: Option<Text>,
    /// An RFC 7386 merge patch (`null` removes a field).
    #[serde(default)]
    pub merge: Option<Body>,
    /// An RFC 6902 JSON patch: a list of `{op, path, value}`.
    #[serde(default)]
    pub json: Option<Body>,
}

impl StepSpec for Patch {
    fn resolve(&self, resolve: &mut Resolve<'_>) -> Effect {
        let spec = crate::playbook::model::ObjectSpec {
            api_version: self.api_version.clone(),
            kind: self.kind.clone(),
            name: self.name.clone(),
            namespace: self.namespace.clone(),
        };
        let target = resolve.changed_object(&spec);
        let edit = match (&self.merge, &self.json) {
            (Some(merge), None) => {
                let body = resolve.render.body(merge);
                if !body.is_object() {
                    resolve.problem(merge.0.referenced, "a merge patch must be a mapping");
                }
                let touched = check::touched_by_merge(&merge.0.value, &body, &|raw| {
                    resolve.render.quiet(raw)
                });
                resolve.touched(&target, merge.0.referenced, &touched);
                Edit::Merge(body)
            }
            (None, Some(json)) => {
                let body = resolve.render.body(json);
                match serde_json::from_value::<json_patch::Patch>(body) {
                    Ok(patch) => {
                        let touched = check::touched_by_json(&json.0.value, &patch, &|raw| {
                            resolve.render.quiet(raw)
                        });
                        resolve.touched(&target, json.0.referenced, &touched);
                        Edit::Json(patch)
                    }
                    Err(err) => {
                        resolve.problem(
                            json.0.referenced,
                            format!("not a JSON patch (a list of {{op, path, value}}): {err}"),
                        );
                        Edit::Json(json_patch::Patch(Vec::new()))
                    }
                }
            }
            _ => {
                resolve.problem(
                    self.name.location(),
                    "a patch needs exactly one of `merge` or `json`",
                );
                Edit::Merge(serde_json::json!({}))
            }
        };
        Effect::Change(Change {
            target,
            edit,
            record: true,
        })
    }
}
