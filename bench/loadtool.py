#!/usr/bin/env python3
"""Helpers for bench/load.sh (standard library only).

  loadtool.py wrk FILE                 parse wrk --latency output -> JSON on stdout
  loadtool.py idle N PROXY TARGET PID  open N keep-alive connections through the
                                       proxy (one GET each, response read), then
                                       report the proxy's RSS and how many are open
  loadtool.py criterion LOG            medians of a `cargo bench` log -> Markdown
  loadtool.py lastseq LOGDIR           highest audit seq (the log rotates)
  loadtool.py collect OUT ...          gather one run's raw outputs -> JSON
  loadtool.py table RESULTS.json       print the results table (Markdown)
"""

import json
import os
import re
import socket
import sys
import time


def to_us(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"latency {text!r}")
    v, unit = float(m.group(1)), m.group(2)
    return v * {"us": 1, "ms": 1e3, "s": 1e6, "m": 60e6}[unit]


def parse_wrk(path):
    text = open(path).read()
    out = {}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+),", text)
    out["requests"] = int(m.group(1)) if m else 0
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        if m:
            out[f"p{pct}_us"] = to_us(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(int(x) for x in m.groups()) if m else 0
    return out


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def read_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length body; returns the status."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
    length = int(m.group(1)) if m else 0
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status


def idle(n, proxy, target, pid):
    host, port = proxy.rsplit(":", 1)
    authority = target.split("/")[2]
    request = f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: weerwal-bench\r\n\r\n".encode()
    socks, failed = [], 0
    before = rss_kib(pid)
    t0 = time.monotonic()
    for _ in range(n):
        s = socket.create_connection((host, int(port)), timeout=10)
        try:
            s.sendall(request)
            if read_response(s) != 200:
                failed += 1
        except OSError:
            failed += 1
        socks.append(s)
    opened = time.monotonic() - t0
    time.sleep(2)
    rss = rss_kib(pid)
    # Still open? A closed peer makes a non-blocking peek return b"".
    alive = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1, socket.MSG_PEEK) != b"":
                alive += 1  # unexpected data, but open
        except BlockingIOError:
            alive += 1
        except OSError:
            pass
    for s in socks:
        s.close()
    time.sleep(1)
    after_close = rss_kib(pid)
    print(json.dumps({
        "conns": n, "failed": failed, "alive": alive, "open_seconds": round(opened, 2),
        "rss_before_kib": before, "rss_kib": rss, "rss_after_close_kib": after_close,
    }))


def collect(out, rss_idle, rss_after, tick, rounds, audit_writes):
    """Gathers the raw outputs of one load.sh run into one JSON object."""
    import statistics
    tick, rounds = int(tick), int(rounds)
    read = lambda f: float(open(f"{out}/{f}").read())
    floats = lambda f: [float(l.split()[0]) for l in open(f"{out}/{f}") if l.strip()]

    def summary(name):
        runs = [parse_wrk(f"{out}/{name}.{r}.txt") for r in range(1, rounds + 1)]
        s = {k: statistics.median(x[k] for x in runs) for k in ("rps", "p50_us", "p99_us")}
        s["requests"] = sum(x["requests"] for x in runs)
        s["non2xx"] = sum(x["non2xx"] for x in runs)
        s["socket_errors"] = sum(x["socket_errors"] for x in runs)
        s["runs"] = runs
        return s

    res = {"rss_idle_kib": int(rss_idle), "rss_after_load_kib": int(rss_after)}
    have = lambda f: os.path.exists(f"{out}/{f}")
    if have("direct.1.txt"):
        direct, proxy, blocked = summary("direct"), summary("proxy"), summary("blocked")
        squid = summary("squid")
        cpu = [read(f"proxy.{r}.ticks") / tick * 1e6 / proxy["runs"][r - 1]["requests"] for r in range(1, rounds + 1)]
        scpu = [read(f"squid.{r}.ticks") / tick * 1e6 / squid["runs"][r - 1]["requests"] for r in range(1, rounds + 1)]
        ncpu = [read(f"direct.{r}.nginxticks") / tick * 1e6 / direct["runs"][r - 1]["requests"]
                for r in range(1, rounds + 1)]
        res.update({
            "small_direct": direct, "small_proxy": proxy, "blocked": blocked, "small_squid": squid,
            "cpu_us_per_req": statistics.median(cpu), "cpu_us_per_req_all": cpu,
            "squid_cpu_us_per_req": statistics.median(scpu), "squid_cpu_us_per_req_all": scpu,
            "nginx_cpu_us_per_req": statistics.median(ncpu),
            "audit_records": sum(int(read(f"blocked.{r}.records")) for r in range(1, rounds + 1)),
            "audit_writes": int(audit_writes),
            "audit_writes_records": int(read("strace.records")) if have("strace.records") else -1,
        })
    gib_c = 2 * int(os.environ.get("BIG_MIB", 512)) * int(os.environ.get("BULK_REPEAT", 1)) / 1024
    gib_f = 100 * int(os.environ.get("FWD_REPEAT", 1)) / 1024
    cpu_per_gib = lambda f, gib: statistics.median(t / tick / gib for t in floats(f))
    cpu_per_gib_all = lambda f, gib: [t / tick / gib for t in floats(f)]

    def setup(who):
        """Tunnel set-ups: rate and p99 per round, CPU per tunnel (µs)."""
        runs = [json.load(open(f"{out}/setup.{who}.{r}.json")) for r in range(1, rounds + 1)]
        cpu = [read(f"setup.{who}.{r}.ticks") / tick * 1e6 / max(x["tunnels"], 1) for x, r in zip(runs, range(1, rounds + 1))]
        return {"rate": statistics.median(x["rate"] for x in runs), "p99_us": statistics.median(x["p99_us"] for x in runs),
                "p50_us": statistics.median(x["p50_us"] for x in runs), "errors": sum(x["errors"] for x in runs),
                "cpu_us_per_tunnel": statistics.median(cpu), "cpu_all": cpu, "runs": runs,
                "rate_all": [x["rate"] for x in runs]}

    def hold(who):
        """Many open tunnels: RSS per tunnel (KiB), CPU (% of a core, and µs per echo)."""
        runs = []
        for r in range(1, rounds + 1):
            j = json.load(open(f"{out}/hold.{who}.{r}.json"))
            before, opened, open2, ticks, secs, kbefore, kopen = open(f"{out}/hold.{who}.{r}.meta").read().split()
            n = max(j["tunnels"], 1)
            echoes_in_window = n * float(secs) * 1000 / j["every_ms"]
            runs.append({**j, "rss_before_kib": int(before), "rss_open_kib": int(opened), "rss_end_kib": int(open2),
                         "kib_per_tunnel": (int(opened) - int(before)) / n,
                         "kib_per_tunnel_end": (int(open2) - int(before)) / n,
                         "kernel_kib_per_tunnel": (int(kopen) - int(kbefore)) / n,
                         "cpu_core_pct": int(ticks) / tick / float(secs) * 100,
                         "cpu_us_per_echo": int(ticks) / tick * 1e6 / echoes_in_window})
        med = lambda k: statistics.median(x[k] for x in runs)
        return {"kib_per_tunnel": med("kib_per_tunnel"), "kib_per_tunnel_end": med("kib_per_tunnel_end"),
                "kernel_kib_per_tunnel": med("kernel_kib_per_tunnel"),
                "cpu_core_pct": med("cpu_core_pct"), "cpu_us_per_echo": med("cpu_us_per_echo"),
                "tunnels": min(x["tunnels"] for x in runs), "failed": sum(x["failed"] for x in runs),
                "echo_errors": sum(x["echo_errors"] for x in runs), "runs": runs}

    if have("connect.direct"):
        res["connect"] = {"direct_mibs": statistics.median(floats("connect.direct")),
                    "proxy_mibs": statistics.median(floats("connect.proxy")),
                    "mib_each": int(os.environ.get("BIG_MIB", 512)) * int(os.environ.get("BULK_REPEAT", 1)),
                    "squid_mibs": statistics.median(floats("connect.squid")),
                    "direct_all": floats("connect.direct"), "proxy_all": floats("connect.proxy"),
                    "squid_all": floats("connect.squid"),
                    "cpu_s_per_gib": cpu_per_gib("connect.ticks", gib_c),
                    "cpu_all": cpu_per_gib_all("connect.ticks", gib_c),
                    "squid_cpu_s_per_gib": cpu_per_gib("connect.squidticks", gib_c),
                    "squid_cpu_all": cpu_per_gib_all("connect.squidticks", gib_c)}
    if have("fwd.direct"):
        res["forward"] = {"direct_mibs": statistics.median(floats("fwd.direct")),
                    "proxy_mibs": statistics.median(floats("fwd.proxy")),
                    "squid_mibs": statistics.median(floats("fwd.squid")),
                    "direct_all": floats("fwd.direct"), "proxy_all": floats("fwd.proxy"),
                    "squid_all": floats("fwd.squid"),
                    "runs": len(floats("fwd.direct")), "repeat": int(os.environ.get("FWD_REPEAT", 1)),
                    "cpu_s_per_gib": cpu_per_gib("fwd.ticks", gib_f),
                    "cpu_all": cpu_per_gib_all("fwd.ticks", gib_f),
                    "squid_cpu_s_per_gib": cpu_per_gib("fwd.squidticks", gib_f)}
    if have("setup.direct.1.json"):
        res["setup"] = {"direct": setup("direct"), "proxy": setup("proxy"), "squid": setup("squid"),
                        "conns": int(os.environ.get("SETUP_CONNS", 32))}
        if have("setup.base.1.json"):
            res["setup"]["base"] = setup("base")
    if have("hold.proxy.1.json"):
        res["hold"] = {"proxy": hold("proxy"), "squid": hold("squid"),
                       "every_ms": int(os.environ.get("HOLD_EVERY_MS", 2000))}
        if have("hold.base.1.json"):
            res["hold"]["base"] = hold("base")
    if have("idle.json"):
        res["idle"] = json.load(open(f"{out}/idle.json"))
    return res


def last_seq(logdir):
    """The highest `seq` in the audit log, across rotated files."""
    import glob
    best = 0
    for path in glob.glob(os.path.join(logdir, "audit*.jsonl")):
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 65536))
            lines = f.read().splitlines()
        for line in reversed(lines):
            try:
                best = max(best, json.loads(line)["seq"])
                break
            except (ValueError, KeyError):
                continue
    return best


def criterion_table(path):
    """Median of every criterion benchmark in a `cargo bench` log, as Markdown."""
    name, rows = None, []
    for line in open(path):
        m = re.match(r"^(\S+)?\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", line)
        if m:
            rows.append((m.group(1) or name, f"{m.group(2)} {m.group(3)}"))
            name = None
            continue
        m = re.match(r"^([A-Za-z0-9_]+/\S+)\s*$", line)
        if m:
            name = m.group(1)
    print("| benchmark | median |")
    print("| --- | ---: |")
    for n, t in rows:
        print(f"| `{n}` | {t} |")


def fmt_int(v):
    return f"{v:,.0f}"


def table(path):
    """One run's results as Markdown: direct, weerwal and Squid side by side,
    the ratio each target is set in, and whether it was met."""
    r = json.load(open(path))
    rows = []

    def row(name, direct, weerwal, squid, ratio, target, ok):
        mark = "" if ok is None else ("met" if ok else "**missed**")
        rows.append(f"| {name} | {direct} | {weerwal} | {squid} | {ratio} | {target} | {mark} |")

    if "small_direct" in r:
        small_rows(r, row)
    if "setup" in r:
        setup_rows(r, row)
    if "hold" in r:
        hold_rows(r, row)
    if "connect" in r:
        connect_rows(r, row)
    if "forward" in r:
        forward_rows(r, row)
    mib = lambda kib: kib / 1024
    row("RSS idle", "", f"{mib(r['rss_idle_kib']):.1f} MiB", "", "", "≤ 20 MB", r["rss_idle_kib"] * 1024 <= 20e6)
    row("RSS after the load above", "", f"{mib(r['rss_after_load_kib']):.1f} MiB", "", "", "", None)
    if "idle" in r:
        i = r["idle"]
        row(f"RSS with {i['conns']:,} idle keep-alive clients", "",
            f"{mib(i['rss_kib']):.1f} MiB ({i['alive']:,} open)", "", "", "≤ 150 MB",
            i["rss_kib"] * 1024 <= 150e6 and i["alive"] == i["conns"])
    print("| measurement | direct | weerwal | Squid | ratio (same run) | target | |")
    print("| --- | ---: | ---: | ---: | ---: | --- | --- |")
    print("\n".join(rows))


def small_rows(r, row):
    d, p, q = r["small_direct"], r["small_proxy"], r["small_squid"]
    row("1 KiB GET, requests/s", fmt_int(d["rps"]), fmt_int(p["rps"]), fmt_int(q["rps"]),
        f"{p['rps'] / d['rps']:.2f} of direct, {p['rps'] / q['rps']:.2f}× Squid", "", None)
    row("1 KiB GET, p99 latency", f"{d['p99_us']:.0f} µs", f"{p['p99_us']:.0f} µs", f"{q['p99_us']:.0f} µs",
        f"{p['p99_us'] - d['p99_us']:+.0f} µs", "≤ direct + 1 ms", p["p99_us"] <= d["p99_us"] + 1000)
    cpu, scpu = r["cpu_us_per_req"], r["squid_cpu_us_per_req"]
    row("proxy CPU per allowed 1 KiB GET", f"(nginx: {r['nginx_cpu_us_per_req']:.1f} µs)", f"{cpu:.1f} µs",
        f"{scpu:.1f} µs", f"{cpu / scpu:.2f}× Squid", "≤ 0.4× Squid", cpu <= 0.4 * scpu)
    b = r["blocked"]
    row("blocked GETs/s, audit log on", "", fmt_int(b["rps"]), "", f"{b['rps'] / d['rps']:.2f} of direct GETs",
        "≥ 60,000/s", b["rps"] >= 60000)
    row("audit records for blocked GETs", "", f"{r['audit_records']:,} for {b['requests']:,} answered", "", "",
        "every attempt", r["audit_records"] >= b["requests"])


def setup_rows(r, row):
    s = r["setup"]
    sd, sp, sq = s["direct"], s["proxy"], s["squid"]
    row(f"tunnel set-ups/s (CONNECT + TLS + 1 KiB GET, {s['conns']} at once)", fmt_int(sd["rate"]),
        fmt_int(sp["rate"]), fmt_int(sq["rate"]),
        f"{sp['rate'] / sd['rate']:.2f} of direct, {sp['rate'] / sq['rate']:.2f}× Squid",
        "≥ 0.85 of direct and ≥ 1.5× Squid", sp["rate"] >= 0.85 * sd["rate"] and sp["rate"] >= 1.5 * sq["rate"])
    row("tunnel set-up p99", f"{sd['p99_us'] / 1000:.1f} ms", f"{sp['p99_us'] / 1000:.1f} ms",
        f"{sq['p99_us'] / 1000:.1f} ms", f"{(sp['p99_us'] - sd['p99_us']) / 1000:+.1f} ms", "", None)
    row("proxy CPU per tunnel set-up", f"(nginx: {sd['cpu_us_per_tunnel']:.0f} µs)", f"{sp['cpu_us_per_tunnel']:.0f} µs",
        f"{sq['cpu_us_per_tunnel']:.0f} µs", f"{sp['cpu_us_per_tunnel'] / sq['cpu_us_per_tunnel']:.2f}× Squid",
        "≤ 0.5× Squid", sp["cpu_us_per_tunnel"] <= 0.5 * sq["cpu_us_per_tunnel"])
    if "base" in s:
        sb = s["base"]
        row("A/B: tunnel set-ups/s, this build vs the baseline build", "", fmt_int(sp["rate"]), "",
            f"{sp['rate'] / sb['rate']:.2f}× baseline ({fmt_int(sb['rate'])}/s)", "", None)
        row("A/B: proxy CPU per tunnel set-up, this build vs the baseline build", "",
            f"{sp['cpu_us_per_tunnel']:.0f} µs", "",
            f"{sp['cpu_us_per_tunnel'] / sb['cpu_us_per_tunnel']:.2f}× baseline ({sb['cpu_us_per_tunnel']:.0f} µs)",
            "", None)


def hold_rows(r, row):
    h = r["hold"]
    hp, hq = h["proxy"], h["squid"]
    row(f"many open tunnels: memory per tunnel ({hp['tunnels']:,} tunnels, 16 B each way every "
        f"{h['every_ms'] / 1000:g} s; RSS open − RSS before ÷ tunnels)", "",
        f"{hp['kib_per_tunnel']:.1f} KiB", f"{hq['kib_per_tunnel']:.1f} KiB",
        f"{hp['kib_per_tunnel'] / hq['kib_per_tunnel']:.2f}× Squid", "≤ 20 KiB",
        hp["kib_per_tunnel"] <= 20 and hp["failed"] == 0 and hp["echo_errors"] == 0)
    row("many open tunnels: kernel memory per tunnel, machine-wide (SUnreclaim growth ÷ tunnels: "
        "sockets of client, proxy and origin, and the proxy's pipes)", "",
        f"{hp['kernel_kib_per_tunnel']:.1f} KiB", f"{hq['kernel_kib_per_tunnel']:.1f} KiB",
        f"{hp['kernel_kib_per_tunnel'] / hq['kernel_kib_per_tunnel']:.2f}× Squid", "", None)
    row("many open tunnels: proxy CPU while they trickle (% of one core; µs per 16-byte echo)", "",
        f"{hp['cpu_core_pct']:.1f} % ({hp['cpu_us_per_echo']:.1f} µs)",
        f"{hq['cpu_core_pct']:.1f} % ({hq['cpu_us_per_echo']:.1f} µs)",
        f"{hp['cpu_us_per_echo'] / hq['cpu_us_per_echo']:.2f}× Squid", "", None)
    if "base" in h:
        hb = h["base"]
        row("A/B: many open tunnels, memory / CPU per echo, baseline build", "",
            f"{hb['kib_per_tunnel']:.1f} KiB / {hb['cpu_us_per_echo']:.1f} µs", "", "", "", None)
        row("A/B: many open tunnels, kernel memory per tunnel, baseline build "
            f"({hb['tunnels']:,} tunnels opened)", "", f"{hb['kernel_kib_per_tunnel']:.1f} KiB", "",
            f"this build {hp['kernel_kib_per_tunnel'] / hb['kernel_kib_per_tunnel']:.2f}× baseline", "", None)


def connect_rows(r, row):
    c = r["connect"]
    row(f"CONNECT tunnel bulk (TLS), 2 × {c['mib_each']} MiB", f"{c['direct_mibs']:,.0f} MiB/s",
        f"{c['proxy_mibs']:,.0f} MiB/s", f"{c['squid_mibs']:,.0f} MiB/s",
        f"{c['proxy_mibs'] / c['direct_mibs']:.2f} of direct", "≥ 0.95 of direct",
        c["proxy_mibs"] >= 0.95 * c["direct_mibs"])
    row("proxy CPU per GiB tunnelled", "", f"{c['cpu_s_per_gib']:.3f} s", f"{c['squid_cpu_s_per_gib']:.3f} s",
        f"{c['cpu_s_per_gib'] / c['squid_cpu_s_per_gib']:.2f}× Squid", "≤ 0.4× Squid",
        c["cpu_s_per_gib"] <= 0.4 * c["squid_cpu_s_per_gib"])


def forward_rows(r, row):
    f = r["forward"]
    row(f"plain HTTP forwarding, 100 MiB bodies ({f['repeat']} per run)", f"{f['direct_mibs']:,.0f} MiB/s",
        f"{f['proxy_mibs']:,.0f} MiB/s", f"{f['squid_mibs']:,.0f} MiB/s",
        f"{f['proxy_mibs'] / f['direct_mibs']:.2f} of direct", "≥ 0.85 of direct",
        f["proxy_mibs"] >= 0.85 * f["direct_mibs"])
    row("proxy CPU per GiB forwarded", "", f"{f['cpu_s_per_gib']:.2f} s", f"{f['squid_cpu_s_per_gib']:.2f} s",
        f"{f['cpu_s_per_gib'] / f['squid_cpu_s_per_gib']:.2f}× Squid", "", None)


def main():
    cmd = sys.argv[1]
    if cmd == "wrk":
        print(json.dumps(parse_wrk(sys.argv[2])))
    elif cmd == "idle":
        idle(int(sys.argv[2]), sys.argv[3], sys.argv[4], int(sys.argv[5]))
    elif cmd == "criterion":
        criterion_table(sys.argv[2])
    elif cmd == "lastseq":
        print(last_seq(sys.argv[2]))
    elif cmd == "collect":
        print(json.dumps(collect(*sys.argv[2:8]), indent=1))
    elif cmd == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
