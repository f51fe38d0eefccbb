//! Redaction of secrets before anything reaches a screen, a file, a metric or
//! a cluster object: the one redactor every output that can carry a secret
//! goes through (error reports, logs, plan and step lines, `--output json`,
//! run records, the incident journal and its exports, metric labels).
//!
//! What counts as a secret in free text, by class:
//!
//! - **assignments** of a secret-named key, with any spacing, quoting and
//!   separator: `password=x`, `PASSWORD = x`, `"password" : "x y"`,
//!   `db_pass: x`, `{\"token\": \"x\"}`, `api-key => x` (keys: password,
//!   passwd, pwd, pass, passphrase, token, secret, api/access/private/client
//!   key, credentials, authorization, cookie, session; anywhere in an
//!   identifier, so `access_token` and `client-key-data` count);
//! - **environment-style names** ending in `_KEY`, `_SECRET`, `_TOKEN`,
//!   `_PASSWORD`, `_PASS`, … followed by a value, even after a bare space
//!   (`AWS_SECRET_ACCESS_KEY value`);
//! - **command-line flags** that take a secret: `--password x`, `--pass x`,
//!   `--token x`, `--requirepass x`, `--private-key x`, …; `-a x` after
//!   `redis-cli`; `-p` where it means a password (`mysql -px`, `sshpass -p x`,
//!   `docker login -p x`); `-u user:x` after `curl`/`wget`;
//! - **Redis commands** that carry one: `AUTH [user] x`, `HELLO 3 AUTH user
//!   x`, `MIGRATE … AUTH x` / `AUTH2 user x`, `CONFIG SET requirepass x` and
//!   `masterauth x`, `ACL SETUSER name >x`;
//! - **URL userinfo**, whatever characters the password holds
//!   (`redis://:pa/ss#w@host` keeps the user and the host), and a bare
//!   token used as the user name (`https://<token>@github.com`);
//! - **headers**: the whole value of `Authorization:` and `Cookie:` lines,
//!   and `Bearer <token>` / `Basic <credentials>` wherever they appear;
//! - **token shapes**: JSON Web Tokens (Kubernetes service-account tokens),
//!   Kubernetes bootstrap tokens, PEM private key blocks, and well-known
//!   provider prefixes (GitHub, GitLab, Slack, AWS, OpenAI `sk-`, Anthropic
//!   `sk-ant-`, npm, PyPI, Stripe, Google `AIza`, Hugging Face).
//!
//! Fencing tokens are numbers and are kept (`fencing token: 42`). In
//! structured payloads the string values of keys that name a secret
//! (compared without case or separators) and the data of Kubernetes `Secret`
//! objects are replaced as a whole.
//!
//! # How, and what it guarantees
//!
//! Each class is one regular expression ([`regex`], finite automata: no
//! backtracking). A round runs each expression once over the text, collects
//! the byte ranges of the secrets, and replaces them in one splice. Every
//! expression is written so that a search never looks far past the match it
//! reports (a value runs to its end, then the automaton dies), which keeps
//! iterating over many matches linear. A redacted value can join its
//! neighbours into a new match (a quoted value with spaces becomes one
//! word), so rounds repeat until one finds nothing: usually one or two,
//! never more than a small fixed number, so the work stays linear in the
//! input. Ranges come from `&str` matches, so any UTF-8 input is cut only
//! at character boundaries. A value that is already [`REDACTED`] is left
//! alone, so redacting twice changes nothing, and [`contains_secret`] is
//! true exactly when [`redact_text`] changes its input.
//!
//! It errs towards redacting too much: a redacted note is an inconvenience,
//! a leaked token in a postmortem is an incident of its own.

use std::borrow::Cow;
use std::ops::Range;
use std::sync::LazyLock;

use regex::Regex;
use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Parameter and field names whose values are secrets, written with `_`
/// between words. Field names of structured payloads are compared with
/// separators dropped; in text, see [`KEY_WORDS`].
const SECRET_KEYS: [&str; 14] = [
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "token",
    "secret",
    "api_key",
    "access_key",
    "private_key",
    "client_key",
    "credentials",
    "authorization",
    "cookie",
    "session",
];

/// The secret-naming words as they are looked for in text (ASCII, any case):
/// anywhere in an identifier, with `_`, `-` or nothing between words.
const KEY_WORDS: &str = r"password|passwd|passphrase|pwd|token|secret|api[_-]?key|access[_-]?key|private[_-]?key|client[_-]?key|credentials?|authorization|cookie|session";

/// `pass` as the last word of an identifier (`pass`, `DB_PASS`,
/// `redis-pass`), not inside a word (`bypass`, `compass`, `passes`).
const PASS_WORD: &str = r"(?-u:\b)(?:[a-z0-9]+[_-])*pass";

/// A separator between a key and its value: `=`, `:`, `:=`, `=>`, `==`,
/// with spaces or tabs around.
const SEP: &str = r"[ \t]*(?:=>|:=|==?|:)[ \t]*";

/// The characters that end an unquoted value.
const VALUE_END: &str = r#"\s&;,"'\\<>`"#;

/// A value after a separator: double- or single-quoted (to the closing
/// quote, spaces and all; a quote escaped as in JSON inside a note counts),
/// or unquoted (to the next space or delimiter). Each form is its own
/// secret group, named from `name`.
fn value(name: &str) -> String {
    format!(
        r#"(?:\\?"(?P<{name}_dq>[^"\\\r\n]*)|\\?'(?P<{name}_sq>[^'\\\r\n]*)|(?P<{name}>[^{VALUE_END}]+))"#
    )
}

/// One class of secret: an expression whose named groups are the secrets
/// (every named group except `scope`), or, for a class that only applies
/// within a command line, the `scope` group searched again with `inner`.
struct Class {
    regex: Regex,
    inner: Option<Regex>,
    /// Extra condition on a secret group (its name and text): bootstrap
    /// tokens need a digit, JSON Web Tokens a minimum length, a fencing
    /// token is kept when it is a number.
    accept: fn(&str, &str) -> bool,
}

impl Class {
    fn new(pattern: &str) -> Self {
        Self {
            regex: Regex::new(pattern).expect("the redaction patterns compile"),
            inner: None,
            accept: |_, _| true,
        }
    }

    /// A class that applies inside the rest of a command line (up to a
    /// newline, pipe, `;` or `&`) after `command`.
    fn within_command(command: &str, inner: &str) -> Self {
        Self {
            regex: Regex::new(&format!(r"{command}(?P<scope>[^\n|;&]*)"))
                .expect("the redaction patterns compile"),
            inner: Some(Regex::new(inner).expect("the redaction patterns compile")),
            accept: |_, _| true,
        }
    }

    fn accepting(mut self, accept: fn(&str, &str) -> bool) -> Self {
        self.accept = accept;
        self
    }

    /// Pushes the byte ranges of the secrets in `text`.
    fn find(&self, text: &str, ranges: &mut Vec<Range<usize>>) {
        for caps in self.regex.captures_iter(text) {
            match (&self.inner, caps.name("scope")) {
                (Some(inner), Some(scope)) => {
                    for inner_caps in inner.captures_iter(scope.as_str()) {
                        self.push_groups(&inner_caps, inner, scope.start(), ranges);
                    }
                }
                _ => self.push_groups(&caps, &self.regex, 0, ranges),
            }
        }
    }

    fn push_groups(
        &self,
        caps: &regex::Captures<'_>,
        regex: &Regex,
        offset: usize,
        ranges: &mut Vec<Range<usize>>,
    ) {
        for name in regex.capture_names().flatten() {
            if name == "scope" {
                continue;
            }
            if let Some(m) = caps.name(name) {
                let secret = m.as_str();
                if !secret.is_empty() && secret != REDACTED && (self.accept)(name, secret) {
                    ranges.push(offset + m.start()..offset + m.end());
                }
            }
        }
    }
}

/// Every class, compiled once.
static CLASSES: LazyLock<Vec<Class>> = LazyLock::new(|| {
    let any_value = value("s");
    vec![
        // PEM private keys: everything between the markers, or to the end
        // of the text when the end marker is missing.
        Class::new(r"-----BEGIN [^\n-]*PRIVATE KEY[^\n-]*-----(?P<s>(?s:.*?))(?:-----END |\z)"),
        // The whole value of an `Authorization:` / `Cookie:` header (also
        // `Proxy-Authorization`, `Set-Cookie`, and JSON-ish `"Cookie": "…"`).
        Class::new(r#"(?i-u:authorization|cookie)["' \t]*[:=][ \t"']*(?P<s>[^\n\r"'\\]+)"#),
        // `Bearer <token>`, `Basic <credentials>` (eight characters at least:
        // "basic checks" is prose).
        Class::new(
            r"(?i-u:\bbearer)[ \t]+(?P<s>[A-Za-z0-9._~+/=-]+)|(?i-u:\bbasic)[ \t]+(?P<b>[A-Za-z0-9._~+/=-]{8,})",
        ),
        // URL userinfo: `scheme://user:password@host`, the password running
        // to the last `@` before the host (so it may hold `/`, `#`, `?`,
        // `:`); or a long bare token as the user (`https://<token>@host`).
        // Whatever follows the `@`: a host may be empty or a socket
        // directory (`postgres://u:pw@/db?host=/run`, `…@%2Frun/db`).
        Class::new(
            r#"://(?:[^\s:/@"'<>`]*:(?P<s>[^\s"'<>`]*)|(?P<t>[A-Za-z0-9_.~+-]{16,}))@"#,
        ),
        // Assignments of secret-named keys. Fencing tokens first, so that
        // `fencing token: 42` is matched as a whole, and kept when the
        // value is a number.
        Class::new(&format!(
            r#"(?i-u:fencing[ _-]?token[a-z0-9_-]*)["'\\]*(?:{SEP})?\\?["']?(?P<fencing>[0-9][^{VALUE_END}]*)|(?:(?i-u:(?:{KEY_WORDS})[a-z0-9_-]*)|(?i-u:{PASS_WORD}))["'\\]*{SEP}{any_value}"#
        ))
        .accepting(|group, value| group != "fencing" || !value.bytes().all(|b| b.is_ascii_digit())),
        // Redis configuration that carries a password, also after a bare
        // space (`CONFIG SET requirepass x`, redis.conf `masterauth x`).
        Class::new(&format!(
            r#"(?i-u:\b(?:requirepass|masterauth))(?:{SEP}|[ \t]+){any_value}"#
        )),
        // Command-line flags that take a secret: `--token x`, `--pass x`,
        // `--kube-token=x`, `--requirepass x`.
        Class::new(&format!(
            r#"--(?:[A-Za-z0-9]+[_-])*(?:(?i-u:(?:{KEY_WORDS}|requirepass|masterauth)[a-z0-9_-]*)|(?i-u:pass))(?:[ \t]*=[ \t]*|[ \t]+){any_value}"#
        )),
        // Environment-style names: `AWS_SECRET_ACCESS_KEY value`,
        // `export GITHUB_TOKEN=x`, `REDIS_PASS: x`.
        Class::new(&format!(
            r#"(?-u:\b)[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)*_(?:KEY|SECRET|TOKEN|PASSWORD|PASSWD|PASS|PWD|CREDENTIALS|AUTH)(?-u:\b)(?:{SEP}|[ \t]+){any_value}"#
        )),
        // Redis `AUTH [user] password` (also inside `HELLO … AUTH` and
        // `MIGRATE … AUTH`): upper case anywhere, any case at the start of
        // a line or after a redis-cli prompt. Both arguments are hidden
        // when there are two: which one is the password cannot be told.
        Class::new(&format!(
            r#"(?:(?-u:\b)AUTH|(?m:^)[ \t]*(?i-u:auth)|>[ \t]*(?i-u:auth))[ \t]+{}(?:[ \t]+{})?"#,
            value("a"),
            value("b")
        )),
        // `MIGRATE … AUTH2 user password`.
        Class::new(&format!(
            r#"(?-u:\b)AUTH2[ \t]+[^\s]+[ \t]+{any_value}"#
        )),
        // `ACL SETUSER name on >password <password`.
        Class::within_command(
            r"(?i-u:\bACL[ \t]+SETUSER\b)",
            r"(?:^|[ \t])[<>](?P<s>[^\s]+)",
        ),
        // `redis-cli -a password` (and the benchmark, Valkey, KeyDB).
        Class::within_command(
            r"(?i-u:\b(?:redis|valkey|keydb)-(?:cli|benchmark)\b)",
            &format!(r"(?:^|[ \t])-a[ \t]+{any_value}"),
        ),
        // `mysql -psecret` (attached: `-p` alone prompts).
        Class::within_command(
            r"(?i-u:\b(?:mysql|mysqldump|mysqladmin|mariadb|mariadb-dump)\b)",
            r#"(?:^|[ \t])-p(?P<s>[^\s"'`]+)"#,
        ),
        // `sshpass -p secret`, `docker login -p secret` and the like.
        Class::within_command(
            r"(?i-u:\bsshpass\b|\b(?:docker|podman|buildah|skopeo|nerdctl|oras|helm[ \t]+registry)[ \t]+login\b)",
            &format!(r"(?:^|[ \t])-p[ \t]*{any_value}"),
        ),
        // `curl -u user:secret`, `wget --user user:secret`.
        Class::within_command(
            r"(?i-u:\b(?:curl|wget|http|https)\b)",
            r#"(?:^|[ \t])(?:-u|--user)(?:[ \t]*=[ \t]*|[ \t]*)["']?[^\s:"']*:(?P<s>[^\s"']+)"#,
        ),
        // Well-known token prefixes.
        Class::new(concat!(
            r"(?:^|[^A-Za-z0-9])(?P<s>",
            r"(?:ghp_|gho_|ghs_|ghu_|ghr_|github_pat_|glpat-|gl(?:dt|rt|ptt|soat|cbt|imt|ft)-",
            r"|xox[abeprs]-|xapp-|sk_live_|rk_live_|sk_test_|rk_test_|whsec_|AKIA|ASIA)[A-Za-z0-9_-]{12,}",
            r"|sk-[A-Za-z0-9_-]{20,}|npm_[A-Za-z0-9]{30,}|pypi-[A-Za-z0-9_-]{40,}",
            r"|AIza[A-Za-z0-9_-]{30,}|hf_[A-Za-z0-9]{30,})",
        )),
        // JSON Web Tokens: `eyJ…` header, payload and signature.
        Class::new(r"(?P<s>eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.[A-Za-z0-9_.-]*)")
            .accepting(|_, jwt| jwt.len() >= 20),
        // Kubernetes bootstrap tokens: `[a-z0-9]{6}.[a-z0-9]{16}`, the
        // secret half holding a digit.
        Class::new(r"(?-u:\b)(?P<s>[a-z0-9]{6}\.[a-z0-9]{16})(?-u:\b)")
            .accepting(|_, token| token[7..].bytes().any(|b| b.is_ascii_digit())),
    ]
});

/// Redacts secrets in free text. Returns the input unchanged (borrowed) when
/// there is nothing to redact.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    let mut out = Cow::Borrowed(text);
    // A redacted value can join what was around it into a new match (a
    // quoted value with spaces becomes one word), so go on until a round
    // finds nothing: the result holds no secret of any class, and
    // redacting it again changes nothing. Each round is linear and a
    // round that changes the text turns a secret into `[REDACTED]`, so
    // the rounds are few; they are capped all the same.
    for _ in 0..MAX_ROUNDS {
        match redact_round(&out) {
            Some(changed) => out = Cow::Owned(changed),
            None => break,
        }
    }
    out
}

/// Most rounds [`redact_text`] runs over a text.
const MAX_ROUNDS: usize = 8;

/// One round: every class once over `text`; `None` when nothing changes.
fn redact_round(text: &str) -> Option<String> {
    let mut ranges = Vec::new();
    for class in CLASSES.iter() {
        class.find(text, &mut ranges);
    }
    splice(text, ranges).filter(|changed| changed != text)
}

/// True when `text` holds something [`redact_text`] would hide: a value that
/// must never be shown, stored or written to a cluster in clear. Exactly
/// when `redact_text(text)` differs from `text`.
pub fn contains_secret(text: &str) -> bool {
    matches!(redact_text(text), Cow::Owned(_))
}

/// Redacts secrets in a structured payload, in place.
pub fn redact_value(value: &mut Value) {
    redact_value_in(value, false);
}

/// Redacts every string leaf (the payload is known to be secret material,
/// e.g. the data of a Kubernetes `Secret`).
pub fn redact_all_strings(value: &mut Value) {
    redact_value_in(value, true);
}

fn redact_value_in(value: &mut Value, all: bool) {
    match value {
        Value::String(s) => {
            if all {
                if !s.is_empty() {
                    *s = REDACTED.to_string();
                }
            } else if let Cow::Owned(changed) = redact_text(s) {
                *s = changed;
            }
        }
        Value::Array(items) => {
            for item in items {
                redact_value_in(item, all);
            }
        }
        Value::Object(map) => {
            let is_secret_object = map.get("kind").and_then(Value::as_str) == Some("Secret");
            for (key, item) in map.iter_mut() {
                let secret_data = is_secret_object && (key == "data" || key == "stringData");
                if secret_data {
                    redact_value_in(item, true);
                } else if is_secret_key(key) {
                    // Strings (and strings inside) under a secret-named key.
                    redact_value_in(item, true);
                } else {
                    redact_value_in(item, all);
                }
            }
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

/// Whether a field name names a secret (`password`, `db_password`,
/// `authToken`, `REDIS_PASS`, …). Fencing tokens are not secrets.
fn is_secret_key(key: &str) -> bool {
    let words = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let squeezed = words(key);
    if squeezed.contains("fenc") {
        return false;
    }
    if SECRET_KEYS.iter().any(|k| squeezed.contains(&words(k))) {
        return true;
    }
    // `pass` as the last word (`DB_PASS`, `redis-pass`), not `bypass`.
    let lower = key.to_ascii_lowercase();
    lower == "pass" || lower.ends_with("_pass") || lower.ends_with("-pass")
}

/// Replaces byte ranges (merged where they overlap or touch) with
/// [`REDACTED`]. `None` when there is no range.
fn splice(text: &str, mut ranges: Vec<Range<usize>>) -> Option<String> {
    ranges.retain(|r| r.start < r.end);
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable_by_key(|r| (r.start, r.end));
    let mut merged: Vec<Range<usize>> = Vec::with_capacity(ranges.len());
    for range in ranges {
        match merged.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => merged.push(range),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for range in merged {
        // Ranges come from matches on `text`, so they sit on character
        // boundaries; never slice anywhere else.
        if !text.is_char_boundary(range.start) || !text.is_char_boundary(range.end) {
            continue;
        }
        out.push_str(&text[pos..range.start]);
        out.push_str(REDACTED);
        pos = range.end;
    }
    out.push_str(&text[pos..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> String {
        redact_text(s).into_owned()
    }

    #[test]
    fn url_passwords_keep_user_and_host() {
        assert_eq!(
            r("redis://:s3cr3t@10.0.0.5:6379/0"),
            "redis://:[REDACTED]@10.0.0.5:6379/0"
        );
        assert_eq!(
            r("DSN postgres://orders:hunter2@db.internal/orders ok"),
            "DSN postgres://orders:[REDACTED]@db.internal/orders ok"
        );
        assert_eq!(r("redis://host:6379"), "redis://host:6379");
        assert_eq!(
            r("redis://u:pa/ss#wo?rd@h:6379"),
            "redis://u:[REDACTED]@h:6379"
        );
        assert_eq!(
            r("git remote https://ghx0123456789abcdefXYZ@github.com/o/r"),
            "git remote https://[REDACTED]@github.com/o/r"
        );
        assert_eq!(r("mail ops@example.com"), "mail ops@example.com");
        for (url, shown) in [
            (
                "postgres://pg:Pw0rdX@/db?host=/run",
                "postgres://pg:[REDACTED]@/db?host=/run",
            ),
            (
                "postgres://pg:Pw0rdX@%2Ftmp/hp1",
                "postgres://pg:[REDACTED]@%2Ftmp/hp1",
            ),
            (
                "postgres://pg:Pw0rdX@-h/db",
                "postgres://pg:[REDACTED]@-h/db",
            ),
            (
                "postgres://pg:Pw0rdX@_h/db",
                "postgres://pg:[REDACTED]@_h/db",
            ),
            ("'redis://:Pw0rdX@'", "'redis://:[REDACTED]@'"),
        ] {
            assert_eq!(r(url), shown, "{url}");
        }
    }

    #[test]
    fn headers_and_bearer_tokens() {
        assert_eq!(
            r("curl -H 'Authorization: Bearer abc.def.ghi' x"),
            "curl -H 'Authorization: [REDACTED]' x"
        );
        assert_eq!(
            r("sent bearer AbCdEf123456 to api"),
            "sent bearer [REDACTED] to api"
        );
        assert_eq!(r("basic checks passed"), "basic checks passed");
    }

    #[test]
    fn parameters_and_fields() {
        assert_eq!(
            r("?user=a&password=pw1&x=1"),
            "?user=a&password=[REDACTED]&x=1"
        );
        assert_eq!(r("access_token=zzz"), "access_token=[REDACTED]");
        assert_eq!(
            r("kubectl --token abcdef get pods"),
            "kubectl --token [REDACTED] get pods"
        );
        assert_eq!(r("db password: hunter2"), "db password: [REDACTED]");
        assert_eq!(
            r("fencing token: 42 rejected"),
            "fencing token: 42 rejected"
        );
        assert_eq!(r("fencing_token=42"), "fencing_token=42");
        assert_eq!(r("fencing token: 42abc"), "fencing token: [REDACTED]");
        assert_eq!(r("PASSWORD = x"), "PASSWORD = [REDACTED]");
        assert_eq!(r(r#""password" : "x y""#), r#""password" : "[REDACTED]""#);
        assert_eq!(r("DB_PASS: x"), "DB_PASS: [REDACTED]");
        assert_eq!(r("bypass: yes, 3 passes: 2"), "bypass: yes, 3 passes: 2");
        assert_eq!(r("api-key => k1"), "api-key => [REDACTED]");
    }

    #[test]
    fn flags_commands_and_environment_names() {
        assert_eq!(
            r("redis-cli -h h -a pw1 ping"),
            "redis-cli -h h -a [REDACTED] ping"
        );
        assert_eq!(r("ls -a dir"), "ls -a dir");
        assert_eq!(r("redis-cli --pass pw1"), "redis-cli --pass [REDACTED]");
        assert_eq!(r("AUTH pw1"), "AUTH [REDACTED]");
        assert_eq!(r("AUTH default pw1"), "AUTH [REDACTED] [REDACTED]");
        assert_eq!(
            r("127.0.0.1:6379> auth pw1"),
            "127.0.0.1:6379> auth [REDACTED]"
        );
        assert_eq!(
            r("HELLO 3 AUTH default pw1 SETNAME x"),
            "HELLO 3 AUTH [REDACTED] [REDACTED] SETNAME x"
        );
        assert_eq!(
            r("MIGRATE h 6379 k 0 5000 AUTH2 admin pw1 KEYS a"),
            "MIGRATE h 6379 k 0 5000 AUTH2 admin [REDACTED] KEYS a"
        );
        assert_eq!(
            r("CONFIG SET requirepass pw1"),
            "CONFIG SET requirepass [REDACTED]"
        );
        assert_eq!(
            r("config set masterauth \"p w\""),
            "config set masterauth \"[REDACTED]\""
        );
        assert_eq!(
            r("ACL SETUSER reader on >pw1 ~* +@read"),
            "ACL SETUSER reader on >[REDACTED] ~* +@read"
        );
        assert_eq!(
            r("AWS_SECRET_ACCESS_KEY wJalrXUtnFEMI"),
            "AWS_SECRET_ACCESS_KEY [REDACTED]"
        );
        assert_eq!(r("mysql -u root -ppw1 db"), "mysql -u root -p[REDACTED] db");
        assert_eq!(r("sshpass -p pw1 ssh h"), "sshpass -p [REDACTED] ssh h");
        assert_eq!(
            r("docker login -u me -p pw1 reg"),
            "docker login -u me -p [REDACTED] reg"
        );
        assert_eq!(
            r("curl -u admin:pw1 https://h/"),
            "curl -u admin:[REDACTED] https://h/"
        );
        assert_eq!(
            r("ERR AUTH <password> called without any password configured"),
            "ERR AUTH <password> called without any password configured"
        );
        assert_eq!(
            r("NOAUTH Authentication required."),
            "NOAUTH Authentication required."
        );
    }

    #[test]
    fn provider_tokens() {
        for token in [
            "sk-proj-AbCdEf0123456789XyZ0123",
            "sk-ant-api03-AbCdEf0123456789XyZ",
            "npm_AbCdEf0123456789AbCdEf0123456789AbCd",
            "pypi-AgEIcHlwaS5vcmcCJGFiY2RlZjAxLTIzNDUtNjc4OS1hYmNk",
            "sk_live_51HxBogusKey0000",
            "rk_live_51HxBogusKey0000",
            "AIzaSyA-0123456789abcdefghijklmnopqrs",
            "xoxb-1234567890-abcdefghij",
            "glpat-AbCdEf0123456789",
        ] {
            assert_eq!(
                r(&format!("key {token} leaked")),
                "key [REDACTED] leaked",
                "{token}"
            );
        }
        assert_eq!(
            r("risk-assessment-for-q3-2026"),
            "risk-assessment-for-q3-2026"
        );
        assert_eq!(r("npm_config_registry"), "npm_config_registry");
    }

    #[test]
    fn jwts_and_bootstrap_tokens() {
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";
        assert_eq!(r(&format!("token {jwt} end")), "token [REDACTED] end");
        assert_eq!(
            r("join with abcdef.0123456789abcdef"),
            "join with [REDACTED]"
        );
        assert_eq!(
            r("abcdef.0123456789abcdef abcdef.0123456789abcdef"),
            "[REDACTED] [REDACTED]"
        );
    }

    #[test]
    fn multi_byte_characters_before_a_secret_keyword() {
        assert_eq!(
            r("rotated the secret\u{2014}token was in the logs"),
            "rotated the secret\u{2014}token was in the logs"
        );
        assert_eq!(r("é--token abc"), "é--token [REDACTED]");
        assert_eq!(r("\u{2014}token=abc"), "\u{2014}token=[REDACTED]");
        assert_eq!(r("日本password: 秘密"), "日本password: [REDACTED]");
    }

    #[test]
    fn a_megabyte_with_many_hits_is_redacted_throughout() {
        let chunk = "pwd=s3cr3t fencing token 7 token=abc; Authorization: x\n";
        let hits_per_chunk = 3;
        let text = chunk.repeat(1_000_000 / chunk.len());
        let out = r(&text);
        assert_eq!(
            out.matches(REDACTED).count(),
            hits_per_chunk * (1_000_000 / chunk.len())
        );
        assert!(!out.contains("s3cr3t") && !out.contains("abc"));
        assert_eq!(
            out.matches("fencing token 7").count(),
            1_000_000 / chunk.len()
        );
        // One key repeated without a value end: one value, redacted once.
        let run = "token=".repeat(200_000);
        assert_eq!(r(&run), format!("token={REDACTED}"));
        let headers = "authorization:".repeat(100_000);
        assert_eq!(r(&headers), format!("authorization:{REDACTED}"));
    }

    #[test]
    fn keys_headers_pem_blocks_and_quoted_values() {
        assert_eq!(
            r("client-key-data: LS0tLS1CRUdJTg=="),
            "client-key-data: [REDACTED]"
        );
        assert_eq!(r("--private-key pk1234"), "--private-key [REDACTED]");
        assert_eq!(r("passphrase=abc"), "passphrase=[REDACTED]");
        assert_eq!(r("Access-Key: abc"), "Access-Key: [REDACTED]");
        assert_eq!(
            r("Cookie: session=abc; theme=dark\nnext"),
            "Cookie: [REDACTED]\nnext"
        );
        assert_eq!(r("session=abc"), "session=[REDACTED]");
        assert_eq!(
            r(r#"password: "correct horse battery staple" ok"#),
            r#"password: "[REDACTED]" ok"#
        );
        assert_eq!(
            r(r#"{"password": "a b", "user": "bob"}"#),
            r#"{"password": "[REDACTED]", "user": "bob"}"#
        );
        assert_eq!(r("password='it is' x"), "password='[REDACTED]' x");
        assert_eq!(
            r(r#"{\"password\": \"a b\", \"user\": \"bob\"}"#),
            r#"{\"password\": \"[REDACTED]\", \"user\": \"bob\"}"#
        );
        assert_eq!(
            r(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\nNzaC1r\n-----END OPENSSH PRIVATE KEY-----"
            ),
            "-----BEGIN OPENSSH PRIVATE KEY-----[REDACTED]-----END OPENSSH PRIVATE KEY-----"
        );
        assert_eq!(
            r("-----BEGIN PRIVATE KEY-----\nMIIE cut"),
            "-----BEGIN PRIVATE KEY-----[REDACTED]"
        );
        let cert = "-----BEGIN CERTIFICATE-----\nMIIC\n-----END CERTIFICATE-----";
        assert_eq!(r(cert), cert);
    }

    #[test]
    fn secret_field_names_ignore_case_and_separators() {
        let mut v = serde_json::json!({"data": {
            "PRIVATE-KEY": "k1",
            "passphrase": "p1",
            "tls.Private_Key": "k2",
            "Client-Key-Data": "k3",
            "REDIS_PASS": "k4",
            "LOCK_MODE": "watch",
            "fencing-token": "17",
            "bypass": "on",
        }});
        redact_value(&mut v);
        for key in [
            "PRIVATE-KEY",
            "passphrase",
            "tls.Private_Key",
            "Client-Key-Data",
            "REDIS_PASS",
        ] {
            assert_eq!(v["data"][key], REDACTED, "{key}");
        }
        assert_eq!(v["data"]["LOCK_MODE"], "watch");
        assert_eq!(v["data"]["fencing-token"], "17");
        assert_eq!(v["data"]["bypass"], "on");
    }

    #[test]
    fn structured_payloads() {
        let mut v = serde_json::json!({
            "kind": "Secret",
            "data": {"redis-password": "c2VjcmV0"},
            "metadata": {"name": "redis"},
            "fencing_token": 17,
            "env": [{"name": "X", "value": "redis://:pw@h"}],
            "dbPassword": "plain",
        });
        redact_value(&mut v);
        assert_eq!(v["data"]["redis-password"], REDACTED);
        assert_eq!(v["metadata"]["name"], "redis");
        assert_eq!(v["fencing_token"], 17);
        assert_eq!(v["env"][0]["value"], "redis://:[REDACTED]@h");
        assert_eq!(v["dbPassword"], REDACTED);
    }

    #[test]
    fn contains_secret_agrees_with_redaction() {
        for text in [
            "password=[REDACTED]",
            "redis://:[REDACTED]@h",
            "Authorization: [REDACTED]",
            "nothing here",
            "token=x",
        ] {
            assert_eq!(contains_secret(text), r(text) != text, "{text}");
        }
    }
}
