//! `weerwal policy export`: the policy in the syntax of the resolvers and
//! proxies a municipality already runs (BIND/Unbound RPZ, Unbound
//! `local-zone`, dnsmasq, hosts files, AdGuard Home/Pi-hole, Squid), so
//! they enforce the same official list instead of a hand-kept one.
//!
//! Pure: a policy and options in, text out. Every format blocks a domain
//! and all its subdomains, except hosts files, which cannot (said in the
//! file's header). Each app's advice and public reference go along as
//! comments, so whoever reads the exported file sees why a name is there.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::net::IpAddr;

use super::{App, Policy};

/// The Firefox canary domain: a resolver that answers it NXDOMAIN tells
/// Firefox not to switch on DNS over HTTPS by itself (which would bypass the
/// municipal resolver and therefore weerwal's DNS listener).
pub const DOH_CANARY: &str = "use-application-dns.net";

/// The zone name RPZ output uses when none is given.
pub const DEFAULT_RPZ_ZONE: &str = "rpz.weerwal";

/// The syntaxes `policy export` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A complete RPZ zone file (BIND `response-policy`, Unbound `rpz:`).
    Rpz,
    /// Unbound `server:` clauses with `local-zone`/`local-data`.
    Unbound,
    /// dnsmasq `address=/domain/` lines (also Pi-hole's `/etc/dnsmasq.d/`).
    Dnsmasq,
    /// A hosts file (`/etc/hosts`, Pi-hole/AdGuard "hosts" lists).
    Hosts,
    /// AdGuard Home / Pi-hole adblock-style rules (`||domain^`).
    Adguard,
    /// A Squid `dstdomain` ACL file.
    Squid,
}

impl Format {
    /// Every format with its command-line name.
    pub const ALL: [(&'static str, Format); 6] = [
        ("rpz", Format::Rpz),
        ("unbound", Format::Unbound),
        ("dnsmasq", Format::Dnsmasq),
        ("hosts", Format::Hosts),
        ("adguard", Format::Adguard),
        ("squid", Format::Squid),
    ];

    /// Parses a command-line name (`rpz`, `unbound`, …).
    pub fn parse(s: &str) -> Option<Format> {
        Format::ALL.iter().find(|(n, _)| n.eq_ignore_ascii_case(s)).map(|(_, f)| *f)
    }
}

/// What a blocked name is answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// "This name does not exist": apps give up at once.
    Nxdomain,
    /// An address of weerwal's block-page listener (A for IPv4, AAAA for IPv6).
    Address(IpAddr),
}

impl Answer {
    /// Parses `nxdomain` or an IP address.
    pub fn parse(s: &str) -> Option<Answer> {
        if s.eq_ignore_ascii_case("nxdomain") {
            return Some(Answer::Nxdomain);
        }
        s.parse().ok().map(Answer::Address)
    }
}

/// How to export.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub format: Format,
    /// The RPZ zone's name (named in the header's configuration snippet).
    pub zone: String,
    pub answer: Answer,
    /// Also answer the Firefox DoH canary NXDOMAIN.
    pub doh_canary: bool,
}

impl Default for ExportOptions {
    fn default() -> Self {
        ExportOptions {
            format: Format::Rpz,
            zone: DEFAULT_RPZ_ZONE.into(),
            answer: Answer::Nxdomain,
            doh_canary: false,
        }
    }
}

/// One app and the domains the export lists for it, sorted.
struct Group<'a> {
    app: &'a App,
    domains: Vec<&'a str>,
}

/// The policy's domains grouped by app in policy order. With `minimal`, a
/// domain whose parent domain is also listed is left out (it is covered by
/// the parent; Squid refuses such overlaps).
fn groups(policy: &Policy, minimal: bool) -> Vec<Group<'_>> {
    let all: BTreeSet<&str> = policy.domains().map(|(d, _)| d).collect();
    let covered = |d: &str| {
        let mut rest = d;
        while let Some((_, parent)) = rest.split_once('.') {
            if all.contains(parent) {
                return true;
            }
            rest = parent;
        }
        false
    };
    let mut groups: Vec<Group<'_>> = policy.apps().iter().map(|a| Group { app: a, domains: Vec::new() }).collect();
    for (domain, app) in policy.domains() {
        if minimal && covered(domain) {
            continue;
        }
        if let Some(g) = groups.iter_mut().find(|g| std::ptr::eq(g.app, app)) {
            g.domains.push(domain);
        }
    }
    for g in &mut groups {
        g.domains.sort_unstable();
    }
    groups.retain(|g| !g.domains.is_empty());
    groups
}

/// Writes the policy in the requested format.
pub fn export(policy: &Policy, opts: &ExportOptions) -> String {
    let mut out = String::with_capacity(64 + policy.domain_count() * 48);
    match opts.format {
        Format::Rpz => rpz(policy, opts, &mut out),
        Format::Unbound => unbound(policy, opts, &mut out),
        Format::Dnsmasq => dnsmasq(policy, opts, &mut out),
        Format::Hosts => hosts(policy, opts, &mut out),
        Format::Adguard => adguard(policy, opts, &mut out),
        Format::Squid => squid(policy, &mut out),
    }
    out
}

/// The header every format starts with, behind its comment marker.
fn header(out: &mut String, c: &str, policy: &Policy, title: &str, how: &[&str]) {
    let _ = writeln!(out, "{c} weerwal policy export: {title}");
    let _ = writeln!(out, "{c} Generated from the policy with digest {}", policy.digest());
    let _ = writeln!(
        out,
        "{c} ({} apps, {} domains). Do not edit: export again when the policy changes.",
        policy.apps().len(),
        policy.domain_count()
    );
    for line in how {
        let _ = writeln!(out, "{c} {line}");
    }
}

/// The app's advice and public reference, behind the comment marker.
fn app_comment(out: &mut String, c: &str, app: &App) {
    let _ = writeln!(out, "\n{c} {}: banned since {}", one_line(&app.name), app.since);
    let _ = writeln!(out, "{c}   advice: {}", one_line(&app.advice));
    if !app.reference.is_empty() {
        let _ = writeln!(out, "{c}   reference: {}", one_line(&app.reference));
    }
}

/// Policy text inside a comment stays on its line.
fn one_line(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The RPZ serial: the first 32 bits of the policy digest, so the same
/// policy always exports the same zone and a changed one a different serial.
pub fn rpz_serial(policy: &Policy) -> u32 {
    let hex = policy.digest().get(..8).unwrap_or("1");
    u32::from_str_radix(hex, 16).unwrap_or(1).max(1)
}

fn rpz(policy: &Policy, opts: &ExportOptions, out: &mut String) {
    let zone = opts.zone.trim_end_matches('.');
    let action = match opts.answer {
        Answer::Nxdomain => "the name does not exist (NXDOMAIN)".to_string(),
        Answer::Address(ip) => format!("the address {ip} (weerwal's block page)"),
    };
    header(
        out,
        ";",
        policy,
        &format!("Response Policy Zone \"{zone}\""),
        &[
            &format!("Each banned domain and all its subdomains are answered with {action}."),
            "Names are relative to the zone: load the file under any zone name.",
            "BIND (named.conf):",
            &format!("  zone \"{zone}\" {{ type primary; file \"/etc/bind/{zone}.zone\"; allow-query {{ none; }}; }};"),
            &format!("  options {{ response-policy {{ zone \"{zone}\"; }}; }};"),
            "Unbound (unbound.conf; module-config: \"respip validator iterator\"):",
            &format!(
                "  rpz:\n;     name: \"{zone}.\"\n;     zonefile: \"/etc/unbound/{zone}.zone\"\n;     rpz-log: yes"
            ),
        ],
    );
    let serial = rpz_serial(policy);
    let _ = writeln!(out, "\n$TTL 300");
    let _ = writeln!(out, "@ IN SOA localhost. hostmaster.localhost. ( {serial} 3600 600 604800 300 )");
    let _ = writeln!(out, "  IN NS localhost.");
    let rdata = match opts.answer {
        Answer::Nxdomain => "CNAME .".to_string(),
        Answer::Address(IpAddr::V4(ip)) => format!("A {ip}"),
        Answer::Address(IpAddr::V6(ip)) => format!("AAAA {ip}"),
    };
    for g in groups(policy, false) {
        app_comment(out, ";", g.app);
        for d in g.domains {
            let _ = writeln!(out, "{d} {rdata}\n*.{d} {rdata}");
        }
    }
    if opts.doh_canary {
        let _ = writeln!(out, "\n; Firefox DNS-over-HTTPS canary: NXDOMAIN keeps Firefox on this resolver.");
        let _ = writeln!(out, "{DOH_CANARY} CNAME .");
    }
}

fn unbound(policy: &Policy, opts: &ExportOptions, out: &mut String) {
    header(
        out,
        "#",
        policy,
        "Unbound local zones",
        &[
            "Each banned domain and all its subdomains are answered locally.",
            "Install as /etc/unbound/unbound.conf.d/weerwal.conf (Debian includes that folder),",
            "check with `unbound-checkconf` and reload with `unbound-control reload`.",
        ],
    );
    let _ = writeln!(out, "server:");
    for g in groups(policy, false) {
        app_comment(out, "#", g.app);
        for d in g.domains {
            match opts.answer {
                Answer::Nxdomain => {
                    let _ = writeln!(out, "    local-zone: \"{d}.\" always_nxdomain");
                }
                Answer::Address(ip) => {
                    let rr = if ip.is_ipv4() { "A" } else { "AAAA" };
                    let _ = writeln!(out, "    local-zone: \"{d}.\" redirect");
                    let _ = writeln!(out, "    local-data: \"{d}. 300 IN {rr} {ip}\"");
                }
            }
        }
    }
    if opts.doh_canary {
        let _ = writeln!(out, "\n    # Firefox DNS-over-HTTPS canary: NXDOMAIN keeps Firefox on this resolver.");
        let _ = writeln!(out, "    local-zone: \"{DOH_CANARY}.\" always_nxdomain");
    }
}

fn dnsmasq(policy: &Policy, opts: &ExportOptions, out: &mut String) {
    header(
        out,
        "#",
        policy,
        "dnsmasq",
        &[
            "Each banned domain and all its subdomains are answered locally (address=/domain/ is",
            "NXDOMAIN). Install as /etc/dnsmasq.d/weerwal.conf (Pi-hole: /etc/dnsmasq.d/ too),",
            "check with `dnsmasq --test` and restart dnsmasq.",
        ],
    );
    let value = match opts.answer {
        Answer::Nxdomain => String::new(),
        Answer::Address(ip) => ip.to_string(),
    };
    for g in groups(policy, true) {
        app_comment(out, "#", g.app);
        for d in g.domains {
            let _ = writeln!(out, "address=/{d}/{value}");
        }
    }
    if opts.doh_canary {
        let _ = writeln!(out, "\n# Firefox DNS-over-HTTPS canary: NXDOMAIN keeps Firefox on this resolver.");
        let _ = writeln!(out, "address=/{DOH_CANARY}/");
    }
}

fn hosts(policy: &Policy, opts: &ExportOptions, out: &mut String) {
    let addr = match opts.answer {
        Answer::Nxdomain => "0.0.0.0".to_string(),
        Answer::Address(ip) => ip.to_string(),
    };
    header(
        out,
        "#",
        policy,
        "hosts file",
        &[
            "A hosts file CANNOT block subdomains: only the names listed below are blocked, and",
            "e.g. a country or API subdomain of a banned domain is NOT. Prefer the rpz, unbound,",
            "dnsmasq or adguard formats, which block each domain and all its subdomains.",
            "A hosts file cannot answer \"does not exist\": names point to an address instead",
            &format!("({addr}{}).", if opts.answer == Answer::Nxdomain { ", reached by nobody" } else { "" }),
        ],
    );
    for g in groups(policy, false) {
        app_comment(out, "#", g.app);
        for d in g.domains {
            let _ = writeln!(out, "{addr} {d}");
        }
    }
    if opts.doh_canary {
        let _ =
            writeln!(out, "\n# The Firefox DoH canary ({DOH_CANARY}) needs NXDOMAIN, which a hosts file cannot give:");
        let _ = writeln!(out, "# use the rpz, unbound, dnsmasq or adguard format for it.");
    }
}

fn adguard(policy: &Policy, opts: &ExportOptions, out: &mut String) {
    header(
        out,
        "!",
        policy,
        "AdGuard Home / Pi-hole blocklist (adblock syntax)",
        &[
            "Each rule ||domain^ blocks the domain and all its subdomains. AdGuard Home: Filters >",
            "DNS blocklists > Add blocklist (a URL or a local path); Pi-hole v6: Adlists.",
        ],
    );
    let modifier = match opts.answer {
        Answer::Nxdomain => "$dnsrewrite=NXDOMAIN;;".to_string(),
        Answer::Address(ip) => format!("$dnsrewrite={ip}"),
    };
    for g in groups(policy, true) {
        app_comment(out, "!", g.app);
        for d in g.domains {
            let _ = writeln!(out, "||{d}^{modifier}");
        }
    }
    if opts.doh_canary {
        let _ = writeln!(out, "\n! Firefox DNS-over-HTTPS canary: NXDOMAIN keeps Firefox on this resolver.");
        let _ = writeln!(out, "||{DOH_CANARY}^$dnsrewrite=NXDOMAIN;;");
    }
}

fn squid(policy: &Policy, out: &mut String) {
    header(
        out,
        "#",
        policy,
        "Squid dstdomain ACL",
        &[
            "Each .domain matches the domain and all its subdomains. In squid.conf, before the",
            "http_access allow rules:",
            "  acl weerwal_banned dstdomain \"/etc/squid/weerwal-banned.acl\"",
            "  http_access deny weerwal_banned",
            "Check with `squid -k parse` and apply with `squid -k reconfigure`.",
        ],
    );
    for g in groups(policy, true) {
        app_comment(out, "#", g.app);
        for d in g.domains {
            let _ = writeln!(out, ".{d}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy::{Date, PolicyBuilder};

    fn policy() -> Policy {
        let mut b = PolicyBuilder::new();
        b.add_source(
            Path::new("t.toml"),
            r#"
[[ban]]
app = "TikTok"
domains = ["tiktok.com", "m.tiktok.com", "tiktokv.com"]
advice = "AIVD"
reference = "Kamerbrief 21 maart 2023"
since = "2023-03-21"

[[ban]]
app = "WeChat"
domains = ["wechat.com"]
advice = "AIVD"
reference = "NOS"
since = "2023-07-14"
"#,
        );
        b.build(Date::parse("2024-01-01").unwrap()).unwrap().0
    }

    fn run(format: Format, answer: Answer, canary: bool) -> String {
        export(&policy(), &ExportOptions { format, answer, doh_canary: canary, ..Default::default() })
    }

    #[test]
    fn rpz_is_a_zone_with_soa_ns_and_both_name_and_wildcard() {
        let p = policy();
        let z = run(Format::Rpz, Answer::Nxdomain, true);
        assert!(z.contains(&format!("( {} 3600", rpz_serial(&p))));
        assert!(z.contains("  IN NS localhost."));
        assert!(z.contains("\ntiktok.com CNAME .\n*.tiktok.com CNAME .\n"));
        assert!(z.contains("\nuse-application-dns.net CNAME .\n"));
        assert!(z.contains("; TikTok: banned since 2023-03-21\n;   advice: AIVD\n;   reference: Kamerbrief"));
        let a = run(Format::Rpz, Answer::Address("10.0.0.5".parse().unwrap()), false);
        assert!(a.contains("\n*.wechat.com A 10.0.0.5\n"));
        assert!(!a.contains(DOH_CANARY));
        let v6 = run(Format::Rpz, Answer::Address("2001:db8::5".parse().unwrap()), false);
        assert!(v6.contains("\nwechat.com AAAA 2001:db8::5\n"));
    }

    #[test]
    fn serial_follows_the_digest() {
        let p = policy();
        assert_eq!(rpz_serial(&p), u32::from_str_radix(&p.digest()[..8], 16).unwrap().max(1));
    }

    #[test]
    fn minimal_formats_leave_out_covered_subdomains_hosts_lists_all() {
        let sq = run(Format::Squid, Answer::Nxdomain, false);
        assert!(sq.contains("\n.tiktok.com\n") && !sq.contains(".m.tiktok.com"));
        let dm = run(Format::Dnsmasq, Answer::Nxdomain, true);
        assert!(dm.contains("\naddress=/tiktok.com/\n") && !dm.contains("m.tiktok.com"));
        assert!(dm.contains("\naddress=/use-application-dns.net/\n"));
        let h = run(Format::Hosts, Answer::Nxdomain, false);
        assert!(h.contains("\n0.0.0.0 m.tiktok.com\n") && h.contains("CANNOT block subdomains"));
        let ag = run(Format::Adguard, Answer::Address("10.0.0.5".parse().unwrap()), false);
        assert!(ag.contains("\n||tiktokv.com^$dnsrewrite=10.0.0.5\n"));
        let ub = run(Format::Unbound, Answer::Address("10.0.0.5".parse().unwrap()), false);
        assert!(ub.starts_with("# weerwal") && ub.contains("\nserver:\n"));
        assert!(ub.contains("local-zone: \"wechat.com.\" redirect\n    local-data: \"wechat.com. 300 IN A 10.0.0.5\""));
    }

    #[test]
    fn options_parse() {
        assert_eq!(Format::parse("RPZ"), Some(Format::Rpz));
        assert_eq!(Format::parse("bind"), None);
        assert_eq!(Answer::parse("NXDOMAIN"), Some(Answer::Nxdomain));
        assert_eq!(Answer::parse("::1"), Some(Answer::Address("::1".parse().unwrap())));
        assert_eq!(Answer::parse("block"), None);
    }
}
