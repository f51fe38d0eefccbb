//! The server's request log: method, path with query, and answer status of
//! the most recent requests, so tests can check what a client sent (a dry
//! run, no write on a re-run, a retry after a conflict).
//!
//! This file knows nothing about objects.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Requests kept; older ones are dropped first.
const KEPT: usize = 10_000;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method (`GET`, `PATCH`, …).
    pub method: String,
    /// Path and query string as sent.
    pub path_and_query: String,
    /// Status code of the answer (200 for a watch that was opened).
    pub status: u16,
}

impl RequestRecord {
    /// Whether this request could have changed something (not GET/HEAD).
    pub fn is_write(&self) -> bool {
        !matches!(self.method.as_str(), "GET" | "HEAD" | "OPTIONS")
    }

    /// Whether the request asked for a server-side dry run.
    pub fn is_dry_run(&self) -> bool {
        self.path_and_query
            .split_once('?')
            .is_some_and(|(_, query)| query.split('&').any(|p| p == "dryRun=All"))
    }
}

/// The most recent requests (up to 10,000). Cheap to clone; clones share the log.
#[derive(Clone, Default)]
pub struct RequestLog {
    records: Arc<Mutex<VecDeque<RequestRecord>>>,
}

impl RequestLog {
    /// The requests kept, oldest first.
    pub fn entries(&self) -> Vec<RequestRecord> {
        self.lock().iter().cloned().collect()
    }

    /// Forgets every request so far.
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn record(&self, method: &str, path_and_query: &str, status: u16) {
        let mut records = self.lock();
        if records.len() == KEPT {
            records.pop_front();
        }
        records.push_back(RequestRecord {
            method: method.to_string(),
            path_and_query: path_and_query.to_string(),
            status,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<RequestRecord>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }
}
