//! The single audit writer. It owns the file; everyone else sends it records
//! through a channel and waits for the record's sequence number, which is
//! only given once the line is written. Records that arrive together are
//! written with one `write` (and one `fsync`), so a burst of blocked requests
//! costs one system call, while each response still waits for its own record.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use tokio::sync::{mpsc, oneshot};

use super::record::{line_hash, Record, GENESIS};
use crate::config::SyncMode;

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
}

struct Pending {
    record: Record,
    done: oneshot::Sender<Result<u64, String>>,
}

enum Msg {
    Record(Box<Pending>),
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

impl AuditLog {
    /// Opens (or creates) the log, resumes `seq` and the hash chain from its
    /// last complete line, and starts the writer thread.
    pub fn open(path: &Path, sync: SyncMode) -> Result<(AuditLog, AuditWriterHandle, ResumePoint), AuditError> {
        let io = |source| AuditError::Io { path: path.to_path_buf(), source };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut file = OpenOptions::new().read(true).append(true).create(true).open(path).map_err(io)?;
        let resume = resume_point(path, &mut file)?;
        let (tx, rx) = mpsc::channel(16 * 1024);
        let writer =
            Writer { path: path.to_path_buf(), file, sync, next_seq: resume.next_seq, prev: resume.prev_hash.clone() };
        let thread =
            std::thread::Builder::new().name("audit-writer".into()).spawn(move || writer.run(rx)).map_err(io)?;
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
        let (done, wait) = oneshot::channel();
        self.tx.send(Msg::Record(Box::new(Pending { record, done }))).await.map_err(|_| AuditError::Closed)?;
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => {
                Err(AuditError::Io { path: PathBuf::from("audit log"), source: std::io::Error::other(message) })
            }
            Err(_) => Err(AuditError::Closed),
        }
    }
}

struct Writer {
    path: PathBuf,
    file: File,
    sync: SyncMode,
    next_seq: u64,
    prev: String,
}

/// The most records written with one system call.
const BATCH: usize = 1024;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
        let mut buf: Vec<u8> = Vec::with_capacity(BATCH * 512);
        let mut next = rx.blocking_recv();
        while let Some(msg) = next.take() {
            let mut closing = None;
            match msg {
                Msg::Record(p) => batch.push(*p),
                Msg::Close(done) => closing = Some(done),
            }
            while closing.is_none() && batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(Msg::Record(p)) => batch.push(*p),
                    Ok(Msg::Close(done)) => closing = Some(done),
                    Err(_) => break,
                }
            }
            if !batch.is_empty() {
                self.write_batch(&mut batch, &mut buf);
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
                let _ = done.send(());
                return;
            }
            next = rx.blocking_recv();
        }
    }

    fn write_batch(&mut self, batch: &mut Vec<Pending>, buf: &mut Vec<u8>) {
        buf.clear();
        let ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let (seq0, prev0) = (self.next_seq, self.prev.clone());
        let mut seqs = Vec::with_capacity(batch.len());
        for p in batch.iter_mut() {
            let r = &mut p.record;
            r.seq = self.next_seq;
            r.ts.clone_from(&ts);
            r.prev = std::mem::take(&mut self.prev);
            r.hash.clear();
            match r.write_line(buf) {
                Ok(hash) => {
                    self.prev = hash;
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
        let written = self.file.write_all(buf).and_then(|()| match self.sync {
            SyncMode::Fsync => self.file.sync_data(),
            SyncMode::Write => Ok(()),
        });
        if let Err(e) = written {
            tracing::error!(path = %self.path.display(), error = %e, "audit log write failed; requests stay blocked");
            // Nothing of this batch is known to be on disk: reuse its numbers.
            self.next_seq = seq0;
            self.prev = prev0;
            for s in seqs.iter_mut() {
                *s = Err(format!("{}: {e}", self.path.display()));
            }
        }
        for (p, s) in batch.drain(..).zip(seqs) {
            let _ = p.done.send(s);
        }
    }
}

/// Reads the last complete line to resume `seq` and the chain. A torn last
/// line (a crash mid-write) is moved to `<log>.torn` and cut off, so the log
/// stays a sequence of whole records and nothing is thrown away.
fn resume_point(path: &Path, file: &mut File) -> Result<ResumePoint, AuditError> {
    let io = |source| AuditError::Io { path: path.to_path_buf(), source };
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Ok(ResumePoint { next_seq: 1, prev_hash: GENESIS.to_string() });
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
        return Ok(ResumePoint { next_seq: record.seq + 1, prev_hash: claimed.to_string() });
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

    #[tokio::test]
    async fn seq_and_chain_continue_across_restart_and_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/audit.jsonl");
        let (log, handle, resume) = AuditLog::open(&path, SyncMode::Write).unwrap();
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
        let (log, handle, resume) = AuditLog::open(&path, SyncMode::Fsync).unwrap();
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
}
