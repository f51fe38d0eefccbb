//! Fault injection: answer chosen requests with an error instead of serving
//! them, so tests can show what a client does when the API server refuses.
//!
//! A rule matches on the request method (or `*`) and a substring of the
//! request's path and query; the first matching rule answers. This file knows
//! nothing about objects.

use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
struct Rule {
    method: String,
    path_contains: String,
    status: u16,
    remaining: Option<u32>,
}

/// The server's fault rules. Cheap to clone; clones share the same rules.
#[derive(Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
}

impl Faults {
    /// Every request whose method matches (e.g. "PATCH", or "*") and whose
    /// path (with its query string) contains `path_contains` is answered with
    /// `status` (403, 409, 500, …) and a Status body shaped like the real API
    /// server's, `times` times (None = until cleared). Rules are tried in the
    /// order they were added.
    pub fn fail(&self, method: &str, path_contains: &str, status: u16, times: Option<u32>) {
        if times == Some(0) {
            return;
        }
        self.lock().push(Rule {
            method: method.to_ascii_uppercase(),
            path_contains: path_contains.to_string(),
            status,
            remaining: times,
        });
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// How many rules are still active.
    pub fn active(&self) -> usize {
        self.lock().len()
    }

    /// The status to answer this request with, if a rule matches (and uses
    /// up one of its times).
    pub(crate) fn take(&self, method: &str, path_and_query: &str) -> Option<u16> {
        let mut rules = self.lock();
        let index = rules.iter().position(|rule| {
            (rule.method == "*" || rule.method.eq_ignore_ascii_case(method))
                && path_and_query.contains(&rule.path_contains)
        })?;
        let status = rules[index].status;
        if let Some(remaining) = rules[index].remaining.as_mut() {
            *remaining -= 1;
            if *remaining == 0 {
                rules.remove(index);
            }
        }
        Some(status)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_method_and_path_and_run_out() {
        let faults = Faults::default();
        faults.fail("patch", "/deployments/order-service", 403, Some(2));
        assert_eq!(
            faults.take(
                "GET",
                "/apis/apps/v1/namespaces/orders/deployments/order-service"
            ),
            None
        );
        assert_eq!(
            faults.take(
                "PATCH",
                "/apis/apps/v1/namespaces/orders/deployments/order-service"
            ),
            Some(403)
        );
        assert_eq!(
            faults.take(
                "PATCH",
                "/apis/apps/v1/namespaces/orders/deployments/order-service/scale"
            ),
            Some(403)
        );
        assert_eq!(
            faults.take(
                "PATCH",
                "/apis/apps/v1/namespaces/orders/deployments/order-service"
            ),
            None
        );
        faults.fail("*", "configmaps", 500, None);
        assert_eq!(faults.take("GET", "/api/v1/configmaps"), Some(500));
        assert_eq!(faults.take("PUT", "/api/v1/configmaps"), Some(500));
        faults.clear();
        assert_eq!(faults.active(), 0);
    }
}
