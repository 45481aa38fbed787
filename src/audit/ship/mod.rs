//! The audit shipper: copies every record of the local hash-chained log to
//! a sink (the cluster database first; a SIEM over syslog next), at least
//! once, in `seq` order, from a cursor kept beside the log.
//!
//! The local log stays the source of truth and the writer never waits for
//! a sink: the shipper only reads the files the writer has written (a
//! follower, like `tail -F`), so a slow or absent sink costs the block page
//! nothing. The cursor ([`cursor`]) is written atomically after the sink
//! acknowledged a batch; after a crash or SIGKILL the batch is sent again,
//! which a sink must accept (the database ignores a `(node, seq)` it has).

pub mod cursor;
pub mod tail;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use cursor::Cursor;
use tail::Tail;

/// One record read from the log, as a sink receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shipped {
    pub seq: u64,
    pub ts: String,
    pub event: String,
    pub hash: String,
    /// The line exactly as written (without its newline): the evidence.
    pub line: String,
}

/// Why a sink did not take a batch. The shipper keeps the batch and tries
/// again later; nothing is skipped.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SinkError(pub String);

/// The future a sink returns.
pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// Where records are shipped to. `send` must be idempotent on `seq`: after
/// a crash the last batch arrives again.
pub trait Sink: Send + 'static {
    /// The sink's name: part of its cursor file's name and of log lines.
    fn name(&self) -> &str;
    /// Stores the batch (in `seq` order); `Ok` only once it is durable there.
    fn send<'a>(&'a mut self, batch: &'a [Shipped]) -> SendFuture<'a>;
}

/// The most records sent at once.
pub const BATCH: usize = 1000;

/// How often the shipper looks for new records when it has caught up.
const POLL: Duration = Duration::from_millis(100);

/// Follows one log for one sink.
pub struct Shipper {
    live: PathBuf,
    sink: Box<dyn Sink>,
    cursor: Cursor,
    /// Called with `true` when the sink failed, `false` when it took a
    /// batch again (the cluster's health; a syslog sink's metric).
    on_state: Box<dyn Fn(bool) + Send + Sync>,
}

impl Shipper {
    /// A shipper of the log whose live file is `live` to `sink`, resuming
    /// from the sink's cursor beside the log (from the first record when
    /// there is none yet).
    pub fn new(live: &Path, sink: Box<dyn Sink>) -> Shipper {
        let cursor = Cursor::beside(live, sink.name());
        Shipper { live: live.to_path_buf(), sink, cursor, on_state: Box::new(|_| {}) }
    }

    /// Sets what to call when the sink fails (`true`) or recovers (`false`).
    pub fn on_state(mut self, f: impl Fn(bool) + Send + Sync + 'static) -> Shipper {
        self.on_state = Box::new(f);
        self
    }

    /// Ships until `shutdown`, then makes one last attempt to send what is
    /// already written (bounded by `grace`).
    pub async fn run(mut self, shutdown: CancellationToken, grace: Duration) {
        let name = self.sink.name().to_string();
        let cursor = self.cursor.clone();
        let last = match tokio::task::spawn_blocking(move || cursor.load()).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                tracing::error!(sink = %name, error = %e, "audit shipper cursor unreadable; shipping from the first record (the sink ignores what it has)");
                None
            }
            Err(_) => None,
        };
        let mut tail = Some(match last {
            Some(seq) => Tail::new(&self.live, seq + 1),
            None => Tail::from_start(&self.live),
        });
        let mut failing = false;
        let mut backoff = Duration::from_millis(200);
        let mut pending: Vec<Shipped> = Vec::new();
        let mut stopping_at: Option<tokio::time::Instant> = None;
        loop {
            if stopping_at.is_none() && shutdown.is_cancelled() {
                stopping_at = Some(tokio::time::Instant::now() + grace);
            }
            if stopping_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
                return;
            }
            if pending.is_empty() {
                let Some(mut t) = tail.take() else { return };
                let read = tokio::task::spawn_blocking(move || {
                    let batch = t.read_batch(BATCH);
                    (t, batch)
                })
                .await;
                let Ok((t, batch)) = read else { return };
                tail = Some(t);
                match batch {
                    Ok(b) => pending = b,
                    Err(e) => {
                        tracing::error!(sink = %name, path = %self.live.display(), error = %e, "audit shipper cannot read the log; trying again");
                    }
                }
            }
            if pending.is_empty() {
                if stopping_at.is_some() {
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(POLL) => {}
                    _ = shutdown.cancelled() => {}
                }
                continue;
            }
            let sent = match stopping_at {
                Some(t) => tokio::time::timeout_at(t, self.sink.send(&pending))
                    .await
                    .unwrap_or_else(|_| Err(SinkError("timed out at shutdown".into()))),
                None => self.sink.send(&pending).await,
            };
            match sent {
                Ok(()) => {
                    let seq = pending.last().map(|s| s.seq).unwrap_or(0);
                    let hash = pending.last().map(|s| s.hash.clone()).unwrap_or_default();
                    let count = pending.len();
                    pending.clear();
                    let cursor = self.cursor.clone();
                    match tokio::task::spawn_blocking(move || cursor.store(seq, &hash)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => {
                            tracing::error!(sink = %name, error = %e, "cannot write the audit shipper cursor; records may be sent again")
                        }
                        Err(_) => return,
                    }
                    if failing {
                        failing = false;
                        (self.on_state)(false);
                        tracing::info!(sink = %name, up_to_seq = seq, "audit sink reachable again; shipping from the cursor");
                    }
                    tracing::trace!(sink = %name, count, up_to_seq = seq, "shipped");
                    backoff = Duration::from_millis(200);
                }
                Err(e) => {
                    if stopping_at.is_some() {
                        tracing::warn!(sink = %name, error = %e, "audit sink unreachable at shutdown; the rest is shipped from the cursor at the next start");
                        return;
                    }
                    if !failing {
                        failing = true;
                        (self.on_state)(true);
                        tracing::error!(sink = %name, error = %e, "audit sink unreachable; records stay in the local log and are shipped from the cursor when it is back");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
