//! A shipper's cursor: the `seq` and hash of the last record a sink
//! acknowledged, in a small file beside the log
//! (`logs/audit.ship-database.cursor`). Written to a temporary file, synced
//! and renamed over the old one, so after a crash (SIGKILL, power loss) it
//! is the old or the new cursor, never a torn one. It names a `seq`, not a
//! file offset, so it survives rotation: the shipper finds the file that
//! holds the next record by the rotated files' names.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where one sink's cursor is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    path: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct Saved {
    seq: u64,
    hash: String,
}

impl Cursor {
    /// The cursor of `sink` for the log whose live file is `live`.
    pub fn beside(live: &Path, sink: &str) -> Cursor {
        let dir = live.parent().map(Path::to_path_buf).unwrap_or_default();
        let stem = live.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "audit".into());
        let safe: String =
            sink.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).collect();
        Cursor { path: dir.join(format!("{stem}.ship-{safe}.cursor")) }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last acknowledged `seq`; `None` when nothing was shipped yet.
    pub fn load(&self) -> io::Result<Option<u64>> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => serde_json::from_str::<Saved>(text.trim())
                .map(|s| Some(s.seq))
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", self.path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io::Error::new(e.kind(), format!("{}: {e}", self.path.display()))),
        }
    }

    /// Records that everything up to `seq` (whose hash is `hash`) is acknowledged.
    pub fn store(&self, seq: u64, hash: &str) -> io::Result<()> {
        let tmp = self.path.with_extension("cursor.tmp");
        let mut text = serde_json::to_vec(&Saved { seq, hash: hash.to_string() }).map_err(io::Error::other)?;
        text.push(b'\n');
        {
            let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp)?;
            f.write_all(&text)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The rename itself durable; not possible on every platform.
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads_beside_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cursor::beside(&dir.path().join("audit.jsonl"), "data base");
        assert_eq!(c.path(), dir.path().join("audit.ship-data_base.cursor"));
        assert_eq!(c.load().unwrap(), None);
        c.store(41, "ab").unwrap();
        c.store(42, "cd").unwrap();
        assert_eq!(c.load().unwrap(), Some(42));
        std::fs::write(c.path(), "{torn").unwrap();
        assert!(c.load().unwrap_err().to_string().contains("audit.ship-data_base.cursor"));
    }
}
