//! Replacing a file so that readers see the old contents or the new ones,
//! never half, and a crash right after leaves one of them on disk: a new
//! temporary file in the same directory (a rename never crosses a file
//! system), its data synced, renamed over the target, and the directory
//! synced so the rename itself is on disk. The CA, the users file, the
//! compliance state and the history backups are all written through here.
//!
//! Hand-written rather than `tempfile`: that crate brings its own random
//! source (a third `getrandom`) and syncs neither the file nor the directory,
//! which is the part that matters here. A name made of the process id and a
//! counter is enough: the file is created with `create_new` (which also
//! refuses a planted symlink), and a name that is taken is simply skipped.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A new, private file beside the one it will replace; removed again unless
/// [`TempFile::replace`] or [`TempFile::persist_new`] put it in place.
#[derive(Debug)]
pub struct TempFile {
    path: PathBuf,
    file: File,
}

fn dir_of(path: &Path) -> &Path {
    path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

impl TempFile {
    /// Creates `.<name>.<pid>-<n>.tmp` next to `target` (making the directory
    /// when missing) with `mode` on Unix, so a key or a list of names is never
    /// readable by others, not even for a moment.
    pub fn beside(target: &Path, mode: u32) -> io::Result<TempFile> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = dir_of(target);
        std::fs::create_dir_all(dir)?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        #[cfg(not(unix))]
        let _ = mode;
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
            match opts.open(&path) {
                Ok(file) => return Ok(TempFile { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Where the temporary file is (for writers that take a path, such as
    /// SQLite's `VACUUM INTO`).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The open file, to write the new contents into.
    pub fn file(&mut self) -> &mut File {
        &mut self.file
    }

    /// Syncs the data and renames the file over `target`.
    pub fn replace(mut self, target: &Path) -> io::Result<()> {
        self.sync()?;
        std::fs::rename(&self.path, target)?;
        self.path = PathBuf::new();
        sync_dir(dir_of(target))
    }

    /// Syncs the data and gives the file the name `target`, which must not
    /// exist yet (`AlreadyExists` otherwise; the temporary file stays until
    /// this value is dropped, so a caller may try another name).
    pub fn persist_new(&mut self, target: &Path) -> io::Result<()> {
        self.sync()?;
        std::fs::hard_link(&self.path, target)?;
        let _ = std::fs::remove_file(&self.path);
        self.path = PathBuf::new();
        sync_dir(dir_of(target))
    }

    /// Syncs the data, also what another writer put there through
    /// [`TempFile::path`] (it is the same file).
    fn sync(&mut self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes a rename in `dir` durable. A file system that cannot sync a
/// directory (some network and FUSE file systems refuse) is not an error:
/// the data itself was synced before the rename.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    match File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidInput | io::ErrorKind::Unsupported) => {}
        Err(e) if e.raw_os_error() == Some(22) => {}
        other => other?,
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Replaces `path` with `contents` (created with `mode` on Unix).
pub fn write(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut tmp = TempFile::beside(path, mode)?;
    tmp.file().write_all(contents)?;
    tmp.replace(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("state.json");
        write(&path, b"one", 0o600).unwrap();
        write(&path, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> =
            std::fs::read_dir(path.parent().unwrap()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }

    #[test]
    fn persist_new_never_overwrites_and_a_dropped_file_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let taken = dir.path().join("backup");
        std::fs::write(&taken, b"old").unwrap();
        let mut tmp = TempFile::beside(&taken, 0o600).unwrap();
        tmp.file().write_all(b"new").unwrap();
        assert_eq!(tmp.persist_new(&taken).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        let other = dir.path().join("backup-2");
        tmp.persist_new(&other).unwrap();
        drop(tmp);
        assert_eq!(std::fs::read(&taken).unwrap(), b"old");
        assert_eq!(std::fs::read(&other).unwrap(), b"new");
        let tmp = TempFile::beside(&taken, 0o600).unwrap();
        let p = tmp.path().to_path_buf();
        assert!(p.exists());
        drop(tmp);
        assert!(!p.exists());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }
}
