#!/usr/bin/env bash
# DNS listener benchmark (issue 19): queries per second through weerwal's
# `[dns]` listener against the same Unbound asked directly, in the same run,
# for allowed names (forwarded) and banned names (answered by weerwal, one
# audit record each; Unbound answers them from the exported `unbound`
# format); and weerwal's memory with 1,000,000 policy domains.
#
#   bench/dns.sh              full run: DURATION=10 s per dnsperf run, ROUNDS=3 (median)
#   bench/dns.sh --quick      smoke run: 2 s, 1 round, 10,000 domains
#
# Environment: DURATION, ROUNDS, DOMAINS (synthetic policy domains),
# CLIENTS (dnsperf -c), OUTSTANDING (dnsperf -q), KEEP=1 keeps the work
# directory. Needs dnsperf and unbound (installed from Debian when missing,
# as root). Everything listens on 127.0.0.1 on free ports; the programs it
# starts are stopped by PID. Results and their meaning: bench/RESULTS.md.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
if [[ "${1:-}" == "--quick" ]]; then QUICK=1; fi
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2}; ROUNDS=${ROUNDS:-1}; DOMAINS=${DOMAINS:-10000}
else
    DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; DOMAINS=${DOMAINS:-1000000}
fi
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}

log() { printf '[dns.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

need=()
command -v dnsperf >/dev/null || need+=(dnsperf)
command -v unbound >/dev/null || need+=(unbound)
command -v dig >/dev/null || need+=(bind9-dnsutils)
if [ ${#need[@]} -gt 0 ]; then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

BIN=${WEERWAL_BIN:-$ROOT/target/release/weerwal}
if [[ -z "${WEERWAL_BIN:-}" ]]; then
    log "building weerwal --release"
    (cd "$ROOT" && cargo build --release --quiet --bin weerwal)
fi

WORK=$(mktemp -d /tmp/weerwal-dns-bench.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [[ "${KEEP:-0}" == 1 ]]; then log "kept $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket
while True:
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", 0)); p = u.getsockname()[1]
    t = socket.socket()
    try:
        t.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

wait_answer() { # server port name
    for _ in $(seq 1 300); do
        if dig @"$1" -p "$2" +tries=1 +time=1 "$3" A 2>/dev/null | grep -q 'status: NOERROR'; then return 0; fi
        sleep 0.1
    done
    log "no answer from $1:$2"; return 1
}

# Policy: the shipped files plus DOMAINS synthetic ones (the scheme of
# bench/synthetic.rs, as in bench/load.sh).
mkdir -p "$WORK/policy" "$WORK/logs"
cp "$ROOT"/policy/*.toml "$WORK/policy/"
awk -v n="$DOMAINS" 'BEGIN {
    split("shop media cdn api static news mail play", W, " ");
    split("com net org nl ru cn io de", T, " ");
    print "[[ban]]\napp = \"Synthetic\"\nadvice = \"NCSC\"\nreference = \"benchmark\"\nsince = \"2023-07-14\"\ndomains = [";
    for (i = 0; i < n; i++) {
        w = W[int(i / 8) % 8 + 1]; t = T[i % 8 + 1];
        if (i % 3 == 0) printf "  \"%s.s%07x-x.%s\",\n", w, i, t; else printf "  \"s%07x-%s.%s\",\n", i, w, t;
    }
    print "]";
}' >"$WORK/policy/synthetic.toml"

# Upstream: Unbound answering the allowed names from local data, and the
# shipped policy's names from the exported `unbound` format (NXDOMAIN).
UPORT=$(free_port)
(cd "$ROOT" && "$BIN" policy export --format unbound >"$WORK/blocked.conf")
cat >"$WORK/unbound.conf" <<EOF
server:
    interface: 127.0.0.1
    port: $UPORT
    do-ip6: no
    do-daemonize: no
    username: ""
    chroot: ""
    directory: "$WORK"
    pidfile: "$WORK/unbound.pid"
    use-syslog: no
    logfile: "$WORK/unbound.log"
    verbosity: 0
    num-threads: 1
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    local-zone: "gemeente.test." static
    local-data: "www.gemeente.test. 300 IN A 192.0.2.10"
    local-data: "mail.gemeente.test. 300 IN A 192.0.2.11"
    local-data: "ibabs.gemeente.test. 300 IN A 192.0.2.12"
    local-data: "intranet.gemeente.test. 300 IN A 192.0.2.13"
include: "$WORK/blocked.conf"
remote-control:
    control-enable: no
EOF
unbound-checkconf "$WORK/unbound.conf" >/dev/null
unbound -d -c "$WORK/unbound.conf" >/dev/null 2>&1 &
UNBOUND=$!
PIDS+=("$UNBOUND")
wait_answer 127.0.0.1 "$UPORT" www.gemeente.test

WPORT=$(free_port)
cat >"$WORK/weerwal.toml" <<EOF
[proxy]
listen = "127.0.0.1:0"
[policy]
dir = "policy"
[audit]
path = "logs/audit.jsonl"
[dns]
listen = "127.0.0.1:$WPORT"
upstream = ["127.0.0.1:$UPORT"]
EOF
log "starting weerwal with $(( DOMAINS + $(cat "$ROOT"/policy/*.toml | grep -c '^    "' || true) )) policy domains"
start=$(date +%s.%N)
RUST_LOG=warn "$BIN" serve --config "$WORK/weerwal.toml" 2>"$WORK/weerwal.log" &
WEERWAL=$!
PIDS+=("$WEERWAL")
wait_answer 127.0.0.1 "$WPORT" www.gemeente.test
ready=$(printf '%.2f' "$(echo "$(date +%s.%N) - $start" | bc)")
rss() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
RSS_IDLE=$(rss "$WEERWAL")
HWM_START=$(hwm "$WEERWAL")

printf 'www.gemeente.test A\nmail.gemeente.test A\nibabs.gemeente.test A\nintranet.gemeente.test AAAA\n' >"$WORK/allowed.txt"
printf 'api16-normal-c-useast1a.tiktokv.com A\nwww.tiktok.com AAAA\nm.aliexpress.com A\nvk.com A\n' >"$WORK/blocked.txt"

# dnsperf: prints "Queries per second: N"; the median of ROUNDS runs.
perf_qps() { # port file name
    dnsperf -s 127.0.0.1 -p "$1" -d "$2" -l "$DURATION" -c "$CLIENTS" -q "$OUTSTANDING" -T 1 2>&1 \
        | tee -a "$WORK/dnsperf.$3" | awk '/Queries per second/ {print int($4)}'
}
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

declare -A RES
TICK=$(getconf CLK_TCK)
for kind in allowed blocked; do
    direct=(); via=(); cpu=()
    for _ in $(seq 1 "$ROUNDS"); do
        direct+=("$(perf_qps "$UPORT" "$WORK/$kind.txt" "$kind.direct")")
        c0=$(cpu_ticks "$WEERWAL")
        q=$(perf_qps "$WPORT" "$WORK/$kind.txt" "$kind.weerwal")
        c1=$(cpu_ticks "$WEERWAL")
        via+=("$q")
        # weerwal's CPU per answered query, µs.
        cpu+=("$(echo "($c1 - $c0) * 1000000 / $TICK / ($q * $DURATION)" | bc -l | xargs printf '%.1f')")
    done
    RES[$kind.direct]=$(printf '%s\n' "${direct[@]}" | median)
    RES[$kind.via]=$(printf '%s\n' "${via[@]}" | median)
    RES[$kind.cpu]=$(printf '%s\n' "${cpu[@]}" | median)
    log "$kind: direct ${direct[*]}; via weerwal ${via[*]}; weerwal CPU µs/query ${cpu[*]}"
done
RSS_AFTER=$(rss "$WEERWAL")
HWM_AFTER=$(hwm "$WEERWAL")
# Every file of the audit log: it rotates at 100 MiB during the banned run.
records=$(cat "$WORK"/logs/audit*.jsonl* 2>/dev/null | grep -c '"event":"blocked"' || true)
answered_blocked=$(awk '/Queries completed/ {n += $3} END {print n}' "$WORK/dnsperf.blocked.weerwal")

ratio() { echo "scale=1; 100 * $1 / $2" | bc; }
load=$(cut -d' ' -f1 /proc/loadavg)
echo
echo "DNS benchmark $(date -u +'%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, load average before: $load;"
echo "dnsperf -c $CLIENTS -q $OUTSTANDING -T 1, ${DURATION} s per run, median of $ROUNDS; Unbound $(unbound -V | head -1 | awk '{print $2}') num-threads 1."
echo
echo "| measurement | direct to Unbound | through weerwal | ratio |"
echo "| --- | ---: | ---: | ---: |"
echo "| allowed names, queries/s | ${RES[allowed.direct]} | ${RES[allowed.via]} | $(ratio "${RES[allowed.via]}" "${RES[allowed.direct]}") % |"
echo "| banned names, queries/s (weerwal: one audit record each) | ${RES[blocked.direct]} | ${RES[blocked.via]} | $(ratio "${RES[blocked.via]}" "${RES[blocked.direct]}") % |"
echo "| weerwal CPU per allowed / banned query | | ${RES[allowed.cpu]} / ${RES[blocked.cpu]} µs | |"
echo "| blocked records written / banned queries answered | | $records / $answered_blocked | |"
echo "| policy domains loaded | | $((DOMAINS)) + shipped, ready in $ready s | |"
echo "| weerwal RSS ready / after the load (peak) | | $((RSS_IDLE / 1024)) MiB / $((RSS_AFTER / 1024)) MiB ($((HWM_AFTER / 1024)) MiB; at start $((HWM_START / 1024)) MiB) | |"
