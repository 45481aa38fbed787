//! The PAC file browsers are configured with (`/proxy.pac`, `/wpad.dat`,
//! `weerwal pac`). Generated from the compiled policy, so it always lists
//! what the proxy blocks.
//!
//! Only standard PAC functions are used, and only on IP literals, so an
//! ordinary host needs no DNS lookup. The host is lower-cased and stripped
//! of trailing dots first, because engines hand `TikTok.com.` over as typed,
//! and a rule matches the domain itself as well as every subdomain
//! (`dnsDomainIs(h, ".x.com")` alone would miss `x.com`).
//!
//! Order of the checks: banned domains (and the protected systems) first, so
//! no `direct` entry can ever send them around the proxy; then the `direct`
//! names, patterns and address ranges; then the route's default.

use std::fmt::Write as _;

use ipnet::IpNet;
use sha2::{Digest, Sha256};

use crate::config::{Config, PacRoute};
use crate::policy::{normalise_host, Host, Policy};

/// A generated PAC file and its entity tag.
pub struct Pac {
    pub text: String,
    pub etag: String,
}

/// Writes a JS string literal. JSON's escaping is valid JavaScript except
/// for U+2028 and U+2029, which JSON allows raw but which end a line inside
/// an ES5 string literal (the dialect older PAC engines speak).
fn js(s: &str) -> String {
    serde_json::to_string(s)
        .unwrap_or_else(|_| "\"\"".to_string())
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

/// The `host:port`s laptops use to reach the proxy, in failover order.
pub fn proxy_addresses(config: &Config) -> Vec<String> {
    match &config.pac.proxy {
        Some(p) if !p.is_empty() => p.clone(),
        _ => vec![config.proxy.listen.first().map(|a| a.to_string()).unwrap_or_else(|| "127.0.0.1:3128".into())],
    }
}

/// The `direct` list, sorted into the three kinds of check the PAC makes.
#[derive(Default)]
struct Direct {
    /// Exact host names (normalised as the proxy normalises hosts).
    names: Vec<String>,
    /// `shExpMatch` patterns (`*.gemeente.local`).
    patterns: Vec<String>,
    /// Address ranges; they apply to IP-literal hosts only.
    nets: Vec<IpNet>,
}

fn sort_direct(entries: &[String]) -> Direct {
    let mut d = Direct::default();
    for entry in entries {
        let e = entry.trim().trim_end_matches('.').to_ascii_lowercase();
        if e.is_empty() {
            continue;
        }
        if let Ok(net) = e.parse::<IpNet>() {
            d.nets.push(net.trunc());
        } else if e.contains('*') || e.contains('?') {
            d.patterns.push(ascii_pattern(&e));
        } else if let Some(rest) = e.strip_prefix('.') {
            // `.gemeente.local` (the no_proxy / dnsDomainIs spelling): every
            // subdomain, like `*.gemeente.local`.
            d.patterns.push(ascii_pattern(&format!("*.{rest}")));
        } else {
            match normalise_host(&e) {
                Ok(Host::Ip(ip)) => d.nets.push(IpNet::from(ip)),
                Ok(Host::Name(n)) => d.names.push(n),
                Err(_) => d.names.push(e),
            }
        }
    }
    d.names.sort();
    d.names.dedup();
    d.patterns.sort();
    d.patterns.dedup();
    d.nets.sort();
    d.nets.dedup();
    d
}

/// A pattern with each label that holds no wildcard converted to punycode,
/// because browsers hand international names to the PAC in ASCII form.
fn ascii_pattern(p: &str) -> String {
    p.split('.')
        .map(|label| {
            if label.is_ascii() || label.contains('*') || label.contains('?') {
                label.to_string()
            } else {
                idna::domain_to_ascii(label).unwrap_or_else(|_| label.to_string())
            }
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// The PAC files served for one configuration, kept per policy digest and
/// the proxy address they name, so `/proxy.pac` (304s included) does not
/// collect, sort and hash every domain per request. One lives in each
/// running configuration (a new configuration starts a new cache); a new
/// policy replaces the entries of the old one.
#[derive(Default)]
pub struct PacCache {
    entries: std::sync::Mutex<Vec<CachedPac>>,
}

/// A PAC body as served: cheap to clone.
#[derive(Clone)]
pub struct CachedPac {
    digest: String,
    proxy: String,
    pub body: bytes::Bytes,
    pub etag: String,
}

/// Entries kept per configuration (different `Host`s on a wildcard listener).
const PAC_CACHE_MAX: usize = 16;

impl PacCache {
    /// The PAC file for `config` and `policy`, naming `proxy` (`host:port`)
    /// or else the configured address; generated once per policy.
    pub fn get(&self, config: &Config, policy: &Policy, proxy: Option<&str>) -> CachedPac {
        let proxies: Vec<String> = proxy.map(|p| vec![p.to_string()]).unwrap_or_else(|| proxy_addresses(config));
        let proxy = proxies.join("; ");
        let digest = policy.digest();
        {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(hit) = entries.iter().find(|e| e.digest == digest && e.proxy == proxy) {
                return hit.clone();
            }
        }
        let pac = generate_with_proxies(config, policy, &proxies);
        let cached = CachedPac { digest: digest.to_string(), proxy, body: pac.text.into(), etag: pac.etag };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|e| e.digest == digest);
        if entries.len() >= PAC_CACHE_MAX {
            entries.remove(0);
        }
        entries.push(cached.clone());
        cached
    }
}

/// Generates the PAC file for this configuration and policy.
pub fn generate(config: &Config, policy: &Policy) -> Pac {
    generate_with_proxies(config, policy, &proxy_addresses(config))
}

/// Generates the PAC file naming `proxy` (`host:port`) as the proxy.
pub fn generate_with_proxy(config: &Config, policy: &Policy, proxy: &str) -> Pac {
    generate_with_proxies(config, policy, &[proxy.to_string()])
}

/// Generates the PAC file naming `proxies` (`host:port`s), tried in order.
pub fn generate_with_proxies(config: &Config, policy: &Policy, proxies: &[String]) -> Pac {
    let pac = &config.pac;
    let mut proxy = proxies.iter().map(|p| format!("PROXY {p}")).collect::<Vec<_>>().join("; ");
    if pac.fallback_direct {
        proxy.push_str("; DIRECT");
    }
    let direct = sort_direct(&pac.direct);

    // Banned domains go through the proxy whatever the route, and so do the
    // protected systems: a `direct` entry never lets either bypass it.
    let mut via_proxy: Vec<String> = policy.domains().map(|(d, _)| d.to_string()).collect();
    if let Some(c) = &config.compliance {
        via_proxy
            .extend(c.protected.iter().filter_map(|h| normalise_host(h.trim()).ok()).map(|h| h.as_key().into_owned()));
    }
    via_proxy.sort();
    via_proxy.dedup();

    let mut t = String::with_capacity(4096 + via_proxy.iter().map(|d| d.len() + 8).sum::<usize>());
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
    for (i, d) in direct.names.iter().enumerate() {
        if i > 0 {
            t.push(',');
        }
        let _ = write!(t, "{}:1", js(d));
    }
    t.push_str("};\n");
    let pats: Vec<String> = direct.patterns.iter().map(|p| js(p)).collect();
    let _ = writeln!(t, "var DIRECT_PATTERNS = [{}];", pats.join(", "));
    let mut nets4 = Vec::new();
    let mut nets6 = Vec::new();
    for n in &direct.nets {
        match n {
            IpNet::V4(v4) => {
                nets4.push(format!("[{}, {}]", js(&v4.network().to_string()), js(&v4.netmask().to_string())))
            }
            IpNet::V6(v6) => {
                let groups: Vec<String> = v6.network().segments().iter().map(|g| g.to_string()).collect();
                nets6.push(format!("[{}, {}]", groups.join(", "), v6.prefix_len()));
            }
        }
    }
    let _ = writeln!(t, "var DIRECT_NETS = [{}];", nets4.join(", "));
    let _ = writeln!(t, "var DIRECT_NETS6 = [{}];", nets6.join(", "));
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

// An IPv6 literal as eight 16-bit numbers, or null. Pure string work.
function ipv6Groups(h) {
  var m = /^(.*:)(\d+)\.(\d+)\.(\d+)\.(\d+)$/.exec(h);
  if (m) {
    for (var k = 2; k <= 5; k++) if (+m[k] > 255) return null;
    h = m[1] + (+m[2] * 256 + +m[3]).toString(16) + ":" + (+m[4] * 256 + +m[5]).toString(16);
  }
  var halves = h.split("::");
  if (halves.length > 2) return null;
  var head = halves[0] == "" ? [] : halves[0].split(":");
  var tail = halves.length == 2 && halves[1] != "" ? halves[1].split(":") : [];
  var fill = 8 - head.length - tail.length;
  if (halves.length == 2 ? fill < 1 : fill != 0) return null;
  var parts = head;
  for (var f = 0; halves.length == 2 && f < fill; f++) parts = parts.concat(["0"]);
  parts = parts.concat(tail);
  var out = [];
  for (var g = 0; g < 8; g++) {
    if (!/^[0-9a-f]{1,4}$/.test(parts[g])) return null;
    out.push(parseInt(parts[g], 16));
  }
  return out;
}

// Whether eight groups fall in a range written as [g0, ..., g7, prefix].
function inNet6(a, net) {
  var bits = net[8];
  for (var i = 0; i < 8 && bits > 0; i++) {
    var take = bits >= 16 ? 16 : bits;
    var mask = (0xffff << (16 - take)) & 0xffff;
    if ((a[i] & mask) != (net[i] & mask)) return false;
    bits -= take;
  }
  return true;
}

function FindProxyForURL(url, host) {
  var h = String(host).toLowerCase();
  while (h.length > 0 && h.charAt(h.length - 1) == ".") h = h.substring(0, h.length - 1);
  if (h.charAt(0) == "[" && h.charAt(h.length - 1) == "]") h = h.substring(1, h.length - 1);
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
  } else if (DIRECT_NETS6.length > 0 && h.indexOf(":") >= 0) {
    var a = ipv6Groups(h);
    for (var n = 0; a && n < DIRECT_NETS6.length; n++) {
      if (inNet6(a, DIRECT_NETS6[n])) return "DIRECT";
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

#[cfg(test)]
mod tests {
    use super::*;

    fn direct(entries: &[&str]) -> Direct {
        sort_direct(&entries.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn direct_entries_are_sorted_and_normalised() {
        let d = direct(&[
            " Intranet.Gemeente.NL. ",
            "*.Gemeente.Local.",
            ".raad.local",
            "10.1.2.3/8",
            "172.16.5.9",
            "[::1]",
            "fd00::/8",
            "wiki.gemeentë.nl",
            "*.gemeentë.nl",
            "",
        ]);
        assert_eq!(d.names, ["intranet.gemeente.nl", "wiki.xn--gemeent-xya.nl"]);
        assert_eq!(d.patterns, ["*.gemeente.local", "*.raad.local", "*.xn--gemeent-xya.nl"]);
        let nets: Vec<String> = d.nets.iter().map(|n| n.to_string()).collect();
        assert_eq!(nets, ["10.0.0.0/8", "172.16.5.9/32", "::1/128", "fd00::/8"]);
    }

    #[test]
    fn js_strings_escape_line_separators() {
        assert_eq!(js("a\u{2028}b\u{2029}c\"d"), "\"a\\u2028b\\u2029c\\\"d\"");
    }
}
