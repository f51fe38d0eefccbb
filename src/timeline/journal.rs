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
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use serde::Serialize;

use super::TimelineError;
use super::event::{Entry, Milestone, NewEvent, Recorded, rfc3339_millis, to_millis};
use super::read::{
    MAX_DEPTH, MAX_LINE_BYTES, SkippedLine, ensure_regular, nesting_depth, parse_line, scan_reader,
};
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
    incident: Option<String>,
    has_milestone: bool,
    earliest: Option<Timestamp>,
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

/// How long an opener or an append waits for the journal's lock while
/// another process holds it, and whom to tell that it is waiting.
#[derive(Clone)]
pub struct LockWait {
    /// Give up after this long ([`TimelineError::LockTimeout`]).
    pub timeout: Duration,
    /// Called once each time a wait begins (the lock is held elsewhere).
    pub on_wait: Option<WaitNotice>,
}

/// What [`LockWait::on_wait`] calls.
pub type WaitNotice = Arc<dyn Fn(&LockHeld) + Send + Sync>;

impl Default for LockWait {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_LOCK_TIMEOUT,
            on_wait: None,
        }
    }
}

impl std::fmt::Debug for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWait")
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// How long a journal's lock is waited for unless told otherwise.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(10);

/// Another process holds a journal's lock; told to [`LockWait::on_wait`].
#[derive(Debug, Clone)]
pub struct LockHeld {
    /// The journal.
    pub path: PathBuf,
    /// The holder's process id, when the system says (Linux `/proc/locks`).
    pub holder: Option<u32>,
    /// How long the wait may last.
    pub timeout: Duration,
}

/// The incident a journal is created for (or adopted into), by
/// [`Journal::open_incident`] and [`Journal::start_incident`].
#[derive(Debug, Clone)]
pub struct IncidentStart {
    /// Incident identifier, e.g. `PM-004`.
    pub id: String,
    /// One-line title, if given.
    pub title: Option<String>,
    /// Severity, if known.
    pub severity: Option<String>,
    /// When impact started; `None` means now, or, when adopting a journal,
    /// the time of its earliest event.
    pub started: Option<Timestamp>,
    /// Who records it.
    pub actor: String,
}

impl IncidentStart {
    /// The incident a command recording into `path` starts when the journal
    /// is missing: `id` if given, else the file name without its extension
    /// (`incidents/PM-004.jsonl` → `PM-004`), starting at `started`.
    pub fn for_journal(
        path: &Path,
        id: Option<&str>,
        actor: impl Into<String>,
        started: Timestamp,
    ) -> IncidentStart {
        let id = id
            .map(str::to_string)
            .or_else(|| {
                path.file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .filter(|s| !s.trim().is_empty())
            })
            .unwrap_or_else(|| "incident".to_string());
        IncidentStart {
            id,
            title: None,
            severity: None,
            started: Some(to_millis(started)),
            actor: actor.into(),
        }
    }

    /// The incident header: `incident`, then `severity` when known, then the
    /// `started` milestone when `with_started`.
    fn header(&self, with_started: bool, default_start: Timestamp) -> Vec<NewEvent> {
        let started = to_millis(self.started.unwrap_or(default_start));
        let mut events = vec![NewEvent::at(
            started,
            &self.actor,
            Entry::Incident(super::event::IncidentOpened {
                id: self.id.clone(),
                title: self.title.clone(),
            }),
        )];
        if let Some(severity) = &self.severity {
            events.push(NewEvent::at(
                started,
                &self.actor,
                Entry::severity(severity.clone()),
            ));
        }
        if with_started {
            events.push(NewEvent::at(
                started,
                &self.actor,
                Entry::milestone(Milestone::Started),
            ));
        }
        events
    }
}

/// How [`Journal::open_incident`] found the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened {
    /// It was missing and was created with the incident header.
    Created,
    /// It already held an incident.
    Existing,
}

/// How [`Journal::start_incident`] started the incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Started {
    /// A new journal was created with the incident header.
    Created,
    /// An existing journal that held events but no incident header (or
    /// nothing at all) got the header appended after its events; nothing
    /// in it was rewritten.
    Adopted,
}

/// What the first line of an existing file says about it.
enum FirstLine {
    Empty,
    Event { incident: bool },
    NotAnEvent(String),
}

impl Journal {
    /// Opens the journal at `path`, creating it (and its parent directories)
    /// if it does not exist. The existing content is read to continue the
    /// sequence numbers and the milestone order; unreadable lines (a torn
    /// tail) are kept in [`Journal::recovered`] and never rewritten.
    ///
    /// An existing file is appended to only if it is a regular file that is
    /// empty or whose first line is a journal event; anything else (a
    /// README, a binary, a directory, a FIFO) is refused
    /// ([`TimelineError::NotAJournal`]) and left untouched. The lock is
    /// waited for as [`LockWait::default`] says.
    ///
    /// This reads the file and may block; from async code call it inside
    /// `tokio::task::spawn_blocking` (appends have an async form).
    pub fn open_or_create(path: impl AsRef<Path>) -> Result<Journal, TimelineError> {
        Self::open_inner(path.as_ref(), &LockWait::default(), None, false).map(|(j, _)| j)
    }

    /// Opens an incident's journal to record into: what every command that
    /// appends (`timeline note`, `mark`, …, `run --timeline`) goes through.
    ///
    /// - A missing journal is created with the incident header of `start`
    ///   (`incident`, `severity` if known, the `started` milestone), written
    ///   to a temporary file, synced and linked into place, so no process
    ///   ever sees the journal without its header ([`Opened::Created`]).
    /// - An existing file is appended to only if it is a journal with an
    ///   incident ([`Opened::Existing`]); a file that is not a journal,
    ///   an empty file, and a journal without an incident header are
    ///   refused and left byte-for-byte unchanged (the last can be adopted
    ///   with [`Journal::start_incident`]).
    pub fn open_incident(
        path: impl AsRef<Path>,
        start: &IncidentStart,
        lock: &LockWait,
    ) -> Result<(Journal, Opened), TimelineError> {
        let path = path.as_ref();
        let header = start.header(true, Timestamp::now());
        let (journal, created) = Self::open_inner(path, lock, Some(header), true)?;
        Ok((
            journal,
            if created {
                Opened::Created
            } else {
                Opened::Existing
            },
        ))
    }

    /// Starts an incident (`timeline new`): creates the journal with the
    /// header of `start`, or adopts an existing journal that has no incident
    /// header yet (events recorded before anyone ran `timeline new`, or an
    /// empty file): the header is appended after those events — `incident`
    /// and `severity` always, the `started` milestone only if no milestone
    /// was recorded yet — and readers take the incident's identity from it
    /// wherever it stands. A journal that already holds an incident is
    /// refused ([`TimelineError::AlreadyStarted`]).
    pub fn start_incident(
        path: impl AsRef<Path>,
        start: &IncidentStart,
        lock: &LockWait,
    ) -> Result<(Journal, Started), TimelineError> {
        let path = path.as_ref();
        let header = start.header(true, Timestamp::now());
        let (journal, created) = Self::open_inner(path, lock, Some(header), false)?;
        if created {
            return Ok((journal, Started::Created));
        }
        if let Some(id) = journal.shared.incident.clone() {
            return Err(TimelineError::AlreadyStarted {
                path: path.to_path_buf(),
                id,
            });
        }
        let with_started = !journal.shared.has_milestone;
        let earliest = journal.shared.earliest.unwrap_or_else(Timestamp::now);
        journal.append_many(start.header(with_started, earliest))?;
        Ok((journal, Started::Adopted))
    }

    fn open_inner(
        path: &Path,
        lock: &LockWait,
        header: Option<Vec<NewEvent>>,
        require_incident: bool,
    ) -> Result<(Journal, bool), TimelineError> {
        let path = path.to_path_buf();
        let open_err = |source| TimelineError::Open {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(open_err)?;
        }
        let mut created = false;
        if let Some(header) = header
            && std::fs::symlink_metadata(&path).is_err()
        {
            created = create_with(&path, header)?;
        }
        let existed = created || path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(!require_incident && !created)
            // A FIFO must not block the open; it is refused just below.
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::IsADirectory => TimelineError::NotAJournal {
                    path: path.clone(),
                    why: "it is a directory".into(),
                },
                _ => open_err(e),
            })?;
        ensure_regular(&file).map_err(|e| TimelineError::NotAJournal {
            path: path.clone(),
            why: e.to_string(),
        })?;
        if !existed {
            // Make the new directory entry durable too.
            file.sync_all().map_err(open_err)?;
            sync_parent(&path);
        }
        let mut writer = Writer {
            file,
            path: path.clone(),
            end: 0,
            lines: 0,
            next_seq: 1,
            last_milestone: None,
            incident: None,
            earliest: None,
            needs_newline: false,
            recovered: Vec::new(),
            buf: Vec::with_capacity(1 << 16),
            syncs: Arc::new(AtomicU64::new(0)),
            lock: lock.clone(),
        };
        {
            let _lock = writer.lock_file()?;
            match first_line(&writer.file).map_err(open_err)? {
                FirstLine::NotAnEvent(why) => {
                    return Err(TimelineError::NotAJournal {
                        path: path.clone(),
                        why: format!("its first line is not a journal event ({why})"),
                    });
                }
                FirstLine::Empty if require_incident => {
                    return Err(TimelineError::NoIncident {
                        path: path.clone(),
                        empty: true,
                    });
                }
                FirstLine::Event { incident: false }
                | FirstLine::Empty
                | FirstLine::Event { incident: true } => {}
            }
            writer.catch_up()?;
        }
        if require_incident && writer.incident.is_none() {
            return Err(TimelineError::NoIncident {
                path: path.clone(),
                empty: false,
            });
        }
        let recovered = std::mem::take(&mut writer.recovered);
        let syncs = writer.syncs.clone();
        let incident = writer.incident.clone();
        let has_milestone = writer.last_milestone.is_some();
        let earliest = writer.earliest;
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("warroom-journal".into())
            .spawn(move || writer.run(rx))
            .map_err(open_err)?;
        Ok((
            Journal {
                shared: Arc::new(Shared {
                    path,
                    requests: tx,
                    recovered,
                    syncs,
                    incident,
                    has_milestone,
                    earliest,
                }),
            },
            created,
        ))
    }

    /// The time of the earliest event in the journal when it was opened.
    pub fn earliest(&self) -> Option<Timestamp> {
        self.shared.earliest
    }

    /// The incident recorded in the journal when it was opened, if any.
    pub fn incident(&self) -> Option<&str> {
        self.shared.incident.as_deref()
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
    /// The first incident recorded in the file, if any.
    incident: Option<String>,
    /// The earliest event time in the file, if any.
    earliest: Option<Timestamp>,
    /// The file ends with an unterminated (torn) line.
    needs_newline: bool,
    recovered: Vec<SkippedLine>,
    buf: Vec<u8>,
    syncs: Arc<AtomicU64>,
    lock: LockWait,
}

impl Writer {
    /// Takes the file's lock, waiting as long as [`LockWait`] allows.
    fn lock_file(&self) -> Result<FileLock, TimelineError> {
        FileLock::exclusive(&self.file, &self.path, &self.lock)
    }

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
        let lock = match self.lock_file() {
            Ok(lock) => lock,
            Err(err) => {
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
        self.file
            .seek(SeekFrom::Start(self.end))
            .map_err(|e| read_err(&self.path, e))?;
        let mut next_seq = self.next_seq;
        let mut exhausted = None;
        let mut last = self.last_milestone;
        let mut incident = self.incident.take();
        let mut earliest = self.earliest;
        let recovered = &mut self.recovered;
        let scanned = scan_reader(
            (&self.file).take(len - self.end),
            self.end,
            self.lines,
            &mut |parsed, _| match parsed {
                Ok(event) => {
                    earliest = Some(earliest.map_or(event.at, |e: Timestamp| e.min(event.at)));
                    match event.seq.checked_add(1) {
                        Some(after) => next_seq = next_seq.max(after),
                        None => exhausted = Some(event.seq),
                    }
                    match &event.entry {
                        Entry::Milestone(m) if last.is_none_or(|(prev, _)| m.milestone > prev) => {
                            last = Some((m.milestone, event.at));
                        }
                        Entry::Incident(inc) if incident.is_none() => {
                            incident = Some(inc.id.clone());
                        }
                        _ => {}
                    }
                }
                Err(skipped) => recovered.push(skipped),
            },
        )
        .map_err(|e| read_err(&self.path, e))?;
        self.incident = incident;
        self.earliest = earliest;
        self.lines = scanned.lines;
        if let Some(last) = exhausted {
            return Err(TimelineError::SequenceExhausted {
                path: self.path.clone(),
                last,
            });
        }
        self.next_seq = next_seq;
        self.last_milestone = last;
        self.needs_newline = scanned.unterminated;
        self.end = self.end.saturating_add(scanned.bytes);
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
    if let Entry::Step(step) = &event.entry {
        // `{"payload":{"before": …}}`: the line and the payload add two levels.
        let deepest = value_depth(&step.before).max(value_depth(&step.after)) + 2;
        if deepest > MAX_DEPTH {
            return Err(TimelineError::EventRefused(format!(
                "the step's before/after values nest {deepest} deep in the journal line; a \
                 journal line nests at most {MAX_DEPTH} deep"
            )));
        }
    }
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
    let start = buf.len();
    serde_json::to_writer(&mut *buf, &line).map_err(TimelineError::Encode)?;
    // What is acknowledged must be readable: the reader's limits, checked
    // on the very bytes that would be written.
    let written = &buf[start..];
    let refusal = if written.len() > MAX_LINE_BYTES {
        Some(format!(
            "the event is {} bytes as a journal line; a journal line holds at most \
             {MAX_LINE_BYTES} bytes",
            written.len()
        ))
    } else {
        let depth = nesting_depth(written);
        (depth > MAX_DEPTH).then(|| {
            format!("the event nests {depth} deep; a journal line nests at most {MAX_DEPTH} deep")
        })
    };
    if let Some(reason) = refusal {
        buf.truncate(start);
        return Err(TimelineError::EventRefused(reason));
    }
    buf.push(b'\n');
    Ok(())
}

/// How deeply objects and arrays nest in `value` (0 for a scalar), without
/// recursion.
fn value_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Object(map) => Box::new(map.values()),
            serde_json::Value::Array(items) => Box::new(items.iter()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// Creates `path` holding `header` (sequence numbers from 1), atomically:
/// written to a temporary file beside it, synced, then linked into place,
/// so that no reader or appender ever sees the journal without its header.
/// Returns false when `path` appeared meanwhile (another process created
/// it); nothing is written then.
fn create_with(path: &Path, header: Vec<NewEvent>) -> Result<bool, TimelineError> {
    let open_err = |source| TimelineError::Open {
        path: path.to_path_buf(),
        source,
    };
    let mut buf = Vec::new();
    let now = to_millis(Timestamp::now());
    for (seq, event) in (1u64..).zip(header) {
        let at = event.at.map(to_millis).unwrap_or(now);
        encode_line(&mut buf, seq, at, None, event)?;
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "journal".into());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let temp = dir.join(format!(".{name}.{}.{nanos}.new", std::process::id()));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut f| f.write_all(&buf).and_then(|()| f.sync_all()));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&temp);
        return Err(open_err(e));
    }
    let linked = std::fs::hard_link(&temp, path);
    let _ = std::fs::remove_file(&temp);
    match linked {
        Ok(()) => {
            sync_parent(path);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(open_err(e)),
    }
}

/// Makes a new directory entry durable (best effort).
fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && let Ok(dir) = File::open(parent)
    {
        let _ = dir.sync_all();
    }
}

/// Whether the regular file at `path` starts with a journal event (what an
/// export refuses to write over). A missing or unreadable file is not one.
pub fn holds_journal(path: &Path) -> bool {
    super::read::open_regular(path)
        .ok()
        .and_then(|f| first_line(&f).ok())
        .is_some_and(|first| matches!(first, FirstLine::Event { .. }))
}

/// Whether `file` is empty or its first line is a journal event (what an
/// export reads).
pub(crate) fn starts_like_journal(file: &File) -> bool {
    matches!(
        first_line(file),
        Ok(FirstLine::Empty | FirstLine::Event { .. })
    )
}

/// Reads the first line of `file` (at most [`MAX_LINE_BYTES`] of it) and
/// says whether it is a journal event.
fn first_line(file: &File) -> std::io::Result<FirstLine> {
    let mut line = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let mut offset = 0u64;
    loop {
        let n = match file.read_at(&mut chunk, offset) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        offset += n as u64;
        match chunk[..n].iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&chunk[..i]);
                break;
            }
            None => line.extend_from_slice(&chunk[..n]),
        }
        if line.len() > MAX_LINE_BYTES {
            return Ok(FirstLine::NotAnEvent(format!(
                "it is longer than {MAX_LINE_BYTES} bytes"
            )));
        }
    }
    if offset == 0 {
        return Ok(FirstLine::Empty);
    }
    let text = line.strip_suffix(b"\r").unwrap_or(&line);
    Ok(match parse_line(text) {
        Ok(event) => FirstLine::Event {
            incident: matches!(event.entry, Entry::Incident(_)),
        },
        Err(why) => FirstLine::NotAnEvent(why),
    })
}

/// The process holding an `flock` on `file`, from `/proc/locks` (Linux);
/// `None` where the system does not say.
fn lock_holder(file: &File) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let meta = file.metadata().ok()?;
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let wanted = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let me = std::process::id();
    let table = std::fs::read_to_string("/proc/locks").ok()?;
    table.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 2345 08:01:1234 0 EOF`; waiters have `->`.
        if fields.get(1) != Some(&"FLOCK") || fields.get(5) != Some(&wanted.as_str()) {
            return None;
        }
        fields
            .get(4)
            .and_then(|pid| pid.parse::<u32>().ok())
            .filter(|pid| *pid != me)
    })
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
    /// Takes the lock, polling while another process holds it: tells
    /// `wait.on_wait` once, and gives up after `wait.timeout`.
    fn exclusive(file: &File, path: &Path, wait: &LockWait) -> Result<Self, TimelineError> {
        let fd = file.as_raw_fd();
        let start = Instant::now();
        let mut told = false;
        let mut pause = Duration::from_millis(5);
        loop {
            // SAFETY: flock on a valid, open file descriptor owned by `file`.
            let rc = unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(FileLock { fd });
            }
            let err = std::io::Error::last_os_error();
            match err.kind() {
                std::io::ErrorKind::Interrupted => continue,
                std::io::ErrorKind::WouldBlock => {}
                _ => {
                    return Err(TimelineError::Write {
                        path: path.to_path_buf(),
                        source: err,
                    });
                }
            }
            let waited = start.elapsed();
            if waited >= wait.timeout {
                return Err(TimelineError::LockTimeout {
                    path: path.to_path_buf(),
                    waited: wait.timeout,
                    holder: lock_holder(file),
                });
            }
            if !told {
                told = true;
                if let Some(on_wait) = &wait.on_wait {
                    on_wait(&LockHeld {
                        path: path.to_path_buf(),
                        holder: lock_holder(file),
                        timeout: wait.timeout,
                    });
                }
            }
            std::thread::sleep(pause.min(wait.timeout - waited));
            pause = (pause * 2).min(Duration::from_millis(100));
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
