//! The names the Kubernetes API server accepts, checked before a value can
//! become part of a request: object names and namespaces (RFC 1123, as the
//! API server validates them), ConfigMap keys, annotation and label keys
//! (qualified names) and label values, apiVersions and kinds, and the rule
//! for a request path segment.
//!
//! Every check returns the rule in words, for a message that says what to
//! type instead. This module knows nothing about playbooks or HTTP.

/// The longest DNS-1123 label (namespaces, label-key names).
pub const LABEL_MAX: usize = 63;
/// The longest DNS-1123 subdomain (most object names) and ConfigMap key.
pub const SUBDOMAIN_MAX: usize = 253;

const LABEL_RULE: &str = "a lowercase RFC 1123 label: at most 63 lower-case letters, digits or \
     '-', starting and ending with a letter or digit (e.g. 'orders')";
const SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain: at most 253 characters, lower-case \
     letters, digits, '-' or '.', starting and ending with a letter or digit (e.g. \
     'order-service')";
const CONFIG_KEY_RULE: &str = "a ConfigMap key: 1 to 253 letters, digits, '-', '_' or '.', and \
     not '.' or '..' (e.g. 'LOCK_MODE')";
const QUALIFIED_RULE: &str = "a qualified name: an optional DNS subdomain prefix and '/', then at \
     most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit (e.g. \
     'nginx.ingress.kubernetes.io/limit-rps')";
const LABEL_VALUE_RULE: &str = "a label value: empty, or at most 63 letters, digits, '-', '_' or \
     '.', starting and ending with a letter or digit";

fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= SUBDOMAIN_MAX && s.split('.').all(is_label)
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
fn is_qualified_part(s: &str) -> bool {
    let edge = |b: u8| b.is_ascii_alphanumeric();
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && s.bytes().next().is_some_and(edge)
        && s.bytes().last().is_some_and(edge)
}

/// The value as it is safe to show in a message: quoted, with control and
/// other invisible characters escaped, and cut when very long.
pub fn shown(value: &str) -> String {
    const MAX: usize = 80;
    let mut cut: String = value.chars().take(MAX).collect();
    if cut.len() < value.len() {
        cut.push('…');
    }
    format!("{cut:?}")
}

fn check(ok: bool, what: &str, value: &str, rule: &str) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(format!("{what} {} is not {rule}", shown(value)))
    }
}

/// A namespace (or a Namespace's name): an RFC 1123 label.
pub fn namespace(value: &str) -> Result<(), String> {
    check(is_label(value), "namespace", value, LABEL_RULE)
}

/// The name of an object of `kind`: an RFC 1123 label for Namespaces, an
/// RFC 1123 subdomain for every other kind (as the API server validates
/// Deployments, ConfigMaps, Ingresses, Leases and custom resources).
pub fn object_name(kind: &str, value: &str) -> Result<(), String> {
    if kind.eq_ignore_ascii_case("Namespace") {
        check(is_label(value), "Namespace name", value, LABEL_RULE)
    } else {
        check(
            is_subdomain(value),
            &format!("{kind} name"),
            value,
            SUBDOMAIN_RULE,
        )
    }
}

/// A ConfigMap data key: `[-._a-zA-Z0-9]+`, at most 253, not `.` or `..`.
pub fn config_map_key(value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value.len() <= SUBDOMAIN_MAX
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value != "."
        && value != "..";
    check(ok, "ConfigMap key", value, CONFIG_KEY_RULE)
}

/// An annotation or label key: `[prefix/]name` with a DNS-1123 subdomain
/// prefix and a name of at most 63 characters.
pub fn qualified_name(what: &str, value: &str) -> Result<(), String> {
    let ok = match value.split_once('/') {
        Some((prefix, name)) => is_subdomain(prefix) && is_qualified_part(name),
        None => is_qualified_part(value),
    };
    check(ok, what, value, QUALIFIED_RULE)
}

/// A label value: empty, or a qualified-name part.
pub fn label_value(value: &str) -> Result<(), String> {
    check(
        value.is_empty() || is_qualified_part(value),
        "label value",
        value,
        LABEL_VALUE_RULE,
    )
}

/// An apiVersion: `v1`, or `GROUP/VERSION` with a DNS-1123 subdomain group
/// and an RFC 1123 label version (`apps/v1`, `gateway.envoyproxy.io/v1alpha1`).
pub fn api_version(value: &str) -> Result<(), String> {
    let ok = match value.split_once('/') {
        Some((group, version)) => is_subdomain(group) && is_label(version),
        None => is_label(value),
    };
    check(
        ok,
        "apiVersion",
        value,
        "an API version: `v1` or GROUP/VERSION with a lower-case DNS group and version \
         (e.g. 'apps/v1')",
    )
}

/// A kind: a letter, then letters and digits (`Deployment`, `KongPlugin`).
pub fn kind(value: &str) -> Result<(), String> {
    let ok = value.len() <= LABEL_MAX
        && value
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
        && value.bytes().all(|b| b.is_ascii_alphanumeric());
    check(
        ok,
        "kind",
        value,
        "a kind: a letter, then letters and digits (e.g. 'Deployment')",
    )
}

/// Characters sent as they are in a path segment: RFC 3986 unreserved
/// characters, `:` and `@`. Everything else is percent-encoded.
fn is_segment_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'@')
}

/// Percent-encodes a value for use as one URL path segment.
pub fn encode_path_segment(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if is_segment_char(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether `value` can be one path segment of a request exactly as it is:
/// not empty, not `.` or `..`, and unchanged by percent-encoding (so no
/// `/`, `%`, `?`, `#`, space, control or non-ASCII character can cut or
/// redirect the request line).
pub fn path_segment(what: &str, value: &str) -> Result<(), String> {
    let ok = !value.is_empty()
        && value != "."
        && value != ".."
        && value.len() <= SUBDOMAIN_MAX
        && encode_path_segment(value) == value;
    check(
        ok,
        what,
        value,
        "a valid request path segment: at most 253 letters, digits, '-', '.', '_', '~', ':' or \
         '@', and not '.' or '..'",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_rfc_1123_as_the_api_server_does() {
        let longest = [
            &"a".repeat(63)[..],
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(61),
        ]
        .join(".");
        assert_eq!(longest.len(), 253);
        for good in ["order-service", "a", "0abc", "a.b-c.d", &longest] {
            assert!(object_name("Deployment", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "order-service#x",
            "order-service?dryRun=",
            "Order",
            "a/b",
            "..",
            "-a",
            "a-",
            "a..b",
            "a b",
            "é",
            &"a".repeat(64),
            &format!("{longest}e"),
        ] {
            assert!(object_name("Deployment", bad).is_err(), "{bad}");
        }
        assert!(namespace("orders").is_ok());
        for bad in ["a.b", &"a".repeat(64), "", "ORDERS", "orders/x"] {
            assert!(namespace(bad).is_err(), "{bad}");
            assert!(object_name("Namespace", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn keys_and_values() {
        assert!(config_map_key("LOCK_MODE").is_ok());
        assert!(config_map_key("a.b-c_d").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "a#b", &"a".repeat(254)] {
            assert!(config_map_key(bad).is_err(), "{bad}");
        }
        for good in [
            "nginx.ingress.kubernetes.io/limit-rps",
            "app",
            "kubectl.kubernetes.io/restartedAt",
            "A_b.c",
        ] {
            assert!(qualified_name("annotation key", good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "/x",
            "x/",
            "a/b/c",
            "Bad.Prefix/x",
            "-x",
            "x y",
            &"a".repeat(64),
        ] {
            assert!(qualified_name("annotation key", bad).is_err(), "{bad}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("v1.2").is_ok());
        assert!(label_value("a b").is_err());
    }

    #[test]
    fn api_versions_kinds_and_segments() {
        for good in ["v1", "apps/v1", "gateway.envoyproxy.io/v1alpha1"] {
            assert!(api_version(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "apps/",
            "/v1",
            "apps/v1/x",
            "apps#/v1",
            "Apps/v1",
            "apps/v1?",
        ] {
            assert!(api_version(bad).is_err(), "{bad}");
        }
        assert!(kind("KongPlugin").is_ok());
        for bad in ["", "1Kind", "Kind/x", "Kind#", "Kind s"] {
            assert!(kind(bad).is_err(), "{bad}");
        }
        for bad in ["", ".", ".."] {
            assert!(path_segment("name", bad).is_err(), "{bad:?}");
        }
        for bad in ["a/b", "a%2F", "a#b", "a?b", "a b", "é", "a\n"] {
            assert!(path_segment("name", bad).is_err(), "{bad:?}");
            assert_ne!(encode_path_segment(bad), bad.to_string(), "{bad:?}");
        }
        assert!(path_segment("name", "system:controller").is_ok());
        assert_eq!(encode_path_segment("a#b c/d"), "a%23b%20c%2Fd");
    }

    #[test]
    fn messages_quote_and_escape_the_value() {
        let err = object_name("Deployment", "x\u{1b}[2J").unwrap_err();
        assert!(err.contains(r#""x\u{1b}[2J""#), "{err}");
        assert!(!err.contains('\u{1b}'));
    }
}
