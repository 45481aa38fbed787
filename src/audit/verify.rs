//! `weerwal logs verify`: walks the hash chain across the log's files and
//! finds the first place where it breaks. Every line must be a complete
//! record whose `hash` matches its text (else it was edited or cut off),
//! whose `seq` follows the line before (else lines were removed, inserted
//! or moved) and whose `prev` is the line before's `hash`. The chain starts
//! at the genesis hash with seq 1, or, after retention removed the oldest
//! files, at the `retention` record's checkpoint (its `last_seq` and
//! `last_hash`).

use std::borrow::Cow;
use std::fmt;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::reader::{each_line, Line, ReadError, Selection};
use super::record::{line_hash, GENESIS};

/// How the verified chain begins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// No records at all.
    Empty,
    /// At the beginning: seq 1 chained to the genesis hash.
    Genesis,
    /// After records removed by retention, as the `retention` record with
    /// this `seq` says.
    Checkpoint { retention_seq: u64 },
    /// Files picked by hand whose first record chains to one not given.
    Unanchored { seq: u64, prev: String },
}

/// An intact chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub records: u64,
    pub files: usize,
    pub first_seq: u64,
    pub last_seq: u64,
    pub first_ts: String,
    pub last_ts: String,
    pub start: Start,
}

/// The first broken place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub file: PathBuf,
    /// 1-based line number in `file`.
    pub line: u64,
    pub message: String,
    /// Records before it that verified.
    pub verified: u64,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Intact(Summary),
    Broken(Break),
}

/// The fields verification reads; the rest of the line counts only through
/// its hash.
#[derive(Deserialize)]
struct Head<'a> {
    seq: u64,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    prev: Cow<'a, str>,
    #[serde(default)]
    detail: Option<serde_json::Value>,
}

/// The last good line: what the next must follow.
struct Last {
    seq: u64,
    hash: String,
    file: PathBuf,
    line: u64,
}

struct Walk {
    summary: Summary,
    last: Option<Last>,
    /// The first record, while its `prev` is neither genesis nor accounted
    /// for by a retention checkpoint.
    pending: Option<(PathBuf, u64, u64, String)>,
    broken: Option<Break>,
}

impl Walk {
    fn fail(&mut self, file: &Path, line: u64, message: String) -> ControlFlow<()> {
        self.broken = Some(Break { file: file.to_path_buf(), line, message, verified: self.summary.records });
        ControlFlow::Break(())
    }

    fn step(&mut self, line: Line<'_>) -> ControlFlow<()> {
        let (file, n) = (line.file, line.number);
        if !line.complete {
            return self.fail(
                file,
                n,
                "not a complete record: the last line ends without a newline (the file was cut off, or is being written right now)".into(),
            );
        }
        let Some(text) = line.text() else { return self.fail(file, n, "the line is not UTF-8 text".into()) };
        if text.trim().is_empty() {
            return self.fail(file, n, "an empty line: not a record".into());
        }
        let Some((recomputed, claimed)) = line_hash(text) else {
            return self.fail(file, n, "not a complete record: it does not end with its \"hash\" field".into());
        };
        let head: Head = match serde_json::from_str(text) {
            Ok(h) => h,
            Err(e) => return self.fail(file, n, format!("not a valid record: {e}")),
        };
        if recomputed != claimed {
            return self.fail(
                file,
                n,
                format!("hash mismatch in seq {}: the line was changed after it was written", head.seq),
            );
        }
        match &self.last {
            None => {
                if head.prev == GENESIS {
                    if head.seq != 1 {
                        return self.fail(
                            file,
                            n,
                            format!("the log starts at seq {} with the genesis hash; a log starts at seq 1", head.seq),
                        );
                    }
                    self.summary.start = Start::Genesis;
                } else {
                    self.pending = Some((file.to_path_buf(), n, head.seq, head.prev.to_string()));
                }
            }
            Some(last) => {
                let before = if last.file == file {
                    format!("line {} (seq {})", last.line, last.seq)
                } else {
                    format!("the last line of {} (seq {})", last.file.display(), last.seq)
                };
                let expected = last.seq + 1;
                if head.seq > expected {
                    let missing = head.seq - expected;
                    return self.fail(
                        file,
                        n,
                        format!("expected seq {expected} after {before}, found seq {}: {missing} record(s) missing here (removed, or moved elsewhere)", head.seq),
                    );
                }
                if head.seq < expected {
                    return self.fail(
                        file,
                        n,
                        format!("expected seq {expected} after {before}, found seq {}: a record inserted, repeated or moved here", head.seq),
                    );
                }
                if head.prev != last.hash {
                    return self.fail(
                        file,
                        n,
                        format!("prev does not match the hash of {before}: a line removed, inserted or moved, or the line before rewritten"),
                    );
                }
            }
        }
        if head.event == "retention" {
            self.checkpoint(&head);
        }
        let s = &mut self.summary;
        if s.records == 0 {
            s.first_seq = head.seq;
            s.first_ts = head.ts.to_string();
        }
        s.records += 1;
        s.last_seq = head.seq;
        s.last_ts.clear();
        s.last_ts.push_str(&head.ts);
        match &mut self.last {
            Some(last) => {
                last.seq = head.seq;
                last.hash.clear();
                last.hash.push_str(claimed);
                if last.file != file {
                    last.file = file.to_path_buf();
                }
                last.line = n;
            }
            None => {
                self.last = Some(Last { seq: head.seq, hash: claimed.to_string(), file: file.to_path_buf(), line: n })
            }
        }
        ControlFlow::Continue(())
    }

    /// A retention record accounts for the chain's start when its checkpoint
    /// is exactly the record before the first one kept.
    fn checkpoint(&mut self, head: &Head<'_>) {
        let Some((_, _, seq, prev)) = &self.pending else { return };
        let Some(detail) = &head.detail else { return };
        let last_seq = detail.get("last_seq").and_then(|v| v.as_u64());
        let last_hash = detail.get("last_hash").and_then(|v| v.as_str());
        if last_seq.is_some_and(|l| l + 1 == *seq) && last_hash == Some(prev.as_str()) {
            self.pending = None;
            self.summary.start = Start::Checkpoint { retention_seq: head.seq };
        }
    }
}

/// Verifies the selected files as one chain.
pub fn verify(selection: &Selection) -> Result<Outcome, ReadError> {
    let mut walk = Walk {
        summary: Summary {
            records: 0,
            files: selection.files.len(),
            first_seq: 0,
            last_seq: 0,
            first_ts: String::new(),
            last_ts: String::new(),
            start: Start::Empty,
        },
        last: None,
        pending: None,
        broken: None,
    };
    each_line(&selection.files, |line| walk.step(line))?;
    if let Some(b) = walk.broken {
        return Ok(Outcome::Broken(b));
    }
    if let Some((file, line, seq, prev)) = walk.pending {
        if selection.whole_log {
            return Ok(Outcome::Broken(Break {
                file,
                line,
                message: format!(
                    "the chain does not start here: seq {seq} follows a record (hash {}…) that is not in the log, and no retention record accounts for it (lines or files before it were removed)",
                    &prev[..prev.len().min(16)]
                ),
                verified: 0,
            }));
        }
        walk.summary.start = Start::Unanchored { seq, prev };
    }
    Ok(Outcome::Intact(walk.summary))
}

impl fmt::Display for Summary {
    /// `OK: 12 records, seq 1..12, from TS to TS`, then how the chain starts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.records == 0 {
            return write!(f, "OK: 0 records");
        }
        write!(
            f,
            "OK: {} records, seq {}..{}, from {} to {}",
            self.records, self.first_seq, self.last_seq, self.first_ts, self.last_ts
        )?;
        let files = if self.files == 1 { "1 file".to_string() } else { format!("{} files", self.files) };
        match &self.start {
            Start::Empty | Start::Genesis => write!(f, "\n{files}; the chain starts at the first record ever written"),
            Start::Checkpoint { retention_seq } => write!(
                f,
                "\n{files}; records before seq {} were removed by retention, as the retention record seq {retention_seq} says",
                self.first_seq
            ),
            Start::Unanchored { seq, prev } => write!(
                f,
                "\n{files}; NOTE: seq {seq} chains to a record not given (hash {}…): verify the whole folder to check what comes before",
                &prev[..prev.len().min(16)]
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::{EventKind, Record};

    fn log(n: u64) -> Vec<String> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let mut r = Record::new(EventKind::Blocked);
                r.seq = seq;
                r.ts = format!("2026-11-23T10:00:{:02}.000Z", seq % 60);
                r.prev = prev.clone();
                let mut out = Vec::new();
                prev = r.write_line(&mut out).unwrap();
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    fn check(lines: &[String]) -> Outcome {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        std::fs::write(&path, lines.concat()).unwrap();
        verify(&Selection { files: vec![path], whole_log: true }).unwrap()
    }

    fn broken_at(lines: &[String]) -> (u64, String) {
        match check(lines) {
            Outcome::Broken(b) => (b.line, b.message),
            Outcome::Intact(s) => panic!("verified: {s}"),
        }
    }

    #[test]
    fn intact_log() {
        let Outcome::Intact(s) = check(&log(5)) else { panic!() };
        assert_eq!((s.records, s.first_seq, s.last_seq, &s.start), (5, 1, 5, &Start::Genesis));
        assert_eq!(
            s.to_string().lines().next().unwrap(),
            "OK: 5 records, seq 1..5, from 2026-11-23T10:00:01.000Z to 2026-11-23T10:00:05.000Z"
        );
    }

    #[test]
    fn each_kind_of_damage_is_found_at_its_line() {
        let mut l = log(5);
        l[2] = l[2].replace("\"blocked\"", "\"exempted\"");
        let (line, msg) = broken_at(&l);
        assert_eq!(line, 3);
        assert!(msg.contains("hash mismatch"), "{msg}");

        let mut l = log(5);
        l.remove(1);
        let (line, msg) = broken_at(&l);
        assert_eq!(line, 2);
        assert!(msg.contains("expected seq 2") && msg.contains("1 record(s) missing"), "{msg}");

        let mut l = log(5);
        l.swap(1, 2);
        assert_eq!(broken_at(&l).0, 2);

        let mut l = log(5);
        l.remove(0);
        let (line, msg) = broken_at(&l);
        assert_eq!(line, 1);
        assert!(msg.contains("does not start here"), "{msg}");

        let mut l = log(5);
        let cut = l[4].len() - 10;
        l[4].truncate(cut);
        let (line, msg) = broken_at(&l);
        assert_eq!(line, 5);
        assert!(msg.contains("not a complete record"), "{msg}");

        let mut l = log(5);
        let dup = l[1].clone();
        l.insert(2, dup);
        let (line, msg) = broken_at(&l);
        assert_eq!(line, 3);
        assert!(msg.contains("inserted"), "{msg}");
    }
}
