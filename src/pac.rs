//! The PAC file browsers are configured with (`/proxy.pac`, `/wpad.dat`,
//! `weerwal pac`). Generated from the compiled policy, so it always lists
//! what the proxy blocks.
//!
//! Only standard PAC functions are used, and only on IP literals, so an
//! ordinary host needs no DNS lookup. The host is lower-cased and stripped
//! of trailing dots first, because engines hand `TikTok.com.` over as typed,
//! and a rule matches the domain itself as well as every subdomain
//! (`dnsDomainIs(h, ".x.com")` alone would miss `x.com`).

use std::fmt::Write as _;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::config::{Config, PacRoute};
use crate::policy::{normalise_host, Policy};

/// A generated PAC file and its entity tag.
pub struct Pac {
    pub text: String,
    pub etag: String,
}

/// Writes a JS string literal (JSON's escaping is valid JavaScript).
fn js(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

/// The `host:port` laptops use to reach the proxy.
pub fn proxy_address(config: &Config) -> String {
    match &config.pac.proxy {
        Some(p) => p.clone(),
        None => config.proxy.listen.first().map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:3128".into()),
    }
}

/// Generates the PAC file for this configuration and policy.
pub fn generate(config: &Config, policy: &Policy) -> Pac {
    let pac = &config.pac;
    let mut proxy = format!("PROXY {}", proxy_address(config));
    if pac.fallback_direct {
        proxy.push_str("; DIRECT");
    }
    let mut names: Vec<String> = Vec::new();
    let mut patterns: Vec<String> = Vec::new();
    let mut nets: Vec<IpNet> = Vec::new();
    for d in &pac.direct {
        let d = d.trim().to_ascii_lowercase();
        if let Ok(net) = d.parse::<IpNet>() {
            nets.push(net);
        } else if d.contains('*') || d.contains('?') {
            patterns.push(d.trim_end_matches('.').to_string());
        } else {
            names.push(d.trim_end_matches('.').to_string());
        }
    }
    let mut via_proxy: Vec<String> = Vec::new();
    if pac.route == PacRoute::Policy {
        via_proxy.extend(policy.domains().map(|(d, _)| d.to_string()));
        if let Some(c) = &config.compliance {
            via_proxy
                .extend(c.protected.iter().filter_map(|h| normalise_host(h).ok()).map(|h| h.as_key().into_owned()));
        }
    } else {
        // Even with route = "all", a `direct` entry must never let a banned
        // domain bypass the proxy.
        via_proxy.extend(policy.domains().map(|(d, _)| d.to_string()));
    }
    via_proxy.sort();
    via_proxy.dedup();

    let mut t = String::with_capacity(64 + via_proxy.iter().map(|d| d.len() + 8).sum::<usize>());
    let _ = writeln!(t, "// weerwal proxy auto-config, generated from policy {}", policy.digest());
    let _ = writeln!(
        t,
        "// route = {:?}: {}",
        pac.route,
        match pac.route {
            PacRoute::All => "everything through the proxy except the direct list",
            PacRoute::Policy => "only banned and protected hosts through the proxy",
        }
    );
    let _ = writeln!(t, "var PROXY = {};", js(&proxy));
    t.push_str("var VIA_PROXY = {");
    for (i, d) in via_proxy.iter().enumerate() {
        if i > 0 {
            t.push(',');
        }
        if i % 8 == 0 {
            t.push_str("\n  ");
        }
        let _ = write!(t, "{}:1", js(d));
    }
    t.push_str("\n};\n");
    t.push_str("var DIRECT_NAMES = {");
    for (i, d) in names.iter().enumerate() {
        if i > 0 {
            t.push(',');
        }
        let _ = write!(t, "{}:1", js(d));
    }
    t.push_str("};\n");
    let pats: Vec<String> = patterns.iter().map(|p| js(p)).collect();
    let _ = writeln!(t, "var DIRECT_PATTERNS = [{}];", pats.join(", "));
    let nets_js: Vec<String> = nets
        .iter()
        .filter_map(|n| match n {
            IpNet::V4(v4) => Some(format!("[{}, {}]", js(&v4.network().to_string()), js(&v4.netmask().to_string()))),
            IpNet::V6(_) => None,
        })
        .collect();
    let _ = writeln!(t, "var DIRECT_NETS = [{}];", nets_js.join(", "));
    t.push_str(
        r#"
// The host or one of its parent domains is in the table.
function inTable(h, table) {
  var s = h;
  for (;;) {
    if (Object.prototype.hasOwnProperty.call(table, s)) return true;
    var i = s.indexOf(".");
    if (i < 0) return false;
    s = s.substring(i + 1);
  }
}

function FindProxyForURL(url, host) {
  var h = String(host).toLowerCase();
  while (h.length > 0 && h.charAt(h.length - 1) == ".") h = h.substring(0, h.length - 1);
  if (h.charAt(0) == "[") h = h.substring(1, h.length - 1);
  if (inTable(h, VIA_PROXY)) return PROXY;
  if (Object.prototype.hasOwnProperty.call(DIRECT_NAMES, h)) return "DIRECT";
  for (var i = 0; i < DIRECT_PATTERNS.length; i++) {
    if (shExpMatch(h, DIRECT_PATTERNS[i])) return "DIRECT";
  }
  // Address ranges apply to IP literals only: no DNS lookup for names.
  if (/^\d+\.\d+\.\d+\.\d+$/.test(h)) {
    for (var j = 0; j < DIRECT_NETS.length; j++) {
      if (isInNet(h, DIRECT_NETS[j][0], DIRECT_NETS[j][1])) return "DIRECT";
    }
  }
"#,
    );
    match pac.route {
        PacRoute::All => t.push_str("  return PROXY;\n}\n"),
        PacRoute::Policy => t.push_str("  return \"DIRECT\";\n}\n"),
    }
    let etag = format!("\"{}\"", &hex::encode(Sha256::digest(t.as_bytes()))[..32]);
    Pac { text: t, etag }
}
