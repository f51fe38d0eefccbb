//! The OpenAPI v3 documents kubectl reads before `apply` and `create -f`:
//! a root listing each group version, and per group version the paths with
//! their `x-kubernetes-group-version-kind` and the `fieldValidation` query
//! parameter, so kubectl leaves validation to the server instead of
//! downloading schemas. No object schemas are published.
//!
//! This file knows nothing about stored objects.

use serde_json::{Map, Value, json};

use super::resources::{self, CATALOGUE, ResourceType};

/// `group/version` path segment: `api/v1` or `apis/apps/v1`.
fn gv_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

fn served_group_versions() -> Vec<(&'static str, &'static str)> {
    let mut gvs: Vec<(&'static str, &'static str)> = vec![("", "v1")];
    for (group, versions) in resources::groups() {
        gvs.extend(versions.into_iter().map(|v| (group, v)));
    }
    gvs
}

/// `GET /openapi/v3`.
pub fn root() -> Value {
    let paths: Map<String, Value> = served_group_versions()
        .into_iter()
        .map(|(group, version)| {
            let path = gv_path(group, version);
            let url = format!("/openapi/v3/{path}?hash=warroom");
            (path, json!({ "serverRelativeURL": url }))
        })
        .collect();
    json!({ "paths": paths })
}

fn operation(rt: &ResourceType, verb: &str) -> Value {
    json!({
        "operationId": format!("{verb}{}", rt.kind),
        "x-kubernetes-action": verb,
        "x-kubernetes-group-version-kind": {
            "group": rt.group,
            "version": rt.version,
            "kind": rt.kind,
        },
        "parameters": [
            { "name": "dryRun", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
            { "name": "fieldManager", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
            { "name": "fieldValidation", "in": "query", "schema": { "type": "string", "uniqueItems": true } },
        ],
        "responses": { "200": { "description": "OK" } },
    })
}

/// `GET /openapi/v3/{api/v1 | apis/GROUP/VERSION}`, or None if not served.
pub fn group_version(path: &str) -> Option<Value> {
    let (group, version) = served_group_versions()
        .into_iter()
        .find(|(g, v)| gv_path(g, v) == path.trim_matches('/'))?;
    let mut paths = Map::new();
    for rt in CATALOGUE
        .iter()
        .filter(|rt| rt.group == group && rt.version == version)
    {
        let base = if rt.namespaced {
            format!(
                "/{}/namespaces/{{namespace}}/{}",
                gv_path(group, version),
                rt.plural
            )
        } else {
            format!("/{}/{}", gv_path(group, version), rt.plural)
        };
        paths.insert(base.clone(), json!({ "post": operation(rt, "create") }));
        paths.insert(
            format!("{base}/{{name}}"),
            json!({
                "get": operation(rt, "get"),
                "put": operation(rt, "update"),
                "patch": operation(rt, "patch"),
            }),
        );
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": { "title": "warroom local cluster", "version": format!("v1.{}", super::discovery::MINOR) },
        "paths": paths,
        "components": { "schemas": {} },
    }))
}
