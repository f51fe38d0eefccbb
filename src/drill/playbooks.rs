//! The playbooks shipped with warroom, built into the binary, so that a
//! drill started outside a checkout (an installed `warroom`) still offers
//! the AI-005 mitigations in its console.

use std::path::{Path, PathBuf};

use super::DrillError;

/// The shipped playbooks: file name and YAML.
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "lock-contention.yaml",
        include_str!("../../playbooks/lock-contention.yaml"),
    ),
    (
        "scale-to-one.yaml",
        include_str!("../../playbooks/scale-to-one.yaml"),
    ),
    (
        "gateway-rate-limit.yaml",
        include_str!("../../playbooks/gateway-rate-limit.yaml"),
    ),
    (
        "enable-watch-locking.yaml",
        include_str!("../../playbooks/enable-watch-locking.yaml"),
    ),
    ("restore.yaml", include_str!("../../playbooks/restore.yaml")),
];

/// The playbook folder a drill's console uses: `playbooks/` of the working
/// directory when it holds playbooks (a checkout, possibly edited), else the
/// shipped ones written into `drill_dir/playbooks`.
pub fn folder(drill_dir: &Path) -> Result<PathBuf, DrillError> {
    let local = PathBuf::from("playbooks");
    if local.join("lock-contention.yaml").is_file() {
        return Ok(local);
    }
    let dir = drill_dir.join("playbooks");
    std::fs::create_dir_all(&dir).map_err(|source| DrillError::Io {
        what: "cannot create",
        path: dir.clone(),
        source,
    })?;
    for (name, text) in BUNDLED {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|source| DrillError::Io {
            what: "cannot write",
            path,
            source,
        })?;
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_playbook_is_bundled_and_loads() {
        let shipped: Vec<String> =
            std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/playbooks"))
                .unwrap()
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".yaml"))
                .collect();
        for name in &shipped {
            assert!(
                BUNDLED.iter().any(|(b, _)| b == name),
                "{name} is shipped but not bundled"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in BUNDLED {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            crate::playbook::load_file(&path).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
