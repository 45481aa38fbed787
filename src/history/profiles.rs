//! Where browsers keep each user's profiles on Linux, Windows and macOS.
//!
//! Discovery reads no global state of its own: everything comes from an
//! [`Env`] (home folder, `%LOCALAPPDATA%`, …), so tests can lay out a fake
//! home for each operating system and check every path on any machine.

use std::path::{Path, PathBuf};

use super::{Browser, Family, HistoryError, Profile};

/// The operating system whose folder conventions apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Os {
    Linux,
    Windows,
    MacOs,
}

impl Os {
    pub fn current() -> Os {
        if cfg!(windows) {
            Os::Windows
        } else if cfg!(target_os = "macos") {
            Os::MacOs
        } else {
            Os::Linux
        }
    }
}

/// The per-user folders discovery starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    pub os: Os,
    /// `$HOME` (`%USERPROFILE%` on Windows).
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`; Linux browsers use `~/.config` when unset.
    pub xdg_config_home: Option<PathBuf>,
    /// `%LOCALAPPDATA%` (Chromium family on Windows).
    pub local_app_data: Option<PathBuf>,
    /// `%APPDATA%` (Firefox on Windows).
    pub app_data: Option<PathBuf>,
}

impl Env {
    /// The current user's folders, from the environment.
    pub fn current() -> Env {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        let os = Os::current();
        let home = match os {
            Os::Windows => var("USERPROFILE").or_else(|| var("HOME")),
            _ => var("HOME"),
        };
        Env {
            os,
            home,
            xdg_config_home: var("XDG_CONFIG_HOME"),
            local_app_data: var("LOCALAPPDATA"),
            app_data: var("APPDATA"),
        }
    }

    /// An environment with only a home folder; the Windows folders default
    /// to `home\AppData\…` as on a standard installation.
    pub fn with_home(os: Os, home: impl Into<PathBuf>) -> Env {
        let home = home.into();
        Env {
            os,
            xdg_config_home: None,
            local_app_data: Some(home.join("AppData").join("Local")),
            app_data: Some(home.join("AppData").join("Roaming")),
            home: Some(home),
        }
    }

    fn config_dir(&self) -> Option<PathBuf> {
        self.xdg_config_home.clone().or_else(|| self.home.as_ref().map(|h| h.join(".config")))
    }

    fn mac_support(&self) -> Option<PathBuf> {
        self.home.as_ref().map(|h| h.join("Library").join("Application Support"))
    }
}

/// The folders that hold a browser's profiles (Chromium's "User Data"
/// folder; Firefox's folder with `profiles.ini`), whether or not they exist.
pub fn roots(env: &Env, browser: Browser) -> Vec<PathBuf> {
    let mut roots = Vec::new();
    let home = env.home.as_deref();
    match (env.os, browser) {
        (Os::Linux, Browser::Firefox) => {
            if let Some(h) = home {
                roots.push(h.join(".mozilla/firefox"));
                roots.push(h.join("snap/firefox/common/.mozilla/firefox"));
                roots.push(h.join(".var/app/org.mozilla.firefox/.mozilla/firefox"));
            }
            if let Some(c) = env.config_dir() {
                roots.push(c.join("mozilla/firefox"));
            }
        }
        (Os::Linux, Browser::Safari) | (Os::Windows, Browser::Safari) => {}
        (Os::Linux, chromium) => {
            let (names, flatpak): (&[&str], &[(&str, &str)]) = match chromium {
                Browser::Chrome => (
                    &["google-chrome", "google-chrome-beta", "google-chrome-unstable"],
                    &[("com.google.Chrome", "google-chrome")],
                ),
                Browser::Edge => (
                    &["microsoft-edge", "microsoft-edge-beta", "microsoft-edge-dev"],
                    &[("com.microsoft.Edge", "microsoft-edge")],
                ),
                _ => (&["chromium"], &[("org.chromium.Chromium", "chromium")]),
            };
            if let Some(c) = env.config_dir() {
                roots.extend(names.iter().map(|n| c.join(n)));
            }
            if let Some(h) = home {
                if chromium == Browser::Chromium {
                    roots.push(h.join("snap/chromium/common/chromium"));
                }
                roots.extend(flatpak.iter().map(|(app, dir)| h.join(".var/app").join(app).join("config").join(dir)));
            }
        }
        (Os::Windows, Browser::Firefox) => {
            if let Some(a) = &env.app_data {
                roots.push(a.join("Mozilla").join("Firefox"));
            }
        }
        (Os::Windows, chromium) => {
            let names: &[&[&str]] = match chromium {
                Browser::Chrome => &[&["Google", "Chrome"], &["Google", "Chrome Beta"], &["Google", "Chrome SxS"]],
                Browser::Edge => &[
                    &["Microsoft", "Edge"],
                    &["Microsoft", "Edge Beta"],
                    &["Microsoft", "Edge Dev"],
                    &["Microsoft", "Edge SxS"],
                ],
                _ => &[&["Chromium"]],
            };
            if let Some(l) = &env.local_app_data {
                for parts in names {
                    let mut p = l.clone();
                    p.extend(parts.iter());
                    roots.push(p.join("User Data"));
                }
            }
        }
        (Os::MacOs, Browser::Safari) => {
            if let Some(h) = home {
                roots.push(h.join("Library").join("Safari"));
            }
        }
        (Os::MacOs, Browser::Firefox) => {
            if let Some(s) = env.mac_support() {
                roots.push(s.join("Firefox"));
            }
        }
        (Os::MacOs, chromium) => {
            let names: &[&str] = match chromium {
                Browser::Chrome => &["Google/Chrome", "Google/Chrome Beta", "Google/Chrome Canary"],
                Browser::Edge => &["Microsoft Edge", "Microsoft Edge Beta", "Microsoft Edge Dev"],
                _ => &["Chromium"],
            };
            if let Some(s) = env.mac_support() {
                roots.extend(names.iter().map(|n| s.join(n)));
            }
        }
    }
    roots
}

/// Every history database of `browsers` for the user in `env`, in a stable
/// order. Folders that do not exist are skipped silently: most people have
/// only one or two of these browsers.
pub fn discover(env: &Env, browsers: &[Browser]) -> Vec<Profile> {
    let mut found: Vec<Profile> = Vec::new();
    for &browser in browsers {
        for root in roots(env, browser) {
            let profiles = match browser.family() {
                Family::Chromium => chromium_profiles(&root, browser),
                Family::Firefox => firefox_profiles(&root),
                Family::Safari => safari_profile(&root),
            };
            for p in profiles {
                if !found.iter().any(|f| same_file(&f.db, &p.db)) {
                    found.push(p);
                }
            }
        }
    }
    found
}

/// `Default`, `Profile 1`, … : every folder of a "User Data" root with a
/// `History` file.
fn chromium_profiles(root: &Path, browser: Browser) -> Vec<Profile> {
    subdirs(root)
        .into_iter()
        .map(|d| d.join("History"))
        .filter(|db| db.is_file())
        .map(|db| Profile::new(browser, db))
        .collect()
}

/// The profiles `profiles.ini` names, plus any folder under the root or its
/// `Profiles` folder that has a `places.sqlite` (Windows and macOS keep them
/// there; a profile created by hand may be missing from the ini).
fn firefox_profiles(root: &Path) -> Vec<Profile> {
    let mut dirs = Vec::new();
    if let Ok(ini) = std::fs::read_to_string(root.join("profiles.ini")) {
        dirs.extend(profiles_ini_paths(&ini, root));
    }
    dirs.extend(subdirs(root));
    dirs.extend(subdirs(&root.join("Profiles")));
    let mut out: Vec<Profile> = Vec::new();
    for dir in dirs {
        let db = dir.join("places.sqlite");
        if db.is_file() && !out.iter().any(|p| same_file(&p.db, &db)) {
            out.push(Profile::new(Browser::Firefox, db));
        }
    }
    out
}

/// The `Path=` of each `[Profile…]` section, relative to `root` when
/// `IsRelative=1` (the default Firefox writes).
pub fn profiles_ini_paths(ini: &str, root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut in_profile = false;
    let mut path: Option<String> = None;
    let mut relative = true;
    let mut flush = |in_profile: bool, path: &mut Option<String>, relative: bool| {
        if let (true, Some(p)) = (in_profile, path.take()) {
            // profiles.ini always uses `/`, also on Windows.
            let p = if relative {
                p.split('/').fold(root.to_path_buf(), |acc, part| acc.join(part))
            } else {
                PathBuf::from(p)
            };
            out.push(p);
        }
    };
    for line in ini.lines().map(str::trim) {
        if line.starts_with('[') {
            flush(in_profile, &mut path, relative);
            in_profile = line.starts_with("[Profile");
            relative = true;
        } else if let Some((key, value)) = line.split_once('=') {
            match key.trim() {
                "Path" => path = Some(value.trim().to_string()),
                "IsRelative" => relative = value.trim() != "0",
                _ => {}
            }
        }
    }
    flush(in_profile, &mut path, relative);
    out
}

/// `~/Library/Safari/History.db`. Listed also when macOS refuses to let us
/// look (Full Disk Access), so the person is told how to allow it.
fn safari_profile(root: &Path) -> Vec<Profile> {
    let db = root.join("History.db");
    match std::fs::metadata(&db) {
        Ok(m) if m.is_file() => vec![Profile::new(Browser::Safari, db)],
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => vec![Profile::new(Browser::Safari, db)],
        _ => Vec::new(),
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries.filter_map(|e| e.ok()).map(|e| e.path()).filter(|p| p.is_dir()).collect();
    dirs.sort();
    dirs
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The profiles a `--profile PATH` names: a history database file, a
/// profile folder, or a folder of profiles ("User Data", Firefox's root).
/// `hint` is the `--browser` given, which also tells Chrome from Edge for a
/// bare `History` file; without it the path decides.
pub fn resolve_profile_path(path: &Path, hint: Option<Browser>) -> Result<Vec<Profile>, HistoryError> {
    let fits = |b: Browser| hint.is_none_or(|h| h.family() == b.family());
    let meta = std::fs::metadata(path).map_err(HistoryError::io(path))?;
    if meta.is_file() {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let browser = match (name.as_str(), hint) {
            (_, Some(h)) => h,
            ("places.sqlite", None) => Browser::Firefox,
            ("History.db", None) => Browser::Safari,
            ("History", None) => guess_chromium(path),
            _ => return Err(HistoryError::NoDatabase { path: path.to_path_buf() }),
        };
        return Ok(vec![Profile::new(browser, path.to_path_buf())]);
    }
    let in_dir = |dir: &Path| -> Vec<Profile> {
        let mut out = Vec::new();
        for (file, browser) in [
            ("History", hint.filter(|h| h.family() == Family::Chromium).unwrap_or_else(|| guess_chromium(dir))),
            ("places.sqlite", Browser::Firefox),
            ("History.db", Browser::Safari),
        ] {
            let db = dir.join(file);
            if db.is_file() && fits(browser) {
                out.push(Profile::new(browser, db));
            }
        }
        out
    };
    let mut found = in_dir(path);
    if found.is_empty() {
        for sub in subdirs(path).into_iter().chain(subdirs(&path.join("Profiles"))) {
            found.extend(in_dir(&sub));
        }
    }
    if found.is_empty() {
        return Err(HistoryError::NoDatabase { path: path.to_path_buf() });
    }
    Ok(found)
}

/// Chrome, Edge or Chromium, from the folder names on the path.
fn guess_chromium(path: &Path) -> Browser {
    let s = path.to_string_lossy().to_ascii_lowercase();
    if s.contains("edge") {
        Browser::Edge
    } else if s.contains("chromium") {
        Browser::Chromium
    } else if s.contains("chrome") {
        Browser::Chrome
    } else {
        Browser::Chromium
    }
}
