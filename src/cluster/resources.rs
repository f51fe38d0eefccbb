//! The resource types the local cluster serves: one table that discovery,
//! routing, validation and the store all read.
//!
//! Adding a kind means adding one entry here (and, if it has rules, a case in
//! `kinds.rs`). This file knows nothing about HTTP or stored objects.

/// Verbs served on every resource type.
pub const VERBS: &[&str] = &[
    "create", "delete", "get", "list", "patch", "update", "watch",
];

/// One resource type: `deployments` in `apps/v1`, and so on.
#[derive(Debug, PartialEq, Eq)]
pub struct ResourceType {
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Version within the group.
    pub version: &'static str,
    /// Plural resource name used in paths (`deployments`).
    pub plural: &'static str,
    /// Singular name (`deployment`).
    pub singular: &'static str,
    /// Object kind (`Deployment`).
    pub kind: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// Short names kubectl accepts (`deploy`).
    pub short_names: &'static [&'static str],
    /// Whether the object has a `spec` whose changes bump `metadata.generation`.
    pub tracks_generation: bool,
    /// Whether the type has a `status` subresource.
    pub has_status: bool,
    /// Whether the type has a `scale` subresource (autoscaling/v1 Scale).
    pub has_scale: bool,
    /// Categories (`all`) for `kubectl get all`.
    pub categories: &'static [&'static str],
}

impl ResourceType {
    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// Kind of the list object (`DeploymentList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }
}

/// Every resource type served, in discovery order.
pub static CATALOGUE: &[ResourceType] = &[
    ResourceType {
        group: "",
        version: "v1",
        plural: "namespaces",
        singular: "namespace",
        kind: "Namespace",
        namespaced: false,
        short_names: &["ns"],
        tracks_generation: false,
        has_status: true,
        has_scale: false,
        categories: &[],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "pods",
        singular: "pod",
        kind: "Pod",
        namespaced: true,
        short_names: &["po"],
        tracks_generation: false,
        has_status: true,
        has_scale: false,
        categories: &["all"],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "events",
        singular: "event",
        kind: "Event",
        namespaced: true,
        short_names: &["ev"],
        tracks_generation: false,
        has_status: false,
        has_scale: false,
        categories: &[],
    },
    ResourceType {
        group: "",
        version: "v1",
        plural: "configmaps",
        singular: "configmap",
        kind: "ConfigMap",
        namespaced: true,
        short_names: &["cm"],
        tracks_generation: false,
        has_status: false,
        has_scale: false,
        categories: &[],
    },
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "deployments",
        singular: "deployment",
        kind: "Deployment",
        namespaced: true,
        short_names: &["deploy"],
        tracks_generation: true,
        has_status: true,
        has_scale: true,
        categories: &["all"],
    },
    ResourceType {
        group: "apps",
        version: "v1",
        plural: "replicasets",
        singular: "replicaset",
        kind: "ReplicaSet",
        namespaced: true,
        short_names: &["rs"],
        tracks_generation: true,
        has_status: true,
        has_scale: true,
        categories: &["all"],
    },
    ResourceType {
        group: "networking.k8s.io",
        version: "v1",
        plural: "ingresses",
        singular: "ingress",
        kind: "Ingress",
        namespaced: true,
        short_names: &["ing"],
        tracks_generation: true,
        has_status: true,
        has_scale: false,
        categories: &[],
    },
    ResourceType {
        group: "coordination.k8s.io",
        version: "v1",
        plural: "leases",
        singular: "lease",
        kind: "Lease",
        namespaced: true,
        short_names: &[],
        tracks_generation: false,
        has_status: false,
        has_scale: false,
        categories: &[],
    },
    // Gateway policy objects, so that playbooks can rate-limit at Kong or
    // Envoy Gateway as well as at ingress-nginx. Served as custom resources
    // without schemas: any spec is accepted.
    ResourceType {
        group: "configuration.konghq.com",
        version: "v1",
        plural: "kongplugins",
        singular: "kongplugin",
        kind: "KongPlugin",
        namespaced: true,
        short_names: &["kp"],
        tracks_generation: true,
        has_status: false,
        has_scale: false,
        categories: &["kong-ingress-controller"],
    },
    ResourceType {
        group: "gateway.envoyproxy.io",
        version: "v1alpha1",
        plural: "backendtrafficpolicies",
        singular: "backendtrafficpolicy",
        kind: "BackendTrafficPolicy",
        namespaced: true,
        short_names: &["btp"],
        tracks_generation: true,
        has_status: true,
        has_scale: false,
        categories: &["envoy-gateway"],
    },
];

/// The type served at `group`/`version` under `plural`.
pub fn by_path(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    CATALOGUE
        .iter()
        .find(|rt| rt.group == group && rt.version == version && rt.plural == plural)
}

/// The type of objects with this `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    let (group, version) = split_api_version(api_version);
    CATALOGUE
        .iter()
        .find(|rt| rt.group == group && rt.version == version && rt.kind == kind)
}

/// `apps/v1` → (`apps`, `v1`); `v1` → (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((group, version)) => (group, version),
        None => ("", api_version),
    }
}

/// Groups other than core, each with its versions, in catalogue order.
pub fn groups() -> Vec<(&'static str, Vec<&'static str>)> {
    let mut groups: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for rt in CATALOGUE.iter().filter(|rt| !rt.group.is_empty()) {
        match groups.iter_mut().find(|(g, _)| *g == rt.group) {
            Some((_, versions)) => {
                if !versions.contains(&rt.version) {
                    versions.push(rt.version);
                }
            }
            None => groups.push((rt.group, vec![rt.version])),
        }
    }
    groups
}

/// Index of a type in [`CATALOGUE`] (a compact store key).
pub fn index_of(rt: &ResourceType) -> usize {
    CATALOGUE
        .iter()
        .position(|candidate| std::ptr::eq(candidate, rt))
        .unwrap_or_else(|| {
            CATALOGUE
                .iter()
                .position(|candidate| candidate == rt)
                .unwrap_or(0)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_agree() {
        let deploy = by_path("apps", "v1", "deployments").expect("served");
        assert_eq!(deploy.api_version(), "apps/v1");
        assert!(std::ptr::eq(
            deploy,
            by_kind("apps/v1", "Deployment").expect("served")
        ));
        assert!(by_kind("v1", "ConfigMap").is_some());
        assert!(by_kind("apps/v2", "Deployment").is_none());
        assert_eq!(CATALOGUE[index_of(deploy)].kind, "Deployment");
    }
}
