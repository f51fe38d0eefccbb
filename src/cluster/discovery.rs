//! Discovery documents: `/version`, `/api`, `/apis`, `/apis/{group}` and the
//! per-group-version resource lists, built from the resource catalogue.
//!
//! `/api` and `/apis` come in two forms: the plain `APIVersions` /
//! `APIGroupList` (kube-rs), and aggregated discovery
//! (`apidiscovery.k8s.io/v2` `APIGroupDiscoveryList`, every group's
//! resources in one document), which kubectl asks for first. This file knows
//! nothing about stored objects.

use serde_json::{Value, json};

use super::resources::{self, CATALOGUE, VERBS};

/// Kubernetes minor version the server reports (kubectl's version dispatcher
/// picks a client matching it).
pub const MINOR: &str = "32";

/// `GET /version`.
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": MINOR,
        "gitVersion": format!("v1.{MINOR}.0-warroom"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-11-26T00:00:00Z",
        "goVersion": "go1.23.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// `GET /api`.
pub fn core_versions(server_address: &str) -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [
            { "clientCIDR": "0.0.0.0/0", "serverAddress": server_address }
        ],
    })
}

fn group_document(group: &str, versions: &[&str]) -> Value {
    let entries: Vec<Value> = versions
        .iter()
        .map(|v| json!({ "groupVersion": format!("{group}/{v}"), "version": v }))
        .collect();
    json!({
        "name": group,
        "versions": entries,
        "preferredVersion": entries.first().cloned().unwrap_or(Value::Null),
    })
}

/// `GET /apis`.
pub fn group_list() -> Value {
    let groups: Vec<Value> = resources::groups()
        .iter()
        .map(|(group, versions)| group_document(group, versions))
        .collect();
    json!({ "kind": "APIGroupList", "apiVersion": "v1", "groups": groups })
}

/// `GET /apis/{group}`, or None for a group not served.
pub fn group(name: &str) -> Option<Value> {
    let (group, versions) = resources::groups().into_iter().find(|(g, _)| *g == name)?;
    let mut doc = group_document(group, &versions);
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Some(doc)
}

/// `GET /api/v1` or `GET /apis/{group}/{version}`, or None if not served.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let mut resources = Vec::new();
    for rt in CATALOGUE
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let mut entry = json!({
            "name": rt.plural,
            "singularName": rt.singular,
            "namespaced": rt.namespaced,
            "kind": rt.kind,
            "verbs": VERBS,
        });
        if !rt.short_names.is_empty() {
            entry["shortNames"] = json!(rt.short_names);
        }
        if !rt.categories.is_empty() {
            entry["categories"] = json!(rt.categories);
        }
        resources.push(entry);
        if rt.has_status {
            resources.push(json!({
                "name": format!("{}/status", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get", "patch", "update"],
            }));
        }
        if rt.has_scale {
            resources.push(json!({
                "name": format!("{}/scale", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "group": "autoscaling",
                "version": "v1",
                "kind": "Scale",
                "verbs": ["get", "patch", "update"],
            }));
        }
        if rt.kind == "Pod" {
            resources.push(json!({
                "name": format!("{}/log", rt.plural),
                "singularName": "",
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": ["get"],
            }));
        }
    }
    if resources.is_empty() {
        return None;
    }
    let group_version = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    }))
}

/// Content-Type of an aggregated discovery document.
pub const AGGREGATED_CONTENT_TYPE: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

/// Whether an Accept header asks for aggregated discovery (v2).
pub fn wants_aggregated(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"g=apidiscovery.k8s.io")
            && params.contains(&"v=v2")
            && params.contains(&"as=APIGroupDiscoveryList")
    })
}

fn aggregated_version(group: &str, version: &str) -> Value {
    let resources: Vec<Value> = CATALOGUE
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
        .map(|rt| {
            let kind = json!({ "group": rt.group, "version": rt.version, "kind": rt.kind });
            let mut subresources = Vec::new();
            if rt.has_status {
                subresources.push(json!({
                    "subresource": "status",
                    "responseKind": kind,
                    "verbs": ["get", "patch", "update"],
                }));
            }
            if rt.has_scale {
                subresources.push(json!({
                    "subresource": "scale",
                    "responseKind": { "group": "autoscaling", "version": "v1", "kind": "Scale" },
                    "verbs": ["get", "patch", "update"],
                }));
            }
            if rt.kind == "Pod" {
                subresources.push(json!({
                    "subresource": "log",
                    "responseKind": kind,
                    "verbs": ["get"],
                }));
            }
            let mut entry = json!({
                "resource": rt.plural,
                "responseKind": kind,
                "scope": if rt.namespaced { "Namespaced" } else { "Cluster" },
                "singularResource": rt.singular,
                "verbs": VERBS,
            });
            if !rt.short_names.is_empty() {
                entry["shortNames"] = json!(rt.short_names);
            }
            if !rt.categories.is_empty() {
                entry["categories"] = json!(rt.categories);
            }
            if !subresources.is_empty() {
                entry["subresources"] = json!(subresources);
            }
            entry
        })
        .collect();
    json!({ "version": version, "resources": resources, "freshness": "Current" })
}

/// Aggregated discovery for `/api` (`core: true`) or `/apis`.
pub fn aggregated(core: bool) -> Value {
    let items: Vec<Value> = if core {
        vec![json!({ "metadata": {}, "versions": [aggregated_version("", "v1")] })]
    } else {
        resources::groups()
            .iter()
            .map(|(group, versions)| {
                json!({
                    "metadata": { "name": group },
                    "versions": versions
                        .iter()
                        .map(|v| aggregated_version(group, v))
                        .collect::<Vec<_>>(),
                })
            })
            .collect()
    };
    json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": "apidiscovery.k8s.io/v2",
        "metadata": {},
        "items": items,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubectls_accept_header_asks_for_aggregated_discovery() {
        let kubectl = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,\
                       application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,\
                       application/json";
        assert!(wants_aggregated(kubectl));
        assert!(!wants_aggregated("application/json"));
        assert!(!wants_aggregated(
            "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList"
        ));
    }
}
