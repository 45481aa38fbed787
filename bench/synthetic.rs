//! Synthetic policy text for the benchmarks: `n` distinct domains spread
//! over apps of at most `per_app` domains each, one policy file per app, in
//! the same TOML schema as `policy/*.toml`. Names look like real ones
//! (2-3 labels, mixed TLDs, ~20 characters) and never collide with the
//! shipped policy. `bench/load.sh` generates the same scheme in awk.
#![allow(dead_code)]

const WORDS: [&str; 8] = ["shop", "media", "cdn", "api", "static", "news", "mail", "play"];
const TLDS: [&str; 8] = ["com", "net", "org", "nl", "ru", "cn", "io", "de"];

/// The `i`-th synthetic domain.
pub fn domain(i: usize) -> String {
    let w = WORDS[(i / 8) % WORDS.len()];
    let t = TLDS[i % TLDS.len()];
    if i % 3 == 0 {
        format!("{w}.s{i:07x}-x.{t}")
    } else {
        format!("s{i:07x}-{w}.{t}")
    }
}

/// Policy files (name, text) holding domains `0..n`.
pub fn files(n: usize, per_app: usize) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut app = 0;
    while start < n {
        let end = (start + per_app).min(n);
        let mut text = String::with_capacity((end - start) * 28 + 256);
        text.push_str(&format!(
            "[[ban]]\napp = \"Synthetic {app:04}\"\nadvice = \"NCSC\"\nreference = \"benchmark\"\nsince = \"2023-07-14\"\ndomains = [\n"
        ));
        for i in start..end {
            text.push_str("  \"");
            text.push_str(&domain(i));
            text.push_str("\",\n");
        }
        text.push_str("]\n");
        out.push((format!("synthetic-{app:04}.toml"), text));
        start = end;
        app += 1;
    }
    out
}
