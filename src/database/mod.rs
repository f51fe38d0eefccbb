//! PM-003's tables in PostgreSQL: the versioned schema ([`migrate`]) the
//! drill's PostgreSQL order store and `warroom reconcile --database` use.
//!
//! The schema is in `migrations/` at the repository's root, one file per
//! version, embedded in the binary. It is applied only when asked: the drill
//! applies it to the database it is given (and says so), `warroom reconcile`
//! with `--migrate`; anything else that finds the schema missing or behind
//! stops with the command that applies it.

pub mod migrate;

use crate::redact::redact_text;

/// A PostgreSQL URL as it may be shown: the password of its userinfo (to the
/// last `@`, whatever follows it: an empty host, a socket directory) and
/// every other secret (`?password=…`) redacted by the one redactor.
pub fn shown_url(url: &str) -> String {
    redact_text(url).into_owned()
}

#[cfg(test)]
mod tests {
    use super::shown_url;

    #[test]
    fn the_password_is_hidden_whatever_the_host() {
        for url in [
            "postgres://u:Pw0rdX@/db?host=/tmp",
            "postgres://u:Pw0rdX@%2Ftmp/db",
            "postgres://u:Pw0rdX@-bad/db",
            "postgres://u:Pw0rdX@_h/db",
            "postgres://u:Pw0rdX@.h/db",
            "postgres://u:P@w:0/rdPw0rdX@127.0.0.1/db",
            "postgres://u:Pw0rdX?x@127.0.0.1/db",
            "postgresql://:Pw0rdX@h/db",
            "postgres://u@h/db?password=Pw0rdX",
        ] {
            let shown = shown_url(url);
            assert!(!shown.contains("Pw0rdX"), "{url} shown as {shown}");
            assert!(shown.contains("[REDACTED]"), "{url} shown as {shown}");
        }
        assert_eq!(
            shown_url("postgres://u@h:5432/db"),
            "postgres://u@h:5432/db"
        );
        assert_eq!(
            shown_url("postgres://u:p@h:5432/db"),
            "postgres://u:[REDACTED]@h:5432/db"
        );
    }
}
