//! Redlock: a fenced lock over N independent Redis nodes (see the safety
//! argument in the module above).

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt, StreamExt};
use redis::aio::ConnectionManager;

use super::event::{EventKind, LockEvent, LockMode};
use super::lease::{Issuer, Lease, LeaseInner, acquire_with_retry};
use super::sink::EventSink;
use super::{FencingToken, LockError, LockOptions, fence_counter_key, grant_value, scripts};

/// What one node said to one request.
enum Answer<T> {
    Value(T),
    Failed,
}

pub(crate) struct RedlockShared {
    nodes: Vec<ConnectionManager>,
    options: LockOptions,
    sink: Option<EventSink>,
    /// When the sink appends to a stream on the first node: that stream's
    /// key and `MAXLEN` argument, so that release appends its own event in
    /// the first node's compare-and-delete script instead of flushing the
    /// sink first (one round trip instead of two).
    first_node_stream: Option<(String, String)>,
}

impl RedlockShared {
    fn quorum(&self) -> usize {
        self.nodes.len() / 2 + 1
    }

    /// Awaits one request per node in parallel, each bounded by the per-node
    /// timeout; answers come back in the order given.
    async fn gather<T, Fut>(&self, requests: impl IntoIterator<Item = Fut>) -> Vec<Answer<T>>
    where
        Fut: Future<Output = Result<T, redis::RedisError>>,
    {
        let timeout = self.options.node_timeout();
        join_all(requests.into_iter().map(|request| async move {
            match tokio::time::timeout(timeout, request).await {
                Ok(Ok(value)) => Answer::Value(value),
                Ok(Err(e)) => {
                    tracing::debug!("lock node failed: {e}");
                    Answer::Failed
                }
                Err(_) => Answer::Failed,
            }
        }))
        .await
    }

    /// Sends one request per node in parallel, each bounded by the per-node
    /// timeout, and returns as soon as `enough` says the answers so far
    /// decide the outcome: one slot per request, in the order given, `None`
    /// for those still in flight. With `finish_rest`, those go on in the
    /// background (their answers are dropped); otherwise they are dropped
    /// (a request already sent still runs on its node).
    async fn gather_until<T, Fut>(
        &self,
        requests: impl IntoIterator<Item = Fut>,
        enough: impl Fn(&[Option<Answer<T>>]) -> bool,
        finish_rest: bool,
    ) -> Vec<Option<Answer<T>>>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, redis::RedisError>> + Send + 'static,
    {
        let timeout = self.options.node_timeout();
        let mut pending: FuturesUnordered<_> = requests
            .into_iter()
            .enumerate()
            .map(|(i, request)| async move {
                let answer = match tokio::time::timeout(timeout, request).await {
                    Ok(Ok(value)) => Answer::Value(value),
                    Ok(Err(e)) => {
                        tracing::debug!("lock node failed: {e}");
                        Answer::Failed
                    }
                    Err(_) => Answer::Failed,
                };
                (i, answer)
            })
            .collect();
        let mut answers: Vec<Option<Answer<T>>> = (0..pending.len()).map(|_| None).collect();
        while let Some((i, answer)) = pending.next().await {
            answers[i] = Some(answer);
            if enough(&answers) {
                break;
            }
        }
        if finish_rest && !pending.is_empty() {
            tokio::spawn(async move { while pending.next().await.is_some() {} });
        }
        answers
    }

    /// One script invocation per chosen node.
    fn invoke(
        &self,
        which: impl IntoIterator<Item = usize>,
        invocation: impl Fn() -> redis::ScriptInvocation<'static>,
    ) -> Vec<BoxFuture<'static, Result<i64, redis::RedisError>>> {
        which
            .into_iter()
            .map(|i| {
                let mut conn = self.nodes[i].clone();
                let invocation = invocation();
                async move { invocation.invoke_async::<i64>(&mut conn).await }.boxed()
            })
            .collect()
    }

    /// Compare-and-delete on every node (including those that timed out: they
    /// may have set the key after all).
    async fn unlock_all(&self, key: &str, value: &str) -> usize {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        self.unlock(&all, key, value).await
    }

    /// Compare-and-delete on the given nodes; returns how many deleted.
    async fn unlock(&self, which: &[usize], key: &str, value: &str) -> usize {
        if which.is_empty() {
            return 0;
        }
        let delete = || {
            let mut delete = scripts::COMPARE_DELETE.key(key);
            delete.arg(value);
            delete
        };
        self.gather(self.invoke(which.iter().copied(), delete))
            .await
            .into_iter()
            .filter(|a| matches!(a, Answer::Value(1)))
            .count()
    }

    /// Queues an event; its sequence number in the sink, if there is one.
    fn publish(&self, event: LockEvent) -> Option<u64> {
        self.sink.as_ref().map(|sink| sink.publish(event))
    }

    /// Remembers the last event published about `lease`.
    fn published(lease: &LeaseInner, seq: Option<u64>) {
        if let Some(seq) = seq {
            lease.event_seq.fetch_max(seq, Ordering::AcqRel);
        }
    }

    fn event(&self, kind: EventKind, key: &str, token: FencingToken) -> LockEvent {
        LockEvent::new(kind, LockMode::Redlock, key, &self.options.holder).with_token(token.get())
    }

    async fn try_acquire(self: &Arc<Self>, key: &str) -> Result<Option<Lease>, LockError> {
        let value = grant_value();
        let ttl = self.options.ttl;
        let ttl_ms = ttl.as_millis() as u64;
        let fence_key = fence_counter_key(key);
        let started = Instant::now();

        // Round one, on every node: take the key, then read the fence counter
        // (a plain pipeline: while this grant owns the node's key, no other
        // grant can commit a counter there, so nothing can slip between).
        // It ends as soon as a quorum has granted (or can no longer): the
        // token only needs the counters of the quorum it is written back to,
        // so the slowest node does not set the pace. A node that grants
        // later holds the key for this grant until release (or its TTL).
        let quorum = self.quorum();
        let claims = self
            .gather_until(
                self.nodes.iter().map(|conn| {
                    let mut conn = conn.clone();
                    let mut pipe = redis::pipe();
                    pipe.cmd("SET")
                        .arg(key)
                        .arg(&value)
                        .arg("NX")
                        .arg("PX")
                        .arg(ttl_ms)
                        .cmd("GET")
                        .arg(&fence_key);
                    async move {
                        pipe.query_async::<(Option<String>, Option<u64>)>(&mut conn)
                            .await
                    }
                }),
                |answers| {
                    let count =
                        |f: fn(&Option<Answer<_>>) -> bool| answers.iter().filter(|a| f(a)).count();
                    let granted = count(|a| matches!(a, Some(Answer::Value((Some(_), _)))));
                    let answered = count(|a| matches!(a, Some(Answer::Value(_))));
                    let open = count(Option::is_none);
                    // A refusal is final once it is also known whether a
                    // quorum answered (another holder) or not (no quorum).
                    let refused =
                        granted + open < quorum && (answered >= quorum || answered + open < quorum);
                    granted >= quorum || refused
                },
                false,
            )
            .await;
        let answered = claims
            .iter()
            .filter(|a| matches!(a, Some(Answer::Value(_))))
            .count();
        let mut granted = Vec::new();
        let mut unsure = Vec::new();
        let mut highest = 0;
        for (i, answer) in claims.iter().enumerate() {
            match answer {
                Some(Answer::Value((Some(_), counter))) => {
                    granted.push(i);
                    highest = highest.max(counter.unwrap_or(0));
                }
                Some(Answer::Value((None, _))) => {}
                Some(Answer::Failed) | None => unsure.push(i),
            }
        }
        if granted.len() < quorum {
            // Give back what this attempt may hold: granted nodes, and nodes
            // that did not answer (in time): they may have set the key.
            granted.extend(unsure);
            self.unlock(&granted, key, &value).await;
            return self.no_grant(key, answered);
        }
        let token = FencingToken::new(highest + 1);

        // Round two: write the token back to a quorum of the granting nodes,
        // each only while that node's key still holds this grant; the other
        // granting nodes are asked only if one of those fails.
        let commit = || {
            let mut commit = scripts::REDLOCK_COMMIT.key(key);
            commit.key(&fence_key).arg(&value).arg(token.get());
            commit
        };
        let (first, spare) = granted.split_at(self.quorum());
        let mut committed = self
            .gather(self.invoke(first.iter().copied(), commit))
            .await
            .iter()
            .filter(|a| matches!(a, Answer::Value(1)))
            .count();
        if committed < self.quorum() && !spare.is_empty() {
            committed += self
                .gather(self.invoke(spare.iter().copied(), commit))
                .await
                .iter()
                .filter(|a| matches!(a, Answer::Value(1)))
                .count();
        }
        let drift = self.options.drift();
        let elapsed = started.elapsed();
        if committed < self.quorum() || elapsed + drift >= ttl {
            self.unlock_all(key, &value).await;
            return Ok(None);
        }
        let seq = self.publish(
            self.event(EventKind::Acquired, key, token)
                .with_ttl_ms(ttl_ms),
        );
        let inner = LeaseInner::new(
            key.to_string(),
            value,
            token,
            ttl,
            drift,
            started,
            Issuer::Redlock(self.clone()),
        );
        Self::published(&inner, seq);
        Ok(Some(Lease::new(inner)))
    }

    fn no_grant(&self, key: &str, answered: usize) -> Result<Option<Lease>, LockError> {
        if answered < self.quorum() {
            Err(LockError::NoQuorum {
                key: key.to_string(),
                answered,
                nodes: self.nodes.len(),
                quorum: self.quorum(),
            })
        } else {
            Ok(None)
        }
    }

    pub(crate) async fn extend(
        &self,
        lease: &LeaseInner,
        started: Instant,
    ) -> Result<bool, LockError> {
        let ttl_ms = lease.ttl.as_millis() as u64;
        let pexpire = || {
            let mut pexpire = scripts::COMPARE_PEXPIRE.key(&lease.key);
            pexpire.arg(&lease.value).arg(ttl_ms);
            pexpire
        };
        let answers = self.gather(self.invoke(0..self.nodes.len(), pexpire)).await;
        let extended = answers
            .iter()
            .filter(|a| matches!(a, Answer::Value(1)))
            .count();
        let in_time = started.elapsed() + lease.drift < lease.ttl;
        let held = extended >= self.quorum() && in_time;
        let kind = if held {
            EventKind::Extended
        } else {
            EventKind::Lost
        };
        let mut event = self.event(kind, &lease.key, lease.token);
        if held {
            event = event.with_ttl_ms(ttl_ms);
        }
        Self::published(lease, self.publish(event));
        let answered = answers
            .iter()
            .filter(|a| matches!(a, Answer::Value(_)))
            .count();
        if !held && answered < self.quorum() {
            return Err(LockError::NoQuorum {
                key: lease.key.clone(),
                answered,
                nodes: self.nodes.len(),
                quorum: self.quorum(),
            });
        }
        Ok(held)
    }

    /// Gives the lease back on every node, with its `released` (or `lost`)
    /// event written before any key is deleted, so that a successor's
    /// `acquired` event cannot come first.
    ///
    /// When the events go to a stream on the first node, that node's
    /// compare-and-delete script appends the event itself, in the same
    /// round trip as the other nodes' deletes (after the lease's earlier
    /// events, which are normally in the stream long before). A successor
    /// needs a quorum, then its write-back round, before it publishes; its
    /// `acquired` can only come first if the first node's request takes more
    /// than a round and a half longer than the others'. Otherwise the event
    /// is published through the sink, which is flushed before deleting.
    pub(crate) async fn release(&self, lease: &LeaseInner, valid: bool) -> Result<bool, LockError> {
        let kind = if valid {
            EventKind::Released
        } else {
            EventKind::Lost
        };
        let deleted = match (&self.sink, &self.first_node_stream) {
            (Some(sink), Some((stream, maxlen))) => {
                let seq = lease.event_seq.load(Ordering::Acquire);
                if seq > 0 {
                    sink.written(seq, self.options.node_timeout() * 4).await;
                }
                let first = {
                    let mut conn = self.nodes[0].clone();
                    let mut invocation = scripts::COMPARE_DELETE_EVENT.key(&lease.key);
                    invocation
                        .key(stream)
                        .arg(&lease.value)
                        .arg(&self.options.holder)
                        .arg(lease.token.get())
                        .arg(maxlen)
                        .arg(LockMode::Redlock.as_str())
                        .arg(kind.as_str());
                    async move { invocation.invoke_async::<i64>(&mut conn).await }.boxed()
                };
                let delete = || {
                    let mut delete = scripts::COMPARE_DELETE.key(&lease.key);
                    delete.arg(&lease.value);
                    delete
                };
                let mut requests = vec![first];
                requests.extend(self.invoke(1..self.nodes.len(), delete));
                // Once a quorum has answered, the key is free for the next
                // holder; the other deletes finish in the background.
                let quorum = self.quorum();
                let answers = self
                    .gather_until(
                        requests,
                        |answers| answers.iter().filter(|a| a.is_some()).count() >= quorum,
                        true,
                    )
                    .await;
                if matches!(answers[0], Some(Answer::Failed)) {
                    // The first node may never have run it: publish the
                    // event the other way (late rather than never).
                    self.publish(self.event(kind, &lease.key, lease.token));
                }
                answers
                    .iter()
                    .filter(|a| matches!(a, Some(Answer::Value(1))))
                    .count()
            }
            _ => {
                self.publish(self.event(kind, &lease.key, lease.token));
                if let Some(sink) = &self.sink {
                    sink.flush(self.options.node_timeout() * 4).await;
                }
                self.unlock_all(&lease.key, &lease.value).await
            }
        };
        Ok(deleted > 0 && valid)
    }
}

/// The fenced lock over several independent Redis nodes.
///
/// Grants need a quorum (N/2+1); each request to a node is bounded by
/// [`LockOptions::node_timeout`], so a paused or lost node costs at most that
/// long. Events go to the first node's stream unless another sink is given.
///
/// Per acquire, two round trips: `SET NX PX` with a read of the fence
/// counter on every node (done once a quorum has granted), then the token
/// write-back to that quorum, which must complete before the token exists.
/// Per release, one: compare-and-delete on every node, done once a quorum
/// has answered (the first node's script also appends the event when the
/// stream is there). The `acquired` event goes through the sink, off the
/// lock's path.
#[derive(Clone)]
pub struct Redlock {
    shared: Arc<RedlockShared>,
}

impl std::fmt::Debug for Redlock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redlock")
            .field("nodes", &self.shared.nodes.len())
            .field("holder", &self.shared.options.holder)
            .finish()
    }
}

impl Redlock {
    /// Prepares connections to every node. Nodes are connected lazily, so a
    /// node that is down now does not stop the others from granting.
    pub async fn connect(urls: &[String], options: LockOptions) -> Result<Self, LockError> {
        let sink = match (&options.events, urls.first()) {
            (Some(stream), Some(first)) => Some(EventSink::connect(first, stream.clone()).await?),
            _ => None,
        };
        let nodes = Self::connect_nodes(urls).await?;
        Self::build(nodes, options, sink, true)
    }

    /// Like [`Redlock::connect`], publishing events through `sink` (or not at
    /// all with `None`) instead of the first node's stream.
    pub async fn connect_with_sink(
        urls: &[String],
        options: LockOptions,
        sink: Option<EventSink>,
    ) -> Result<Self, LockError> {
        let nodes = Self::connect_nodes(urls).await?;
        Self::with_connections(nodes, options, sink)
    }

    /// Lazy connections to every node, with the scripts loaded on those
    /// that answer within two seconds.
    async fn connect_nodes(urls: &[String]) -> Result<Vec<ConnectionManager>, LockError> {
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            nodes.push(super::connect(url, None, true).await?);
        }
        // Connect and load the scripts now, in parallel, so that the first
        // acquire is not spent on handshakes; a node that is down stays lazy.
        join_all(nodes.iter().map(|conn| {
            let mut conn = conn.clone();
            async move {
                let loading = scripts::preload(&mut conn, scripts::REDLOCK_SCRIPTS);
                let _ = tokio::time::timeout(Duration::from_secs(2), loading).await;
            }
        }))
        .await;
        Ok(nodes)
    }

    /// Uses existing connections, one per node (several locks in one process
    /// can share them), publishing through `sink`.
    pub fn with_connections(
        nodes: Vec<ConnectionManager>,
        options: LockOptions,
        sink: Option<EventSink>,
    ) -> Result<Self, LockError> {
        Self::build(nodes, options, sink, false)
    }

    /// Like [`Redlock::with_connections`], for a `sink` that appends to the
    /// stream of `options.events` on the first node (as
    /// [`Redlock::connect`]'s does): release then writes its event in the
    /// first node's compare-and-delete script, in the same round trip as
    /// the deletes on the other nodes, instead of flushing the sink first.
    pub fn with_connections_and_first_node_sink(
        nodes: Vec<ConnectionManager>,
        options: LockOptions,
        sink: EventSink,
    ) -> Result<Self, LockError> {
        Self::build(nodes, options, Some(sink), true)
    }

    fn build(
        nodes: Vec<ConnectionManager>,
        options: LockOptions,
        sink: Option<EventSink>,
        sink_on_first_node: bool,
    ) -> Result<Self, LockError> {
        options.validate()?;
        if nodes.is_empty() {
            return Err(LockError::Options("redlock needs at least one node".into()));
        }
        let first_node_stream = match (&options.events, &sink) {
            (Some(stream), Some(_)) if sink_on_first_node => {
                Some((stream.key.clone(), stream.maxlen_arg()))
            }
            _ => None,
        };
        Ok(Self {
            shared: Arc::new(RedlockShared {
                nodes,
                options,
                sink,
                first_node_stream,
            }),
        })
    }

    /// Number of nodes.
    pub fn nodes(&self) -> usize {
        self.shared.nodes.len()
    }

    /// Grants needed: N/2+1.
    pub fn quorum(&self) -> usize {
        self.shared.quorum()
    }

    /// The options this lock was made with.
    pub fn options(&self) -> &LockOptions {
        &self.shared.options
    }

    /// One attempt: a lease if a quorum granted, `None` if another holder has
    /// it, [`LockError::NoQuorum`] if too few nodes answered.
    pub async fn try_acquire(&self, key: &str) -> Result<Option<Lease>, LockError> {
        self.shared.try_acquire(key).await
    }

    /// Attempts until granted or until `wait` has passed.
    pub async fn acquire(&self, key: &str, wait: Duration) -> Result<Lease, LockError> {
        acquire_with_retry(key, wait, self.shared.options.backoff, || {
            self.try_acquire(key)
        })
        .await
    }
}
