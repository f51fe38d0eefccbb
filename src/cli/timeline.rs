//! `warroom timeline …`: record an incident as it happens and export the
//! postmortem timeline; `warroom bench timeline` (durable append rate and
//! export times).
//!
//! The actor of a recorded event is `--actor`, else the current kubeconfig
//! user, else `$USER`, else `warroom`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, Subcommand, ValueEnum};
use jiff::Timestamp;
use serde::Deserialize;
use warroom::timeline::export::{self, Format};
use warroom::timeline::{
    AUTOMATIC_ACTOR, AlertChange, AlertState, Entry, IncidentOpened, IncidentStart, Journal,
    LockWait, MetricSnapshot, Milestone, NewEvent, Opened, Started, StepPhase, StepReport,
    StepTarget, TimelineError, default_path,
};

use super::{CommandResult, Exit, Failure, numbers};

/// Incident timeline commands.
#[derive(Subcommand)]
pub enum TimelineCommand {
    /// Start a journal for an incident: records its id, severity and the
    /// `started` milestone (now, unless --started says when).
    New(NewArgs),
    /// Add a note.
    Note(NoteArgs),
    /// Record a milestone: detected, declared, mitigated or resolved.
    Mark(MarkArgs),
    /// Record a severity change.
    Severity(SeverityArgs),
    /// Record an alert firing or resolving.
    Alert(AlertArgs),
    /// Record a playbook step from a JSON payload (as the playbook engine does).
    Step(StepArgs),
    /// Export the timeline: Markdown postmortem, JSON or self-contained HTML.
    Export(ExportArgs),
    /// Append notes as fast as durability allows, printing each acknowledged
    /// sequence number (crash tests).
    #[command(hide = true)]
    BenchAppend(BenchAppendArgs),
}

/// Which journal: a FILE, or `--id` for `incidents/<id>.jsonl`.
#[derive(Args)]
pub struct Target {
    /// Incident id; the journal is `incidents/<id>.jsonl` unless FILE is given.
    #[arg(long)]
    id: Option<String>,
    /// Who records the event (default: kubeconfig user, else $USER).
    #[arg(long)]
    actor: Option<String>,
    /// When it happened (RFC 3339 with offset, e.g. 2026-11-26T09:41:00Z); default now.
    #[arg(long)]
    at: Option<String>,
    #[command(flatten)]
    lock: LockArgs,
}

/// How long to wait for a journal another process is writing to.
#[derive(Args)]
pub struct LockArgs {
    /// Seconds to wait for the journal's lock while another process holds
    /// it (0 to 3600; 0 gives up at once). Waiting is announced on stderr.
    #[arg(
        long,
        value_name = "SECS",
        default_value = "10",
        value_parser = numbers::seconds(0.0, 3600.0)
    )]
    lock_timeout: std::time::Duration,
}

impl LockArgs {
    /// The wait: bounded, and said on stderr with what is waited on.
    fn wait(&self) -> LockWait {
        LockWait {
            timeout: self.lock_timeout,
            on_wait: Some(std::sync::Arc::new(|held: &warroom::timeline::LockHeld| {
                super::output::say(format_args!(
                    "waiting for the lock on the journal {}, held by {}; giving up after {:?}",
                    held.path.display(),
                    match held.holder {
                        Some(pid) => format!("process {pid}"),
                        None => "another process".to_string(),
                    },
                    held.timeout
                ));
            })),
        }
    }
}

/// `timeline new`.
#[derive(Args)]
pub struct NewArgs {
    /// Journal file (default: incidents/<id>.jsonl).
    file: Option<PathBuf>,
    /// Incident id, e.g. PM-004.
    #[arg(long)]
    id: String,
    /// Severity, e.g. SEV-1.
    #[arg(long)]
    severity: String,
    /// One-line title.
    #[arg(long)]
    title: Option<String>,
    /// When impact started (RFC 3339 with offset, e.g. 2026-11-26T09:00:00Z); default now.
    #[arg(long)]
    started: Option<String>,
    /// Who records the event (default: kubeconfig user, else $USER).
    #[arg(long)]
    actor: Option<String>,
    #[command(flatten)]
    lock: LockArgs,
}

/// `timeline note`.
#[derive(Args)]
pub struct NoteArgs {
    /// [FILE] TEXT (FILE may be left out with --id); TEXT `-` reads the
    /// note from standard input (at most 1 MiB).
    #[arg(num_args = 1..=2, value_names = ["FILE", "TEXT"], required = true)]
    args: Vec<String>,
    #[command(flatten)]
    target: Target,
}

/// `timeline mark`.
#[derive(Args)]
pub struct MarkArgs {
    /// [FILE] MILESTONE (detected, declared, mitigated, resolved).
    #[arg(num_args = 1..=2, value_names = ["FILE", "MILESTONE"], required = true)]
    args: Vec<String>,
    #[command(flatten)]
    target: Target,
}

/// `timeline severity`.
#[derive(Args)]
pub struct SeverityArgs {
    /// [FILE] SEVERITY.
    #[arg(num_args = 1..=2, value_names = ["FILE", "SEVERITY"], required = true)]
    args: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Clone, Copy, ValueEnum)]
enum AlertStateArg {
    Fired,
    Resolved,
}

/// `timeline alert`.
#[derive(Args)]
pub struct AlertArgs {
    /// [FILE] ALERT.
    #[arg(num_args = 1..=2, value_names = ["FILE", "ALERT"], required = true)]
    args: Vec<String>,
    /// Fired or resolved.
    #[arg(long, value_enum)]
    state: AlertStateArg,
    /// The alert expression's value: a finite number within ±1e15.
    #[arg(long, allow_hyphen_values = true, value_parser = alert_value)]
    value: Option<f64>,
    /// Labels, key=value (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    labels: Vec<String>,
    #[command(flatten)]
    target: Target,
}

/// `timeline step`.
#[derive(Args)]
pub struct StepArgs {
    /// [FILE] PAYLOAD: the step report as JSON
    /// (`{"playbook":…,"run_id":…,"step":…,"kind":…,"phase":…,"target":{…},"before":…,"after":…}`).
    #[arg(num_args = 1..=2, value_names = ["FILE", "PAYLOAD"], required = true)]
    args: Vec<String>,
    #[command(flatten)]
    target: Target,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Md,
    Json,
    Html,
}

/// `timeline export`.
#[derive(Args)]
pub struct ExportArgs {
    /// Journal file (or --id).
    file: Option<PathBuf>,
    /// Incident id; reads incidents/<id>.jsonl.
    #[arg(long)]
    id: Option<String>,
    /// Export format: md (postmortem), json (figures and events) or html
    /// (self-contained page with a chart). `--output` is the same flag, as
    /// `--output` names the format in every command.
    #[arg(long, visible_alias = "output", value_enum, default_value = "md")]
    format: FormatArg,
    /// Write the export to this file (atomically: a temporary file beside
    /// it, synced, then renamed) instead of standard output. Never a
    /// journal: a file that holds journal events, or the input itself (also
    /// through a symlink or a hard link), is refused.
    #[arg(short = 'o', long = "out", value_name = "PATH")]
    out: Option<PathBuf>,
}

/// `timeline bench-append`.
#[derive(Args)]
pub struct BenchAppendArgs {
    /// Journal file.
    file: PathBuf,
    /// Appends per writer thread (1 to 10,000,000).
    #[arg(long, default_value_t = 1_000_000, value_parser = numbers::whole::<u64>(1..=10_000_000))]
    count: u64,
    /// Concurrent writer threads (1 to 256).
    #[arg(long, default_value_t = 8, value_parser = numbers::whole::<usize>(1..=256))]
    writers: usize,
}

/// `--value` of an alert: finite and within ±1e15 (JSON has no NaN or
/// infinity, and no alert expression reaches that far).
fn alert_value(text: &str) -> Result<f64, String> {
    text.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && v.abs() <= 1e15)
        .ok_or_else(|| "a finite number between -1e15 and 1e15 is needed".to_string())
}

/// Runs a timeline command.
pub fn run(cmd: TimelineCommand) -> CommandResult {
    match cmd {
        TimelineCommand::New(args) => new(args),
        TimelineCommand::Note(args) => {
            let (file, text) = file_and_value(args.args, args.target.id.as_deref())?;
            let text = if text == "-" {
                note_from_stdin()?
            } else {
                text
            };
            let at = parse_at(&args.target)?;
            record(&file, &args.target, at, Entry::note(text))
        }
        TimelineCommand::Mark(args) => {
            let (file, name) = file_and_value(args.args, args.target.id.as_deref())?;
            let milestone = match name.as_str() {
                "detected" => Milestone::Detected,
                "declared" => Milestone::Declared,
                "mitigated" => Milestone::Mitigated,
                "resolved" => Milestone::Resolved,
                "started" => {
                    return Err(Failure::msg(
                        Exit::Invalid,
                        "`started` is recorded by `warroom timeline new` (use --started TIME)",
                    ));
                }
                other => {
                    return Err(Failure::msg(
                        Exit::Invalid,
                        format!(
                            "unknown milestone `{other}`: expected detected, declared, mitigated or resolved"
                        ),
                    ));
                }
            };
            let at = parse_at(&args.target)?;
            record(&file, &args.target, at, Entry::milestone(milestone))
        }
        TimelineCommand::Severity(args) => {
            let (file, severity) = file_and_value(args.args, args.target.id.as_deref())?;
            non_empty("the severity", &severity)?;
            record(
                &file,
                &args.target,
                parse_at(&args.target)?,
                Entry::severity(severity),
            )
        }
        TimelineCommand::Alert(args) => {
            let (file, alert) = file_and_value(args.args, args.target.id.as_deref())?;
            non_empty("the alert name", &alert)?;
            let mut labels = std::collections::BTreeMap::new();
            for label in &args.labels {
                let Some((k, v)) = label.split_once('=') else {
                    return Err(Failure::msg(
                        Exit::Invalid,
                        format!("--label `{label}` is not KEY=VALUE"),
                    ));
                };
                labels.insert(k.to_string(), v.to_string());
            }
            let entry = Entry::Alert(AlertChange {
                alert,
                state: match args.state {
                    AlertStateArg::Fired => AlertState::Fired,
                    AlertStateArg::Resolved => AlertState::Resolved,
                },
                value: args.value,
                labels,
            });
            record(&file, &args.target, parse_at(&args.target)?, entry)
        }
        TimelineCommand::Step(args) => {
            let (file, payload) = file_and_value(args.args, args.target.id.as_deref())?;
            let report: StepReport = serde_json::from_str(&payload).map_err(|e| {
                Failure::msg(
                    Exit::Invalid,
                    format!("the step payload is not a step report: {e}"),
                )
            })?;
            record(
                &file,
                &args.target,
                parse_at(&args.target)?,
                Entry::Step(report),
            )
        }
        TimelineCommand::Export(args) => export_cmd(args),
        TimelineCommand::BenchAppend(args) => bench_append(args),
    }
}

fn new(args: NewArgs) -> CommandResult {
    check_id(&args.id)?;
    non_empty("--severity", &args.severity)?;
    let file = args.file.unwrap_or_else(|| default_path(&args.id));
    let started = args.started.as_deref().map(parse_time).transpose()?;
    let start = IncidentStart {
        id: args.id.clone(),
        title: args.title,
        severity: Some(args.severity),
        started,
        actor: actor(args.actor),
    };
    let (journal, how) =
        Journal::start_incident(&file, &start, &args.lock.wait()).map_err(failure)?;
    let at = start
        .started
        .or(journal.earliest())
        .map(warroom::timeline::event::rfc3339_millis)
        .unwrap_or_default();
    match how {
        Started::Created => println!("{}: incident {} started at {at}", file.display(), args.id),
        Started::Adopted => println!(
            "{}: adopted: incident {} (started at {at}) recorded after the events already in \
             it; nothing in it was rewritten",
            file.display(),
            args.id
        ),
    }
    Ok(Exit::Done)
}

/// Longest note read from standard input.
const MAX_NOTE_BYTES: u64 = 1 << 20;

/// `timeline note FILE -`: the note's text from standard input (a note too
/// long for one command-line argument), at most [`MAX_NOTE_BYTES`].
fn note_from_stdin() -> Result<String, Failure> {
    use std::io::Read as _;
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_NOTE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::msg(Exit::Invalid, format!("cannot read the note: {e}")))?;
    if bytes.len() as u64 > MAX_NOTE_BYTES {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "the note on standard input is longer than {MAX_NOTE_BYTES} bytes; nothing was written"
            ),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| {
        Failure::msg(
            Exit::Invalid,
            "the note on standard input is not UTF-8 text; nothing was written",
        )
    })?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// An incident id names a file: non-empty, without slashes.
fn check_id(id: &str) -> Result<(), Failure> {
    let bad = id.trim().is_empty()
        || id.contains(['/', '\\'])
        || id.chars().any(char::is_control)
        || id == "."
        || id == ".."
        || id.len() > MAX_ID_BYTES;
    if bad {
        let shown: String = id.chars().take(40).collect();
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "--id `{}{}` must be a non-empty name of at most {MAX_ID_BYTES} bytes, without \
                 slashes or control characters",
                shown.escape_debug(),
                if shown.len() < id.len() { "…" } else { "" }
            ),
        ));
    }
    Ok(())
}

/// Refuses an empty (or blank) value.
fn non_empty(what: &str, value: &str) -> Result<(), Failure> {
    if value.trim().is_empty() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!("{what} is empty; nothing was written"),
        ));
    }
    Ok(())
}

/// Longest incident id (it names a file).
const MAX_ID_BYTES: usize = 128;

/// Records one event: into the incident's journal, creating it (with the
/// incident header) when missing; see [`Journal::open_incident`].
fn record(file: &Path, target: &Target, at: Option<Timestamp>, entry: Entry) -> CommandResult {
    let kind = entry.kind();
    let what = match &entry {
        Entry::Milestone(m) => m.milestone.name().to_string(),
        _ => kind.to_string(),
    };
    let actor = actor(target.actor.clone());
    let start = IncidentStart::for_journal(
        file,
        target.id.as_deref(),
        &actor,
        at.unwrap_or_else(Timestamp::now),
    );
    let (journal, opened) =
        Journal::open_incident(file, &start, &target.lock.wait()).map_err(failure)?;
    warn_recovered(file, &journal);
    if opened == Opened::Created {
        println!(
            "{}: created incident {} (started at {})",
            file.display(),
            start.id,
            start
                .started
                .map(warroom::timeline::event::rfc3339_millis)
                .unwrap_or_default()
        );
    }
    let event = NewEvent { at, actor, entry };
    let recorded = journal.append(event).map_err(failure)?;
    println!(
        "{}: #{} {what} at {}",
        file.display(),
        recorded.seq,
        warroom::timeline::event::rfc3339_millis(recorded.at)
    );
    Ok(Exit::Done)
}

fn export_cmd(args: ExportArgs) -> CommandResult {
    let file = match (args.file, args.id) {
        (Some(file), _) => file,
        (None, Some(id)) => {
            check_id(&id)?;
            default_path(&id)
        }
        (None, None) => {
            return Err(Failure::msg(
                Exit::Invalid,
                "give the journal FILE or --id ID",
            ));
        }
    };
    let format = match args.format {
        FormatArg::Md => Format::Markdown,
        FormatArg::Json => Format::Json,
        FormatArg::Html => Format::Html,
    };
    let target = match &args.out {
        Some(out) => Some(export_target(out, &file)?),
        None => None,
    };
    let export = |out: &mut dyn std::io::Write| {
        export::export_file(&file, format, out).map_err(|e| match &e {
            export::ExportError::Read(TimelineError::NotAJournal { .. }) => {
                Failure::msg(Exit::Invalid, e)
            }
            export::ExportError::Read(TimelineError::Read { source, .. })
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::InvalidInput
                ) =>
            {
                Failure::msg(Exit::Invalid, e)
            }
            _ => Failure::msg(Exit::Failed, e),
        })
    };
    let exported = match target {
        Some(out) => write_atomically(&out, export)?,
        None => export(&mut std::io::stdout().lock())?,
    };
    for skipped in &exported.skipped {
        eprintln!(
            "warning: {} line {}: skipped: {}",
            file.display(),
            skipped.line,
            skipped.reason
        );
    }
    let unlisted = exported.skipped_count - exported.skipped.len() as u64;
    if unlisted > 0 {
        eprintln!(
            "warning: {}: {unlisted} more unreadable line(s) skipped",
            file.display()
        );
    }
    Ok(Exit::Done)
}

/// Where `-o PATH` writes: the file PATH names (through symlinks), checked
/// before anything is read or written. Refused: the journal itself (same
/// device and inode, so also a symlink or hard link to it), any file that
/// holds journal events, and anything but a regular file (a directory, a
/// device such as /dev/full, a FIFO): a temporary file renamed over those
/// would replace them.
fn export_target(out: &Path, journal: &Path) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::MetadataExt;
    let target = match std::fs::symlink_metadata(out) {
        Ok(_) => std::fs::canonicalize(out).unwrap_or_else(|_| out.to_path_buf()),
        Err(_) => out.to_path_buf(),
    };
    let Ok(meta) = std::fs::metadata(&target) else {
        return Ok(target);
    };
    if !meta.is_file() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!(
                "-o {}: not a regular file; an export is written to a regular file (or to \
                 standard output: leave out -o)",
                out.display()
            ),
        ));
    }
    if let Ok(input) = std::fs::metadata(journal)
        && input.dev() == meta.dev()
        && input.ino() == meta.ino()
    {
        return Err(Failure::msg(
            Exit::Refused,
            format!(
                "-o {} is the journal {} itself; an export never writes over a journal \
                 (choose another file)",
                out.display(),
                journal.display()
            ),
        ));
    }
    if warroom::timeline::journal::holds_journal(&target) {
        return Err(Failure::msg(
            Exit::Refused,
            format!(
                "-o {} holds an incident journal; an export never writes over a journal \
                 (choose another file)",
                out.display()
            ),
        ));
    }
    Ok(target)
}

/// Writes a file whole or not at all: a temporary file in the same
/// directory, synced, then renamed over `path`; the directory is synced so
/// the rename survives a crash. On failure the temporary file is removed
/// and `path` is as it was.
fn write_atomically<T>(
    path: &Path,
    write: impl FnOnce(&mut dyn std::io::Write) -> Result<T, Failure>,
) -> Result<T, Failure> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "export".into());
    let temp = dir.join(format!(".{name}.{}.partial", std::process::id()));
    let fail = |e: std::io::Error| {
        Failure::msg(
            Exit::Failed,
            format!("cannot write {}: {e}; it is unchanged", path.display()),
        )
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .map_err(fail)?;
    let result = (|| {
        let mut out = std::io::BufWriter::with_capacity(1 << 16, file);
        let value = write(&mut out)?;
        let file = out.into_inner().map_err(|e| fail(e.into_error()))?;
        file.sync_all().map_err(fail)?;
        std::fs::rename(&temp, path).map_err(fail)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn bench_append(args: BenchAppendArgs) -> CommandResult {
    let journal = open(&args.file)?;
    let writers: Vec<_> = (0..args.writers.max(1))
        .map(|w| {
            let journal = journal.clone();
            std::thread::spawn(move || -> Result<(), TimelineError> {
                for i in 0..args.count {
                    let recorded = journal.append(NewEvent::automatic(Entry::note(format!(
                        "writer {w} append {i}"
                    ))))?;
                    let mut out = std::io::stdout().lock();
                    if writeln!(out, "{}", recorded.seq).is_err() {
                        return Ok(());
                    }
                }
                Ok(())
            })
        })
        .collect();
    for writer in writers {
        match writer.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(failure(e)),
            Err(_) => return Err(Failure::msg(Exit::Failed, "a writer thread panicked")),
        }
    }
    Ok(Exit::Done)
}

fn open(file: &Path) -> Result<Journal, Failure> {
    let journal = Journal::open_or_create(file).map_err(failure)?;
    warn_recovered(file, &journal);
    Ok(journal)
}

fn warn_recovered(file: &Path, journal: &Journal) {
    for skipped in journal.recovered() {
        eprintln!(
            "warning: {} line {}: {} (left in place, skipped)",
            file.display(),
            skipped.line,
            if skipped.torn_tail {
                "torn last line from an interrupted write"
            } else {
                "unreadable line"
            }
        );
    }
}

fn failure(e: TimelineError) -> Failure {
    let exit = if e.is_refusal() {
        Exit::Refused
    } else if e.is_bad_event() {
        Exit::Invalid
    } else {
        Exit::Failed
    };
    Failure::msg(exit, e)
}

fn parse_at(target: &Target) -> Result<Option<Timestamp>, Failure> {
    target.at.as_deref().map(parse_time).transpose()
}

/// `[FILE] VALUE`: with one argument the file comes from `--id`.
fn file_and_value(mut args: Vec<String>, id: Option<&str>) -> Result<(PathBuf, String), Failure> {
    match (args.len(), id) {
        (2, _) => {
            let value = args.pop().unwrap_or_default();
            let file = args.pop().unwrap_or_default();
            Ok((PathBuf::from(file), value))
        }
        (1, Some(id)) => {
            check_id(id)?;
            Ok((default_path(id), args.pop().unwrap_or_default()))
        }
        _ => Err(Failure::msg(
            Exit::Invalid,
            "give the journal FILE (or --id ID) before the value",
        )),
    }
}

/// Parses a user-given time: RFC 3339 with an offset, or `now`. A time
/// without its date, or without an offset, is refused with an example.
fn parse_time(text: &str) -> Result<Timestamp, Failure> {
    let text = text.trim();
    if text.eq_ignore_ascii_case("now") {
        return Ok(Timestamp::now());
    }
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    let hint = "write a full UTC time such as 2026-11-26T09:41:00Z (or with an offset, 2026-11-26T10:41:00+01:00)";
    if text.parse::<jiff::civil::DateTime>().is_ok() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!("`{text}` has no UTC offset; {hint}"),
        ));
    }
    if text.parse::<jiff::civil::Time>().is_ok() {
        return Err(Failure::msg(
            Exit::Invalid,
            format!("`{text}` is a time without its date; {hint}"),
        ));
    }
    Err(Failure::msg(
        Exit::Invalid,
        format!("`{text}` is not a time; {hint}"),
    ))
}

/// The actor: `--actor`, else the current kubeconfig user, else `$USER`,
/// else `warroom`.
fn actor(explicit: Option<String>) -> String {
    explicit
        .filter(|a| !a.trim().is_empty())
        .or_else(kubeconfig_user)
        .or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty()))
        .unwrap_or_else(|| AUTOMATIC_ACTOR.to_string())
}

#[derive(Deserialize)]
struct KubeConfig {
    #[serde(rename = "current-context", default)]
    current_context: Option<String>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
}

#[derive(Deserialize)]
struct NamedContext {
    name: String,
    #[serde(default)]
    context: Option<ContextUser>,
}

#[derive(Deserialize)]
struct ContextUser {
    #[serde(default)]
    user: Option<String>,
}

/// The user name of the current context in `$KUBECONFIG` (first file that
/// names a current context) or `~/.kube/config`.
fn kubeconfig_user() -> Option<String> {
    let paths: Vec<PathBuf> = match std::env::var_os("KUBECONFIG") {
        Some(list) if !list.is_empty() => std::env::split_paths(&list).collect(),
        _ => vec![PathBuf::from(std::env::var_os("HOME")?).join(".kube/config")],
    };
    let configs: Vec<KubeConfig> = paths
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .filter_map(|text| serde_saphyr::from_str::<KubeConfig>(&text).ok())
        .collect();
    let current = configs.iter().find_map(|c| c.current_context.clone())?;
    configs
        .iter()
        .flat_map(|c| &c.contexts)
        .find(|c| c.name == current)
        .and_then(|c| c.context.as_ref())
        .and_then(|c| c.user.clone())
        .filter(|u| !u.is_empty())
}

// ---------------------------------------------------------------------------
// warroom bench timeline

/// `warroom bench timeline` arguments.
#[derive(Args)]
pub struct BenchArgs {
    /// Directory for the benchmark's journals (on the disk being measured).
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Appends by the single sequential writer (1 to 1,000,000; each waits
    /// for its own sync).
    #[arg(long, default_value_t = 2000, value_parser = numbers::whole::<u64>(1..=1_000_000))]
    single: u64,
    /// Concurrent writer threads (and async tasks) for the batched run (1 to
    /// 1024: one thread each).
    #[arg(long, default_value_t = 64, value_parser = numbers::whole::<u64>(1..=1024))]
    writers: u64,
    /// Appends in total for each batched run (1 to 10,000,000).
    #[arg(long, default_value_t = 50_000, value_parser = numbers::whole::<u64>(1..=10_000_000))]
    batched: u64,
    /// Events in the journal used to time the exports (at most 10 million).
    #[arg(
        long,
        default_value_t = 100_000,
        value_parser = numbers::whole::<u64>(1..=MAX_EXPORT_EVENTS)
    )]
    export_events: u64,
}

/// Largest `--export-events`: a journal of several gigabytes, and well
/// inside the range where its timestamps (10 s apart) stay representable.
const MAX_EXPORT_EVENTS: u64 = 10_000_000;

/// Runs `warroom bench timeline`.
pub fn bench(args: BenchArgs) -> CommandResult {
    let dir = args
        .dir
        .join(format!(".warroom-bench-timeline-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| {
        Failure::msg(
            Exit::Invalid,
            format!("cannot create {}: {e}", dir.display()),
        )
    })?;
    let outcome = bench_in(&dir, &args);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn bench_in(dir: &Path, args: &BenchArgs) -> CommandResult {
    let fail = |e: TimelineError| Failure::msg(Exit::Failed, e);
    println!("journal directory: {}", dir.display());

    // 1. One writer, every append waits for its own fdatasync.
    let journal = Journal::open_or_create(dir.join("single.jsonl")).map_err(fail)?;
    let start = Instant::now();
    for i in 0..args.single {
        journal
            .append(NewEvent::automatic(Entry::note(format!(
                "sequential append {i}"
            ))))
            .map_err(fail)?;
    }
    let elapsed = start.elapsed();
    println!(
        "durable appends, 1 writer:        {:>7} in {:>6.2} s = {:>8.0} appends/s ({} syncs)",
        args.single,
        elapsed.as_secs_f64(),
        args.single as f64 / elapsed.as_secs_f64(),
        journal.syncs()
    );
    drop(journal);

    // 2. Many writer threads at once: appends share syncs.
    let journal = Journal::open_or_create(dir.join("threads.jsonl")).map_err(fail)?;
    let per_writer = (args.batched / args.writers.max(1)).max(1);
    let start = Instant::now();
    let handles: Vec<_> = (0..args.writers.max(1))
        .map(|w| {
            let journal = journal.clone();
            std::thread::spawn(move || -> Result<(), TimelineError> {
                for i in 0..per_writer {
                    journal.append(NewEvent::automatic(Entry::note(format!(
                        "writer {w} append {i}"
                    ))))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| Failure::msg(Exit::Failed, "a writer thread panicked"))?
            .map_err(fail)?;
    }
    let elapsed = start.elapsed();
    let total = per_writer * args.writers.max(1);
    println!(
        "durable appends, {:>3} threads:    {:>7} in {:>6.2} s = {:>8.0} appends/s ({} syncs, {:.1} events/sync)",
        args.writers,
        total,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        journal.syncs(),
        total as f64 / journal.syncs().max(1) as f64
    );
    drop(journal);

    // 3. Many async tasks on one runtime thread.
    let journal = Journal::open_or_create(dir.join("tasks.jsonl")).map_err(fail)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::msg(Exit::Failed, format!("cannot start the runtime: {e}")))?;
    let start = Instant::now();
    let tasks = args.writers.max(1);
    runtime
        .block_on(async {
            let mut set = tokio::task::JoinSet::new();
            for w in 0..tasks {
                let journal = journal.clone();
                set.spawn(async move {
                    for i in 0..per_writer {
                        journal
                            .append_async(NewEvent::automatic(Entry::note(format!(
                                "task {w} append {i}"
                            ))))
                            .await?;
                    }
                    Ok::<(), TimelineError>(())
                });
            }
            while let Some(done) = set.join_next().await {
                done.map_err(|_| TimelineError::WriterGone)??;
            }
            Ok::<(), TimelineError>(())
        })
        .map_err(fail)?;
    let elapsed = start.elapsed();
    println!(
        "durable appends, {:>3} async tasks:{:>7} in {:>6.2} s = {:>8.0} appends/s ({} syncs, {:.1} events/sync)",
        tasks,
        total,
        elapsed.as_secs_f64(),
        total as f64 / elapsed.as_secs_f64(),
        journal.syncs(),
        total as f64 / journal.syncs().max(1) as f64
    );
    drop(journal);

    // 4. Exports of a large journal, each streamed from the file.
    let path = dir.join("export.jsonl");
    write_incident(&path, args.export_events).map_err(fail)?;
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    println!(
        "export of {} events ({:.1} MB journal):",
        args.export_events,
        bytes as f64 / 1e6
    );
    for (name, format) in [
        ("md", Format::Markdown),
        ("json", Format::Json),
        ("html", Format::Html),
    ] {
        let start = Instant::now();
        let out = dir.join(format!("export.{name}"));
        let file = std::fs::File::create(&out).map_err(|e| {
            Failure::msg(Exit::Failed, format!("cannot write {}: {e}", out.display()))
        })?;
        let mut writer = std::io::BufWriter::with_capacity(1 << 16, file);
        export::export_file(&path, format, &mut writer)
            .map_err(|e| Failure::msg(Exit::Failed, e))?;
        drop(writer);
        let total = start.elapsed();
        let size = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
        println!(
            "  {name:<5} read + render + write {:.3} s ({:.1} MB)",
            total.as_secs_f64(),
            size as f64 / 1e6
        );
    }
    Ok(Exit::Done)
}

/// Writes a synthetic incident of `events` events: metric snapshots every
/// 10 s with a PM-003-shaped spike, notes, alerts, milestones and steps.
fn write_incident(path: &Path, events: u64) -> Result<(), TimelineError> {
    let journal = Journal::open_or_create(path)?;
    let ten_s_steps = |n: u64| {
        jiff::SignedDuration::from_secs(i64::try_from(n).unwrap_or(i64::MAX).saturating_mul(10))
    };
    let t0 = Timestamp::now()
        .checked_sub(ten_s_steps(events))
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let at = |i: u64| t0.checked_add(ten_s_steps(i)).unwrap_or(t0);
    let actor = "bench";
    let mut batch = vec![
        NewEvent::at(
            at(0),
            actor,
            Entry::Incident(IncidentOpened {
                id: "PM-BENCH".into(),
                title: Some("Benchmark incident".into()),
            }),
        ),
        NewEvent::at(at(0), actor, Entry::severity("SEV-1")),
        NewEvent::at(at(0), actor, Entry::milestone(Milestone::Started)),
    ];
    let marks = [
        (events / 10, Milestone::Detected),
        (events / 8, Milestone::Declared),
        (events / 3, Milestone::Mitigated),
        (events - events / 10, Milestone::Resolved),
    ];
    let mut done = batch.len() as u64;
    let mut i = 1;
    while done < events {
        let t = at(i);
        let phase = i as f64 / events as f64;
        let spike = if (0.08..0.33).contains(&phase) {
            1.0
        } else {
            0.02
        };
        let entry = if let Some((_, m)) = marks.iter().find(|(k, _)| *k == i) {
            Entry::milestone(*m)
        } else if i % 500 == 0 {
            Entry::Alert(AlertChange {
                alert: "LockConcurrentHolders".into(),
                state: if i % 1000 == 0 {
                    AlertState::Resolved
                } else {
                    AlertState::Fired
                },
                value: Some(2.0),
                labels: [("key".to_string(), format!("order:{i}"))].into(),
            })
        } else if i % 50 == 0 {
            Entry::note(format!("observation {i}: error rate {:.1}%", spike * 18.0))
        } else if i % 997 == 0 {
            Entry::Step(StepReport {
                playbook: "lock-contention".into(),
                run_id: format!("run-{}", i / 997),
                step: "scale-to-one".into(),
                kind: "scale".into(),
                phase: StepPhase::Applied,
                target: StepTarget {
                    api_version: "apps/v1".into(),
                    kind: "Deployment".into(),
                    namespace: Some("shop".into()),
                    name: "order-service".into(),
                },
                before: serde_json::json!({"spec": {"replicas": 8}}),
                after: serde_json::json!({"spec": {"replicas": 1}}),
                message: None,
            })
        } else {
            Entry::Metric(MetricSnapshot {
                collisions_per_min: (spike * 40.0 * (1.0 + (i as f64 / 7.0).sin())).round(),
                errors_per_min: (spike * 700.0 * (1.0 + (i as f64 / 13.0).cos() * 0.3)).round(),
                concurrent_holders: if spike > 0.5 { 2 } else { 1 },
                fencing_rejections: i / 3,
                requests_per_min: Some(4100.0 * spike.max(0.1)),
                replicas: Some(if spike > 0.5 { 8 } else { 1 }),
            })
        };
        batch.push(NewEvent::at(t, actor, entry));
        done += 1;
        i += 1;
        if batch.len() >= 5000 {
            journal.append_many(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        journal.append_many(batch)?;
    }
    Ok(())
}
