//! Opening a browser's history database without harming it.
//!
//! Scanning must never change anything, nor get in the browser's way while it
//! runs. Chrome, Edge, Chromium and Firefox open their history in SQLite's
//! exclusive locking mode: they expect nobody else in the file, and a reader
//! holding even a shared lock at the moment they commit would make that
//! commit fail. So their databases are never opened in place for a scan: the
//! file and its `-wal`/`-journal` companions are copied to a private
//! temporary folder and the copy is read (SQLite replays the companions on
//! the copy, so it sees what the browser last committed). Safari's
//! `History.db` is shared by several processes in WAL mode, where readers
//! never block writers; it is read in place, read-only, with the copy as
//! fallback.
//!
//! Purging must never race the browser: the database is opened in SQLite's
//! exclusive locking mode and the exclusive lock is taken before anything
//! else. That fails at once while any other program (the browser) has the
//! database open in a way that holds a lock, and we then refuse with
//! [`HistoryError::Locked`]. The lock is kept until the connection closes, so
//! the backup and the deletion see the same database.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, ErrorCode, OpenFlags};

use super::{Family, HistoryError, Profile};
use crate::atomic_file::TempFile;

/// A database opened for reading, inside one read transaction so the whole
/// scan sees one snapshot.
pub struct Reader {
    // Field order matters: the connection closes before the copy is deleted.
    pub conn: Connection,
    /// True when a private copy was read rather than the file itself.
    pub copied: bool,
    _tmp: Option<TempDir>,
}

/// Opens `profile.db` for a scan: a private copy for the browsers that lock
/// their database, the file itself (read-only) for Safari.
pub fn open_read_only(profile: &Profile) -> Result<Reader, HistoryError> {
    preflight(profile)?;
    if profile.browser.family() == Family::Safari {
        // A WAL database whose shared-memory file a read-only connection may
        // not create fails here too: the copy sidesteps that.
        if let Ok(conn) = open_direct(&profile.db) {
            return Ok(Reader { conn, copied: false, _tmp: None });
        }
    }
    // A copy taken while the browser commits can be torn; SQLite then
    // reports it as malformed, and a fresh copy a moment later is whole.
    let mut last = None;
    for attempt in 0..3 {
        if attempt > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        let tmp = TempDir::new().map_err(HistoryError::io(&profile.db))?;
        let copy = copy_with_companions(&profile.db, tmp.path())?;
        match open_copy(&copy) {
            Ok(conn) => return Ok(Reader { conn, copied: true, _tmp: Some(tmp) }),
            Err(e) => last = Some(e),
        }
    }
    Err(HistoryError::Sqlite { path: profile.db.clone(), source: last.unwrap_or(rusqlite::Error::InvalidQuery) })
}

/// Fails early, with a clear message, when the file is missing or (Safari
/// on macOS) hidden behind Full Disk Access.
fn preflight(profile: &Profile) -> Result<(), HistoryError> {
    match std::fs::File::open(&profile.db) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied && profile.browser == super::Browser::Safari => {
            Err(HistoryError::SafariPermission { path: profile.db.clone() })
        }
        Err(e) => Err(HistoryError::io(&profile.db)(e)),
    }
}

fn open_direct(db: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.busy_timeout(Duration::from_millis(100))?;
    conn.execute_batch("BEGIN")?;
    // Reading the schema takes the shared lock now, so a lock shows up here
    // rather than halfway through the scan.
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0))?;
    Ok(conn)
}

/// The copy is ours, so it is opened read-write: SQLite may need to replay a
/// `-wal` or roll back a hot `-journal` copied along with it.
fn open_copy(copy: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(copy, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
    conn.execute_batch("BEGIN")?;
    let check: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if check != "ok" {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(format!("copy of the database is damaged: {check}")),
        ));
    }
    Ok(conn)
}

/// Copies `db` and its `-wal` and `-journal` files (not `-shm`, which SQLite
/// rebuilds) into `dir`, keeping the file name. Returns the copied database.
pub fn copy_with_companions(db: &Path, dir: &Path) -> Result<PathBuf, HistoryError> {
    let name = db.file_name().ok_or_else(|| HistoryError::NoDatabase { path: db.to_path_buf() })?;
    let target = dir.join(name);
    copy_file(db, &target).map_err(HistoryError::io(db))?;
    for suffix in ["-wal", "-journal"] {
        let companion = with_suffix(db, suffix);
        match copy_file(&companion, &with_suffix(&target, suffix)) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(HistoryError::io(&companion)(e)),
        }
    }
    Ok(target)
}

/// A plain read-and-write copy. Unlike `std::fs::copy` (CopyFileEx on
/// Windows), opening with Rust's default sharing mode also works on a file
/// the browser has open for writing.
fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let mut src = std::fs::File::open(from)?;
    let mut dst = std::fs::File::create(to)?;
    io::copy(&mut src, &mut dst)?;
    Ok(())
}

/// `History` + `-wal` → `History-wal`.
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// The schema name the site-icon database is attached under for a purge.
pub const ICONS: &str = "icons";

/// Opens `profile.db` for purging, attaches the site-icon database `icons`
/// (when there is one) as [`ICONS`], and takes the exclusive lock on both,
/// or refuses with [`HistoryError::Locked`] while another program holds
/// either.
pub fn open_exclusive(profile: &Profile, icons: Option<&Path>) -> Result<Connection, HistoryError> {
    preflight(profile)?;
    let db = &profile.db;
    let locked = |e: rusqlite::Error| {
        if is_busy(&e) {
            HistoryError::Locked { path: db.clone(), browser: profile.browser }
        } else {
            HistoryError::sqlite(db)(e)
        }
    };
    // No CREATE flag: purging a database that is not there must not make one.
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(locked)?;
    // A short wait rides out a lock taken for a moment by a backup tool; a
    // running browser holds its lock for far longer.
    conn.busy_timeout(Duration::from_millis(250)).map_err(HistoryError::sqlite(db))?;
    // Without a schema name this applies to attached databases as well.
    conn.query_row("PRAGMA locking_mode = EXCLUSIVE", [], |r| r.get::<_, String>(0))
        .map_err(HistoryError::sqlite(db))?;
    // Foreign keys stay off, as in the browsers' own connections (rusqlite's
    // bundled SQLite turns them on by default); each browser's purge removes
    // dependent rows explicitly instead of through cascades.
    conn.execute_batch("PRAGMA foreign_keys = OFF").map_err(HistoryError::sqlite(db))?;
    if let Some(icons) = icons {
        let path = utf8(icons)?;
        // Attaching reads the schema, which a browser's lock already refuses.
        conn.execute(&format!("ATTACH DATABASE ?1 AS {ICONS}"), [path]).map_err(locked)?;
    }
    // In exclusive locking mode the locks taken here (on every attached
    // database) are kept after COMMIT, until the connection closes.
    conn.execute_batch("BEGIN EXCLUSIVE; COMMIT").map_err(locked)?;
    Ok(conn)
}

fn utf8(path: &Path) -> Result<&str, HistoryError> {
    path.to_str()
        .ok_or_else(|| HistoryError::io(path)(io::Error::new(io::ErrorKind::InvalidInput, "path is not valid UTF-8")))
}

/// Whether the site-icon database is attached to `conn`.
pub fn icons_attached(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM pragma_database_list WHERE name = ?1)", [ICONS], |r| r.get(0))
}

/// Ids of the rows `sql` returns as `(id, url)` whose URL's host the
/// policy bans.
pub fn banned_ids(conn: &Connection, sql: &str, policy: &crate::policy::Policy) -> rusqlite::Result<Vec<i64>> {
    let mut stmt = conn.prepare(sql)?;
    let mut rows = stmt.query([])?;
    let mut ids = Vec::new();
    while let Some(row) = rows.next()? {
        if text(row, 1)?.is_some_and(|u| super::banned_host(policy, &u).is_some()) {
            ids.push(row.get(0)?);
        }
    }
    Ok(ids)
}

/// Writes a copy of the database `schema` of `conn` (whose file is `db`)
/// next to it (`History.weerwal-backup-20261123T101502Z`), readable by the
/// owner only, and returns its path. `VACUUM INTO` reads through our own
/// connection, so it works under our exclusive lock and never opens the
/// database file a second time (which, with POSIX locks, would drop ours).
pub fn backup(conn: &Connection, schema: &str, db: &Path) -> Result<PathBuf, HistoryError> {
    let stamp: String = humantime::format_rfc3339_seconds(SystemTime::now())
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let name = db.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let first = db.with_file_name(format!("{name}.weerwal-backup-{stamp}"));
    // Written into a private temporary file beside the database (`VACUUM
    // INTO` accepts an empty file, and creating it first chooses its
    // permissions: history is private), synced, and only then given its
    // name: a crash never leaves a half backup that looks whole.
    let mut tmp = TempFile::beside(&first, 0o600).map_err(HistoryError::io(&first))?;
    utf8(tmp.path())
        .and_then(|p| conn.execute(&format!("VACUUM {schema} INTO ?1"), [p]).map_err(HistoryError::sqlite(db)))?;
    let mut n = 1;
    loop {
        let suffix = if n == 1 { String::new() } else { format!("-{n}") };
        let candidate = db.with_file_name(format!("{name}.weerwal-backup-{stamp}{suffix}"));
        match tmp.persist_new(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 100 => n += 1,
            Err(e) => return Err(HistoryError::io(&candidate)(e)),
        }
    }
}

/// SQLITE_BUSY or SQLITE_LOCKED: someone else holds the database.
pub fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(e.sqlite_error_code(), Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked))
}

/// Whether `table` exists; browsers add and drop tables between versions,
/// so optional tables are touched only when present.
pub fn has_table(conn: &Connection, table: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)", [table], |r| {
        r.get(0)
    })
}

/// Whether `table` has `column`.
pub fn has_column(conn: &Connection, table: &str, column: &str) -> rusqlite::Result<bool> {
    conn.query_row("SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)", [table, column], |r| r.get(0))
}

/// Fails with [`HistoryError::NotHistory`] unless every table is present.
pub fn require_tables(conn: &Connection, profile: &Profile, tables: &[&'static str]) -> Result<(), HistoryError> {
    for table in tables {
        if !has_table(conn, table).map_err(HistoryError::sqlite(&profile.db))? {
            return Err(HistoryError::NotHistory { path: profile.db.clone(), browser: profile.browser, table });
        }
    }
    Ok(())
}

/// A private temporary folder, removed on drop. (The `tempfile` crate is a
/// dev-dependency only; this is all the library needs.)
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> io::Result<TempDir> {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        for attempt in 0..100u32 {
            let path = std::env::temp_dir().join(format!("weerwal-history-{}-{nanos}-{attempt}", std::process::id()));
            let mut builder = std::fs::DirBuilder::new();
            #[cfg(unix)]
            {
                use std::os::unix::fs::DirBuilderExt;
                builder.mode(0o700);
            }
            match builder.create(&path) {
                Ok(()) => return Ok(TempDir(path)),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free temporary folder name"))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fills the temporary table `name` (created on first use, in SQLite's temp
/// database, never in the browser's file) with `ids`, so the purge statements
/// can say `WHERE id IN name` however many rows are involved.
pub fn temp_ids(conn: &Connection, name: &str, ids: impl IntoIterator<Item = i64>) -> rusqlite::Result<()> {
    debug_assert!(name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
    conn.execute_batch(&format!(
        "CREATE TEMP TABLE IF NOT EXISTS {name} (id INTEGER PRIMARY KEY); DELETE FROM temp.{name};"
    ))?;
    let mut insert = conn.prepare(&format!("INSERT OR IGNORE INTO temp.{name} (id) VALUES (?1)"))?;
    for id in ids {
        insert.execute([id])?;
    }
    Ok(())
}

/// An integer column read tolerantly: browsers' files are data, and a NULL
/// or odd value in a time or count column must not stop a scan.
pub fn int_or(row: &rusqlite::Row<'_>, idx: usize, default: i64) -> rusqlite::Result<i64> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(idx)? {
        ValueRef::Integer(i) => i,
        ValueRef::Real(f) if f.is_finite() => f as i64,
        _ => default,
    })
}

/// A text column read tolerantly (`None` for NULL, numbers and blobs).
pub fn text(row: &rusqlite::Row<'_>, idx: usize) -> rusqlite::Result<Option<String>> {
    use rusqlite::types::ValueRef;
    Ok(match row.get_ref(idx)? {
        ValueRef::Text(t) => Some(String::from_utf8_lossy(t).into_owned()),
        _ => None,
    })
}
