//! Redis URLs as the operator gives them (`--redis`): checked up front with a
//! message that says how to write one, shown in messages and logs only with
//! the password redacted, and connection failures explained in the
//! operator's terms (which URL, what went wrong, what to check).
//!
//! This module knows nothing of locks, benchmarks or the exporter; they call
//! it wherever a Redis URL or a Redis connection error becomes text.

use crate::redact::redact_text;

/// How a Redis URL is written, for messages.
pub const URL_FORMS: &str = "redis://[<user>:<password>@]<host>[:<port>][/<db>], or rediss://… for TLS \
     (add #insecure for a self-signed certificate in a test environment); a password holding \
     / # ? @ or % must be percent-encoded (%2F %23 %3F %40 %25)";

/// The URL as it may be shown: the password (and any other secret in it)
/// redacted, e.g. `redis://:[REDACTED]@10.0.0.5:6379`.
pub fn shown(url: &str) -> String {
    redact_text(url).into_owned()
}

/// A URL that did not parse, as it may be shown: where its parts cannot be
/// told apart, a password could be anywhere, so only the scheme and what
/// follows the last `@` (the host) are kept: `redis://…@10.0.0.5:6379`.
fn shown_unparsed(url: &str) -> String {
    let scheme_end = url
        .find("://")
        .map(|i| i + 3)
        .or_else(|| url.find(':').map(|i| i + 1))
        .unwrap_or(0);
    let (scheme, rest) = url.split_at(scheme_end);
    let scheme = redact_text(scheme);
    match rest.rfind('@') {
        Some(at) => format!("{scheme}…{}", redact_text(&rest[at..])),
        None if rest.is_empty() => scheme.into_owned(),
        None => format!("{scheme}…"),
    }
}

/// A URL that is not a Redis URL.
#[derive(Debug, thiserror::Error)]
#[error("{url} is not a usable Redis URL ({reason}); write it as {URL_FORMS}")]
pub struct InvalidUrl {
    /// The URL given, with everything that could be a password left out.
    pub url: String,
    /// Why it was refused.
    pub reason: String,
}

/// Parses `url` as the Redis client will, without connecting.
pub fn parse(url: &str) -> Result<redis::Client, InvalidUrl> {
    redis::Client::open(url).map_err(|e| InvalidUrl {
        url: shown_unparsed(url),
        reason: redact_text(&e.to_string()).into_owned(),
    })
}

/// Explains a failure to reach or use Redis at `url`: the URL (redacted),
/// the error, and what to check.
pub fn explain(url: &str, error: &redis::RedisError) -> String {
    let mut text = format!(
        "Redis at {}: {}",
        shown(url),
        redact_text(&error.to_string())
    );
    let hint = hint(url, error);
    if !hint.is_empty() {
        text.push_str("; ");
        text.push_str(hint);
    }
    text
}

/// What to check for a connection error (empty when there is nothing
/// better to say than the error itself).
pub fn hint(url: &str, error: &redis::RedisError) -> &'static str {
    let text = error.to_string().to_ascii_lowercase();
    let tls_url = url
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("rediss://");
    if error.kind() == redis::ErrorKind::AuthenticationFailed
        || text.contains("wrongpass")
        || text.contains("invalid password")
        || text.contains("invalid username-password")
    {
        "Redis refused the user name or password in the URL: check both \
         (redis://<user>:<password>@<host>:<port>, or redis://:<password>@<host>:<port> for the \
         default user)"
    } else if text.contains("noauth") || text.contains("authentication required") {
        "Redis requires a password: put it in the URL (redis://:<password>@<host>:<port>)"
    } else if text.contains("noperm") || text.contains("no permissions") {
        "the Redis user lacks a permission this needs: check its ACL (ACL GETUSER)"
    } else if error.kind() == redis::ErrorKind::InvalidClientConfig {
        "check the URL: write it as redis://[<user>:<password>@]<host>[:<port>][/<db>] or \
         rediss://… for TLS"
    } else if error.is_connection_refusal() {
        "nothing accepts connections there: is Redis running, and are the host and port right?"
    } else if text.contains("lookup") || text.contains("name or service not known") {
        "the host name does not resolve: check the host in the URL"
    } else if tls_url
        && (error.is_timeout()
            || text.contains("timed out")
            || text.contains("tls")
            || text.contains("handshake")
            || text.contains("corrupt message")
            || text.contains("certificate")
            || error.is_connection_dropped())
    {
        "the TLS handshake failed: is that port serving TLS (a plain port needs redis://), and \
         is the certificate trusted (#insecure accepts a self-signed one in a test environment)?"
    } else if error.is_timeout() || text.contains("timed out") {
        "Redis did not answer in time: is the host reachable from here (firewall, network \
         policy), is the server paused or overloaded, and does the port serve TLS (then use \
         rediss://)?"
    } else if error.is_connection_dropped() || text.contains("connection closed") {
        "the connection was closed: Redis went away or restarted, or the port serves TLS \
         (then use rediss://)"
    } else {
        ""
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unparsable_url_is_refused_without_its_password() {
        for (url, shown) in [
            ("redis://u:pa/ss#w0rd@h:6379", "redis://…@h:6379"),
            ("redis://:w0rd", "redis://…"),
            ("notaurl:w0rd", "notaurl:…"),
            ("w0rd", "…"),
        ] {
            let err = parse(url).expect_err("refused");
            let text = err.to_string();
            assert!(!text.contains("w0rd"), "{text}");
            assert!(text.starts_with(&format!("{shown} is not")), "{text}");
            assert!(text.contains("percent-encoded"), "{text}");
        }
    }

    #[test]
    fn advice_shows_placeholders_not_redactions() {
        assert!(!crate::redact::contains_secret(URL_FORMS));
        let refused = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        let hint = hint("redis://:x@h:1", &refused);
        assert!(hint.contains("<password>"), "{hint}");
        assert!(!crate::redact::contains_secret(hint), "{hint}");
    }

    #[test]
    fn urls_are_shown_without_passwords() {
        assert_eq!(
            shown("rediss://:s3cr3t@redis-0:6380"),
            "rediss://:[REDACTED]@redis-0:6380"
        );
        assert_eq!(
            shown("redis://127.0.0.1:6379/0?password=s3cr3t"),
            "redis://127.0.0.1:6379/0?password=[REDACTED]"
        );
    }
}
