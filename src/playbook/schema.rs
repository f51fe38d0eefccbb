//! The JSON Schema of the playbook format, generated from the model and
//! committed as `playbooks/schema.json` (a test checks it is current).
//! Editors use it through `# yaml-language-server: $schema=schema.json`.

use super::model::Playbook;

/// The schema as pretty-printed JSON with a trailing newline.
pub fn schema_json() -> String {
    let schema = schemars::schema_for!(Playbook);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".into());
    text.push('\n');
    text
}
