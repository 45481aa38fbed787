//! Follows a rotating audit log from a `seq` on, like `tail -F`: the file
//! that holds the record is found by the rotated files' names, then lines
//! are read as the writer completes them. When the live file is rotated
//! (renamed away, a new one started), the old file is read to its end
//! before the new one is opened, so no record is skipped.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Shipped;
use crate::audit::files::{first_line, LogFiles};

/// The fields a sink needs besides the line itself.
#[derive(Deserialize)]
struct Head<'a> {
    seq: u64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow, default)]
    hash: Cow<'a, str>,
}

struct Open {
    path: PathBuf,
    reader: BufReader<File>,
    /// Where the next complete line starts.
    offset: u64,
    is_live: bool,
    #[cfg(unix)]
    id: (u64, u64),
}

/// A reader of a log from a given `seq`.
pub struct Tail {
    files: LogFiles,
    live: PathBuf,
    next_seq: u64,
    open: Option<Open>,
    /// Set when the live file was seen replaced: read it to its end once more.
    draining: bool,
    warned_gap: bool,
}

fn first_seq_of(path: &Path) -> Option<u64> {
    let line = first_line(path).ok().flatten()?;
    serde_json::from_str::<Head>(&line).ok().map(|h| h.seq)
}

#[cfg(unix)]
fn file_id(m: &std::fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (m.dev(), m.ino())
}

impl Tail {
    /// A reader that starts at the record numbered `next_seq`.
    pub fn new(live: &Path, next_seq: u64) -> Tail {
        Tail {
            files: LogFiles::new(live),
            live: live.to_path_buf(),
            next_seq,
            open: None,
            draining: false,
            warned_gap: false,
        }
    }

    /// A reader of the whole log, from its oldest record kept.
    pub fn from_start(live: &Path) -> Tail {
        let mut t = Tail::new(live, 0);
        t.warned_gap = true;
        t
    }

    /// The `seq` the next record read should have.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    fn open(&mut self, path: PathBuf) -> io::Result<()> {
        let file = File::open(&path)?;
        #[cfg(unix)]
        let id = file_id(&file.metadata()?);
        let is_live = path == self.live;
        self.open = Some(Open {
            reader: BufReader::with_capacity(256 * 1024, file),
            offset: 0,
            path,
            is_live,
            #[cfg(unix)]
            id,
        });
        self.draining = false;
        Ok(())
    }

    /// Opens the file that holds `next_seq`: the newest rotated file whose
    /// first record is not after it, or the live file when its first record
    /// is not after it. When every file starts later (records removed by
    /// retention before they were shipped), the oldest file.
    fn locate(&mut self) -> io::Result<bool> {
        let rotated: Vec<(u64, PathBuf)> = self
            .files
            .rotated()?
            .into_iter()
            .filter_map(|p| {
                let seq = p.file_name().and_then(|n| self.files.rotated_seq(&n.to_string_lossy()))?;
                Some((seq, p))
            })
            .collect();
        let live_first = if self.live.is_file() { first_seq_of(&self.live) } else { None };
        if live_first.is_some_and(|s| s <= self.next_seq) {
            return self.open(self.live.clone()).map(|()| true);
        }
        if let Some((_, p)) = rotated.iter().rev().find(|(s, _)| *s <= self.next_seq) {
            return self.open(p.clone()).map(|()| true);
        }
        if let Some((_, p)) = rotated.first() {
            return self.open(p.clone()).map(|()| true);
        }
        if self.live.is_file() {
            return self.open(self.live.clone()).map(|()| true);
        }
        Ok(false)
    }

    /// Opens the file after the current one in chain order: the first
    /// rotated file that starts at or after `next_seq` (everything before
    /// it has been read), else the live file.
    fn advance(&mut self) -> io::Result<bool> {
        self.open = None;
        let next_seq = self.next_seq;
        let next = self.files.rotated()?.into_iter().find(|p| {
            p.file_name().and_then(|n| self.files.rotated_seq(&n.to_string_lossy())).is_some_and(|s| s >= next_seq)
        });
        match next {
            Some(p) => self.open(p).map(|()| true),
            None if self.live.is_file() => self.open(self.live.clone()).map(|()| true),
            None => Ok(false),
        }
    }

    /// Whether the live file we read was renamed away (rotated).
    fn live_replaced(live: &Path, open: &Open) -> bool {
        match std::fs::metadata(live) {
            #[cfg(unix)]
            Ok(m) => file_id(&m) != open.id,
            #[cfg(not(unix))]
            Ok(m) => m.len() < open.offset,
            Err(_) => true,
        }
    }

    /// Up to `max` complete records from `next_seq` on; empty when there
    /// is nothing new yet. Lines that are not records are skipped with a
    /// warning (`logs verify` reports them).
    pub fn read_batch(&mut self, max: usize) -> io::Result<Vec<Shipped>> {
        let mut out = Vec::new();
        if self.open.is_none() && !self.locate()? {
            return Ok(out);
        }
        let mut buf = Vec::with_capacity(4096);
        loop {
            let Some(open) = self.open.as_mut() else { return Ok(out) };
            buf.clear();
            let n = open.reader.read_until(b'\n', &mut buf)?;
            if n > 0 && buf.last() == Some(&b'\n') {
                open.offset += n as u64;
                let line = &buf[..n - 1];
                let Ok(text) = std::str::from_utf8(line) else {
                    tracing::warn!(path = %open.path.display(), offset = open.offset, "audit line is not UTF-8; not shipped (run `weerwal logs verify`)");
                    continue;
                };
                let head = match serde_json::from_str::<Head>(text) {
                    Ok(h) => h,
                    Err(e) => {
                        tracing::warn!(path = %open.path.display(), offset = open.offset, error = %e, "audit line is not a record; not shipped (run `weerwal logs verify`)");
                        continue;
                    }
                };
                if head.seq < self.next_seq {
                    continue;
                }
                if head.seq > self.next_seq && !self.warned_gap {
                    self.warned_gap = true;
                    tracing::warn!(
                        path = %open.path.display(),
                        from = self.next_seq,
                        to = head.seq - 1,
                        "audit records missing from the local log before they were shipped (removed by retention?)"
                    );
                }
                self.next_seq = head.seq + 1;
                out.push(Shipped {
                    seq: head.seq,
                    ts: head.ts.into_owned(),
                    event: head.event.into_owned(),
                    hash: head.hash.into_owned(),
                    line: text.to_string(),
                });
                if out.len() >= max {
                    return Ok(out);
                }
                continue;
            }
            // End of what is written (a torn last line is read again later).
            if n > 0 {
                let offset = open.offset;
                open.reader.seek(SeekFrom::Start(offset))?;
            }
            if !out.is_empty() {
                return Ok(out);
            }
            if open.is_live {
                if self.draining {
                    self.draining = false;
                    if !self.advance()? {
                        return Ok(out);
                    }
                } else if Tail::live_replaced(&self.live, open) {
                    // Read what was written before the rename, then move on.
                    self.draining = true;
                } else {
                    return Ok(out);
                }
            } else {
                let path = open.path.clone();
                if !self.advance()? {
                    return Ok(out);
                }
                if self.open.as_ref().is_some_and(|o| o.path == path) {
                    return Ok(out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{AuditLog, EventKind, Record};
    use crate::config::AuditConfig;

    fn config(dir: &Path, max_bytes: u64) -> AuditConfig {
        let mut c = AuditConfig { path: dir.join("audit.jsonl"), ..AuditConfig::default() };
        c.rotate.max_bytes = max_bytes;
        c.retention_days = 0;
        c
    }

    #[tokio::test]
    async fn follows_the_log_across_rotations_without_a_gap() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 2000);
        let (log, writer, _) = AuditLog::open(&cfg).unwrap();
        let mut tail = Tail::new(&cfg.path, 0);
        assert!(tail.read_batch(10).unwrap().is_empty());
        let mut seen = Vec::new();
        for round in 0..20 {
            for _ in 0..7 {
                let mut r = Record::new(EventKind::Blocked);
                r.host = Some(format!("r{round}.aliexpress.com"));
                log.record(r).await.unwrap();
            }
            loop {
                let b = tail.read_batch(5).unwrap();
                if b.is_empty() {
                    break;
                }
                seen.extend(b.into_iter().map(|s| s.seq));
            }
        }
        log.close().await;
        drop(log);
        writer.join();
        assert!(LogFiles::new(&cfg.path).rotated().unwrap().len() > 3, "the test rotates");
        assert_eq!(seen, (1..=140).collect::<Vec<u64>>());
        // From a cursor in the middle, in a fresh reader.
        let mut tail = Tail::new(&cfg.path, 77);
        let b = tail.read_batch(1000).unwrap();
        let mut all: Vec<u64> = b.iter().map(|s| s.seq).collect();
        loop {
            let b = tail.read_batch(1000).unwrap();
            if b.is_empty() {
                break;
            }
            all.extend(b.iter().map(|s| s.seq));
        }
        assert_eq!(all, (77..=140).collect::<Vec<u64>>());
    }

    #[test]
    fn a_torn_last_line_waits_until_it_is_complete() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("audit.jsonl");
        let line = |seq: u64| {
            format!("{{\"seq\":{seq},\"ts\":\"2026-11-23T10:00:00.000Z\",\"event\":\"blocked\",\"prev\":\"x\",\"hash\":\"h{seq}\"}}\n")
        };
        std::fs::write(&live, format!("{}{}", line(0), &line(1)[..20])).unwrap();
        let mut tail = Tail::new(&live, 0);
        let b = tail.read_batch(10).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].hash, "h0");
        assert!(tail.read_batch(10).unwrap().is_empty());
        std::fs::write(&live, format!("{}{}not json\n{}", line(0), line(1), line(2))).unwrap();
        let b = tail.read_batch(10).unwrap();
        assert_eq!(b.iter().map(|s| s.seq).collect::<Vec<_>>(), vec![1, 2]);
    }
}
