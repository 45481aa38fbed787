//! Reading a log: which files (the whole log in a folder, or files named on
//! the command line) and their lines in chain order, streamed one line at a
//! time so a log of any size is read in constant memory.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use super::files::LogFiles;

/// One line of a log file.
pub struct Line<'a> {
    pub file: &'a Path,
    /// 1-based line number in `file`.
    pub number: u64,
    /// The line without its newline.
    pub bytes: &'a [u8],
    /// False for a last line that does not end in a newline (truncated, or
    /// still being written).
    pub complete: bool,
}

impl Line<'_> {
    /// The line as text, `None` when it is not UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(self.bytes).ok()
    }
}

/// A file that could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{}: {source}", path.display())]
pub struct ReadError {
    pub path: PathBuf,
    pub source: io::Error,
}

/// The files to read and whether they are a whole log (a folder: its chain
/// must start at the beginning or at a retention checkpoint) or files picked
/// by hand (whose first record may chain to a file not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub files: Vec<PathBuf>,
    pub whole_log: bool,
}

/// The files named by `args` (folders and files), or with none, the whole
/// log of `live` (the configured `audit.path`). Folders hold logs named like
/// `live`. Files are put in chain order: rotated files by the first `seq` in
/// their name, any other file after them in the order given.
pub fn select(args: &[PathBuf], live: &Path) -> Result<Selection, String> {
    let list = |files: &LogFiles| {
        files.all().map_err(|e| {
            format!("{}: {e}", if files.dir().as_os_str().is_empty() { Path::new(".") } else { files.dir() }.display())
        })
    };
    if args.is_empty() {
        let files = list(&LogFiles::new(live))?;
        if files.is_empty() {
            return Err(format!("no audit log at {}", live.display()));
        }
        return Ok(Selection { files, whole_log: true });
    }
    let mut whole_log = true;
    let mut picked: Vec<(Option<u64>, PathBuf)> = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let files = list(&LogFiles::in_dir(arg, live))?;
            if files.is_empty() {
                let name = LogFiles::in_dir(arg, live).live();
                return Err(format!(
                    "{}: no audit log here (looked for {} and its rotated files)",
                    arg.display(),
                    name.display()
                ));
            }
            picked.extend(files.into_iter().map(|f| (None, f)));
        } else if arg.is_file() {
            whole_log = false;
            let naming = LogFiles::in_dir(arg.parent().unwrap_or(Path::new("")), live);
            let seq = arg.file_name().and_then(|n| naming.rotated_seq(&n.to_string_lossy()));
            picked.push((seq, arg.clone()));
        } else {
            return Err(format!("{}: no such file or folder", arg.display()));
        }
    }
    if !whole_log {
        // Stable: files that are not rotated logs keep their order, last.
        picked.sort_by_key(|(seq, _)| (seq.is_none(), seq.unwrap_or(0)));
    }
    Ok(Selection { files: picked.into_iter().map(|(_, p)| p).collect(), whole_log })
}

/// A source of log lines: calls the visitor with each line, in order, until
/// it breaks. The files of a log ([`each_line`]), or the cluster database's
/// copy of every node's records.
pub type LineVisitor<'v> = &'v mut dyn FnMut(Line<'_>) -> ControlFlow<()>;

/// Calls `f` with every line of `files`, in order, until it breaks.
pub fn each_line<F>(files: &[PathBuf], mut f: F) -> Result<(), ReadError>
where
    F: FnMut(Line<'_>) -> ControlFlow<()>,
{
    let mut buf = Vec::with_capacity(64 * 1024);
    for path in files {
        let err = |source| ReadError { path: path.clone(), source };
        let mut reader = BufReader::with_capacity(1 << 20, File::open(path).map_err(err)?);
        let mut number = 0;
        loop {
            buf.clear();
            if reader.read_until(b'\n', &mut buf).map_err(err)? == 0 {
                break;
            }
            number += 1;
            let complete = buf.last() == Some(&b'\n');
            let bytes = if complete { &buf[..buf.len() - 1] } else { &buf[..] };
            if f(Line { file: path, number, bytes, complete }).is_break() {
                return Ok(());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_across_files_with_numbers_and_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("audit-20261123-000000-000000000001.jsonl");
        let live = dir.path().join("audit.jsonl");
        std::fs::write(&a, "one\ntwo\n").unwrap();
        std::fs::write(&live, "three\nfour").unwrap();
        let sel = select(&[], &live).unwrap();
        assert_eq!(sel, Selection { files: vec![a.clone(), live.clone()], whole_log: true });
        let mut seen = Vec::new();
        each_line(&sel.files, |l| {
            seen.push((
                l.file.file_name().unwrap().to_string_lossy().into_owned(),
                l.number,
                l.text().unwrap().to_string(),
                l.complete,
            ));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(seen[1], ("audit-20261123-000000-000000000001.jsonl".into(), 2, "two".into(), true));
        assert_eq!(seen[3], ("audit.jsonl".into(), 2, "four".into(), false));
        // Files given by hand are put in chain order.
        let sel = select(&[live.clone(), a.clone()], &live).unwrap();
        assert_eq!(sel, Selection { files: vec![a, live.clone()], whole_log: false });
        assert!(select(&[dir.path().join("nope")], &live).unwrap_err().contains("no such file"));
        let empty = tempfile::tempdir().unwrap();
        assert!(select(&[empty.path().to_path_buf()], &live).unwrap_err().contains("no audit log here"));
    }
}
