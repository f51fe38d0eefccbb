//! Playbook files without a cluster: the shipped playbooks validate, every
//! malformed playbook is refused with file:line:col (exit 2), the committed
//! JSON Schema is current, the parser never panics, and config/rbac.yaml
//! grants exactly what the shipped playbooks need. Hostile files (huge
//! scalars, lines past column 65,535, thousands of problems, files above
//! the size limit) get a short report in time proportional to their size.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use warroom::playbook::engine::{engine_permissions, step_permissions};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("directory exists")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn shipped() -> Vec<PathBuf> {
    yaml_files(&root().join("playbooks"))
}

#[test]
fn shipped_playbooks_validate() {
    let files = shipped();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "scale-to-one.yaml",
        "gateway-rate-limit.yaml",
        "enable-watch-locking.yaml",
        "lock-contention.yaml",
        "restore.yaml",
    ] {
        assert!(
            names.contains(&expected.to_string()),
            "{expected} is shipped"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_warroom"))
        .arg("validate")
        .args(&files)
        .output()
        .expect("runs");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_malformed_playbook_exits_2_with_line_and_column() {
    let files = yaml_files(&root().join("tests/playbooks/malformed"));
    assert!(files.len() >= 25, "{} malformed playbooks", files.len());
    for file in files {
        let out = Command::new(env!("CARGO_BIN_EXE_warroom"))
            .arg("validate")
            .arg(&file)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{}: {stderr}", file.display());
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let located = stderr.lines().any(|line| {
            line.find(&name).is_some_and(|at| {
                let rest = &line[at + name.len()..];
                let mut parts = rest.trim_start_matches(':').split(':');
                let line_no = parts.next().unwrap_or("");
                let col: String = parts
                    .next()
                    .unwrap_or("")
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                rest.starts_with(':')
                    && line_no.parse::<u32>().is_ok_and(|n| n > 0)
                    && col.parse::<u32>().is_ok_and(|n| n > 0)
            })
        });
        assert!(located, "{name}: no file:line:col in\n{stderr}");
    }
}

#[test]
fn unknown_parameter_is_reported_at_the_reference() {
    let source = "name: m\ndescription: d\nparameters:\n  deployment: {type: string, default: x}\nsteps:\n  - name: a\n    note: scaled ${deploymnet} down\n";
    let err = warroom::playbook::parse("p.yaml", source).expect_err("invalid");
    assert_eq!(err.problems.len(), 1, "{err}");
    let problem = &err.problems[0];
    assert_eq!((problem.line, problem.column), (7, 18));
    assert_eq!(problem.offending(source), "${deploymnet}");
    assert!(problem.message.contains("deploymnet"));
}

#[test]
fn steps_that_change_secrets_are_refused() {
    let file = root().join("tests/playbooks/malformed/36-patch-on-a-secret.yaml");
    let source = std::fs::read_to_string(&file).expect("reads");
    let err = warroom::playbook::parse("36-patch-on-a-secret.yaml", &source).expect_err("invalid");
    assert_eq!(err.problems.len(), 1, "{err}");
    assert_eq!((err.problems[0].line, err.problems[0].column), (7, 13));
    assert!(
        err.problems[0]
            .message
            .contains("never records Secret values"),
        "{err}"
    );

    // The kind given as a parameter: refused when bound.
    let source = "name: m\ndescription: d\nparameters:\n  kind: {type: string, default: ConfigMap}\nsteps:\n  - name: a\n    restore: {apiVersion: v1, kind: \"${kind}\", name: x}\n";
    let loaded = warroom::playbook::parse("p.yaml", source).expect("valid with the default");
    assert!(loaded.bind(&[], None, "orders").is_ok());
    let err = match loaded.bind(&[("kind".into(), "Secret".into())], None, "orders") {
        Ok(_) => panic!("a Secret target binds"),
        Err(err) => err.to_string(),
    };
    assert!(err.contains("never records Secret values"), "{err}");
}

#[test]
fn names_keys_and_secrets_are_refused_where_they_are_written() {
    // file, line, column, what the message must say
    let cases = [
        (
            "37-object-name-with-a-fragment.yaml",
            5,
            25,
            "\"order-service#x\" is not a lowercase RFC 1123 subdomain",
        ),
        (
            "38-namespace-not-a-label.yaml",
            5,
            64,
            "namespace \"Orders_NS\" is not a lowercase RFC 1123 label",
        ),
        (
            "39-annotation-key-with-a-space.yaml",
            9,
            14,
            "annotation key \"limit rps\" is not a qualified name",
        ),
        (
            "40-json-patch-label-key-with-two-slashes.yaml",
            10,
            9,
            "label key \"a/b/c\" is not a qualified name",
        ),
        (
            "41-api-version-with-a-query.yaml",
            6,
            19,
            "apiVersion \"apps/v1?dryRun=\" is not an API version",
        ),
        (
            "42-default-name-with-a-slash.yaml",
            7,
            25,
            "\"order-service/scale\" is not a lowercase RFC 1123 subdomain",
        ),
        (
            "43-patch-renames-the-object.yaml",
            9,
            14,
            "cannot set metadata.name",
        ),
        (
            "44-patch-edits-warroom-annotation.yaml",
            9,
            14,
            "cannot set the annotation \"warroom.io/previous\"",
        ),
        (
            "45-set-config-of-a-secret-key.yaml",
            5,
            56,
            "\"API_TOKEN\" names a secret",
        ),
        (
            "46-set-config-of-a-secret-value.yaml",
            5,
            74,
            "looks like a secret",
        ),
        (
            "47-patch-with-a-secret-value.yaml",
            9,
            14,
            "data.REDIS_URL: the value looks like a secret",
        ),
        (
            "48-patch-with-a-secret-env-entry.yaml",
            10,
            9,
            "looks like a secret",
        ),
        (
            "49-kind-with-a-slash.yaml",
            7,
            13,
            "kind \"Deployment/scale\" is not a kind",
        ),
        (
            "51-secret-in-a-name.yaml",
            5,
            25,
            "is not a lowercase RFC 1123 subdomain",
        ),
    ];
    for (name, line, column, says) in cases {
        let file = root().join("tests/playbooks/malformed").join(name);
        let source = std::fs::read_to_string(&file).expect("reads");
        let err = warroom::playbook::parse(name, &source).expect_err(name);
        assert_eq!(err.problems.len(), 1, "{err}");
        let problem = &err.problems[0];
        assert_eq!((problem.line, problem.column), (line, column), "{err}");
        assert!(problem.message.contains(says), "{name}: {err}");
        // A secret in the file is never repeated by the report.
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}

#[test]
fn a_bad_value_given_on_the_command_line_names_the_flag() {
    let loaded =
        warroom::playbook::load_file(&root().join("playbooks/scale-to-one.yaml")).expect("valid");
    let bind = |given: &[(&str, &str)], namespace: Option<&str>| {
        let given: Vec<(String, String)> = given
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match loaded.bind(&given, namespace, "orders") {
            Ok(_) => panic!("{given:?} binds"),
            Err(err) => err.to_string(),
        }
    };
    for hostile in [
        "order-service#x",
        "order-service?dryRun=",
        "order-service/scale",
        "..",
        "Order-Service",
        "",
    ] {
        let err = bind(&[("deployment", hostile)], None);
        assert!(err.starts_with("invalid --param deployment: "), "{err}");
        assert!(
            err.contains("RFC 1123 subdomain") || err.contains("must not be empty"),
            "{err}"
        );
        assert!(
            err.contains("(used at ") && err.contains("scale-to-one.yaml:"),
            "{err}"
        );
        assert!(err.ends_with("nothing was changed"), "{err}");
    }
    let err = bind(&[("namespace", "orders/x")], None);
    assert!(err.starts_with("invalid --param namespace: "), "{err}");
    let err = bind(&[], Some("Orders"));
    assert!(err.starts_with("invalid -n/--namespace: "), "{err}");
    let err = match loaded.bind(&[], None, "bad_namespace") {
        Ok(_) => String::new(),
        Err(err) => err.to_string(),
    };
    // The playbook's own default wins over the context's namespace here.
    assert!(err.is_empty(), "{err}");
    let err = bind(&[("deployment", "order\u{1b}[2Jservice")], None);
    assert!(err.contains("control character"), "{err}");
    assert!(!err.contains('\u{1b}'), "{err}");
    // Integers are held to the playbook's range and to what the field holds.
    let err = bind(&[("replicas", "-1")], None);
    assert_eq!(
        err,
        "invalid --param replicas: -1 is less than 0; nothing was changed"
    );
    let err = bind(&[("replicas", "2147483648")], None);
    assert!(
        err.starts_with("invalid --param replicas: replicas must be between 0 and 2147483647"),
        "{err}"
    );
    // A secret is refused without being repeated.
    let err = bind(&[("deployment", "redis://:hunter2@redis:6379")], None);
    assert!(err.starts_with("invalid --param deployment: "), "{err}");
    assert!(err.contains("looks like a secret"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Runs the binary; kills it and fails if it has not exited after 20 s.
fn warroom_within_deadline(args: &[&str]) -> (i32, String) {
    use std::time::{Duration, Instant};
    let mut child = Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("waits") {
            let mut stderr = String::new();
            use std::io::Read;
            let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
            return (status.code().unwrap_or(-1), stderr);
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("warroom {args:?} did not exit within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn files_that_never_end_are_refused_not_read() {
    for args in [
        &["validate", "/dev/zero"][..],
        &["validate", "/dev/urandom"],
        &["run", "/dev/zero", "--dry-run"],
        &[
            "run",
            "playbooks/scale-to-one.yaml",
            "--dry-run",
            "--kubeconfig",
            "/dev/zero",
        ],
    ] {
        let (code, stderr) = warroom_within_deadline(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains("not a regular file"), "{args:?}: {stderr}");
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let source = "name: m\ndescription: d\nsteps:\n  - name: a\n    note: ${x}\n  - name: a\n    scale: {deployment: \"${y}\", replicas: -1}\n";
    let err = warroom::playbook::parse("p.yaml", source).expect_err("invalid");
    let lines: Vec<u64> = err.problems.iter().map(|p| p.line).collect();
    assert!(err.problems.len() >= 4, "{err}");
    assert!(
        lines.contains(&5) && lines.contains(&6) && lines.contains(&7),
        "{lines:?}"
    );
}

#[test]
fn committed_schema_is_current() {
    let path = root().join("playbooks/schema.json");
    let generated = warroom::playbook::schema::schema_json();
    if std::env::var_os("WARROOM_WRITE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).expect("writes schema");
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "playbooks/schema.json is stale: run WARROOM_WRITE_SCHEMA=1 cargo test --test playbook_files committed_schema_is_current"
    );
    let schema: serde_json::Value = serde_json::from_str(&committed).expect("schema is JSON");
    let step_properties = schema
        .pointer("/$defs/StepDoc/properties")
        .and_then(|p| p.as_object())
        .expect("steps are described");
    for kind in warroom::playbook::step::STEP_KINDS {
        assert!(
            step_properties.contains_key(*kind),
            "schema lists step kind {kind}"
        );
    }
    assert_eq!(
        schema.get("additionalProperties"),
        Some(&serde_json::json!(false))
    );
}

/// (apiGroup, resource, verb) triples granted by a Role document.
fn granted(role: &serde_json::Value) -> BTreeSet<(String, String, String)> {
    let mut out = BTreeSet::new();
    for rule in role["rules"].as_array().expect("rules") {
        for group in rule["apiGroups"].as_array().expect("apiGroups") {
            for resource in rule["resources"].as_array().expect("resources") {
                for verb in rule["verbs"].as_array().expect("verbs") {
                    out.insert((
                        group.as_str().unwrap().to_owned(),
                        resource.as_str().unwrap().to_owned(),
                        verb.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_role_grants_exactly_what_the_shipped_playbooks_use() {
    let text = std::fs::read_to_string(root().join("config/rbac.yaml")).expect("rbac.yaml");
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&text).expect("rbac.yaml parses");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role")
        .expect("a Role is defined");
    let typed: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(role.clone())
        .expect("a well-formed rbac.authorization.k8s.io/v1 Role");
    assert_eq!(typed.metadata.namespace.as_deref(), Some("orders"));
    let granted = granted(role);
    let mut needed: BTreeSet<(String, String, String)> = engine_permissions().into_iter().collect();
    for file in shipped() {
        let loaded = warroom::playbook::load_file(&file).expect("valid");
        let bound = loaded.bind(&[], None, "orders").expect("binds");
        needed.extend(step_permissions(&bound));
    }
    assert_eq!(
        granted, needed,
        "config/rbac.yaml must grant exactly what playbooks use"
    );
    for (_, resource, verb) in &granted {
        assert_ne!(resource, "secrets", "no access to Secrets");
        assert!(
            !["delete", "deletecollection", "*"].contains(&verb.as_str()),
            "no {verb}"
        );
    }
    assert!(
        docs.iter().any(|d| d["kind"] == "RoleBinding"),
        "a RoleBinding is shipped"
    );
}

/// `warroom validate FILE` on `text`, bounded by `deadline`: (exit code, stderr).
fn validate_text(name: &str, text: &str, deadline: Duration) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join(name);
    std::fs::write(&file, text).expect("writes the playbook");
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom"))
            .arg("validate")
            .arg(&file),
        deadline,
    );
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What a report about one problem may print at most: the summary, a few
/// lines of excerpt, each cut to the window.
const ONE_PROBLEM_REPORT: usize = 4 * 1024;

#[test]
fn a_yaml_error_past_column_65535_is_reported_at_its_column() {
    let line = format!("name: {} : b", "a".repeat(70_000));
    let column = line.find(" : b").unwrap() + 2;
    let text = format!("{line}\ndescription: d\nsteps: []\n");
    let (code, stderr) = validate_text("long-line.yaml", &text, Duration::from_secs(60));
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains(&format!("long-line.yaml:1:{column}:")),
        "the summary names the exact column: {}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(
        stderr.contains(&format!("long-line.yaml:1:{column}]")),
        "so does the excerpt header: {stderr}"
    );
    assert!(stderr.contains("…aaaa"), "the line is cut: {stderr}");
    assert!(stderr.len() < ONE_PROBLEM_REPORT, "{} bytes", stderr.len());
}

#[test]
fn a_huge_scalar_is_not_echoed_back() {
    // Just under the size limit: read, parsed, and reported briefly, though
    // the parser's message quotes the whole value.
    let text = format!(
        "name: m\ndescription: d\nsteps:\n  - name: a\n    scale: {{deployment: x, replicas: \"{}\"}}\n",
        "x".repeat(1_000_000)
    );
    let (code, stderr) = validate_text("huge-scalar.yaml", &text, Duration::from_secs(60));
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains("huge-scalar.yaml:5:28: invalid value: string"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(stderr.contains("xxx…"), "the scalar is cut: {stderr}");
    assert!(stderr.len() < ONE_PROBLEM_REPORT, "{} bytes", stderr.len());
}

#[test]
fn a_file_above_the_size_limit_is_refused_without_being_parsed() {
    let text = format!("name: {}\n", "x".repeat(2 * 1024 * 1024));
    let (code, stderr) = validate_text("too-big.yaml", &text, Duration::from_secs(30));
    assert_eq!(code, Some(2), "{}", &stderr[..stderr.len().min(2000)]);
    assert!(
        stderr.contains("too-big.yaml is 2097159 bytes long, more than the 1 MiB"),
        "{}",
        &stderr[..stderr.len().min(2000)]
    );
    assert!(stderr.len() < 1024, "{} bytes", stderr.len());
    // A file that never ends is refused at once: it is not a regular file.
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_warroom")).args(["validate", "/dev/zero"]),
        Duration::from_secs(30),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("not a regular file"), "{stderr}");
}

#[test]
fn thousands_of_problems_are_counted_and_the_first_shown() {
    let mut text = String::from("name: m\ndescription: d\nsteps:\n");
    for _ in 0..5_000 {
        text.push_str("  - name: a\n    note: hi\n");
    }
    let (code, stderr) = validate_text("dups.yaml", &text, Duration::from_secs(60));
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("invalid playbook (4999 problems)"),
        "{stderr}"
    );
    let listed = stderr.matches("duplicate step name `a`").count();
    assert_eq!(
        listed,
        2 * warroom::playbook::validate::SHOWN_PROBLEMS,
        "summary and label each"
    );
    assert!(stderr.contains("… and 4979 more"), "{stderr}");
    assert!(
        stderr.len() < 8 * ONE_PROBLEM_REPORT,
        "{} bytes",
        stderr.len()
    );
}

/// Files with tens of thousands of problems, just under the size limit:
/// each used to cost time in proportion to the square of its size (and
/// minutes to report); now a few seconds even in a debug build.
#[test]
fn hostile_playbooks_are_reported_in_time_proportional_to_their_size() {
    let deadline = Duration::from_secs(60);
    // Parameter names that are not identifiers, each looked up in the file.
    let mut misnamed = String::from("name: m\ndescription: d\nparameters:\n");
    for i in 0..40_000 {
        misnamed.push_str(&format!("  {i}x: {{type: string}}\n"));
    }
    misnamed.push_str("steps:\n  - name: a\n    note: hi\n");
    // References to parameters that do not exist, each with the list of
    // declared ones in its message.
    let mut unknown = String::from("name: m\ndescription: d\nparameters:\n");
    for i in 0..10_000 {
        unknown.push_str(&format!("  p{i}: {{type: string, default: a}}\n"));
    }
    unknown.push_str("steps:\n");
    for i in 0..15_000 {
        unknown.push_str(&format!("  - name: s{i}\n    note: ${{x}}\n"));
    }
    for (name, text, problems) in [
        ("misnamed.yaml", misnamed, 40_000),
        ("unknown.yaml", unknown, 15_000),
    ] {
        assert!(text.len() < 1024 * 1024, "{name} is under the limit");
        let (code, stderr) = validate_text(name, &text, deadline);
        assert_eq!(code, Some(2), "{name}");
        assert!(
            stderr.contains(&format!("invalid playbook ({problems} problems)")),
            "{name}: {}",
            &stderr[..stderr.len().min(2000)]
        );
        assert!(
            stderr.len() < 8 * ONE_PROBLEM_REPORT,
            "{name}: {} bytes",
            stderr.len()
        );
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(512))]

    #[test]
    fn the_parser_never_panics_on_arbitrary_text(input in "\\PC{0,400}") {
        let _ = warroom::playbook::parse("fuzz.yaml", &input);
    }

    #[test]
    fn the_parser_never_panics_on_mutated_playbooks(
        cut in 0usize..2000,
        insert in "[ -~\\n\\t{}\\[\\]:$#&*!|>'\"-]{0,12}",
    ) {
        let base = include_str!("../playbooks/lock-contention.yaml");
        let mut at = cut.min(base.len());
        while !base.is_char_boundary(at) {
            at -= 1;
        }
        let mutated = format!("{}{}{}", &base[..at], insert, &base[at..]);
        if let Ok(loaded) = warroom::playbook::parse("fuzz.yaml", &mutated) {
            let _ = loaded.bind(&[], None, "orders");
        }
    }
}
