//! Which files make up one audit log: the live file (`audit.jsonl`) and the
//! files rotated out of it (`audit-20261123-101502-000000000042.jsonl`: the
//! UTC time and `seq` of the file's first record). Rotated files sort by that
//! `seq`, which is the order of the chain; the live file comes last.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::time::compact_utc;

/// The naming scheme of one log, derived from the live file's path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFiles {
    dir: PathBuf,
    stem: String,
    ext: Option<String>,
}

impl LogFiles {
    /// The log whose live file is `live` (e.g. `logs/audit.jsonl`).
    pub fn new(live: &Path) -> LogFiles {
        let dir = live.parent().map(Path::to_path_buf).unwrap_or_default();
        LogFiles::in_dir(&dir, live)
    }

    /// A log named like `like` (only its file name counts) in `dir`.
    pub fn in_dir(dir: &Path, like: &Path) -> LogFiles {
        let stem = like.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "audit".into());
        let ext = like.extension().map(|e| e.to_string_lossy().into_owned());
        LogFiles { dir: dir.to_path_buf(), stem, ext }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The live file.
    pub fn live(&self) -> PathBuf {
        self.dir.join(self.with_ext(self.stem.clone()))
    }

    fn with_ext(&self, mut name: String) -> String {
        if let Some(ext) = &self.ext {
            name.push('.');
            name.push_str(ext);
        }
        name
    }

    /// The name a live file whose first record has `first_seq`, written at
    /// `first_ts`, gets when it is rotated.
    pub fn rotated_path(&self, first_ts: SystemTime, first_seq: u64) -> PathBuf {
        self.dir.join(self.with_ext(format!("{}-{}-{first_seq:012}", self.stem, compact_utc(first_ts))))
    }

    /// The first `seq` in a rotated file's name; `None` for any other name.
    pub fn rotated_seq(&self, file_name: &str) -> Option<u64> {
        let rest = file_name.strip_prefix(&self.stem)?.strip_prefix('-')?;
        let middle = match &self.ext {
            Some(ext) => rest.strip_suffix(ext.as_str())?.strip_suffix('.')?,
            None => rest,
        };
        let b = middle.as_bytes();
        let shape_ok = b.len() >= 8 + 1 + 6 + 1 + 12
            && b[8] == b'-'
            && b[15] == b'-'
            && b.iter().enumerate().all(|(i, c)| i == 8 || i == 15 || c.is_ascii_digit());
        if !shape_ok {
            return None;
        }
        middle[16..].parse().ok()
    }

    /// The rotated files, oldest first.
    pub fn rotated(&self) -> io::Result<Vec<PathBuf>> {
        let dir = if self.dir.as_os_str().is_empty() { Path::new(".") } else { &self.dir };
        let mut found = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(seq) = name.to_str().and_then(|n| self.rotated_seq(n)) else { continue };
            if entry.file_type()?.is_file() {
                found.push((seq, self.dir.join(name)));
            }
        }
        found.sort();
        Ok(found.into_iter().map(|(_, p)| p).collect())
    }

    /// Every file of the log in chain order: rotated files, then the live one.
    pub fn all(&self) -> io::Result<Vec<PathBuf>> {
        let mut files = self.rotated()?;
        let live = self.live();
        if live.is_file() {
            files.push(live);
        }
        Ok(files)
    }
}

/// The first line of a file (without its newline); `None` when empty.
pub fn first_line(path: &Path) -> io::Result<Option<String>> {
    let mut line = Vec::new();
    BufReader::new(File::open(path)?).read_until(b'\n', &mut line)?;
    if line.last() == Some(&b'\n') {
        line.pop();
    }
    Ok((!line.is_empty()).then(|| String::from_utf8_lossy(&line).into_owned()))
}

/// The last complete line of a file (without its newline), read from the
/// end so a large file is not read whole; `None` when there is none.
pub fn last_line(path: &Path) -> io::Result<Option<String>> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut window: u64 = 16 * 1024;
    loop {
        let start = len.saturating_sub(window);
        let mut tail = Vec::with_capacity((len - start) as usize);
        file.seek(SeekFrom::Start(start))?;
        Read::by_ref(&mut file).take(len - start).read_to_end(&mut tail)?;
        let Some(end) = tail.iter().rposition(|&b| b == b'\n') else {
            if start == 0 {
                return Ok(None);
            }
            window *= 4;
            continue;
        };
        match tail[..end].iter().rposition(|&b| b == b'\n') {
            Some(i) => return Ok(Some(String::from_utf8_lossy(&tail[i + 1..end]).into_owned())),
            None if start == 0 => return Ok(Some(String::from_utf8_lossy(&tail[..end]).into_owned())),
            None => window *= 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_names_sort_by_first_seq_and_foreign_files_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let files = LogFiles::new(&dir.path().join("audit.jsonl"));
        let t = humantime::parse_rfc3339("2026-11-23T10:15:02Z").unwrap();
        let a = files.rotated_path(t, 1);
        assert_eq!(a.file_name().unwrap(), "audit-20261123-101502-000000000001.jsonl");
        let b = files.rotated_path(t, 1_000);
        let c = files.rotated_path(humantime::parse_rfc3339("2026-11-22T00:00:00Z").unwrap(), 20_000);
        for p in [&a, &b, &c, &files.live()] {
            std::fs::write(p, "x\n").unwrap();
        }
        for other in
            ["audit.jsonl.torn", "audit-notes.jsonl", "other-20261123-101502-000000000001.jsonl", "audit-x.txt"]
        {
            std::fs::write(dir.path().join(other), "x\n").unwrap();
        }
        assert_eq!(files.all().unwrap(), vec![a, b, c, files.live()]);
        assert_eq!(files.rotated_seq("audit-20261123-101502-000000000042.jsonl"), Some(42));
        assert_eq!(files.rotated_seq("audit-20261123-101502-42.jsonl"), None);
    }

    #[test]
    fn first_and_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, "").unwrap();
        assert_eq!((first_line(&p).unwrap(), last_line(&p).unwrap()), (None, None));
        let long = "y".repeat(100_000);
        std::fs::write(&p, format!("a\n{long}\nlast\ntorn")).unwrap();
        assert_eq!(first_line(&p).unwrap().as_deref(), Some("a"));
        assert_eq!(last_line(&p).unwrap().as_deref(), Some("last"));
        std::fs::write(&p, format!("{long}\n")).unwrap();
        assert_eq!(last_line(&p).unwrap(), Some(long));
    }
}
