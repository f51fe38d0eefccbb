//! Redaction of secrets before anything reaches a screen, a file, a metric or
//! a cluster object.
//!
//! Applied to every string in an event (notes, alert labels, step payloads,
//! the actor): bearer and basic credentials, whole `Authorization:` and
//! `Cookie:` header values, PEM private key blocks, passwords in URLs
//! (`redis://:pw@host`, `postgres://user:pw@host`), `token=` / `password=`
//! style parameters and `password: …` style fields (a quoted value up to its
//! closing quote), JSON Web Tokens (Kubernetes service-account tokens),
//! Kubernetes bootstrap tokens and a few well-known token prefixes. In
//! structured payloads the string values of keys that name a secret
//! (`password`, `token`, `PRIVATE-KEY`, `passphrase`, …, compared without case
//! or separators) and the data of Kubernetes `Secret` objects are replaced
//! as a whole. Fencing tokens are numbers and are kept.
//!
//! Every pass works on bytes and only cuts the text at ASCII characters it
//! found, so any UTF-8 input is safe, and none scans a value it already
//! redacted again, so the work is linear in the input.
//!
//! It errs towards redacting too much: a redacted note is an inconvenience,
//! a leaked token in a postmortem is an incident of its own.

use serde_json::Value;

/// What a secret is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Parameter and field names whose values are secrets, written with `_`
/// between words. In text each is also looked for with `-` and with no
/// separator (`private-key`, `privatekey`); field names of structured
/// payloads are compared with separators dropped.
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

/// Header names whose whole value, to the end of the line, is a secret.
const SECRET_HEADERS: [&str; 2] = ["authorization", "cookie"];

/// Well-known token prefixes (GitHub, GitLab, Slack, AWS access keys).
const TOKEN_PREFIXES: [&str; 9] = [
    "ghp_",
    "gho_",
    "ghs_",
    "ghu_",
    "github_pat_",
    "glpat-",
    "xoxb-",
    "xoxp-",
    "AKIA",
];

/// Redacts secrets in free text. Returns the input unchanged (borrowed) when
/// there is nothing to redact.
pub fn redact_text(text: &str) -> std::borrow::Cow<'_, str> {
    let mut out = std::borrow::Cow::Borrowed(text);
    for pass in [
        pem_private_keys as fn(&str) -> Option<String>,
        authorization_headers,
        auth_schemes,
        url_passwords,
        secret_parameters,
        jwts,
        bootstrap_tokens,
        prefixed_tokens,
    ] {
        if let Some(changed) = pass(&out) {
            out = std::borrow::Cow::Owned(changed);
        }
    }
    out
}

/// True when `text` holds something [`redact_text`] would hide: a value that
/// must never be shown, stored or written to a cluster in clear.
pub fn contains_secret(text: &str) -> bool {
    matches!(redact_text(text), std::borrow::Cow::Owned(_))
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
            } else if let std::borrow::Cow::Owned(changed) = redact_text(s) {
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
/// `authToken`, …). Fencing tokens are not secrets.
fn is_secret_key(key: &str) -> bool {
    let words = |s: &str| -> String {
        s.chars()
            .filter(|c| !matches!(c, '-' | '_' | '.' | ' '))
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    let key = words(key);
    if key.contains("fenc") {
        return false;
    }
    SECRET_KEYS.iter().any(|k| key.contains(&words(k)))
}

/// The spellings of a secret key looked for in text: as written, with `-`
/// between words, and with no separator.
fn key_spellings(key: &'static str) -> Vec<std::borrow::Cow<'static, str>> {
    let mut spellings = vec![std::borrow::Cow::Borrowed(key)];
    if key.contains('_') {
        spellings.push(key.replace('_', "-").into());
        spellings.push(key.replace('_', "").into());
    }
    spellings
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

/// Characters that end a parameter value.
fn ends_value(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b'&' | b';' | b',' | b'"' | b'\'' | b'\\' | b'<' | b'>' | b'`'
        )
}

/// Finds every case-insensitive occurrence of `needle` (ASCII) in `hay`.
fn find_all_ci(hay: &str, needle: &str) -> Vec<usize> {
    let h = hay.as_bytes();
    let n = needle.as_bytes();
    let mut hits = Vec::new();
    if n.is_empty() || h.len() < n.len() {
        return hits;
    }
    let mut i = 0;
    while i + n.len() <= h.len() {
        if h[i..i + n.len()].eq_ignore_ascii_case(n) {
            hits.push(i);
            i += n.len();
        } else {
            i += 1;
        }
    }
    hits
}

/// Replaces byte ranges (sorted, non-overlapping after merge) with REDACTED.
fn splice(text: &str, mut ranges: Vec<(usize, usize)>) -> Option<String> {
    ranges.retain(|(a, b)| a < b);
    if ranges.is_empty() {
        return None;
    }
    ranges.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges {
        match merged.last_mut() {
            Some(last) if a <= last.1 => last.1 = last.1.max(b),
            _ => merged.push((a, b)),
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    for (a, b) in merged {
        // Ranges are found on ASCII boundaries, so slicing is safe; guard anyway.
        if !text.is_char_boundary(a) || !text.is_char_boundary(b) {
            continue;
        }
        out.push_str(&text[pos..a]);
        out.push_str(REDACTED);
        pos = b;
    }
    out.push_str(&text[pos..]);
    Some(out)
}

/// `Authorization: <anything up to the end of the line>`, and the same for
/// `Cookie:` (and `Set-Cookie:`).
fn authorization_headers(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    for header in SECRET_HEADERS {
        let mut covered_until = 0;
        for start in find_all_ci(text, header) {
            // Inside the value of an earlier header: already redacted.
            if start < covered_until {
                continue;
            }
            let mut i = start + header.len();
            // optional quote (JSON-ish `"Authorization": "…"`), then ':' or '='
            while i < bytes.len() && matches!(bytes[i], b'"' | b'\'' | b' ' | b'\t') {
                i += 1;
            }
            if i >= bytes.len() || !matches!(bytes[i], b':' | b'=') {
                continue;
            }
            i += 1;
            while i < bytes.len() && matches!(bytes[i], b' ' | b'\t' | b'"' | b'\'') {
                i += 1;
            }
            let value_start = i;
            while i < bytes.len() && !matches!(bytes[i], b'\n' | b'\r' | b'"' | b'\'' | b'\\') {
                i += 1;
            }
            covered_until = i;
            ranges.push((value_start, i));
        }
    }
    splice(text, ranges)
}

/// PEM private keys (`-----BEGIN RSA PRIVATE KEY-----` … `-----END RSA
/// PRIVATE KEY-----`): everything between the markers, or to the end of
/// the text when the end marker is missing.
fn pem_private_keys(text: &str) -> Option<String> {
    const BEGIN: &str = "-----BEGIN ";
    const END: &str = "-----END ";
    const DASHES: &str = "-----";
    let mut ranges = Vec::new();
    let mut search = 0;
    while let Some(found) = text.get(search..).and_then(|rest| rest.find(BEGIN)) {
        let label_start = search + found + BEGIN.len();
        let Some(label_len) = text[label_start..].find(DASHES) else {
            break;
        };
        let label = &text[label_start..label_start + label_len];
        let body_start = label_start + label_len + DASHES.len();
        search = body_start;
        if !label.contains("PRIVATE KEY") || label.contains('\n') {
            continue;
        }
        let body_end = text[body_start..]
            .find(END)
            .map_or(text.len(), |end| body_start + end);
        ranges.push((body_start, body_end));
        search = body_end;
    }
    splice(text, ranges)
}

/// `Bearer <token>` and `Basic <credentials>` wherever they appear.
fn auth_schemes(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    for scheme in ["bearer", "basic"] {
        for start in find_all_ci(text, scheme) {
            if start > 0 && bytes[start - 1].is_ascii_alphanumeric() {
                continue;
            }
            let mut i = start + scheme.len();
            if i >= bytes.len() || !matches!(bytes[i], b' ' | b'\t') {
                continue;
            }
            while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
                i += 1;
            }
            let value_start = i;
            while i < bytes.len() && is_token_char(bytes[i]) {
                i += 1;
            }
            // Short words after "basic" are prose ("basic checks"), not credentials.
            let long_enough = i - value_start >= 8 || scheme == "bearer";
            if long_enough && text[value_start..i] != *REDACTED {
                ranges.push((value_start, i));
            }
        }
    }
    splice(text, ranges)
}

/// `scheme://user:password@host` keeps the user and redacts the password.
fn url_passwords(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut search = 0;
    while let Some(found) = text[search..].find("://") {
        let authority_start = search + found + 3;
        let mut end = authority_start;
        while end < bytes.len()
            && !matches!(bytes[end], b'/' | b'?' | b'#')
            && !ends_value(bytes[end])
        {
            end += 1;
        }
        if let Some(at) = text[authority_start..end].rfind('@') {
            let userinfo = &text[authority_start..authority_start + at];
            if let Some(colon) = userinfo.find(':') {
                let pw_start = authority_start + colon + 1;
                let pw_end = authority_start + at;
                if pw_start < pw_end {
                    ranges.push((pw_start, pw_end));
                }
            }
        }
        search = end.max(authority_start);
    }
    splice(text, ranges)
}

/// `password=…`, `token=…`, `--password …`, `password: …` and the like.
fn secret_parameters(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    for key in SECRET_KEYS.into_iter().flat_map(key_spellings) {
        let mut covered_until = 0;
        for start in find_all_ci(text, &key) {
            // Extend the key over the rest of an identifier (`password_file`
            // and `client-key-data` stay key names; `db_password` is found
            // at "password").
            let mut i = start + key.len();
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-'))
            {
                i += 1;
            }
            // Fencing tokens are numbers, not secrets.
            if follows_fencing(bytes, start) {
                continue;
            }
            // Inside the value of an earlier hit of this key (`token=token=…`):
            // already redacted, and scanning it again would be quadratic.
            if start < covered_until {
                continue;
            }
            // optional closing quote of a key (`"password": "x"`), escaped
            // in JSON quoted inside a note (`{\"password\": \"x\"}`)
            let mut j = i;
            while j < bytes.len() && matches!(bytes[j], b'"' | b'\'' | b'\\') {
                j += 1;
            }
            let value_start;
            if j < bytes.len() && bytes[j] == b'=' {
                value_start = j + 1;
            } else if j < bytes.len() && bytes[j] == b':' {
                // `password: x` but not a URL scheme (`token://`) and not `a:b` times
                let mut k = j + 1;
                while k < bytes.len() && matches!(bytes[k], b' ' | b'\t') {
                    k += 1;
                }
                if text[j..].starts_with("://") {
                    continue;
                }
                value_start = k;
            } else if start
                .checked_sub(2)
                .and_then(|from| bytes.get(from..start))
                .is_some_and(|dashes| dashes == b"--")
                && j < bytes.len()
                && bytes[j] == b' '
            {
                value_start = j + 1;
            } else {
                continue;
            }
            let mut k = value_start;
            if bytes.get(k) == Some(&b'\\') && matches!(bytes.get(k + 1), Some(b'"' | b'\'')) {
                k += 1;
            }
            let value_begin;
            if let Some(&quote @ (b'"' | b'\'')) = bytes.get(k) {
                // A quoted value runs to its closing quote, spaces and all
                // (`password: "correct horse battery staple"`).
                k += 1;
                value_begin = k;
                while k < bytes.len()
                    && !matches!(bytes[k], b'\n' | b'\r' | b'\\')
                    && bytes[k] != quote
                {
                    k += 1;
                }
            } else {
                value_begin = k;
                while k < bytes.len() && !ends_value(bytes[k]) {
                    k += 1;
                }
            }
            let value = &text[value_begin..k];
            if value.is_empty() || value == REDACTED || value.starts_with("[REDACTED]") {
                continue;
            }
            covered_until = k;
            ranges.push((value_begin, k));
        }
    }
    splice(text, ranges)
}

/// Whether the bytes just before `start` are `fencing`, optionally followed
/// by one separator (`fencing token`, `fencing_token`, `fencing-token`),
/// compared case-insensitively. Looks at no more than eight bytes, so a
/// text with many keyword hits is scanned in linear time.
fn follows_fencing(bytes: &[u8], start: usize) -> bool {
    const FENCING: &[u8] = b"fencing";
    let ends_with_fencing = |end: usize| {
        end.checked_sub(FENCING.len())
            .and_then(|from| bytes.get(from..end))
            .is_some_and(|word| word.eq_ignore_ascii_case(FENCING))
    };
    if ends_with_fencing(start) {
        return true;
    }
    start
        .checked_sub(1)
        .filter(|&sep| matches!(bytes.get(sep), Some(b' ' | b'_' | b'-')))
        .is_some_and(ends_with_fencing)
}

/// JSON Web Tokens: `eyJ…` header, payload and signature in base64url.
fn jwts(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    let mut search = 0;
    while let Some(found) = text[search..].find("eyJ") {
        let start = search + found;
        let mut i = start;
        let mut dots = 0;
        while i < bytes.len()
            && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'-' | b'_' | b'.'))
        {
            if bytes[i] == b'.' {
                dots += 1;
            }
            i += 1;
        }
        if dots >= 2 && i - start >= 20 {
            ranges.push((start, i));
        }
        search = i.max(start + 3);
    }
    splice(text, ranges)
}

/// Kubernetes bootstrap tokens: `[a-z0-9]{6}.[a-z0-9]{16}`.
fn bootstrap_tokens(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let lower_alnum = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut ranges = Vec::new();
    let mut i = 0;
    while i + 23 <= bytes.len() {
        let window = &bytes[i..i + 23];
        let boundary_before = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let boundary_after = i + 23 == bytes.len() || !bytes[i + 23].is_ascii_alphanumeric();
        if boundary_before
            && boundary_after
            && window[6] == b'.'
            && window[..6].iter().all(|&b| lower_alnum(b))
            && window[7..].iter().all(|&b| lower_alnum(b))
            && window[7..].iter().any(u8::is_ascii_digit)
        {
            ranges.push((i, i + 23));
            i += 23;
        } else {
            i += 1;
        }
    }
    splice(text, ranges)
}

/// Tokens with a well-known prefix (`ghp_…`, `glpat-…`, `xoxb-…`, `AKIA…`).
fn prefixed_tokens(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut ranges = Vec::new();
    for prefix in TOKEN_PREFIXES {
        let mut search = 0;
        while let Some(found) = text[search..].find(prefix) {
            let start = search + found;
            let mut i = start + prefix.len();
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'-'))
            {
                i += 1;
            }
            let boundary = start == 0 || !bytes[start - 1].is_ascii_alphanumeric();
            if boundary && i - start >= prefix.len() + 12 {
                ranges.push((start, i));
            }
            search = i;
        }
    }
    splice(text, ranges)
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
    }

    #[test]
    fn jwts_and_bootstrap_tokens() {
        let jwt = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl";
        assert_eq!(r(&format!("token {jwt} end")), "token [REDACTED] end");
        assert_eq!(
            r("join with abcdef.0123456789abcdef"),
            "join with [REDACTED]"
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
    fn fencing_is_recognised_from_the_last_bytes_only() {
        let at = |s: &str| follows_fencing(s.as_bytes(), s.len());
        assert!(at("fencing"));
        assert!(at("the Fencing "));
        assert!(at("FENCING_"));
        assert!(at("x fencing-"));
        assert!(!at("fencing  "));
        assert!(!at("fenc"));
        assert!(!at(""));
        assert!(!at("fencing__"));
        assert!(!at("\u{2014}"));
        assert!(at("\u{2014}fencing-"));
    }

    #[test]
    fn a_megabyte_with_many_hits_is_redacted_throughout() {
        // Every hit is redacted; the per-hit work looks only at a few bytes
        // around the hit, so this stays linear in the input.
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
            "LOCK_MODE": "watch",
            "fencing-token": "17",
        }});
        redact_value(&mut v);
        for key in [
            "PRIVATE-KEY",
            "passphrase",
            "tls.Private_Key",
            "Client-Key-Data",
        ] {
            assert_eq!(v["data"][key], REDACTED, "{key}");
        }
        assert_eq!(v["data"]["LOCK_MODE"], "watch");
        assert_eq!(v["data"]["fencing-token"], "17");
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
}
