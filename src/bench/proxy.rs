//! A delaying TCP proxy: puts a Redis node "on another host" for
//! `warroom bench lock --node-delay-ms`.
//!
//! Every byte is held for the one-way delay in each direction, then
//! forwarded in the order it came. Delay is applied per chunk: a chunk read
//! at `t` is written at `t + delay`, so a pipelined stream keeps flowing (many
//! chunks in flight at once) rather than advancing one chunk per delay.
//!
//! Each direction of each connection has a reader thread and a writer thread
//! that sleeps with the operating system's timer (tens of microseconds of
//! overshoot), not the async runtime's millisecond wheel, so a 1 ms delay is
//! about 1 ms. The proxy also counts the requests clients send through it
//! (RESP arrays and inline commands), and among them the script calls
//! (`EVAL`, `EVALSHA`, `FCALL` and their read-only forms): what a client puts
//! on the wire, as opposed to what the server runs inside scripts.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Chunks in flight per direction before the reader waits for the writer.
const IN_FLIGHT: usize = 1024;
/// Largest chunk read at once.
const CHUNK: usize = 64 * 1024;
/// How long connecting to the node may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Counts of what clients sent through a proxy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Requests (one per RESP array or inline command line).
    pub requests: u64,
    /// Of those, script calls (`EVAL`, `EVALSHA`, `FCALL`, read-only forms).
    pub scripts: u64,
    /// Bytes from clients to the node.
    pub bytes_to_node: u64,
    /// Bytes from the node to clients.
    pub bytes_to_client: u64,
}

impl Traffic {
    /// What was sent between `earlier` and `self`.
    pub fn since(&self, earlier: &Traffic) -> Traffic {
        Traffic {
            requests: self.requests.saturating_sub(earlier.requests),
            scripts: self.scripts.saturating_sub(earlier.scripts),
            bytes_to_node: self.bytes_to_node.saturating_sub(earlier.bytes_to_node),
            bytes_to_client: self.bytes_to_client.saturating_sub(earlier.bytes_to_client),
        }
    }

    /// The sum of two counts.
    pub fn plus(&self, other: &Traffic) -> Traffic {
        Traffic {
            requests: self.requests + other.requests,
            scripts: self.scripts + other.scripts,
            bytes_to_node: self.bytes_to_node + other.bytes_to_node,
            bytes_to_client: self.bytes_to_client + other.bytes_to_client,
        }
    }
}

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    requests: AtomicU64,
    scripts: AtomicU64,
    bytes_to_node: AtomicU64,
    bytes_to_client: AtomicU64,
    /// Every socket of every connection, to shut them down when the proxy
    /// is dropped.
    sockets: Mutex<Vec<TcpStream>>,
}

/// A TCP proxy on a loopback port in front of one node, delaying each
/// direction by the same one-way delay. Dropping it closes every connection.
pub struct DelayProxy {
    local: SocketAddr,
    delay: Duration,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for DelayProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayProxy")
            .field("local", &self.local)
            .field("delay", &self.delay)
            .finish()
    }
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards each connection to
    /// `upstream` (a `host:port`), `delay` late in each direction.
    pub fn start(upstream: &str, delay: Duration) -> io::Result<Self> {
        let target = upstream.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!("{upstream} resolves to no address"),
            )
        })?;
        let listener = TcpListener::bind(("127.0.0.1", 0))?;
        let local = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        let accept = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("delay-proxy".into())
                .spawn(move || accept_loop(listener, target, delay, shared))?
        };
        Ok(Self {
            local,
            delay,
            shared,
            accept: Some(accept),
        })
    }

    /// The loopback address clients connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The one-way delay.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// What clients have sent through this proxy so far.
    pub fn traffic(&self) -> Traffic {
        Traffic {
            requests: self.shared.requests.load(Ordering::Relaxed),
            scripts: self.shared.scripts.load(Ordering::Relaxed),
            bytes_to_node: self.shared.bytes_to_node.load(Ordering::Relaxed),
            bytes_to_client: self.shared.bytes_to_client.load(Ordering::Relaxed),
        }
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so that it sees the flag.
        let _ = TcpStream::connect_timeout(&self.local, Duration::from_secs(1));
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        let sockets = self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for socket in sockets.iter() {
            let _ = socket.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, target: SocketAddr, delay: Duration, shared: Arc<Shared>) {
    for client in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        let Ok(node) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
            // The client sees its connection closed, as if the node refused.
            continue;
        };
        if let Err(e) = connect_pair(client, node, delay, &shared) {
            tracing::debug!("delay proxy: cannot forward a connection: {e}");
        }
    }
}

/// Starts the four threads of one connection: a reader and a writer per
/// direction.
fn connect_pair(
    client: TcpStream,
    node: TcpStream,
    delay: Duration,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    client.set_nodelay(true)?;
    node.set_nodelay(true)?;
    {
        let mut sockets = shared.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.push(client.try_clone()?);
        sockets.push(node.try_clone()?);
    }
    let up = Direction::ToNode;
    let down = Direction::ToClient;
    spawn_direction(client.try_clone()?, node.try_clone()?, delay, up, shared)?;
    spawn_direction(node, client, delay, down, shared)?;
    Ok(())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToNode,
    ToClient,
}

enum Message {
    /// Bytes to write at the instant given.
    Chunk(Instant, Vec<u8>),
    /// The source closed its sending side; pass that on at the instant given.
    End(Instant),
}

fn spawn_direction(
    from: TcpStream,
    to: TcpStream,
    delay: Duration,
    direction: Direction,
    shared: &Arc<Shared>,
) -> io::Result<()> {
    let (tx, rx) = sync_channel(IN_FLIGHT);
    let reader_from = from.try_clone()?;
    let writer_from = from;
    let reader_shared = shared.clone();
    std::thread::Builder::new()
        .name("delay-proxy-read".into())
        .spawn(move || read_side(reader_from, tx, delay, direction, &reader_shared))?;
    std::thread::Builder::new()
        .name("delay-proxy-write".into())
        .spawn(move || write_side(rx, to, writer_from))?;
    Ok(())
}

fn read_side(
    mut from: TcpStream,
    tx: SyncSender<Message>,
    delay: Duration,
    direction: Direction,
    shared: &Shared,
) {
    let mut buf = vec![0u8; CHUNK];
    let mut counter = RequestCounter::default();
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = tx.send(Message::End(Instant::now() + delay));
                return;
            }
            Ok(n) => {
                let at = Instant::now() + delay;
                let chunk = &buf[..n];
                match direction {
                    Direction::ToNode => {
                        let (requests, scripts) = counter.feed(chunk);
                        shared.requests.fetch_add(requests, Ordering::Relaxed);
                        shared.scripts.fetch_add(scripts, Ordering::Relaxed);
                        shared.bytes_to_node.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Direction::ToClient => {
                        shared
                            .bytes_to_client
                            .fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                if tx.send(Message::Chunk(at, chunk.to_vec())).is_err() {
                    return;
                }
            }
        }
    }
}

fn sleep_until(at: Instant) {
    let now = Instant::now();
    if at > now {
        std::thread::sleep(at - now);
    }
}

fn write_side(rx: Receiver<Message>, mut to: TcpStream, from: TcpStream) {
    while let Ok(message) = rx.recv() {
        match message {
            Message::Chunk(at, data) => {
                sleep_until(at);
                if to.write_all(&data).is_err() {
                    break;
                }
            }
            Message::End(at) => {
                sleep_until(at);
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
        }
    }
    // The destination is gone: stop reading from the source too.
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// Counts requests in a client's byte stream, across chunk boundaries.
///
/// Clients send each command as a RESP array of bulk strings
/// (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`), or as an inline line (`PING\r\n`).
/// Bytes that fit neither are skipped to the end of their line.
#[derive(Debug, Default)]
pub struct RequestCounter {
    state: State,
    /// Elements left in the current array.
    elements: u64,
    /// Whether the current bulk string is the array's first (the command).
    first: bool,
    /// The start of the command name, upper-cased.
    name: [u8; 12],
    name_len: usize,
}

#[derive(Debug, Default, Clone, Copy)]
enum State {
    /// Between requests.
    #[default]
    Start,
    /// In an inline command or an unexpected line; skip to `\n`.
    SkipLine,
    /// Reading the digits of `*N`.
    ArrayLen { n: u64, negative: bool },
    /// Expecting the next element's type byte.
    Element,
    /// Reading the digits of `$N`.
    BulkLen { n: u64, negative: bool },
    /// Skipping a bulk string's bytes and its `\r\n`.
    Bulk { left: u64 },
    /// Skipping an element that is not a bulk string, to `\n`.
    ElementLine,
}

const SCRIPT_COMMANDS: &[&[u8]] = &[
    b"EVAL",
    b"EVALSHA",
    b"EVAL_RO",
    b"EVALSHA_RO",
    b"FCALL",
    b"FCALL_RO",
];

impl RequestCounter {
    /// Feeds the next bytes; returns the requests and script calls that
    /// started in them.
    pub fn feed(&mut self, bytes: &[u8]) -> (u64, u64) {
        let mut requests = 0;
        let mut scripts = 0;
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            match self.state {
                State::Start => match b {
                    b'*' => {
                        requests += 1;
                        self.state = State::ArrayLen {
                            n: 0,
                            negative: false,
                        };
                    }
                    b'\r' | b'\n' | b' ' => {}
                    _ => {
                        requests += 1;
                        self.state = State::SkipLine;
                    }
                },
                State::SkipLine => {
                    if b == b'\n' {
                        self.state = State::Start;
                    }
                }
                State::ArrayLen { n, negative } => match b {
                    b'0'..=b'9' => {
                        self.state = State::ArrayLen {
                            n: n.saturating_mul(10).saturating_add(u64::from(b - b'0')),
                            negative,
                        };
                    }
                    b'-' => self.state = State::ArrayLen { n, negative: true },
                    b'\r' => {}
                    b'\n' => {
                        self.elements = if negative { 0 } else { n };
                        self.first = true;
                        self.name_len = 0;
                        self.state = if self.elements == 0 {
                            State::Start
                        } else {
                            State::Element
                        };
                    }
                    _ => self.state = State::SkipLine,
                },
                State::Element => match b {
                    b'$' => {
                        self.state = State::BulkLen {
                            n: 0,
                            negative: false,
                        }
                    }
                    _ => self.state = State::ElementLine,
                },
                State::BulkLen { n, negative } => match b {
                    b'0'..=b'9' => {
                        self.state = State::BulkLen {
                            n: n.saturating_mul(10).saturating_add(u64::from(b - b'0')),
                            negative,
                        };
                    }
                    b'-' => self.state = State::BulkLen { n, negative: true },
                    b'\r' => {}
                    b'\n' => {
                        if negative {
                            // A null bulk string has no body.
                            scripts += self.finish_element();
                        } else {
                            self.state = State::Bulk {
                                left: n.saturating_add(2),
                            };
                        }
                    }
                    _ => self.state = State::SkipLine,
                },
                State::Bulk { left } => {
                    let available = (bytes.len() - i) as u64;
                    let take = left.min(available);
                    if self.first {
                        for &c in &bytes[i..i + take as usize] {
                            if self.name_len < self.name.len() && c != b'\r' && c != b'\n' {
                                self.name[self.name_len] = c.to_ascii_uppercase();
                                self.name_len += 1;
                            }
                        }
                    }
                    i += take as usize;
                    let left = left - take;
                    if left == 0 {
                        scripts += self.finish_element();
                    } else {
                        self.state = State::Bulk { left };
                    }
                    continue;
                }
                State::ElementLine => {
                    if b == b'\n' {
                        scripts += self.finish_element();
                    }
                }
            }
            i += 1;
        }
        (requests, scripts)
    }

    /// Ends an element; returns 1 if it was the command name of a script
    /// call.
    fn finish_element(&mut self) -> u64 {
        let script = self.first
            && SCRIPT_COMMANDS
                .iter()
                .any(|name| **name == self.name[..self.name_len]);
        self.first = false;
        self.elements = self.elements.saturating_sub(1);
        self.state = if self.elements == 0 {
            State::Start
        } else {
            State::Element
        };
        u64::from(script)
    }
}
