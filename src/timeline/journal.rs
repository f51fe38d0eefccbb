//! The append-only journal: one JSON Lines file per incident.
//!
//! Durability: an append is acknowledged only after its bytes are written and
//! `fdatasync`ed. Appends that arrive while a sync is in progress are written
//! and synced together (group commit), so many concurrent writers share one
//! sync. One writer thread per open journal owns the file; handles are cheap
//! clones that send requests to it and wait (blocking or async) for the reply.
//!
//! Several processes may append to the same file (a `warroom run` recording
//! steps while a responder adds notes): each batch is written under an
//! exclusive `flock`, after reading whatever other processes appended since,
//! so sequence numbers stay strictly increasing and milestone order is checked
//! against the whole file. A torn last line left by a crashed writer is left in
//! place (the journal is never rewritten) and closed with a newline, so the
//! reader reports and skips it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};

use jiff::Timestamp;
use serde::Serialize;

use super::TimelineError;
use super::event::{Entry, Milestone, NewEvent, Recorded, rfc3339_millis, to_millis};
use super::read::{SkippedLine, scan};
use crate::redact::{redact_all_strings, redact_text, redact_value};

/// Largest number of events written with one sync.
const MAX_BATCH_EVENTS: usize = 8192;

/// A handle to an open journal. Cheap to clone; `Send + Sync`; usable from
/// threads and async tasks alike. The file is closed when the last handle is
/// dropped.
#[derive(Clone)]
pub struct Journal {
    shared: Arc<Shared>,
}

struct Shared {
    path: PathBuf,
    requests: mpsc::Sender<Request>,
    recovered: Vec<SkippedLine>,
    syncs: Arc<AtomicU64>,
}

struct Request {
    events: Vec<NewEvent>,
    reply: Reply,
}

enum Reply {
    Blocking(mpsc::SyncSender<Result<Vec<Recorded>, TimelineError>>),
    Async(tokio::sync::oneshot::Sender<Result<Vec<Recorded>, TimelineError>>),
}

impl Reply {
    fn send(self, result: Result<Vec<Recorded>, TimelineError>) {
        match self {
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.shared.path)
            .finish()
    }
}

impl Journal {
    /// Opens the journal at `path`, creating it (and its parent directories)
    /// if it does not exist. The existing content is read to continue the
    /// sequence numbers and the milestone order; unreadable lines (a torn
    /// tail) are kept in [`Journal::recovered`] and never rewritten.
    ///
    /// This reads the file and may block; from async code call it inside
    /// `tokio::task::spawn_blocking` (appends have an async form).
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Journal, TimelineError> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| TimelineError::Open {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(open_err)?;
        }
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)
            .map_err(open_err)?;
        if !existed {
            // Make the new directory entry durable too.
            file.sync_all().map_err(open_err)?;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
                && let Ok(dir) = File::open(parent)
            {
                let _ = dir.sync_all();
            }
        }
        let mut writer = Writer {
            file,
            path: path.clone(),
            end: 0,
            lines: 0,
            next_seq: 1,
            last_milestone: None,
            needs_newline: false,
            recovered: Vec::new(),
            buf: Vec::with_capacity(1 << 16),
            syncs: Arc::new(AtomicU64::new(0)),
        };
        {
            let _lock = FileLock::exclusive(&writer.file).map_err(open_err)?;
            writer.catch_up()?;
        }
        let recovered = std::mem::take(&mut writer.recovered);
        let syncs = writer.syncs.clone();
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("warroom-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(open_err)?;
        Ok(Journal {
            shared: Arc::new(Shared {
                path,
                requests: tx,
                recovered,
                syncs,
            }),
        })
    }

    /// The journal's path.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// Lines that could not be read when the journal was opened (a torn tail
    /// from a crash, typically). They stay in the file and are skipped by
    /// readers.
    pub fn recovered(&self) -> &[SkippedLine] {
        &self.shared.recovered
    }

    /// How many batches this handle's writer has written and synced.
    pub fn syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// Appends one event and returns once it is durable on disk.
    ///
    /// Blocks the calling thread; from async code use [`Journal::append_async`].
    pub fn append(&self, event: NewEvent) -> Result<Recorded, TimelineError> {
        self.append_many(vec![event])?
            .pop()
            .ok_or(TimelineError::WriterGone)
    }

    /// Appends events together (all or none) and returns once they are
    /// durable on disk.
    pub fn append_many(&self, events: Vec<NewEvent>) -> Result<Vec<Recorded>, TimelineError> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.send(events, Reply::Blocking(tx))?;
        rx.recv().map_err(|_| TimelineError::WriterGone)?
    }

    /// Appends one event from async code; resolves once it is durable. Appends
    /// from many tasks are batched into one sync.
    pub async fn append_async(&self, event: NewEvent) -> Result<Recorded, TimelineError> {
        self.append_many_async(vec![event])
            .await?
            .pop()
            .ok_or(TimelineError::WriterGone)
    }

    /// Appends events together (all or none) from async code.
    pub async fn append_many_async(
        &self,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Recorded>, TimelineError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.send(events, Reply::Async(tx))?;
        rx.await.map_err(|_| TimelineError::WriterGone)?
    }

    fn send(&self, events: Vec<NewEvent>, reply: Reply) -> Result<(), TimelineError> {
        self.shared
            .requests
            .send(Request { events, reply })
            .map_err(|_| TimelineError::WriterGone)
    }
}

/// The writer thread's view of the file.
struct Writer {
    file: File,
    path: PathBuf,
    /// Bytes of the file already read or written by us.
    end: u64,
    /// Lines seen so far (for line numbers in reports).
    lines: usize,
    next_seq: u64,
    last_milestone: Option<(Milestone, Timestamp)>,
    /// The file ends with an unterminated (torn) line.
    needs_newline: bool,
    recovered: Vec<SkippedLine>,
    buf: Vec<u8>,
    syncs: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, rx: mpsc::Receiver<Request>) {
        let mut batch: Vec<Request> = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut count = first.events.len();
            batch.push(first);
            while count < MAX_BATCH_EVENTS {
                match rx.try_recv() {
                    Ok(next) => {
                        count += next.events.len();
                        batch.push(next);
                    }
                    Err(_) => break,
                }
            }
            self.commit(&mut batch);
        }
    }

    /// Writes and syncs one batch, then answers every request in it.
    fn commit(&mut self, batch: &mut Vec<Request>) {
        let lock = match FileLock::exclusive(&self.file) {
            Ok(lock) => lock,
            Err(source) => {
                let err = self.write_error(&source);
                for request in batch.drain(..) {
                    request.reply.send(Err(err.clone_shallow()));
                }
                return;
            }
        };
        let caught_up = self.catch_up();
        // Lines other processes left unreadable were reported by their readers;
        // only what was found when opening is kept for `recovered()`.
        self.recovered.clear();
        if let Err(err) = caught_up {
            for request in batch.drain(..) {
                request.reply.send(Err(err.clone_shallow()));
            }
            return;
        }
        self.buf.clear();
        if self.needs_newline {
            self.buf.push(b'\n');
        }
        let now = to_millis(Timestamp::now());
        let mut outcomes: Vec<(Reply, Result<Vec<Recorded>, TimelineError>)> =
            Vec::with_capacity(batch.len());
        let mut seq = self.next_seq;
        let mut milestone = self.last_milestone;
        for request in batch.drain(..) {
            let mark = self.buf.len();
            let mut local_seq = seq;
            let mut local_milestone = milestone;
            let mut recorded = Vec::with_capacity(request.events.len());
            let mut failure = None;
            for event in request.events {
                let at = event.at.map(to_millis).unwrap_or(now);
                if let Entry::Milestone(m) = &event.entry
                    && let Err(err) = check_milestone(local_milestone, m.milestone, at)
                {
                    failure = Some(err);
                    break;
                }
                if let Entry::Milestone(m) = &event.entry {
                    local_milestone = Some((m.milestone, at));
                }
                let logged_at = event.at.map(|_| now).filter(|n| *n != at);
                if let Err(err) = encode_line(&mut self.buf, local_seq, at, logged_at, event) {
                    failure = Some(err);
                    break;
                }
                recorded.push(Recorded { seq: local_seq, at });
                let Some(next) = local_seq.checked_add(1) else {
                    failure = Some(TimelineError::SequenceExhausted {
                        path: self.path.clone(),
                        last: local_seq,
                    });
                    break;
                };
                local_seq = next;
            }
            match failure {
                Some(err) => {
                    self.buf.truncate(mark);
                    outcomes.push((request.reply, Err(err)));
                }
                None => {
                    seq = local_seq;
                    milestone = local_milestone;
                    outcomes.push((request.reply, Ok(recorded)));
                }
            }
        }
        let wrote_events = seq != self.next_seq;
        let result = if wrote_events {
            self.file
                .write_all(&self.buf)
                .and_then(|()| self.file.sync_data())
        } else {
            Ok(())
        };
        match result {
            Ok(()) => {
                if wrote_events {
                    self.syncs.fetch_add(1, Ordering::Relaxed);
                    self.end += self.buf.len() as u64;
                    self.lines += (seq - self.next_seq) as usize;
                    self.needs_newline = false;
                    self.next_seq = seq;
                    self.last_milestone = milestone;
                }
                drop(lock);
                for (reply, outcome) in outcomes {
                    reply.send(outcome);
                }
            }
            Err(source) => {
                // What reached the file (if anything) is read back by the next
                // catch-up; nothing here is acknowledged.
                drop(lock);
                let err = self.write_error(&source);
                for (reply, outcome) in outcomes {
                    reply.send(outcome.and(Err(err.clone_shallow())));
                }
            }
        }
    }

    fn write_error(&self, source: &std::io::Error) -> TimelineError {
        TimelineError::Write {
            path: self.path.clone(),
            source: std::io::Error::new(source.kind(), source.to_string()),
        }
    }

    /// Reads what was appended to the file since we last looked (by other
    /// processes, or everything when opening). Called under the file lock.
    fn catch_up(&mut self) -> Result<(), TimelineError> {
        let read_err = |path: &Path, source| TimelineError::Read {
            path: path.to_path_buf(),
            source,
        };
        let len = self
            .file
            .metadata()
            .map_err(|e| read_err(&self.path, e))?
            .len();
        if len < self.end {
            return Err(TimelineError::Shrunk {
                path: self.path.clone(),
                expected: self.end,
                actual: len,
            });
        }
        if len == self.end {
            return Ok(());
        }
        let mut bytes = Vec::with_capacity((len - self.end) as usize);
        self.file
            .seek(SeekFrom::Start(self.end))
            .map_err(|e| read_err(&self.path, e))?;
        (&self.file)
            .take(len - self.end)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(&self.path, e))?;
        let mut next_seq = self.next_seq;
        let mut exhausted = None;
        let mut last = self.last_milestone;
        let recovered = &mut self.recovered;
        self.lines = scan(&bytes, self.end, self.lines, &mut |parsed| match parsed {
            Ok(event) => {
                match event.seq.checked_add(1) {
                    Some(after) => next_seq = next_seq.max(after),
                    None => exhausted = Some(event.seq),
                }
                if let Entry::Milestone(m) = &event.entry
                    && last.is_none_or(|(prev, _)| m.milestone > prev)
                {
                    last = Some((m.milestone, event.at));
                }
            }
            Err(skipped) => recovered.push(skipped),
        });
        if let Some(last) = exhausted {
            return Err(TimelineError::SequenceExhausted {
                path: self.path.clone(),
                last,
            });
        }
        self.next_seq = next_seq;
        self.last_milestone = last;
        self.needs_newline = bytes.last().is_some_and(|&b| b != b'\n');
        self.end = len;
        Ok(())
    }
}

/// Refuses a milestone that does not come after the last one recorded, in
/// order and in time.
fn check_milestone(
    last: Option<(Milestone, Timestamp)>,
    milestone: Milestone,
    at: Timestamp,
) -> Result<(), TimelineError> {
    let Some((previous, previous_at)) = last else {
        return Ok(());
    };
    if milestone == previous {
        return Err(TimelineError::MilestoneRepeated {
            milestone,
            at: rfc3339_millis(previous_at),
        });
    }
    if milestone < previous {
        return Err(TimelineError::MilestoneOutOfOrder {
            milestone,
            previous,
            previous_at: rfc3339_millis(previous_at),
        });
    }
    if at < previous_at {
        return Err(TimelineError::MilestoneEarlier {
            milestone,
            at: rfc3339_millis(at),
            previous,
            previous_at: rfc3339_millis(previous_at),
        });
    }
    Ok(())
}

/// The on-disk shape of a line, written from already-redacted parts.
#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    at: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    logged_at: Option<&'a str>,
    actor: &'a str,
    kind: &'static str,
    payload: &'a serde_json::Value,
}

/// Redacts the event and appends its JSON line (with newline) to `buf`.
fn encode_line(
    buf: &mut Vec<u8>,
    seq: u64,
    at: Timestamp,
    logged_at: Option<Timestamp>,
    event: NewEvent,
) -> Result<(), TimelineError> {
    let kind = event.entry.kind();
    let secret_step = matches!(&event.entry, Entry::Step(step) if step.target.kind == "Secret");
    let mut tagged = serde_json::to_value(&event.entry).map_err(TimelineError::Encode)?;
    let mut payload = tagged
        .get_mut("payload")
        .map(serde_json::Value::take)
        .unwrap_or(serde_json::Value::Null);
    redact_value(&mut payload);
    if secret_step {
        for side in ["before", "after"] {
            if let Some(v) = payload.get_mut(side) {
                redact_all_strings(v);
            }
        }
    }
    let actor = redact_text(&event.actor);
    let at_text = rfc3339_millis(at);
    let logged_text = logged_at.map(rfc3339_millis);
    let line = Line {
        seq,
        at: &at_text,
        logged_at: logged_text.as_deref(),
        actor: &actor,
        kind,
        payload: &payload,
    };
    serde_json::to_writer(&mut *buf, &line).map_err(TimelineError::Encode)?;
    buf.push(b'\n');
    Ok(())
}

impl Journal {
    /// Reads the whole journal back from disk (events appended through any
    /// handle or process), with skipped lines reported.
    pub fn read(&self) -> Result<super::read::JournalContents, TimelineError> {
        super::read::read_journal(&self.shared.path)
    }
}

/// An exclusive `flock` on the journal file, released on drop.
/// Holds the descriptor number only: the writer owns the file and outlives
/// every lock it takes.
struct FileLock {
    fd: std::os::unix::io::RawFd,
}

impl FileLock {
    fn exclusive(file: &File) -> std::io::Result<Self> {
        let fd = file.as_raw_fd();
        loop {
            // SAFETY: flock on a valid, open file descriptor owned by `file`.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
            if rc == 0 {
                return Ok(FileLock { fd });
            }
            let err = std::io::Error::last_os_error();
            if err.kind() != std::io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // SAFETY: unlocking the descriptor locked in `exclusive`, still open.
        unsafe {
            libc::flock(self.fd, libc::LOCK_UN);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        s.parse().expect("valid timestamp")
    }

    #[test]
    fn milestones_must_move_forward_in_order_and_time() {
        let started = Some((Milestone::Started, t("2026-11-26T09:00:00Z")));
        assert!(check_milestone(started, Milestone::Detected, t("2026-11-26T09:14:00Z")).is_ok());
        let err = check_milestone(started, Milestone::Detected, t("2026-11-26T08:59:00Z"))
            .expect_err("earlier than started");
        let msg = err.to_string();
        assert!(msg.contains("detected") && msg.contains("started"), "{msg}");
        let mitigated = Some((Milestone::Mitigated, t("2026-11-26T10:41:00Z")));
        let msg = check_milestone(mitigated, Milestone::Detected, t("2026-11-26T10:50:00Z"))
            .expect_err("detected after mitigated")
            .to_string();
        assert!(
            msg.contains("detected") && msg.contains("mitigated"),
            "{msg}"
        );
    }
}
