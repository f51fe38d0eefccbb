//! Shell completions and man pages, as a shell and `man` would use them.

use std::process::Command;

fn warroom(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_warroom"))
        .args(args)
        .output()
        .expect("warroom runs")
}

/// Asks bash's completion function what it offers after `words`.
fn bash_completes(words: &str) -> String {
    let script = format!(
        "source <('{bin}' completions bash)\n\
         COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); COMP_LINE='{words}'\n\
         _warroom warroom \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"\n\
         echo \"${{COMPREPLY[@]}}\"",
        bin = env!("CARGO_BIN_EXE_warroom"),
    );
    let out = Command::new("bash")
        .args(["-c", &script])
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn bash_completes_commands_and_their_flags() {
    let commands = bash_completes("warroom ti");
    assert_eq!(commands, "timeline");
    let flags = bash_completes("warroom run --dry");
    assert_eq!(flags, "--dry-run");
}

#[test]
fn zsh_and_fish_scripts_name_every_command() {
    for shell in ["zsh", "fish"] {
        let out = warroom(&["completions", shell]);
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        for command in ["run", "undo", "validate", "timeline", "exporter", "bench"] {
            assert!(script.contains(command), "{shell} script lacks {command}");
        }
    }
    let bad = warroom(&["completions", "powershell-9"]);
    assert_eq!(bad.status.code(), Some(2));
}

#[test]
fn man_page_documents_every_command_and_writes_one_page_each() {
    let out = warroom(&["man"]);
    assert!(out.status.success());
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(page.contains(".TH warroom 1"), "not a man page: {page}");
    for command in ["run", "undo", "validate", "timeline", "exporter", "cluster"] {
        assert!(page.contains(command), "man page lacks {command}");
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = warroom(&["man", "--dir", dir.path().to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in ["warroom.1", "warroom-run.1", "warroom-timeline-export.1"] {
        assert!(dir.path().join(page).is_file(), "{page} not written");
    }
    let missing = warroom(&["man", "--dir", "/nonexistent/warroom-man"]);
    assert_eq!(missing.status.code(), Some(2));
}
