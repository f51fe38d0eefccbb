//! Lock lifecycle events and their Redis Stream schema.
//!
//! Every entry in the stream (default key [`DEFAULT_STREAM`]) is a flat map of
//! string fields. Schema version 1:
//!
//! | field    | present for                       | meaning                                           |
//! |----------|-----------------------------------|---------------------------------------------------|
//! | `v`      | all                               | schema version, `"1"`                             |
//! | `kind`   | all                               | `acquired`, `extended`, `released`, `lost`, `rejected`, `error` |
//! | `mode`   | all                               | `legacy`, `fenced`, `redlock`, `watch`, `app`     |
//! | `key`    | all                               | lock key (for `rejected`: the record's key; for `error`: what failed) |
//! | `holder` | all                               | who acted (pod or worker name)                    |
//! | `token`  | all but legacy and `error`        | fencing token, decimal                            |
//! | `ttl_ms` | `acquired`, `extended`            | TTL requested, milliseconds                       |
//! | `fence`  | `rejected`                        | the token the record had already accepted         |
//! | `reason` | `error`, optionally `lost`        | free text                                         |
//!
//! Application errors: services report each error on the protected path as
//! kind `error`, mode `app`, `holder` the reporting service (bounded set of
//! names: the exporter labels its error counter with it), `key` the error
//! code or failing operation (e.g. `POST /v2/orders/fulfill`), `reason` free
//! text ([`LockEvent::app_error`]). The exporter counts them per service and
//! per minute for the AI-004 absolute error alert.
//!
//! The entry's stream id carries the Redis server time of the event in
//! milliseconds. `acquired` and `released` of the single-node fenced lock and
//! `rejected` of the fenced store are written by the same script that changes
//! the key, so they are exactly ordered with the change. Redlock with its
//! stream on the first node appends `released` (or `lost`) in that node's
//! compare-and-delete script, sent with the other nodes' deletes: a
//! successor's `acquired` follows its own two rounds, so it can only come
//! first if that one request is more than a round and a half slower than
//! the others. Other modes publish through an
//! [`EventSink`](super::EventSink) that sends `released` before the key is
//! deleted, so a successor's `acquired` never precedes it.
//!
//! Consumers must treat unknown fields as absent and unknown kinds as bad
//! events, never as errors that stop them.

use std::collections::HashMap;
use std::fmt;

/// The stream lock events go to unless configured otherwise.
pub const DEFAULT_STREAM: &str = "warroom:lock-events";

/// Approximate bound on the stream's length (`XADD … MAXLEN ~`).
pub const DEFAULT_MAXLEN: usize = 100_000;

/// Schema version written in the `v` field.
pub const SCHEMA_VERSION: &str = "1";

/// What happened to a lease (or a write, or the application).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// A holder was granted the lock.
    Acquired,
    /// A holder prolonged its lease.
    Extended,
    /// A holder gave the lock back while still owning it.
    Released,
    /// A holder found its lease gone (expired or taken over) when it extended
    /// or released.
    Lost,
    /// The fenced store refused a write with a stale token.
    Rejected,
    /// An application error on the protected path (for the error-rate panel).
    Error,
}

impl EventKind {
    /// Every kind, in schema order.
    pub const ALL: [EventKind; 6] = [
        EventKind::Acquired,
        EventKind::Extended,
        EventKind::Released,
        EventKind::Lost,
        EventKind::Rejected,
        EventKind::Error,
    ];

    /// The value of the `kind` field.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Acquired => "acquired",
            EventKind::Extended => "extended",
            EventKind::Released => "released",
            EventKind::Lost => "lost",
            EventKind::Rejected => "rejected",
            EventKind::Error => "error",
        }
    }

    /// Parses the `kind` field.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which client produced an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LockMode {
    /// The PM-003 lock (`legacy::LegacyLock`, behind the `legacy` feature).
    Legacy,
    /// Single-node fenced lock ([`super::FencedLock`]).
    Fenced,
    /// Multi-node fenced lock ([`super::Redlock`]).
    Redlock,
    /// Optimistic updates ([`super::WatchSession`]).
    Watch,
    /// The application itself (errors it reports).
    App,
}

impl LockMode {
    /// Every mode.
    pub const ALL: [LockMode; 5] = [
        LockMode::Legacy,
        LockMode::Fenced,
        LockMode::Redlock,
        LockMode::Watch,
        LockMode::App,
    ];

    /// The value of the `mode` field.
    pub fn as_str(self) -> &'static str {
        match self {
            LockMode::Legacy => "legacy",
            LockMode::Fenced => "fenced",
            LockMode::Redlock => "redlock",
            LockMode::Watch => "watch",
            LockMode::App => "app",
        }
    }

    /// Parses the `mode` field.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

impl fmt::Display for LockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the lock event stream.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LockEvent {
    /// What happened.
    pub kind: EventKind,
    /// Which client produced it.
    pub mode: LockMode,
    /// Lock key (record key for `rejected`).
    pub key: String,
    /// Who acted.
    pub holder: String,
    /// Fencing token, when the client has one.
    pub token: Option<u64>,
    /// Requested TTL in milliseconds (`acquired`, `extended`).
    pub ttl_ms: Option<u64>,
    /// Token the record had already accepted (`rejected`).
    pub fence: Option<u64>,
    /// Free text (`error`, sometimes `lost`).
    pub reason: Option<String>,
}

/// Why a stream entry is not a valid [`LockEvent`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventParseError {
    /// The `v` field is missing or not a version this code reads.
    #[error("unsupported schema version {0:?}")]
    Version(Option<String>),
    /// A required field is missing.
    #[error("missing field {0}")]
    Missing(&'static str),
    /// The `kind` field names no known kind.
    #[error("unknown kind {0:?}")]
    UnknownKind(String),
    /// The `mode` field names no known mode.
    #[error("unknown mode {0:?}")]
    UnknownMode(String),
    /// A numeric field does not hold a non-negative integer.
    #[error("field {field} is not a non-negative integer: {value:?}")]
    NotANumber {
        /// The field.
        field: &'static str,
        /// What it held.
        value: String,
    },
    /// A field is not valid UTF-8 or is too long.
    #[error("field {0} is not valid text")]
    BadText(&'static str),
}

impl EventParseError {
    /// A short, bounded label for counting bad events by cause.
    pub fn label(&self) -> &'static str {
        match self {
            EventParseError::Version(_) => "version",
            EventParseError::Missing(_) => "missing_field",
            EventParseError::UnknownKind(_) => "unknown_kind",
            EventParseError::UnknownMode(_) => "unknown_mode",
            EventParseError::NotANumber { .. } => "not_a_number",
            EventParseError::BadText(_) => "bad_text",
        }
    }
}

/// Longest text accepted in any field, in bytes.
pub const MAX_FIELD_LEN: usize = 1024;

impl LockEvent {
    /// A new event with the required fields; optional ones empty.
    pub fn new(
        kind: EventKind,
        mode: LockMode,
        key: impl Into<String>,
        holder: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            mode,
            key: key.into(),
            holder: holder.into(),
            token: None,
            ttl_ms: None,
            fence: None,
            reason: None,
        }
    }

    /// An application error on the protected path, for the error panel.
    pub fn app_error(
        what: impl Into<String>,
        holder: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        let mut event = Self::new(EventKind::Error, LockMode::App, what, holder);
        event.reason = Some(reason.into());
        event
    }

    /// Sets the fencing token.
    pub fn with_token(mut self, token: u64) -> Self {
        self.token = Some(token);
        self
    }

    /// Sets the TTL.
    pub fn with_ttl_ms(mut self, ttl_ms: u64) -> Self {
        self.ttl_ms = Some(ttl_ms);
        self
    }

    /// The stream fields, in schema order.
    pub fn to_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("v", SCHEMA_VERSION.to_string()),
            ("kind", self.kind.as_str().to_string()),
            ("mode", self.mode.as_str().to_string()),
            ("key", self.key.clone()),
            ("holder", self.holder.clone()),
        ];
        if let Some(token) = self.token {
            fields.push(("token", token.to_string()));
        }
        if let Some(ttl) = self.ttl_ms {
            fields.push(("ttl_ms", ttl.to_string()));
        }
        if let Some(fence) = self.fence {
            fields.push(("fence", fence.to_string()));
        }
        if let Some(reason) = &self.reason {
            fields.push(("reason", reason.clone()));
        }
        fields
    }

    /// Reads an event from stream fields given as raw bytes (as `XREAD`
    /// returns them). Never panics; every malformation is an error.
    pub fn from_fields<'a, I>(fields: I) -> Result<Self, EventParseError>
    where
        I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    {
        let mut map: HashMap<&'a [u8], &'a [u8]> = HashMap::new();
        for (name, value) in fields {
            map.insert(name, value);
        }
        let text = |field: &'static str| -> Result<Option<String>, EventParseError> {
            match map.get(field.as_bytes()) {
                None => Ok(None),
                Some(raw) if raw.len() > MAX_FIELD_LEN => Err(EventParseError::BadText(field)),
                Some(raw) => std::str::from_utf8(raw)
                    .map(|s| Some(s.to_string()))
                    .map_err(|_| EventParseError::BadText(field)),
            }
        };
        let required = |field: &'static str| -> Result<String, EventParseError> {
            text(field)?.ok_or(EventParseError::Missing(field))
        };
        let number = |field: &'static str| -> Result<Option<u64>, EventParseError> {
            match text(field)? {
                None => Ok(None),
                Some(s) => s
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| EventParseError::NotANumber { field, value: s }),
            }
        };
        let version = text("v").unwrap_or(None);
        if version.as_deref() != Some(SCHEMA_VERSION) {
            return Err(EventParseError::Version(version));
        }
        let kind_text = required("kind")?;
        let kind = EventKind::parse(&kind_text).ok_or(EventParseError::UnknownKind(kind_text))?;
        let mode_text = required("mode")?;
        let mode = LockMode::parse(&mode_text).ok_or(EventParseError::UnknownMode(mode_text))?;
        Ok(LockEvent {
            kind,
            mode,
            key: required("key")?,
            holder: required("holder")?,
            token: number("token")?,
            ttl_ms: number("ttl_ms")?,
            fence: number("fence")?,
            reason: text("reason")?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(fields: &[(&str, &str)]) -> Result<LockEvent, EventParseError> {
        LockEvent::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
    }

    #[test]
    fn fields_round_trip() {
        let mut event = LockEvent::new(EventKind::Rejected, LockMode::Fenced, "order:1", "pod-7f")
            .with_token(41);
        event.fence = Some(42);
        let fields = event.to_fields();
        let back = LockEvent::from_fields(fields.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())))
            .unwrap();
        assert_eq!(back, event);
    }

    #[test]
    fn malformed_entries_are_errors_not_panics() {
        assert_eq!(parse(&[]), Err(EventParseError::Version(None)));
        assert_eq!(
            parse(&[
                ("v", "1"),
                ("kind", "exploded"),
                ("mode", "fenced"),
                ("key", "k"),
                ("holder", "h")
            ]),
            Err(EventParseError::UnknownKind("exploded".into()))
        );
        assert!(matches!(
            parse(&[
                ("v", "1"),
                ("kind", "acquired"),
                ("mode", "fenced"),
                ("key", "k"),
                ("holder", "h"),
                ("token", "-3")
            ]),
            Err(EventParseError::NotANumber { field: "token", .. })
        ));
        assert_eq!(
            parse(&[
                ("v", "1"),
                ("kind", "acquired"),
                ("mode", "fenced"),
                ("holder", "h")
            ]),
            Err(EventParseError::Missing("key"))
        );
        let bad_utf8 = [(b"v".as_slice(), b"1".as_slice()), (b"kind", b"\xff\xfe")];
        assert_eq!(
            LockEvent::from_fields(bad_utf8),
            Err(EventParseError::BadText("kind"))
        );
    }
}
