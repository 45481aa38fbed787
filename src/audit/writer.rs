//! The single audit writer. It owns the files; everyone else sends it
//! records through a channel and waits for the record's sequence number,
//! which is only given once the line is written. Records that arrive
//! together are written with one `write` (and one `fsync`), so a burst of
//! blocked requests costs one system call, while each response still waits
//! for its own record.
//!
//! The writer also rotates: when the UTC day changes (`audit.rotate.daily`) or the
//! live file would grow past `audit.rotate.max_bytes`, the live file is renamed to
//! `audit-YYYYMMDD-HHMMSS-<first seq>.jsonl` and a new live file starts. The
//! chain does not restart: the new file's first `prev` is the last `hash` of
//! the file before, and `seq` continues. At start and after each rotation,
//! rotated files whose newest record is older than `retention_days` are
//! removed, after a `retention` record naming them (their `seq` range and
//! the last hash of the newest) is durably written, so `weerwal logs verify`
//! still verifies from the oldest file kept.
//!
//! With `squid_log`, blocked and exempted attempts are also written as Squid
//! `access.log` lines ([`super::squid`]) after their batch is in the audit log.
//!
//! Issue 15: the writer holds an exclusive lock (`<log>.lock`, `flock`) for
//! as long as it runs, so a second `serve` on the same log refuses to start
//! instead of interleaving lines and breaking the chain. Repeated identical
//! attempts are counted instead of written ([`super::coalesce`]). Paths are
//! cut at 8 KiB (record and Squid line), as Squid cuts URLs. And the free
//! space of the audit volume is watched ([`SpaceGuard`]): a loud log line
//! and a metric well before it is full, and below `free_space_refuse_mb`
//! new attempts are refused (their record fails, so the proxy refuses them)
//! rather than served unrecorded.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{mpsc, oneshot};

use super::coalesce::{Admission, Coalescer};
use super::files::{first_line, last_line, LogFiles};
use super::record::{line_hash, EventKind, Record, Via, GENESIS};
use super::squid;
use super::time::{parse_rfc3339, utc_day};
use crate::config::{AuditConfig, SyncMode};

/// Why a record could not be written. The caller still blocks the request
/// (fail closed) and tells the operator.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}:{line}: the last record cannot be read ({message}); move the file aside or repair that line", path.display())]
    Corrupt { path: PathBuf, line: usize, message: String },
    #[error("the audit writer has stopped")]
    Closed,
    /// Another process (a second `serve`) writes this log.
    #[error("{}: another weerwal is already writing this audit log (it holds the lock {}); stop it first, or give this one its own audit.path", path.display(), lock.display())]
    Locked { path: PathBuf, lock: PathBuf },
}

/// The longest URL path written (record and Squid line), as Squid cuts URLs.
pub const MAX_PATH_BYTES: usize = 8 * 1024;

/// The lock file of the audit log at `path`: `<log>.lock` beside it. A
/// file of its own, because the log itself is renamed at rotation.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".lock");
    path.with_file_name(name)
}

/// Whether a running writer (a `serve`) holds the lock of the log at
/// `path`; `weerwal reload` asks this before signalling anything.
pub fn is_locked(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        let Ok(file) = File::open(lock_path(path)) else { return false };
        flock(&file, FlockOperation::NonBlockingLockShared).is_err()
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

/// Takes the exclusive lock of the log at `path`, held while the returned
/// file stays open.
fn lock(path: &Path) -> Result<File, AuditError> {
    let lock = lock_path(path);
    let file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&lock).map_err(io_error(&lock))?;
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {}
            Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                return Err(AuditError::Locked { path: path.to_path_buf(), lock })
            }
            Err(e) => return Err(AuditError::Io { path: lock, source: e.into() }),
        }
    }
    Ok(file)
}

struct Pending {
    record: Record,
    done: oneshot::Sender<Result<u64, String>>,
}

enum Msg {
    Record(Box<Pending>),
    /// Once a second: close coalescing windows, look at the free space.
    Tick,
    /// Write what is queued, then stop.
    Close(oneshot::Sender<()>),
}

/// A handle to the audit writer; cheap to clone, one per task that records.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
}

/// Joins the writer thread; dropping every [`AuditLog`] lets it finish.
pub struct AuditWriterHandle {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl AuditWriterHandle {
    /// Waits until every record sent so far is written and the thread has
    /// ended (all [`AuditLog`] handles must be dropped first).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Where the writer resumes: the next sequence number and the hash to chain to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub next_seq: u64,
    pub prev_hash: String,
}

/// Where the writer takes the time from: the system clock, or a test's.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AuditError {
    let path = path.to_path_buf();
    move |source| AuditError::Io { path, source }
}

impl AuditLog {
    /// Opens (or creates) the log, resumes `seq` and the hash chain from its
    /// last complete line (from the newest rotated file when the live file
    /// is empty), applies retention, and starts the writer thread. The
    /// returned point is where the next record will go.
    pub fn open(config: &AuditConfig) -> Result<(AuditLog, AuditWriterHandle, ResumePoint), AuditError> {
        AuditLog::open_with_clock(config, Arc::new(SystemTime::now))
    }

    /// [`AuditLog::open`] with the time taken from `clock` (for tests of
    /// daily rotation and retention).
    pub fn open_with_clock(
        config: &AuditConfig,
        clock: Clock,
    ) -> Result<(AuditLog, AuditWriterHandle, ResumePoint), AuditError> {
        let path = config.path.as_path();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let lock = lock(path)?;
        let files = LogFiles::new(path);
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io_error(path))?;
        let (mut resume, last) = resume_point(path, &mut file)?;
        let size = file.metadata().map_err(io_error(path))?.len();
        let mut live = LiveFile { size, first: None, last_day: None };
        if size > 0 {
            live.last_day = last.as_ref().and_then(|r| parse_rfc3339(&r.ts)).map(utc_day);
            let first = first_line(path).ok().flatten().and_then(|l| serde_json::from_str::<Record>(&l).ok());
            live.first = Some(match first {
                Some(r) => (parse_rfc3339(&r.ts).unwrap_or_else(|| clock()), r.seq),
                None => (clock(), resume.next_seq.saturating_sub(1)),
            });
        } else if let Some(newest) = files.rotated().map_err(io_error(files.dir()))?.pop() {
            // Rotated, and nothing written since: continue the newest file's chain.
            let mut f = OpenOptions::new().read(true).append(true).open(&newest).map_err(io_error(&newest))?;
            resume = resume_point(&newest, &mut f)?.0;
        }
        let squid = config.squid_log.as_deref().map(SquidLog::open).transpose()?;
        let mut writer = Writer {
            path: path.to_path_buf(),
            files,
            file,
            sync: config.sync,
            next_seq: resume.next_seq,
            prev: resume.prev_hash,
            live,
            rotate_daily: config.rotate.daily,
            rotate_max_bytes: config.rotate.max_bytes,
            retention_days: config.retention_days,
            squid,
            clock,
            node: config.node.clone(),
            coalescer: Coalescer::new(config.coalesce_after, config.coalesce_window),
            space: SpaceGuard::new(path, config.free_space_warn_mb, config.free_space_refuse_mb),
            _lock: lock,
        };
        writer.space.check(true);
        writer.apply_retention(&mut Vec::new());
        let resume = ResumePoint { next_seq: writer.next_seq, prev_hash: writer.prev.clone() };
        let (tx, rx) = mpsc::channel(16 * 1024);
        let thread = std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_error(path))?;
        // The ticker holds only a weak sender: dropping every `AuditLog`
        // still ends the writer, and then the ticker.
        let weak = tx.downgrade();
        let _ = std::thread::Builder::new().name("audit-tick".into()).spawn(move || loop {
            std::thread::sleep(TICK);
            match weak.upgrade() {
                Some(tx) if tx.blocking_send(Msg::Tick).is_ok() => {}
                _ => return,
            }
        });
        Ok((AuditLog { tx }, AuditWriterHandle { thread: Some(thread) }, resume))
    }

    /// Writes every record sent before this call and stops the writer;
    /// records sent after it fail with [`AuditError::Closed`].
    pub async fn close(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Msg::Close(done)).await.is_ok() {
            let _ = wait.await;
        }
    }

    /// Writes a record and returns its sequence number once it is on disk
    /// (written, or fsynced with `sync = "fsync"`).
    pub async fn record(&self, record: Record) -> Result<u64, AuditError> {
        let started = std::time::Instant::now();
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Record(Box::new(Pending { record, done }))).await.map_err(|_| AuditError::Closed)?;
        let written = wait.await;
        crate::metrics::metrics().audit_write.observe(started.elapsed());
        match written {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => {
                Err(AuditError::Io { path: PathBuf::from("audit log"), source: std::io::Error::other(message) })
            }
            Err(_) => Err(AuditError::Closed),
        }
    }
}

/// What the writer knows about the live file.
struct LiveFile {
    size: u64,
    /// Time and `seq` of its first record: the name it gets when rotated.
    first: Option<(SystemTime, u64)>,
    /// UTC day of its last record, for daily rotation.
    last_day: Option<i64>,
}

/// The optional Squid `access.log`.
struct SquidLog {
    path: PathBuf,
    file: File,
    /// The lines of the batch being written.
    buf: Vec<u8>,
}

impl SquidLog {
    fn open(path: &Path) -> Result<SquidLog, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        }
        let file = OpenOptions::new().append(true).create(true).open(path).map_err(io_error(path))?;
        Ok(SquidLog { path: path.to_path_buf(), file, buf: Vec::new() })
    }

    /// Opens the file again by name, so a log moved away by an external
    /// rotation (logrotate) is followed at the audit log's next rotation.
    fn reopen(&mut self) {
        match OpenOptions::new().append(true).create(true).open(&self.path) {
            Ok(f) => self.file = f,
            Err(e) => tracing::error!(path = %self.path.display(), error = %e, "cannot reopen the Squid access log"),
        }
    }

    /// Writes the batch's lines. The audit log is the evidence; a failure
    /// here is reported and does not fail the records.
    fn flush(&mut self, sync: SyncMode) {
        if self.buf.is_empty() {
            return;
        }
        let written = self.file.write_all(&self.buf).and_then(|()| match sync {
            SyncMode::Fsync => self.file.sync_data(),
            SyncMode::Write => Ok(()),
        });
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "Squid access log write failed");
        }
        self.buf.clear();
    }
}

struct Writer {
    path: PathBuf,
    files: LogFiles,
    file: File,
    sync: SyncMode,
    next_seq: u64,
    prev: String,
    live: LiveFile,
    rotate_daily: bool,
    rotate_max_bytes: u64,
    retention_days: u32,
    squid: Option<SquidLog>,
    clock: Clock,
    /// `[cluster] node`, stamped on every record.
    node: Option<String>,
    coalescer: Coalescer,
    space: SpaceGuard,
    /// Held (open) for as long as the writer runs.
    _lock: File,
}

/// The most records written with one system call.
const BATCH: usize = 1024;
/// How often windows are closed and free space is looked at.
const TICK: Duration = Duration::from_secs(1);

/// Watches the free space of the audit volume; see the module documentation.
struct SpaceGuard {
    dir: PathBuf,
    warn: u64,
    refuse: u64,
    checked: Option<Instant>,
    written_since: u64,
    warned: Option<Instant>,
    refusing: bool,
    free: Option<u64>,
}

/// Free space is looked at this often, and after this many bytes written.
const SPACE_EVERY: Duration = Duration::from_secs(5);
const SPACE_BYTES: u64 = 4 * 1024 * 1024;
/// While space stays low, the warning is repeated this often.
const SPACE_REPEAT: Duration = Duration::from_secs(600);

impl SpaceGuard {
    fn new(path: &Path, warn_mb: u64, refuse_mb: u64) -> SpaceGuard {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf();
        SpaceGuard {
            dir,
            warn: warn_mb.saturating_mul(1024 * 1024),
            refuse: refuse_mb.saturating_mul(1024 * 1024),
            checked: None,
            written_since: 0,
            warned: None,
            refusing: false,
            free: None,
        }
    }

    /// Looks at the free space when due (or `now`), logs and refuses.
    fn check(&mut self, force: bool) {
        if self.warn == 0 && self.refuse == 0 {
            return;
        }
        let due =
            force || self.written_since >= SPACE_BYTES || self.checked.is_none_or(|at| at.elapsed() >= SPACE_EVERY);
        if !due {
            return;
        }
        self.checked = Some(Instant::now());
        self.written_since = 0;
        let Some(free) = free_bytes(&self.dir) else { return };
        self.free = Some(free);
        crate::metrics::metrics().audit_free_bytes.store(free, std::sync::atomic::Ordering::Relaxed);
        let mb = free / (1024 * 1024);
        let refusing = self.refuse > 0 && free < self.refuse;
        if refusing && !self.refusing {
            tracing::error!(dir = %self.dir.display(), free_mb = mb, refuse_below_mb = self.refuse / (1024 * 1024),
                "AUDIT VOLUME FULL: new blocked and exempted attempts are REFUSED until space is made (remove or move old rotated audit logs)");
        } else if !refusing && self.refusing {
            tracing::warn!(dir = %self.dir.display(), free_mb = mb, "audit volume has space again; attempts are recorded and served as before");
        }
        self.refusing = refusing;
        if self.warn > 0 && free < self.warn {
            if self.warned.is_none_or(|at| at.elapsed() >= SPACE_REPEAT) {
                self.warned = Some(Instant::now());
                tracing::error!(dir = %self.dir.display(), free_mb = mb, warn_below_mb = self.warn / (1024 * 1024),
                    refuse_below_mb = self.refuse / (1024 * 1024),
                    "AUDIT VOLUME LOW ON SPACE: make room (old rotated logs, a larger volume) before weerwal has to refuse attempts");
            }
        } else {
            self.warned = None;
        }
    }

    fn wrote(&mut self, bytes: u64) {
        self.written_since += bytes;
    }

    /// Why a new attempt cannot be recorded now, if it cannot.
    fn refusal(&self) -> Option<String> {
        self.refusing.then(|| {
            format!(
                "the audit volume ({}) has {} MiB free, less than audit.free_space_refuse_mb = {}: attempts are refused until space is made",
                self.dir.display(),
                self.free.unwrap_or(0) / (1024 * 1024),
                self.refuse / (1024 * 1024)
            )
        })
    }
}

/// Bytes an unprivileged writer may still use on the volume holding `dir`.
fn free_bytes(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        let s = rustix::fs::statvfs(dir).ok()?;
        Some(s.f_bavail.saturating_mul(s.f_frsize))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        None
    }
}

/// Cuts a path at [`MAX_PATH_BYTES`] (on a character boundary).
fn cut_path(path: &mut String) {
    if path.len() > MAX_PATH_BYTES {
        let mut end = MAX_PATH_BYTES;
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        path.truncate(end);
    }
}

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH * 512);
        let mut next = rx.blocking_recv();
        while let Some(msg) = next.take() {
            let mut closing = None;
            let mut tick = false;
            match msg {
                Msg::Record(p) => batch.push(*p),
                Msg::Tick => tick = true,
                Msg::Close(done) => closing = Some(done),
            }
            while closing.is_none() && batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(Msg::Record(p)) => batch.push(*p),
                    Ok(Msg::Tick) => tick = true,
                    Ok(Msg::Close(done)) => closing = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write_batch(&mut batch, &mut buf);
            } else if tick {
                self.space.check(false);
                let mut counts = self.coalescer.due(Instant::now());
                self.write_counts(&mut counts, &mut buf);
            }
            if let Some(done) = closing {
                rx.close();
                // Records that raced the close are still written.
                while let Ok(msg) = rx.try_recv() {
                    if let Msg::Record(p) = msg {
                        batch.push(*p);
                    }
                }
                if !batch.is_empty() {
                    self.write_batch(&mut batch, &mut buf);
                }
                // No attempt goes uncounted: every open window's count.
                let mut counts = self.coalescer.drain();
                self.write_counts(&mut counts, &mut buf);
                let _ = done.send(());
                return;
            }
            next = rx.blocking_recv();
        }
        // Every handle dropped without a close: the counts still go in.
        let mut counts = self.coalescer.drain();
        self.write_counts(&mut counts, &mut buf);
    }

    /// Writes the count records of closed coalescing windows.
    fn write_counts(&mut self, counts: &mut [Record], buf: &mut Vec<u8>) {
        if counts.is_empty() {
            return;
        }
        let mut records: Vec<&mut Record> = counts.iter_mut().collect();
        let (seqs, rotated) = self.append(&mut records, buf, false);
        for s in seqs {
            if let Err(e) = s {
                tracing::error!(error = %e, "could not write the count of repeated attempts");
            }
        }
        if rotated {
            self.apply_retention(buf);
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<Pending>, buf: &mut Vec<u8>) {
        self.space.check(false);
        let now = Instant::now();
        let at = (self.clock)();
        // Windows that closed go first, so a count precedes newer attempts.
        let mut counts = self.coalescer.due(now);
        let admissions: Vec<Admission> = batch.iter().map(|p| self.coalescer.admit(&p.record, now, at)).collect();
        let refusal = self.space.refusal();
        let mut records: Vec<&mut Record> = counts.iter_mut().collect();
        let first = records.len();
        // For each pending record: its index among the records written.
        let mut slot: Vec<Option<usize>> = Vec::with_capacity(batch.len());
        for (p, a) in batch.iter_mut().zip(&admissions) {
            match a {
                Admission::Counted(_) => slot.push(None),
                // Only attempts are refused: they are what a full volume
                // must not let through unrecorded.
                _ if refusal.is_some() && super::coalesce::Key::of(&p.record).is_some() => slot.push(None),
                _ => {
                    slot.push(Some(records.len()));
                    records.push(&mut p.record);
                }
            }
        }
        let (seqs, rotated) = self.append(&mut records, buf, false);
        drop(records);
        for (a, s) in admissions.iter().zip(&slot) {
            if let (Admission::WriteFirst(key), Some(i)) = (a, s) {
                if let Some(Ok(seq)) = seqs.get(*i) {
                    self.coalescer.written(key, *seq);
                }
            }
        }
        for s in &seqs[..first.min(seqs.len())] {
            if let Err(e) = s {
                tracing::error!(error = %e, "could not write the count of repeated attempts");
            }
        }
        let metrics = crate::metrics::metrics();
        for ((p, a), s) in batch.drain(..).zip(&admissions).zip(slot) {
            let result = match (a, s) {
                (_, Some(i)) => seqs.get(i).cloned().unwrap_or_else(|| Err("not written".into())),
                (Admission::Counted(key), None) => match self.coalescer.first_seq(key) {
                    Some(seq) => {
                        metrics.audit_coalesced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        Ok(seq)
                    }
                    None => {
                        self.coalescer.uncount(key);
                        Err(refusal.clone().unwrap_or_else(|| {
                            "the first record of these repeated attempts could not be written".into()
                        }))
                    }
                },
                (_, None) => Err(refusal.clone().unwrap_or_default()),
            };
            let _ = p.done.send(result);
        }
        if rotated {
            self.apply_retention(buf);
        }
    }

    /// Numbers, timestamps and chains `records`, rotates the live file first
    /// when that is due, and writes them with one system call (and one
    /// `fsync` when `durable` or configured). Returns each record's `seq`
    /// (or why it failed) and whether the live file was rotated.
    fn append(
        &mut self,
        records: &mut [&mut Record],
        buf: &mut Vec<u8>,
        durable: bool,
    ) -> (Vec<Result<u64, String>>, bool) {
        buf.clear();
        let now = (self.clock)();
        let ts = humantime::format_rfc3339_millis(now).to_string();
        let (seq0, prev0) = (self.next_seq, self.prev.clone());
        let mut seqs = Vec::with_capacity(records.len());
        if let Some(s) = &mut self.squid {
            s.buf.clear();
        }
        for r in records.iter_mut() {
            if let Some(p) = r.path.as_mut() {
                cut_path(p);
            }
            r.seq = self.next_seq;
            r.ts.clone_from(&ts);
            r.prev = std::mem::take(&mut self.prev);
            r.node.clone_from(&self.node);
            r.hash.clear();
            match r.write_line(buf) {
                Ok(hash) => {
                    self.prev = hash;
                    if let Some(s) = &mut self.squid {
                        squid::access_line(&mut s.buf, r, now);
                    }
                    seqs.push(Ok(self.next_seq));
                    self.next_seq += 1;
                }
                Err(e) => {
                    // Unreachable for our own types; never silently skip.
                    self.prev = r.prev.clone();
                    seqs.push(Err(format!("cannot serialise record: {e}")));
                }
            }
        }
        if buf.is_empty() {
            return (seqs, false);
        }
        let day = utc_day(now);
        let rotated = self.rotate_if_due(day, buf.len() as u64);
        let sync = durable || self.sync == SyncMode::Fsync;
        let written = self.file.write_all(buf).and_then(|()| if sync { self.file.sync_data() } else { Ok(()) });
        match written {
            Ok(()) => {
                self.live.size += buf.len() as u64;
                self.space.wrote(buf.len() as u64);
                self.live.last_day = Some(day);
                self.live.first.get_or_insert((now, seq0));
                if let Some(s) = &mut self.squid {
                    s.flush(self.sync);
                }
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "audit log write failed; requests stay blocked");
                // Cut off any part of the batch that reached the file, so the
                // log stays whole lines, and reuse the batch's numbers.
                let _ = self.file.set_len(self.live.size);
                self.next_seq = seq0;
                self.prev = prev0;
                for s in seqs.iter_mut() {
                    *s = Err(format!("{}: {e}", self.path.display()));
                }
            }
        }
        (seqs, rotated)
    }

    /// Rotates when the batch about to be written (`incoming` bytes, on UTC
    /// `day`) belongs in a new file. A failed rotation is reported and the
    /// records go into the current file: a record is never dropped for it.
    fn rotate_if_due(&mut self, day: i64, incoming: u64) -> bool {
        if self.live.size == 0 {
            return false;
        }
        let new_day = self.rotate_daily && self.live.last_day.is_some_and(|d| d != day);
        let too_big = self.rotate_max_bytes > 0 && self.live.size + incoming > self.rotate_max_bytes;
        if !new_day && !too_big {
            return false;
        }
        match self.rotate() {
            Ok(to) => {
                tracing::info!(to = %to.display(), next_seq = self.next_seq, "audit log rotated");
                true
            }
            Err(e) => {
                tracing::error!(path = %self.path.display(), error = %e, "cannot rotate the audit log; writing on in the current file");
                false
            }
        }
    }

    fn rotate(&mut self) -> std::io::Result<PathBuf> {
        let (first_ts, first_seq) =
            self.live.first.unwrap_or_else(|| ((self.clock)(), self.next_seq.saturating_sub(1)));
        let target = self.files.rotated_path(first_ts, first_seq);
        if target.exists() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{} already exists", target.display()),
            ));
        }
        std::fs::rename(&self.path, &target)?;
        // If the new file cannot be made, the writer goes on in the renamed
        // one: the chain holds and the next rotation tries again.
        self.file = OpenOptions::new().read(true).append(true).create(true).open(&self.path)?;
        self.live = LiveFile { size: 0, first: None, last_day: None };
        if self.sync == SyncMode::Fsync {
            sync_dir(self.files.dir());
        }
        if let Some(s) = &mut self.squid {
            s.reopen();
        }
        Ok(target)
    }

    /// Removes the oldest rotated files whose newest record is older than
    /// `retention_days`, after writing (and fsyncing) a `retention` record
    /// that names them and carries the last hash of the newest one: the
    /// checkpoint `logs verify` starts the chain from.
    fn apply_retention(&mut self, buf: &mut Vec<u8>) {
        if self.retention_days == 0 {
            return;
        }
        let now = (self.clock)();
        let Some(cutoff) = now.checked_sub(Duration::from_secs(u64::from(self.retention_days) * 86_400)) else {
            return;
        };
        let rotated = match self.files.rotated() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(dir = %self.files.dir().display(), error = %e, "cannot list rotated audit logs for retention");
                return;
            }
        };
        let mut expired = Vec::new();
        // Only the oldest files, in order, so what is kept stays one chain.
        for path in rotated {
            if path == self.path {
                break;
            }
            match RotatedFile::read(&path) {
                Ok(f) if f.last_time < cutoff => expired.push(f),
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "rotated audit log cannot be read; kept");
                    break;
                }
            }
        }
        let Some(newest) = expired.last() else { return };
        let mut r = Record::new(EventKind::Retention);
        r.via = Some(Via::System);
        r.reason = Some(format!("retention_days = {}", self.retention_days));
        r.detail = Some(serde_json::json!({
            "retention_days": self.retention_days,
            "cutoff": humantime::format_rfc3339_millis(cutoff).to_string(),
            "removed": expired.iter().map(|f| serde_json::json!({
                "file": f.path.file_name().map(|n| n.to_string_lossy().into_owned()),
                "first_seq": f.first_seq,
                "last_seq": f.last_seq,
                "first_ts": f.first_ts,
                "last_ts": f.last_ts,
            })).collect::<Vec<_>>(),
            "last_seq": newest.last_seq,
            "last_hash": newest.last_hash,
        }));
        let (seqs, _) = self.append(&mut [&mut r], buf, true);
        if let Some(Err(e)) = seqs.first() {
            tracing::error!(error = %e, "cannot write the retention record; old audit logs are kept");
            return;
        }
        for f in &expired {
            match std::fs::remove_file(&f.path) {
                Ok(()) => {
                    tracing::info!(path = %f.path.display(), last_seq = f.last_seq, "removed audit log past retention")
                }
                Err(e) => {
                    tracing::error!(path = %f.path.display(), error = %e, "cannot remove audit log past retention")
                }
            }
        }
        if self.sync == SyncMode::Fsync {
            sync_dir(self.files.dir());
        }
    }
}

/// What retention needs to know of a rotated file.
struct RotatedFile {
    path: PathBuf,
    first_seq: u64,
    first_ts: String,
    last_seq: u64,
    last_ts: String,
    last_time: SystemTime,
    last_hash: String,
}

impl RotatedFile {
    fn read(path: &Path) -> Result<RotatedFile, String> {
        let parse = |line: Option<String>| -> Result<Record, String> {
            let line = line.ok_or("the file is empty")?;
            serde_json::from_str(&line).map_err(|e| e.to_string())
        };
        let first = parse(first_line(path).map_err(|e| e.to_string())?)?;
        let last = parse(last_line(path).map_err(|e| e.to_string())?)?;
        let last_time = parse_rfc3339(&last.ts).ok_or_else(|| format!("unreadable time {:?}", last.ts))?;
        Ok(RotatedFile {
            path: path.to_path_buf(),
            first_seq: first.seq,
            first_ts: first.ts,
            last_seq: last.seq,
            last_ts: last.ts,
            last_time,
            last_hash: last.hash,
        })
    }
}

/// Makes a rename or removal in `dir` durable (best effort).
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the audit log folder");
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Reads the last complete line to resume `seq` and the chain (and returns
/// that record). A torn last
/// line (a crash mid-write) is moved to `<log>.torn` and cut off, so the log
/// stays a sequence of whole records and nothing is thrown away.
fn resume_point(path: &Path, file: &mut File) -> Result<(ResumePoint, Option<Record>), AuditError> {
    let io = |source| AuditError::Io { path: path.to_path_buf(), source };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok((ResumePoint { next_seq: 1, prev_hash: GENESIS.to_string() }, None));
    }
    // Read backwards in growing windows until a whole last line is in view.
    let mut window: u64 = 64 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start)).map_err(io)?;
        Read::by_ref(file).take(len - start).read_to_end(&mut tail).map_err(io)?;
        let complete_end = tail.iter().rposition(|&b| b == b'\n').map(|i| i + 1);
        let torn_from = complete_end.unwrap_or(0);
        if torn_from < tail.len() && (complete_end.is_some() || start == 0) {
            set_aside_torn_tail(path, file, &tail[torn_from..], start + torn_from as u64)?;
            return resume_point(path, file);
        }
        let Some(end) = complete_end else {
            window *= 4;
            continue;
        };
        let body = &tail[..end - 1];
        let line_start = match body.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if start == 0 => 0,
            None => {
                window *= 4;
                continue;
            }
        };
        let last = String::from_utf8_lossy(&body[line_start..]).into_owned();
        let mut corrupt = |message: String| AuditError::Corrupt {
            path: path.to_path_buf(),
            line: count_lines(file, path).unwrap_or(0),
            message,
        };
        let record: Record = serde_json::from_str(&last).map_err(|e| corrupt(e.to_string()))?;
        let (recomputed, claimed) = line_hash(&last).ok_or_else(|| corrupt("no hash field".into()))?;
        if recomputed != claimed {
            tracing::warn!(path = %path.display(), seq = record.seq, "last audit record does not match its hash; `weerwal logs verify` will report it");
        }
        let resume = ResumePoint { next_seq: record.seq + 1, prev_hash: claimed.to_string() };
        return Ok((resume, Some(record)));
    }
}

fn set_aside_torn_tail(path: &Path, file: &mut File, torn: &[u8], at: u64) -> Result<(), AuditError> {
    let torn_path = path.with_extension("jsonl.torn");
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| AuditError::Io { path: p, source }
    };
    let mut aside = OpenOptions::new().create(true).append(true).open(&torn_path).map_err(io(&torn_path))?;
    aside
        .write_all(torn)
        .and_then(|()| aside.write_all(b"\n"))
        .and_then(|()| aside.sync_data())
        .map_err(io(&torn_path))?;
    file.set_len(at).map_err(io(path))?;
    tracing::warn!(path = %path.display(), aside = %torn_path.display(), bytes = torn.len(), "audit log ended in a torn line (a crash mid-write); it was moved aside");
    Ok(())
}

fn count_lines(file: &mut File, path: &Path) -> Result<usize, AuditError> {
    let io = |source| AuditError::Io { path: path.to_path_buf(), source };
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    let mut n = 0;
    let mut buf = [0u8; 64 * 1024];
    loop {
        let read = file.read(&mut buf).map_err(io)?;
        if read == 0 {
            return Ok(n);
        }
        n += buf[..read].iter().filter(|&&b| b == b'\n').count();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::EventKind;

    fn lines(path: &Path) -> Vec<Record> {
        std::fs::read_to_string(path).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    fn config(path: &Path, sync: SyncMode) -> AuditConfig {
        // One record per call here; coalescing has its own tests.
        AuditConfig { path: path.to_path_buf(), sync, coalesce_after: 0, ..AuditConfig::default() }
    }

    #[tokio::test]
    async fn seq_and_chain_continue_across_restart_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let (log, handle, resume) = AuditLog::open(&config(&path, SyncMode::Write)).unwrap();
        assert_eq!(resume.next_seq, 1);
        for _ in 0..3 {
            log.record(Record::new(EventKind::Blocked)).await.unwrap();
        }
        drop(log);
        handle.join();
        // A crash mid-write leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"seq\":4,\"ts\":\"2026").unwrap();
        drop(f);
        let (log, handle, resume) = AuditLog::open(&config(&path, SyncMode::Fsync)).unwrap();
        assert_eq!(resume.next_seq, 4);
        assert_eq!(log.record(Record::new(EventKind::Blocked)).await.unwrap(), 4);
        drop(log);
        handle.join();
        let records = lines(&path);
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
        assert_eq!(records[0].prev, GENESIS);
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev, pair[0].hash);
        }
        let torn = std::fs::read_to_string(path.with_extension("jsonl.torn")).unwrap();
        assert!(torn.starts_with("{\"seq\":4"));
    }

    #[tokio::test]
    async fn size_rotation_chains_files_and_resumes_from_the_newest_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut c = config(&path, SyncMode::Write);
        c.rotate.max_bytes = 1000;
        let (log, handle, _) = AuditLog::open(&c).unwrap();
        for _ in 0..20 {
            let mut r = Record::new(EventKind::Blocked);
            r.host = Some("aliexpress.com".into());
            log.record(r).await.unwrap();
        }
        drop(log);
        handle.join();
        let files = LogFiles::new(&path);
        let all = files.all().unwrap();
        assert!(all.len() >= 4, "{all:?}");
        let records: Vec<Record> = all.iter().flat_map(|p| lines(p)).collect();
        assert_eq!(records.iter().map(|r| r.seq).collect::<Vec<_>>(), (1..=20).collect::<Vec<_>>());
        assert_eq!(records[0].prev, GENESIS);
        for pair in records.windows(2) {
            assert_eq!(pair[1].prev, pair[0].hash);
        }
        for p in &all {
            let size = std::fs::metadata(p).unwrap().len();
            assert!(size <= 1000, "{} has {size} bytes", p.display());
            let first = &lines(p)[0];
            if *p != path {
                assert_eq!(files.rotated_seq(&p.file_name().unwrap().to_string_lossy()), Some(first.seq));
            }
        }
        // A crash right after a rotation leaves an empty live file.
        let last_hash = records.last().unwrap().hash.clone();
        std::fs::rename(&path, files.rotated_path(SystemTime::now(), records.last().unwrap().seq)).ok();
        std::fs::write(&path, "").unwrap();
        let (log, handle, resume) = AuditLog::open(&c).unwrap();
        assert_eq!(resume, ResumePoint { next_seq: 21, prev_hash: last_hash.clone() });
        assert_eq!(log.record(Record::new(EventKind::Blocked)).await.unwrap(), 21);
        drop(log);
        handle.join();
        assert_eq!(lines(&path)[0].prev, last_hash);
    }

    #[tokio::test]
    async fn daily_rotation_follows_the_clock() {
        use std::sync::atomic::{AtomicU64, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let now = Arc::new(AtomicU64::new(1_795_000_000_000));
        let clock: Clock = {
            let now = Arc::clone(&now);
            Arc::new(move || crate::audit::time::from_unix_millis(now.load(Ordering::SeqCst) as i64))
        };
        let (log, handle, _) = AuditLog::open_with_clock(&config(&path, SyncMode::Write), clock.clone()).unwrap();
        log.record(Record::new(EventKind::Blocked)).await.unwrap();
        log.record(Record::new(EventKind::Blocked)).await.unwrap();
        now.fetch_add(86_400_000, Ordering::SeqCst);
        log.record(Record::new(EventKind::Blocked)).await.unwrap();
        drop(log);
        handle.join();
        let rotated = LogFiles::new(&path).rotated().unwrap();
        assert_eq!(rotated.len(), 1);
        assert_eq!(rotated[0].file_name().unwrap(), "audit-20261118-110640-000000000001.jsonl");
        assert_eq!(lines(&rotated[0]).len(), 2);
        assert_eq!(lines(&path).iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
        // The next day again, after a restart: the live file rotates at the first write.
        now.fetch_add(86_400_000, Ordering::SeqCst);
        let (log, handle, resume) = AuditLog::open_with_clock(&config(&path, SyncMode::Write), clock).unwrap();
        assert_eq!(resume.next_seq, 4);
        log.record(Record::new(EventKind::Blocked)).await.unwrap();
        drop(log);
        handle.join();
        assert_eq!(LogFiles::new(&path).rotated().unwrap().len(), 2);
        assert_eq!(lines(&path).iter().map(|r| r.seq).collect::<Vec<_>>(), vec![4]);
    }
}
