//! Unit tests: URL hosts, browser clocks, profile discovery, grouping.

use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use super::profiles::{discover, profiles_ini_paths, resolve_profile_path, roots, Env, Os};
use super::url::http_host;
use super::{time, Browser, Finding};
use crate::policy::Host;

fn name(s: &str) -> Option<Host> {
    Some(Host::Name(s.to_string()))
}

#[test]
fn http_hosts_are_extracted_and_normalised() {
    assert_eq!(http_host("https://m.aliexpress.com/item/1.html?x=1#y"), name("m.aliexpress.com"));
    assert_eq!(http_host("HTTP://WWW.TikTok.COM./@user"), name("www.tiktok.com"));
    assert_eq!(http_host("https://aliexpress.com"), name("aliexpress.com"));
    assert_eq!(http_host("https://aliexpress.com?q"), name("aliexpress.com"));
    assert_eq!(http_host("https://aliexpress.com#f"), name("aliexpress.com"));
    assert_eq!(http_host("https://aliexpress.com:8443/x"), name("aliexpress.com"));
    assert_eq!(http_host("https://aliexpress.com:/x"), name("aliexpress.com"));
    assert_eq!(http_host("https://user:pw@aliexpress.com/"), name("aliexpress.com"));
    // The last `@` ends the user information: the host is the banned one.
    assert_eq!(http_host("https://example.org@aliexpress.com/"), name("aliexpress.com"));
    assert_eq!(http_host("https:\\\\aliexpress.com\\x"), name("aliexpress.com"));
    // Browsers skip any number of slashes after a special scheme.
    assert_eq!(http_host("https:///aliexpress.com/"), name("aliexpress.com"));
    assert_eq!(http_host("https://bücher.de/"), name("xn--bcher-kva.de"));
}

#[test]
fn ip_literals_keep_their_brackets_until_normalised() {
    assert_eq!(http_host("http://[::1]:8080/x"), Some(Host::Ip("::1".parse().unwrap())));
    assert_eq!(http_host("http://[2001:db8::1]/"), Some(Host::Ip("2001:db8::1".parse().unwrap())));
    assert_eq!(http_host("http://127.0.0.1:3128/"), Some(Host::Ip("127.0.0.1".parse().unwrap())));
    assert_eq!(http_host("http://[::1/"), None);
    assert_eq!(http_host("http://[::1]x/"), None);
}

#[test]
fn other_schemes_and_bad_hosts_are_not_websites() {
    for url in [
        "chrome://history/",
        "about:blank",
        "file:///home/raad/aliexpress.com.html",
        "moz-extension://aliexpress.com/",
        "place:sort=8",
        "view-source:https://aliexpress.com/",
        "javascript:alert(1)",
        "https://",
        "https://ali%65xpress.com/",
        "https://aliexpress.com:99999/",
        "https://aliexpress.com:x/",
        "https://0x7f.1/",
        "nonsense",
        "",
    ] {
        assert_eq!(http_host(url), None, "{url}");
    }
}

#[test]
fn chrome_time_counts_microseconds_from_1601() {
    // 2024-01-01T00:00:00Z = 1_704_067_200 s since 1970.
    let us = (1_704_067_200i64 + 11_644_473_600) * 1_000_000 + 250_000;
    let t = time::chrome(us).unwrap();
    assert_eq!(t, UNIX_EPOCH + Duration::from_micros(1_704_067_200_250_000));
    assert_eq!(time::format(Some(t)), "2024-01-01T00:00:00Z");
    assert_eq!(time::chrome(0), None);
    assert_eq!(time::chrome(-5), None);
    // A Chrome value from before 1970 is representable, and formats as unknown.
    assert_eq!(time::format(time::chrome(1)), "-");
}

#[test]
fn firefox_time_counts_microseconds_from_1970() {
    let t = time::firefox(1_704_067_200_000_000).unwrap();
    assert_eq!(time::format(Some(t)), "2024-01-01T00:00:00Z");
    assert_eq!(time::firefox(0), None);
}

#[test]
fn safari_time_counts_seconds_from_2001() {
    // 2024-01-01T00:00:00Z is 725_760_000 s after 2001-01-01.
    let t = time::safari(725_760_000.5).unwrap();
    assert_eq!(t, UNIX_EPOCH + Duration::from_millis(1_704_067_200_500));
    assert_eq!(time::format(Some(t)), "2024-01-01T00:00:00Z");
    assert_eq!(time::format(time::safari(0.0)), "2001-01-01T00:00:00Z");
    assert_eq!(time::safari(f64::NAN), None);
    assert_eq!(time::safari(f64::INFINITY), None);
    assert_eq!(time::safari(-1.0e10), None);
    // Past year 9999: formatted as unknown rather than panicking.
    assert_eq!(time::format(time::safari(3.0e11)), "-");
    assert_eq!(time::safari(1.0e13), None);
}

fn touch(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, b"").unwrap();
}

fn dbs(env: &Env, browsers: &[Browser]) -> Vec<(Browser, PathBuf)> {
    discover(env, browsers).into_iter().map(|p| (p.browser, p.db)).collect()
}

#[test]
fn linux_profiles_are_found_in_their_standard_places() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    touch(&h.join(".config/google-chrome/Default/History"));
    touch(&h.join(".config/google-chrome/Profile 1/History"));
    touch(&h.join(".config/google-chrome/System Profile/Preferences")); // no History: skipped
    touch(&h.join(".config/microsoft-edge/Default/History"));
    touch(&h.join(".config/chromium/Default/History"));
    touch(&h.join("snap/chromium/common/chromium/Default/History"));
    touch(&h.join(".var/app/com.google.Chrome/config/google-chrome/Default/History"));
    std::fs::create_dir_all(h.join(".mozilla/firefox/abcd.default-release")).unwrap();
    touch(&h.join(".mozilla/firefox/abcd.default-release/places.sqlite"));
    touch(&h.join(".mozilla/firefox/elsewhere/places.sqlite"));
    touch(&h.join("snap/firefox/common/.mozilla/firefox/x1.default/places.sqlite"));
    std::fs::write(
        h.join(".mozilla/firefox/profiles.ini"),
        "[General]\nStartWithLastProfile=1\n\n[Profile0]\nName=default-release\nIsRelative=1\nPath=abcd.default-release\n",
    )
    .unwrap();
    touch(&h.join("Library/Safari/History.db")); // macOS only: not looked at on Linux

    let env = Env::with_home(Os::Linux, h);
    let found = dbs(&env, &Browser::ALL);
    let expected = vec![
        (Browser::Chrome, h.join(".config/google-chrome/Default/History")),
        (Browser::Chrome, h.join(".config/google-chrome/Profile 1/History")),
        (Browser::Chrome, h.join(".var/app/com.google.Chrome/config/google-chrome/Default/History")),
        (Browser::Edge, h.join(".config/microsoft-edge/Default/History")),
        (Browser::Chromium, h.join(".config/chromium/Default/History")),
        (Browser::Chromium, h.join("snap/chromium/common/chromium/Default/History")),
        (Browser::Firefox, h.join(".mozilla/firefox/abcd.default-release/places.sqlite")),
        (Browser::Firefox, h.join(".mozilla/firefox/elsewhere/places.sqlite")),
        (Browser::Firefox, h.join("snap/firefox/common/.mozilla/firefox/x1.default/places.sqlite")),
    ];
    assert_eq!(found, expected);
    // Selecting one browser looks only there.
    assert_eq!(dbs(&env, &[Browser::Edge]), vec![expected[3].clone()]);
    // XDG_CONFIG_HOME moves the Chromium family's folders.
    let env = Env { xdg_config_home: Some(h.join("elsewhere")), ..env };
    assert!(dbs(&env, &[Browser::Edge]).is_empty());
}

#[test]
fn windows_profiles_are_found_under_appdata() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    touch(&h.join("AppData/Local/Google/Chrome/User Data/Default/History"));
    touch(&h.join("AppData/Local/Microsoft/Edge/User Data/Default/History"));
    touch(&h.join("AppData/Local/Microsoft/Edge/User Data/Profile 2/History"));
    touch(&h.join("AppData/Roaming/Mozilla/Firefox/Profiles/k3x.default-release/places.sqlite"));
    std::fs::write(
        h.join("AppData/Roaming/Mozilla/Firefox/profiles.ini"),
        "[Profile0]\r\nName=default-release\r\nIsRelative=1\r\nPath=Profiles/k3x.default-release\r\nDefault=1\r\n",
    )
    .unwrap();
    let env = Env::with_home(Os::Windows, h);
    let l = h.join("AppData").join("Local");
    assert_eq!(
        dbs(&env, &Browser::ALL),
        vec![
            (Browser::Chrome, l.join("Google").join("Chrome").join("User Data").join("Default").join("History")),
            (Browser::Edge, l.join("Microsoft").join("Edge").join("User Data").join("Default").join("History")),
            (Browser::Edge, l.join("Microsoft").join("Edge").join("User Data").join("Profile 2").join("History")),
            (
                Browser::Firefox,
                h.join("AppData/Roaming/Mozilla/Firefox")
                    .join("Profiles")
                    .join("k3x.default-release")
                    .join("places.sqlite")
            ),
        ]
    );
}

#[test]
fn macos_profiles_are_found_under_library() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let support = h.join("Library/Application Support");
    touch(&support.join("Google/Chrome/Default/History"));
    touch(&support.join("Microsoft Edge/Default/History"));
    touch(&support.join("Chromium/Default/History"));
    touch(&support.join("Firefox/Profiles/q1.default/places.sqlite"));
    touch(&h.join("Library/Safari/History.db"));
    let env = Env::with_home(Os::MacOs, h);
    assert_eq!(
        dbs(&env, &Browser::ALL),
        vec![
            (Browser::Chrome, support.join("Google/Chrome").join("Default").join("History")),
            (Browser::Edge, support.join("Microsoft Edge").join("Default").join("History")),
            (Browser::Chromium, support.join("Chromium").join("Default").join("History")),
            (Browser::Firefox, support.join("Firefox").join("Profiles").join("q1.default").join("places.sqlite")),
            (Browser::Safari, h.join("Library").join("Safari").join("History.db")),
        ]
    );
    assert!(roots(&Env::with_home(Os::Linux, h), Browser::Safari).is_empty());
}

#[test]
fn profiles_ini_relative_and_absolute_paths() {
    let root = Path::new("/r");
    let ini = "[Install4F96D1932A9F858E]\nDefault=abc.default-release\n[Profile1]\nName=work\nIsRelative=0\nPath=/data/ff/work\n\n[Profile0]\nIsRelative=1\nPath=Profiles/abc.default-release\n[General]\nVersion=2\n";
    assert_eq!(
        profiles_ini_paths(ini, root),
        vec![PathBuf::from("/data/ff/work"), root.join("Profiles").join("abc.default-release")]
    );
}

#[test]
fn profile_paths_given_on_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    touch(&d.join("Microsoft Edge/Default/History"));
    touch(&d.join("Microsoft Edge/Profile 1/History"));
    touch(&d.join("ff/places.sqlite"));
    touch(&d.join("safari/History.db"));
    touch(&d.join("copy/History"));
    let one = |p: &Path, hint| -> Vec<(Browser, PathBuf)> {
        resolve_profile_path(p, hint).unwrap().into_iter().map(|p| (p.browser, p.db)).collect()
    };
    // A "User Data" folder: every profile in it; the path says Edge.
    assert_eq!(
        one(&d.join("Microsoft Edge"), None),
        vec![
            (Browser::Edge, d.join("Microsoft Edge/Default/History")),
            (Browser::Edge, d.join("Microsoft Edge/Profile 1/History"))
        ]
    );
    assert_eq!(one(&d.join("ff"), None), vec![(Browser::Firefox, d.join("ff/places.sqlite"))]);
    assert_eq!(one(&d.join("safari/History.db"), None), vec![(Browser::Safari, d.join("safari/History.db"))]);
    assert_eq!(one(&d.join("copy/History"), None), vec![(Browser::Chromium, d.join("copy/History"))]);
    assert_eq!(one(&d.join("copy/History"), Some(Browser::Chrome)), vec![(Browser::Chrome, d.join("copy/History"))]);
    // --browser firefox with a Chromium folder: nothing there for Firefox.
    assert!(resolve_profile_path(&d.join("copy"), Some(Browser::Firefox)).is_err());
    assert!(resolve_profile_path(&d.join("missing"), None).is_err());
    touch(&d.join("odd.sqlite"));
    assert!(resolve_profile_path(&d.join("odd.sqlite"), None).is_err());
}

#[test]
fn findings_are_grouped_by_host() {
    let f = |id, host: &str, visits, secs: Option<u64>| Finding {
        id,
        host: Host::Name(host.into()),
        app: "AliExpress".into(),
        rule: "aliexpress.com".into(),
        visits,
        last_visit: secs.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
        bookmarked: false,
    };
    let lines = super::report::by_host(&[
        f(1, "m.aliexpress.com", 2, Some(1_704_067_200)),
        f(2, "aliexpress.com", 1, None),
        f(3, "m.aliexpress.com", 3, Some(1_704_067_260)),
    ]);
    assert_eq!(lines.len(), 2);
    assert_eq!((lines[0].host.as_str(), lines[0].entries, lines[0].visits), ("aliexpress.com", 1, 1));
    assert_eq!(lines[0].last_visit, None);
    assert_eq!((lines[1].host.as_str(), lines[1].entries, lines[1].visits), ("m.aliexpress.com", 2, 5));
    assert_eq!(lines[1].last_visit.as_deref(), Some("2024-01-01T00:01:00Z"));
}
