//! A real terminal for end-to-end tests: one tmux server of the test's own
//! (its own socket, killed on drop) with one window running a bare bash.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// One tmux server with a session `war`.
pub struct Tmux {
    socket: String,
}

impl Tmux {
    /// Starts a `width`×`height` session in `dir` running bash with an
    /// empty environment (PATH, TERM, HOME only).
    pub fn start(dir: &Path, width: u16, height: u16) -> Tmux {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let tmux = Tmux {
            socket: format!("warroom-test-{}-{nanos}", std::process::id()),
        };
        let (width, height) = (width.to_string(), height.to_string());
        tmux.run(&[
            "new-session",
            "-d",
            "-s",
            "war",
            "-x",
            &width,
            "-y",
            &height,
            "-c",
            dir.to_str().unwrap(),
            "env -i PATH=/usr/bin:/bin TERM=xterm-256color HOME=/tmp PS1='$ ' bash --norc --noprofile",
        ]);
        tmux
    }

    /// Runs a tmux command against this server; its standard output.
    pub fn run(&self, args: &[&str]) -> String {
        let out = super::output_within(
            Command::new("tmux").arg("-L").arg(&self.socket).args(args),
            Duration::from_secs(10),
        );
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The visible screen, as text.
    pub fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-t", "war"])
    }

    /// Sends keys by tmux name (`Enter`, `C-c`, `q`).
    pub fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "war"];
        args.extend_from_slice(keys);
        self.run(&args);
    }

    /// Types `text` literally.
    pub fn type_text(&self, text: &str) {
        self.run(&["send-keys", "-t", "war", "-l", text]);
    }

    /// Pastes `text` the way a terminal does (bracketed when the program
    /// asked for it).
    pub fn paste(&self, text: &str) {
        self.run(&["set-buffer", "-b", "pasted", "--", text]);
        self.run(&["paste-buffer", "-p", "-b", "pasted", "-t", "war"]);
    }

    /// Waits until the screen shows every one of `texts`; returns it.
    pub fn wait_for(&self, texts: &[&str], what: &str) -> String {
        let mut last = String::new();
        let found = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::wait_until(what, Duration::from_secs(30), || {
                last = self.screen();
                texts.iter().all(|t| last.contains(t)).then(|| last.clone())
            })
        }));
        match found {
            Ok(screen) => screen,
            Err(_) => panic!("timed out waiting for {what}; the screen was:\n{last}"),
        }
    }

    /// The process running in the pane under its shell.
    pub fn foreground_pid(&self) -> i32 {
        let shell: i32 = self
            .run(&["display-message", "-p", "-t", "war", "#{pane_pid}"])
            .trim()
            .parse()
            .unwrap();
        super::wait_until("the pane's process", Duration::from_secs(10), || {
            let children =
                std::fs::read_to_string(format!("/proc/{shell}/task/{shell}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .arg("kill-server")
            .status();
    }
}
