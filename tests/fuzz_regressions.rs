//! Regression table for the fuzz targets (`fuzz/run.sh`): every input a fuzz
//! run ever found goes here as a byte string, and runs through the very
//! same checks as the fuzz target (`fuzz/fuzz_targets/checks.rs`, included
//! by path), on stable, in the ordinary `cargo test`.
//!
//! Alongside them are the hand-picked spellings the targets were seeded
//! with: the forms a bypass would need (case, dots, IDNA, punycode, odd IPv4,
//! IPv6 brackets, ports, user info) and malformed policy files.

#[path = "../fuzz/fuzz_targets/checks.rs"]
mod checks;

/// Inputs for `host_decide`: one host or authority each.
const HOST_DECIDE: &[&[u8]] = &[
    // Found by fuzzing: none so far (60 s per target, and 10 minutes for
    // host_decide, on stable libFuzzer). Add each finding above this line.
    //
    // Seeds and hand-picked edge cases.
    b"",
    b".",
    b"..",
    b"aliexpress.com",
    b"M.AliExpress.COM.",
    b"aliexpress.com..",
    b".aliexpress.com",
    b"aliexpress.com:443",
    b"aliexpress.com:0",
    b"aliexpress.com:65536",
    b"aliexpress.com:",
    b"aliexpress.com:+80",
    b"user@vk.com:80",
    b"ali%65xpress.com",
    b"xn--aliexpress-.com",
    b"XN--BCHER-KVA.DE",
    "b\u{fc}cher.de".as_bytes(),
    "\u{ff41}\u{ff4c}\u{ff49}\u{ff45}\u{ff58}\u{ff50}\u{ff52}\u{ff45}\u{ff53}\u{ff53}.com".as_bytes(),
    "aliexpress\u{3002}com".as_bytes(),
    "aliexpress.com\u{3002}".as_bytes(),
    "v\u{212a}.com".as_bytes(),
    "\u{430}liexpress.com".as_bytes(),
    "\u{ff11}\u{ff12}\u{ff17}.\u{ff10}.\u{ff10}.\u{ff11}".as_bytes(),
    b"127.0.0.1",
    b"127.0.0.1.",
    b"127.1",
    b"0x7f.1",
    b"0X7F000001",
    b"0177.0.0.1",
    b"2130706433",
    b"256.1.1.1",
    b"a.1",
    b"0x",
    b"[::1]",
    b"[::1]:443",
    b"[::ffff:127.0.0.1]:8080",
    b"[0:0::1]",
    b"[fe80::1%25eth0]",
    b"[aliexpress.com]",
    b"[::1]x",
    b"[::1",
    b"::1",
    b"a..b",
    b"_x.aliexpress.com",
    b"-x.aliexpress.com",
    b"weixin.qq.com",
    b"qq.com",
    b"a.b.c.tiktokv.eu",
    b"\xff\xfe\x00aliexpress.com",
    b"aliexpress.com\x00",
    b"aliexpress .com",
    b"aliexpress\t.com",
];

/// Inputs for `policy_parse`: the first byte picks whether the shipped policy
/// is read first (odd: yes), the rest is one policy file.
const POLICY_PARSE: &[&[u8]] = &[
    // Found by fuzzing: none so far (60 s on stable libFuzzer). Add each
    // finding above this line.
    //
    // Seeds and hand-picked edge cases.
    b"",
    b"\x00",
    b"\x01",
    b"\x00[[ban]]",
    b"\x00[[ban]]\napp = \"\"\ndomains = []\nadvice = \"\"\nreference = \"\"\nsince = \"\"\n",
    b"\x00[[ban]]\napp = \"X\"\ndomains = [\"[::1]\", \"192.0.2.1\", \"Sub.Example.ORG.\"]\nadvice = \"NCSC\"\n\
      reference = \"r\"\nsince = \"2024-02-29\"\n",
    b"\x00[[ban]]\napp = \"X\"\ndomains = [\"a..b\", \"ali%65xpress.com\", \"\"]\nadvice = \"NCSC\"\n\
      reference = \"r\"\nsince = \"2023-02-29\"\n",
    b"\x01[[ban]]\napp = \"aliexpress\"\ndomains = [\"tiktok.com\"]\nadvice = \"NCSC\"\nreference = \"r\"\n\
      since = \"2024-01-01\"\n",
    b"\x00[[exemption]]\nwho = [\"user:\"]\napps = [\"Nope\"]\nreason = \" \"\nuntil = \"9999-12-31\"\n",
    b"\x01[[exemption]]\nwho = [\"group:toezicht\"]\napps = [\"TikTok\"]\nreason = \"toezicht\"\nuntil = \"2000-01-01\"\n",
    b"\x00[[ban]]\napp = \"X\"\ndomains = [\"x.example\"]\nuser_agents = [\"abc\", \"  \"]\nadvice = \"NCSC\"\n\
      reference = \"r\"\nsince = \"2024-01-01\"\nunknown = 1\n",
    b"\x00\xff\xfe[[ban]\n\x00",
    b"\x00a = \"\\u00e9\"\n[[ban]]\napp = 1\n",
    "\u{0}[[ban]]\napp = \"\u{e9}\"\ndomains = [\"b\u{fc}cher.de\"]\nadvice = \"AIVD\"\nreference = \"r\"\nsince = \"2024-01-01\"\n"
        .as_bytes(),
];

#[test]
fn host_decide_regressions() {
    for input in HOST_DECIDE {
        checks::host_decide(input);
    }
}

#[test]
fn policy_parse_regressions() {
    for input in POLICY_PARSE {
        checks::policy_parse(input);
    }
}

#[test]
fn shipped_policy_files_pass_the_policy_checks() {
    for (_, text) in weerwal::policy::EMBEDDED {
        for mode in [0u8, 1] {
            let mut input = vec![mode];
            input.extend_from_slice(text.as_bytes());
            checks::policy_parse(&input);
        }
    }
}
