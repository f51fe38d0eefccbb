//! Pod logs: `GET /api/v1/namespaces/{ns}/pods/{name}/log`, served from a
//! log file that whoever runs the pods (a drill's supervisor) names through
//! the small [`PodLogs`] trait registered on the [`Store`]. Without a
//! source, or for a pod the source does not know, the log is empty, as a
//! real server answers for a container that has written nothing.
//!
//! Parameters: `follow` (stream what is appended until the pod's process
//! ends, the client leaves or the server stops), `tailLines`, `limitBytes`,
//! `previous` (the run before the last restart), `container` (checked
//! against the pod's containers); `timestamps`, `sinceSeconds` and
//! `sinceTime` are accepted and checked, and lines are served as the worker
//! wrote them.
//!
//! This file knows files and the log parameters; it knows nothing about
//! processes.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::{mpsc, watch};

use super::Store;
use super::status::ApiError;

/// Bytes read from a log file at a time.
const CHUNK: usize = 64 * 1024;
/// How often a followed log is looked at for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// Part of a file holding one run of a pod's container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSpan {
    /// The log file.
    pub path: PathBuf,
    /// Where this run's output begins.
    pub from: u64,
    /// Where it ends; None while the run goes on (the file grows).
    pub to: Option<u64>,
}

/// Where pod logs come from (a drill's supervisor).
pub trait PodLogs: Send + Sync {
    /// The log of `pod`'s current run (or with `previous`, the run before
    /// its last restart); None when this source does not know one.
    fn log(&self, namespace: &str, pod: &str, previous: bool) -> Option<LogSpan>;
}

/// The log request's parameters.
#[derive(Debug, Default)]
struct LogParams {
    follow: bool,
    previous: bool,
    tail_lines: Option<u64>,
    limit_bytes: Option<u64>,
    container: Option<String>,
}

fn flag(query: &HashMap<String, String>, name: &str) -> Result<bool, ApiError> {
    match query.get(name).map(String::as_str) {
        None | Some("" | "false" | "0" | "False") => Ok(false),
        Some("true" | "1" | "True") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name}: invalid value {other:?}: expected true or false"
        ))),
    }
}

fn number(query: &HashMap<String, String>, name: &str, min: i64) -> Result<Option<u64>, ApiError> {
    let Some(text) = query.get(name) else {
        return Ok(None);
    };
    match text.parse::<i64>() {
        Ok(n) if n >= min => Ok(Some(n as u64)),
        Ok(_) => Err(ApiError::unprocessable(format!(
            "PodLogOptions \"\" is invalid: {name}: Invalid value: {text}: must be greater than \
             or equal to {min}"
        ))),
        Err(_) => Err(ApiError::bad_request(format!(
            "{name}: invalid value {text:?}: expected an integer"
        ))),
    }
}

impl LogParams {
    fn parse(query: &HashMap<String, String>) -> Result<Self, ApiError> {
        flag(query, "timestamps")?;
        flag(query, "insecureSkipTLSVerifyBackend")?;
        number(query, "sinceSeconds", 1)?;
        if let Some(since) = query.get("sinceTime")
            && since.parse::<jiff::Timestamp>().is_err()
        {
            return Err(ApiError::bad_request(format!(
                "sinceTime: invalid value {since:?}: expected an RFC 3339 time"
            )));
        }
        Ok(Self {
            follow: flag(query, "follow")?,
            previous: flag(query, "previous")?,
            tail_lines: number(query, "tailLines", 0)?,
            limit_bytes: number(query, "limitBytes", 1)?,
            container: query.get("container").filter(|c| !c.is_empty()).cloned(),
        })
    }
}

fn text_response(body: Body) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Where to start reading so that at most `lines` lines remain before `end`.
fn tail_start(file: &mut std::fs::File, from: u64, end: u64, lines: u64) -> std::io::Result<u64> {
    if lines == 0 {
        return Ok(end);
    }
    let mut pos = end;
    let mut newlines = 0;
    let mut buf = vec![0u8; CHUNK];
    // A last line without its newline counts as a line too.
    let mut first = true;
    while pos > from {
        let len = (pos - from).min(CHUNK as u64) as usize;
        pos -= len as u64;
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut buf[..len])?;
        for i in (0..len).rev() {
            if buf[i] == b'\n' {
                if first && pos + i as u64 == end - 1 {
                    first = false;
                    continue;
                }
                newlines += 1;
                if newlines == lines {
                    return Ok(pos + i as u64 + 1);
                }
            }
            first = false;
        }
    }
    Ok(from)
}

/// Answers a log request for `pod` (already read from the store).
pub(crate) fn serve(
    store: &Store,
    pod: &Value,
    query: &HashMap<String, String>,
    shutdown: watch::Receiver<bool>,
) -> Result<Response, ApiError> {
    let params = LogParams::parse(query)?;
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let namespace = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let containers: Vec<&str> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    let container = match &params.container {
        Some(c) if !containers.contains(&c.as_str()) => {
            return Err(ApiError::bad_request(format!(
                "container {c} is not valid for pod {name}"
            )));
        }
        Some(c) => c.clone(),
        None if containers.len() > 1 => {
            return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                containers.join(" ")
            )));
        }
        None => containers.first().copied().unwrap_or_default().to_string(),
    };
    let source = store.pod_logs();
    let span = source
        .as_ref()
        .and_then(|s| s.log(&namespace, &name, params.previous));
    let Some(span) = span else {
        if params.previous {
            return Err(ApiError::bad_request(format!(
                "previous terminated container \"{container}\" in pod \"{name}\" not found"
            )));
        }
        return Ok(text_response(Body::empty()));
    };
    let mut file = match std::fs::File::open(&span.path) {
        Ok(file) => file,
        Err(_) => return Ok(text_response(Body::empty())),
    };
    let end_now = file.metadata().map(|m| m.len()).unwrap_or(0);
    let end = span.to.unwrap_or(end_now).min(end_now);
    let from = span.from.min(end);
    let start = match params.tail_lines {
        Some(lines) => tail_start(&mut file, from, end, lines).unwrap_or(from),
        None => from,
    };
    let follow = params.follow && span.to.is_none() && !params.previous;
    let (sender, body) = mpsc::channel::<Bytes>(16);
    let reader = Reader {
        file,
        at: start,
        end: if follow { None } else { Some(end) },
        left: params.limit_bytes,
        span,
        source,
        namespace,
        name,
        sender,
    };
    tokio::spawn(reader.run(shutdown));
    let body = Body::from_stream(futures::stream::unfold(body, |mut body| async move {
        body.recv()
            .await
            .map(|chunk| (Ok::<_, Infallible>(chunk), body))
    }));
    Ok(text_response(body))
}

/// Copies a log span to a response body, following it if asked.
struct Reader {
    file: std::fs::File,
    at: u64,
    /// Where to stop; None: follow until the run ends.
    end: Option<u64>,
    left: Option<u64>,
    span: LogSpan,
    source: Option<std::sync::Arc<dyn PodLogs>>,
    namespace: String,
    name: String,
    sender: mpsc::Sender<Bytes>,
}

impl Reader {
    fn read_chunk(&mut self) -> std::io::Result<Vec<u8>> {
        let mut want = CHUNK as u64;
        if let Some(end) = self.end {
            want = want.min(end.saturating_sub(self.at));
        }
        if let Some(left) = self.left {
            want = want.min(left);
        }
        let mut buf = vec![0u8; want as usize];
        self.file.seek(SeekFrom::Start(self.at))?;
        let n = self.file.read(&mut buf)?;
        buf.truncate(n);
        self.at += n as u64;
        if let Some(left) = self.left.as_mut() {
            *left -= n as u64;
        }
        Ok(buf)
    }

    /// Whether the followed run is over (the pod's process ended or the
    /// pod is gone), and where its output ends.
    fn run_ended(&self) -> Option<u64> {
        let now = self
            .source
            .as_ref()
            .and_then(|s| s.log(&self.namespace, &self.name, false));
        match now {
            Some(span) if span.from == self.span.from && span.path == self.span.path => span.to,
            _ => Some(self.file.metadata().map(|m| m.len()).unwrap_or(self.at)),
        }
    }

    async fn run(mut self, mut shutdown: watch::Receiver<bool>) {
        loop {
            if self.left == Some(0) {
                return;
            }
            let chunk = match self.read_chunk() {
                Ok(chunk) => chunk,
                Err(e) => {
                    tracing::debug!("pod log {}: {e}", self.name);
                    return;
                }
            };
            if !chunk.is_empty() {
                if self.sender.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                continue;
            }
            if self.end.is_some_and(|end| self.at >= end) {
                return;
            }
            if let Some(end) = self.run_ended() {
                // Drain what the run wrote last, then stop.
                self.end = Some(end);
                if self.at >= end {
                    return;
                }
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = shutdown.wait_for(|stopped| *stopped) => return,
                _ = self.sender.closed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(text: &str) -> (tempfile::NamedTempFile, u64) {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("written");
        (file, text.len() as u64)
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        let (file, end) = file_with("a\nb\nc\n");
        let mut f = file.reopen().expect("reopens");
        assert_eq!(tail_start(&mut f, 0, end, 2).expect("reads"), 2);
        assert_eq!(tail_start(&mut f, 0, end, 1).expect("reads"), 4);
        assert_eq!(tail_start(&mut f, 0, end, 9).expect("reads"), 0);
        assert_eq!(tail_start(&mut f, 0, end, 0).expect("reads"), end);
        let (file, end) = file_with("a\nb\nc");
        let mut f = file.reopen().expect("reopens");
        assert_eq!(tail_start(&mut f, 0, end, 1).expect("reads"), 4);
        // A run that starts mid-file never reads before its start.
        assert_eq!(tail_start(&mut f, 2, end, 9).expect("reads"), 2);
    }

    #[test]
    fn numbers_and_flags_are_checked() {
        let query = |k: &str, v: &str| HashMap::from([(k.to_string(), v.to_string())]);
        assert!(LogParams::parse(&query("tailLines", "-1")).is_err());
        assert!(LogParams::parse(&query("tailLines", "x")).is_err());
        assert!(LogParams::parse(&query("limitBytes", "0")).is_err());
        assert!(LogParams::parse(&query("follow", "maybe")).is_err());
        assert!(LogParams::parse(&query("sinceTime", "yesterday")).is_err());
        assert!(LogParams::parse(&query("sinceSeconds", "10")).is_ok());
        assert_eq!(
            LogParams::parse(&query("tailLines", "5"))
                .expect("valid")
                .tail_lines,
            Some(5)
        );
    }
}
