//! Server-side printing: the `meta.k8s.io/v1` `Table` that `kubectl get`
//! asks for, with the columns the real API server prints for each kind.
//!
//! This file knows column layouts; it knows nothing about HTTP or storage.

use serde_json::{Value, json};

use super::resources::ResourceType;

/// What each row carries besides its cells (`includeObject` parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Include {
    /// No object.
    None,
    /// The object's metadata as `PartialObjectMetadata` (the default).
    Metadata,
    /// The whole object.
    Object,
}

impl Include {
    /// From the `includeObject` query parameter.
    pub fn parse(value: Option<&str>) -> Self {
        match value {
            Some("None") => Self::None,
            Some("Object") => Self::Object,
            _ => Self::Metadata,
        }
    }
}

fn column(name: &str, kind: &str, description: &str) -> Value {
    let mut col = json!({
        "name": name,
        "type": kind,
        "format": "",
        "description": description,
        "priority": 0,
    });
    if name == "Name" {
        col["format"] = json!("name");
    }
    col
}

/// Human age like kubectl prints it (`45s`, `5m30s`, `3h`, `2d4h`, …).
pub fn age(created: Option<&str>) -> String {
    let Some(created) = created.and_then(|c| c.parse::<jiff::Timestamp>().ok()) else {
        return "<unknown>".to_string();
    };
    let secs = (jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    match () {
        _ if secs < 120 => format!("{secs}s"),
        _ if m < 10 && secs % 60 != 0 => format!("{m}m{}s", secs % 60),
        _ if m < 180 => format!("{m}m"),
        _ if h < 8 && m % 60 != 0 => format!("{h}h{}m", m % 60),
        _ if h < 48 => format!("{h}h"),
        _ if h < 192 && h % 24 != 0 => format!("{d}d{}h", h % 24),
        _ if d < 730 => format!("{d}d"),
        _ => format!("{}y{}d", d / 365, d % 365),
    }
}

fn int(obj: &Value, pointer: &str) -> i64 {
    obj.pointer(pointer).and_then(Value::as_i64).unwrap_or(0)
}

fn text<'a>(obj: &'a Value, pointer: &str) -> &'a str {
    obj.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// A column kubectl shows only with `-o wide`.
fn wide(mut col: Value) -> Value {
    col["priority"] = json!(1);
    col
}

fn or_none(value: &str) -> &str {
    if value.is_empty() { "<none>" } else { value }
}

/// The STATUS kubectl prints for a pod: `Terminating` once deleted, a
/// waiting container's reason (`CrashLoopBackOff`), else the phase.
fn pod_status(obj: &Value) -> String {
    if obj
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|t| !t.is_null())
    {
        return "Terminating".to_string();
    }
    let waiting = obj
        .pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .and_then(|statuses| {
            statuses.iter().find_map(|c| {
                c.pointer("/state/waiting/reason")
                    .and_then(Value::as_str)
                    .filter(|r| !r.is_empty())
            })
        });
    waiting
        .unwrap_or_else(|| text(obj, "/status/phase"))
        .to_string()
}

fn columns_and_cells(rt: &ResourceType, obj: &Value) -> (Vec<Value>, Vec<Value>) {
    let name = json!(text(obj, "/metadata/name"));
    let age_cell = json!(age(obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)));
    let age_col = column("Age", "string", "CreationTimestamp of the object.");
    let name_col = column("Name", "string", "Name of the object.");
    match rt.kind {
        "Deployment" => (
            vec![
                name_col,
                column("Ready", "string", "Number of the pod with ready state"),
                column(
                    "Up-to-date",
                    "string",
                    "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
                ),
                column(
                    "Available",
                    "string",
                    "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
                ),
                age_col,
            ],
            vec![
                name,
                json!(format!(
                    "{}/{}",
                    int(obj, "/status/readyReplicas"),
                    int(obj, "/spec/replicas")
                )),
                json!(int(obj, "/status/updatedReplicas")),
                json!(int(obj, "/status/availableReplicas")),
                age_cell,
            ],
        ),
        "ConfigMap" => {
            let data = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            (
                vec![
                    name_col,
                    column("Data", "integer", "Number of keys."),
                    age_col,
                ],
                vec![name, json!(data), age_cell],
            )
        }
        "Ingress" => {
            let rules = obj.pointer("/spec/rules").and_then(Value::as_array);
            let hosts: Vec<&str> = rules
                .map(|r| {
                    r.iter()
                        .filter_map(|rule| rule.get("host").and_then(Value::as_str))
                        .collect()
                })
                .unwrap_or_default();
            let hosts = if hosts.is_empty() {
                "*".to_string()
            } else {
                hosts.join(",")
            };
            let ports = if obj
                .pointer("/spec/tls")
                .is_some_and(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            {
                "80, 443"
            } else {
                "80"
            };
            let class = match text(obj, "/spec/ingressClassName") {
                "" => "<none>",
                c => c,
            };
            (
                vec![
                    name_col,
                    column("Class", "string", "Ingress class."),
                    column(
                        "Hosts",
                        "string",
                        "Hosts that incoming requests are matched against.",
                    ),
                    column(
                        "Address",
                        "string",
                        "Address is a list containing ingress points for the load-balancer.",
                    ),
                    column("Ports", "string", "Ports of TLS configurations that open."),
                    age_col,
                ],
                vec![
                    name,
                    json!(class),
                    json!(hosts),
                    json!(""),
                    json!(ports),
                    age_cell,
                ],
            )
        }
        "Pod" => {
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c.get("ready").and_then(Value::as_bool) == Some(true))
                    .count()
            });
            let restarts: i64 = statuses.map_or(0, |s| {
                s.iter()
                    .map(|c| c.get("restartCount").and_then(Value::as_i64).unwrap_or(0))
                    .sum()
            });
            (
                vec![
                    name_col,
                    column(
                        "Ready",
                        "string",
                        "The aggregate readiness state of this pod for accepting traffic.",
                    ),
                    column(
                        "Status",
                        "string",
                        "The aggregate status of the containers in this pod.",
                    ),
                    column(
                        "Restarts",
                        "string",
                        "The number of times the containers in this pod have been restarted.",
                    ),
                    age_col,
                    wide(column("IP", "string", "IP address allocated to the pod.")),
                    wide(column(
                        "Node",
                        "string",
                        "Name of the node the pod runs on.",
                    )),
                ],
                vec![
                    name,
                    json!(format!("{ready}/{total}")),
                    json!(pod_status(obj)),
                    json!(restarts),
                    age_cell,
                    json!(or_none(text(obj, "/status/podIP"))),
                    json!(or_none(text(obj, "/spec/nodeName"))),
                ],
            )
        }
        "ReplicaSet" => (
            vec![
                name_col,
                column("Desired", "integer", "Number of desired pods."),
                column("Current", "integer", "Number of actual pods."),
                column("Ready", "integer", "Number of pods ready."),
                age_col,
            ],
            vec![
                name,
                json!(int(obj, "/spec/replicas")),
                json!(int(obj, "/status/replicas")),
                json!(int(obj, "/status/readyReplicas")),
                age_cell,
            ],
        ),
        "Event" => {
            let last_seen = obj
                .get("lastTimestamp")
                .and_then(Value::as_str)
                .or_else(|| obj.get("eventTime").and_then(Value::as_str))
                .or_else(|| {
                    obj.pointer("/metadata/creationTimestamp")
                        .and_then(Value::as_str)
                });
            let object = format!(
                "{}/{}",
                text(obj, "/involvedObject/kind").to_ascii_lowercase(),
                text(obj, "/involvedObject/name")
            );
            (
                vec![
                    column("Last Seen", "string", "Time of the last occurrence."),
                    column("Type", "string", "Type of this event."),
                    column("Reason", "string", "Why the event happened."),
                    column("Object", "string", "The object this event is about."),
                    column("Message", "string", "A description of the event."),
                ],
                vec![
                    json!(age(last_seen)),
                    json!(text(obj, "/type")),
                    json!(text(obj, "/reason")),
                    json!(object),
                    json!(text(obj, "/message")),
                ],
            )
        }
        "Namespace" => (
            vec![
                name_col,
                column("Status", "string", "The status of the namespace"),
                age_col,
            ],
            vec![name, json!(text(obj, "/status/phase")), age_cell],
        ),
        "Lease" => (
            vec![
                name_col,
                column("Holder", "string", "The holder of the lease."),
                age_col,
            ],
            vec![name, json!(text(obj, "/spec/holderIdentity")), age_cell],
        ),
        _ => (vec![name_col, age_col], vec![name, age_cell]),
    }
}

/// A `Table` of `items` (all of type `rt`); `revision` is the list's resourceVersion.
pub fn table(rt: &ResourceType, items: &[Value], revision: Option<u64>, include: Include) -> Value {
    let (columns, _) = columns_and_cells(rt, &json!({}));
    let rows: Vec<Value> = items
        .iter()
        .map(|obj| {
            let (_, cells) = columns_and_cells(rt, obj);
            let mut row = json!({ "cells": cells });
            match include {
                Include::None => {}
                Include::Object => row["object"] = obj.clone(),
                Include::Metadata => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": obj.get("metadata").cloned().unwrap_or_default(),
                    });
                }
            }
            row
        })
        .collect();
    let mut metadata = json!({});
    if let Some(revision) = revision {
        metadata["resourceVersion"] = json!(revision.to_string());
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_like_kubectl() {
        let ago = |secs: i64| {
            let t = jiff::Timestamp::from_second(jiff::Timestamp::now().as_second() - secs)
                .expect("in range");
            age(Some(&t.to_string()))
        };
        assert_eq!(ago(45), "45s");
        assert_eq!(ago(330), "5m30s");
        assert_eq!(ago(3 * 3600), "3h");
        assert_eq!(ago(2 * 86_400 + 4 * 3600), "2d4h");
        assert_eq!(age(None), "<unknown>");
    }
}
