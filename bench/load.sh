#!/usr/bin/env bash
# Load benchmark for weerwal (issues 8 and 21). Everything runs on loopback
# inside a private network namespace that has only `lo`, so no DNS or other
# traffic ever leaves the machine; every step is bounded in time.
#
#   bench/load.sh            full run (~10 min): wrk 10 s per measurement, 3 rounds
#   bench/load.sh --quick    smoke run (~1 min): 2 s, 1 round, smaller transfers
#
# Environment: DURATION (s per wrk and set-up run), ROUNDS, BIG_MIB,
# BULK_REPEAT, FWD_RUNS, FWD_REPEAT, IDLE_CONNS, SETUP_CONNS (concurrent
# tunnel set-ups), HOLD_TUNNELS/HOLD_SECS/HOLD_EVERY_MS (many open tunnels,
# each trickling); ONLY="get connect fwd setup hold idle" runs only those
# parts (the table then shows only their rows); BASELINE=path/to/weerwal
# also runs that binary (an A/B of two builds in the same run) on
# 127.0.0.1:3130 in the set-up and many-tunnel parts; WEERWAL_BIN and
# SETUP_TOOL: use these binaries instead of building; KEEP=1 keeps the work directory (raw outputs in its
# out/); PERF=1 also profiles weerwal with perf during extra runs (reports
# in out/perf.*.txt). Needs root (apt-get, unshare -n).
# Prints one Markdown table: every figure beside the same origin reached
# directly and through Squid (Debian's, plain forwarding and CONNECT, no
# SSL bump), in the same run, with the ratios the targets are set in. Run
# it on an otherwise idle machine: on 2 cores every other process moves the
# ratios (the header says how busy it was).
#
# Origin: nginx (Debian) on 127.0.0.1:8080 (HTTP) and 127.0.0.1:8443 (TLS,
# an ECDSA P-256 certificate from a CA made for the run) serving 1 KiB,
# 100 MiB and 512 MiB files. Proxies: target/release/weerwal on
# 127.0.0.1:3128, with the shipped policy plus 10,000 synthetic domains and
# the audit log on (sync = "write"); Squid on 127.0.0.1:3129 (no cache, no
# access log). Tunnel set-ups: the Rust load tool bench/tunnel_setup.rs.
# bench/RESULTS.md has the latest results and what they mean.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
QUICK=0
if [[ "${1:-}" == "--quick" ]]; then QUICK=1; shift; fi
if [[ $QUICK == 1 ]]; then
    DURATION=${DURATION:-2}; ROUNDS=${ROUNDS:-1}; BIG_MIB=${BIG_MIB:-128}; BULK_REPEAT=${BULK_REPEAT:-2}
    SETUP_CONNS=${SETUP_CONNS:-32}; HOLD_TUNNELS=${HOLD_TUNNELS:-1000}; HOLD_SECS=${HOLD_SECS:-8}
    FWD_RUNS=${FWD_RUNS:-1}; FWD_REPEAT=${FWD_REPEAT:-3}; IDLE_CONNS=${IDLE_CONNS:-2000}
else
    DURATION=${DURATION:-10}; ROUNDS=${ROUNDS:-3}; BIG_MIB=${BIG_MIB:-512}; BULK_REPEAT=${BULK_REPEAT:-4}
    SETUP_CONNS=${SETUP_CONNS:-32}; HOLD_TUNNELS=${HOLD_TUNNELS:-5000}; HOLD_SECS=${HOLD_SECS:-16}
    FWD_RUNS=${FWD_RUNS:-3}; FWD_REPEAT=${FWD_REPEAT:-10}; IDLE_CONNS=${IDLE_CONNS:-10000}
fi
HOLD_EVERY_MS=${HOLD_EVERY_MS:-2000}
ONLY=${ONLY:-get connect fwd setup hold idle}
BASELINE=${BASELINE:-}
export DURATION ROUNDS BIG_MIB BULK_REPEAT FWD_RUNS FWD_REPEAT IDLE_CONNS SETUP_CONNS QUICK
export HOLD_TUNNELS HOLD_SECS HOLD_EVERY_MS ONLY BASELINE
ORIGIN=127.0.0.1:8080
TLS_ORIGIN=127.0.0.1:8443
PROXY=127.0.0.1:3128
SQUID=127.0.0.1:3129
BASE_PROXY=127.0.0.1:3130
ECHO=127.0.0.1:7000
export ORIGIN TLS_ORIGIN PROXY SQUID ROOT BASE_PROXY ECHO
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY no_proxy NO_PROXY all_proxy ALL_PROXY

log() { printf '[load.sh %s] %s\n' "$(date +%T)" "$*" >&2; }

if [[ "${1:-}" != "--inner" ]]; then
    # ---------------------------------------------------------------- outside
    [[ $(id -u) == 0 ]] || { echo "bench/load.sh needs root (apt-get, unshare -n)" >&2; exit 2; }
    missing=()
    command -v wrk >/dev/null || missing+=(wrk)
    [[ -x /usr/sbin/nginx ]] || missing+=(nginx-light)
    command -v curl >/dev/null || missing+=(curl)
    command -v python3 >/dev/null || missing+=(python3)
    command -v ip >/dev/null || missing+=(iproute2)
    command -v ss >/dev/null || missing+=(iproute2)
    command -v strace >/dev/null || missing+=(strace)
    [[ -x /usr/sbin/squid ]] || missing+=(squid)
    command -v openssl >/dev/null || missing+=(openssl)
    [[ "${PERF:-0}" != 1 ]] || command -v perf >/dev/null || missing+=(linux-perf)
    if ((${#missing[@]})); then
        log "installing ${missing[*]} from Debian"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [[ -z "${WEERWAL_BIN:-}" ]]; then
        log "building weerwal --release and the tunnel set-up tool"
        # One build: the proxy and the tool share the library build.
        (cd "$ROOT" && cargo build --release --features bench-tools --bin weerwal --bin tunnel_setup 2>&1 | tail -1 >&2)
    fi
    # WEERWAL_BIN and SETUP_TOOL: binaries built before (no build then).
    WEERWAL_BIN=${WEERWAL_BIN:-$ROOT/target/release/weerwal}
    SETUP_TOOL=${SETUP_TOOL:-$ROOT/target/release/tunnel_setup}
    [[ -x "$SETUP_TOOL" ]] || { echo "building bench/tunnel_setup.rs failed" >&2; exit 1; }
    export SETUP_TOOL WEERWAL_BIN
    WORK=$(mktemp -d /tmp/weerwal-load.XXXXXX)
    export WORK
    trap '[[ "${KEEP:-0}" == 1 ]] && log "kept $WORK" || rm -rf "$WORK"' EXIT
    DATA=${WEERWAL_BENCH_DATA:-/tmp/weerwal-bench-data}
    mkdir -p "$DATA" "$WORK/www" "$WORK/policy" "$WORK/logs" "$WORK/nginx" "$WORK/tls" "$WORK/squid"
    # Bodies of random bytes (cached between runs), served from the page cache.
    [[ -s "$DATA/1k" ]] || head -c 1024 /dev/urandom >"$DATA/1k"
    [[ $(stat -c %s "$DATA/100m" 2>/dev/null || echo 0) == $((100 << 20)) ]] \
        || head -c $((100 << 20)) /dev/urandom >"$DATA/100m"
    [[ $(stat -c %s "$DATA/big$BIG_MIB" 2>/dev/null || echo 0) == $((BIG_MIB << 20)) ]] \
        || head -c $((BIG_MIB << 20)) /dev/urandom >"$DATA/big$BIG_MIB"
    ln -s "$DATA/1k" "$WORK/www/1k"
    ln -s "$DATA/100m" "$WORK/www/100m"
    ln -s "$DATA/big$BIG_MIB" "$WORK/www/big"
    cat "$DATA/1k" "$DATA/100m" "$DATA/big$BIG_MIB" >/dev/null # into the page cache

    # The TLS origin's certificate: ECDSA P-256, from a CA made for this run
    # (the clients verify it, as a browser would).
    (
        cd "$WORK/tls"
        openssl ecparam -name prime256v1 -genkey -noout -out ca.key
        openssl req -x509 -new -key ca.key -subj /CN=weerwal-bench-ca -days 7 -out ca.pem
        openssl ecparam -name prime256v1 -genkey -noout -out origin.key
        openssl req -new -key origin.key -subj /CN=localhost -out origin.csr
        printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' >ext
        openssl x509 -req -in origin.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 7 -extfile ext \
            -out origin.pem
    ) 2>/dev/null

    # Policy: the shipped files plus 10,000 synthetic domains, named as in
    # bench/synthetic.rs (the Rust benchmarks use the same scheme).
    cp "$ROOT"/policy/*.toml "$WORK/policy/"
    awk 'BEGIN {
        split("shop media cdn api static news mail play", W, " ");
        split("com net org nl ru cn io de", T, " ");
        print "[[ban]]\napp = \"Synthetic 0000\"\nadvice = \"NCSC\"\nreference = \"benchmark\"\nsince = \"2023-07-14\"\ndomains = [";
        for (i = 0; i < 10000; i++) {
            w = W[int(i / 8) % 8 + 1]; t = T[i % 8 + 1];
            if (i % 3 == 0) printf "  \"%s.s%07x-x.%s\",\n", w, i, t; else printf "  \"s%07x-%s.%s\",\n", i, w, t;
        }
        print "]";
    }' >"$WORK/policy/synthetic-0000.toml"

    cat >"$WORK/weerwal.toml" <<EOF
[proxy]
listen = "$PROXY"
allow_clients = ["127.0.0.0/8"]
# 8443: the tunnel tests reach the local nginx's TLS port.
# 7000: the echo origin of the many-tunnels part.
connect_ports = [443, 7000, 8080, 8443]
# One client address opens the 10,000 idle connections of test (e).
max_connections = 20000
max_connections_per_client = 20000

[policy]
dir = "policy"

[audit]
path = "logs/audit.jsonl"
sync = "write"
# Every blocked attempt written as its own record (no coalescing of a
# looping client's repeats): the audit writer's worst case, and what the
# "audit records" row counts.
coalesce_after = 0

[ca]
dir = "certs"
organisation = "Gemeente Bench"
EOF
    cat >"$WORK/nginx/nginx.conf" <<EOF
user root;
worker_processes auto;
worker_rlimit_nofile 16384;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 20000; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 120s;
    keepalive_requests 1000000;
    default_type application/octet-stream;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    server {
        listen $ORIGIN;
        root $WORK/www;
    }
    server {
        listen $TLS_ORIGIN ssl;
        ssl_certificate $WORK/tls/origin.pem;
        ssl_certificate_key $WORK/tls/origin.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        # Every tunnel set-up a full handshake, as to a site not seen before.
        ssl_session_cache off;
        ssl_session_tickets off;
        root $WORK/www;
    }
}
EOF
    # Squid as Debian ships it, as a plain forward proxy: no cache, no access
    # log, CONNECT to the TLS origin's port, one process (-N).
    cat >"$WORK/squid/squid.conf" <<EOF
http_port $SQUID
acl localnet src 127.0.0.0/8
acl Safe_ports port 7000 8080 8443
acl SSL_ports port 7000 8443
acl CONNECT method CONNECT
http_access deny !Safe_ports
http_access deny CONNECT !SSL_ports
http_access allow localnet
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log $WORK/squid/cache.log
pid_filename $WORK/squid/squid.pid
coredump_dir $WORK/squid
pinger_enable off
dns_nameservers 127.0.0.1
max_filedescriptors 20000
shutdown_lifetime 1 seconds
EOF
    chown -R proxy "$WORK/squid" 2>/dev/null || true
    # How busy the machine is without us: CPU use over 5 s, from /proc/stat.
    read -r _ a b c d e f g h _ </proc/stat; t1=$((a + b + c + d + e + f + g + h)); i1=$((d + e))
    sleep 5
    read -r _ a b c d e f g h _ </proc/stat; t2=$((a + b + c + d + e + f + g + h)); i2=$((d + e))
    BUSY_BEFORE=$((100 - 100 * (i2 - i1) / (t2 - t1)))
    LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
    export BUSY_BEFORE LOAD_BEFORE
    log "CPU busy over the last 5 s: $BUSY_BEFORE %; load average $LOAD_BEFORE; work dir $WORK"
    timeout --kill-after=10 1500 unshare -n -- bash "${BASH_SOURCE[0]}" --inner
    exit $?
fi

# -------------------------------------------------------------- inside netns
ip link set lo up
# Tunnel set-ups open tens of thousands of short connections: a wide port
# range and TIME_WAIT reuse in this namespace (its own sysctls) keep the
# client from running out of ports.
sysctl -qw net.ipv4.ip_local_port_range="10000 65000" net.ipv4.tcp_tw_reuse=1 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" # 20000 in this sandbox; test (e) needs > IDLE_CONNS
OUT=$WORK/out
mkdir -p "$OUT"
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
TICK=$(getconf CLK_TCK)

wait_port() { # host:port
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/${1%:*}/${1#*:}") 2>/dev/null && return 0
        sleep 0.1
    done
    echo "nothing listens on $1" >&2
    return 1
}
cpu_ticks() { # pid [pid...]: utime+stime of the processes, in clock ticks
    local total=0 p
    for p in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
    done
    echo "$total"
}
seq_now() { python3 "$ROOT/bench/loadtool.py" lastseq "$WORK/logs"; } # records so far (the log rotates)
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
median() { sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }

/usr/sbin/nginx -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" &
PIDS+=($!)
NGINX=$!
wait_port "$ORIGIN"
NGINX_PIDS=$(pgrep -P "$NGINX" | tr '\n' ' ')

/usr/sbin/squid -N -f "$WORK/squid/squid.conf" >"$OUT/squid.out" 2>&1 &
SQUID_PID=$!
PIDS+=($SQUID_PID)
wait_port "$SQUID"

cd "$WORK"
"$WEERWAL_BIN" serve --config "$WORK/weerwal.toml" >"$OUT/weerwal.log" 2>&1 &
WEERWAL=$!
PIDS+=($WEERWAL)
wait_port "$PROXY"
BASE_PID=
if [[ -n "$BASELINE" ]]; then
    # The A/B build: the same configuration on another port and log.
    mkdir -p "$WORK/base"
    cp -r "$WORK/policy" "$WORK/base/"
    sed -e "s/$PROXY/$BASE_PROXY/" "$WORK/weerwal.toml" >"$WORK/base/weerwal.toml"
    (cd "$WORK/base" && exec "$BASELINE" serve --config "$WORK/base/weerwal.toml") >"$OUT/base.log" 2>&1 &
    BASE_PID=$!
    PIDS+=($BASE_PID)
    wait_port "$BASE_PROXY"
fi
# The echo origin of the many-tunnels part.
"$SETUP_TOOL" echo "$ECHO" &
PIDS+=($!)
wait_port "$ECHO"
sleep 2
RSS_IDLE=$(rss_kib "$WEERWAL")
log "weerwal pid $WEERWAL idle RSS ${RSS_IDLE} KiB; nginx workers $NGINX_PIDS"

# Sanity: the origin answers directly and through the proxy; a banned host is blocked.
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$@"; }
[[ $(code "http://$ORIGIN/1k") == 200 ]] || { echo "origin not serving" >&2; exit 1; }
[[ $(code -x "http://$PROXY" "http://$ORIGIN/1k") == 200 ]] || { echo "proxy not forwarding" >&2; exit 1; }
[[ $(code -x "http://$PROXY" "http://aliexpress.com/") == 403 ]] || { echo "proxy not blocking" >&2; exit 1; }
[[ $(code -x "http://$SQUID" "http://$ORIGIN/1k") == 200 ]] || { echo "squid not forwarding" >&2; exit 1; }
TLS_URL="https://$TLS_ORIGIN"
CACERT=(--cacert "$WORK/tls/ca.pem")
[[ $(code "${CACERT[@]}" "$TLS_URL/1k") == 200 ]] || { echo "TLS origin not serving" >&2; exit 1; }
[[ $(code "${CACERT[@]}" -x "http://$PROXY" "$TLS_URL/1k") == 200 ]] || { echo "proxy not tunnelling" >&2; exit 1; }
[[ $(code "${CACERT[@]}" -x "http://$SQUID" "$TLS_URL/1k") == 200 ]] || { echo "squid not tunnelling" >&2; exit 1; }

# Every request carries a browser's User-Agent, as real traffic does (weerwal
# scans it for app signatures); direct requests carry the same header.
UA="Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
cat >"$OUT/proxied.lua" <<EOF
-- wrk connects to the proxy; the request line names the origin (absolute form).
wrk.path = "http://$ORIGIN/1k"
wrk.headers["User-Agent"] = "$UA"
EOF
cat >"$OUT/blocked.lua" <<EOF
wrk.path = "http://m.aliexpress.com/"
wrk.headers["User-Agent"] = "$UA"
EOF
WRK=(timeout $((DURATION + 30)) wrk -t2 -c50 -d"${DURATION}s" --latency)
want() { [[ " $ONLY " == *" $1 "* ]]; }

# (a) small allowed GETs, direct vs through weerwal, and (b) blocked GETs.
want get && for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: 1 KiB GETs direct"
    n0=$(cpu_ticks $NGINX_PIDS)
    "${WRK[@]}" -H "User-Agent: $UA" "http://$ORIGIN/1k" >"$OUT/direct.$r.txt"
    echo "$(( $(cpu_ticks $NGINX_PIDS) - n0 ))" >"$OUT/direct.$r.nginxticks"
    log "round $r/$ROUNDS: 1 KiB GETs through weerwal"
    w0=$(cpu_ticks "$WEERWAL"); n0=$(cpu_ticks $NGINX_PIDS)
    "${WRK[@]}" -s "$OUT/proxied.lua" "http://$PROXY" >"$OUT/proxy.$r.txt"
    echo "$(( $(cpu_ticks "$WEERWAL") - w0 ))" >"$OUT/proxy.$r.ticks"
    log "round $r/$ROUNDS: 1 KiB GETs through Squid"
    s0=$(cpu_ticks "$SQUID_PID")
    "${WRK[@]}" -s "$OUT/proxied.lua" "http://$SQUID" >"$OUT/squid.$r.txt"
    echo "$(( $(cpu_ticks "$SQUID_PID") - s0 ))" >"$OUT/squid.$r.ticks"
    log "round $r/$ROUNDS: blocked GETs through weerwal"
    a0=$(seq_now)
    "${WRK[@]}" -s "$OUT/blocked.lua" "http://$PROXY" >"$OUT/blocked.$r.txt"
    sleep 0.5
    echo "$(( $(seq_now) - a0 ))" >"$OUT/blocked.$r.records"
done

# PERF=1: profile weerwal (perf, software clock, DWARF call graphs) during
# extra short runs of (a) and (b); the reports go to $OUT/perf.*.txt.
if [[ "${PERF:-0}" == 1 ]] && want get; then
    for what in proxied blocked; do
        log "profiling weerwal: $what GETs"
        timeout 60 perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$WEERWAL" \
            -o "$OUT/perf.$what.data" -- sleep $((DURATION < 5 ? DURATION : 5)) 2>/dev/null &
        PERFPID=$!
        timeout $((DURATION + 30)) wrk -t2 -c50 -d$((DURATION < 5 ? DURATION : 5))s -s "$OUT/$what.lua" \
            "http://$PROXY" >"$OUT/perf.$what.wrk.txt"
        wait "$PERFPID" || true
        perf report -i "$OUT/perf.$what.data" --no-children --stdio --percent-limit 0.7 -g none \
            >"$OUT/perf.$what.txt" 2>/dev/null || true
        perf report -i "$OUT/perf.$what.data" --children --stdio --percent-limit 2 -g none \
            >"$OUT/perf.$what.children.txt" 2>/dev/null || true
    done
fi

# How many write(2) calls the audit writer made for one round of blocked
# requests (strace, if present, on the writer thread only; a short extra run).
AUDIT_WRITES=-1
if command -v strace >/dev/null && want get; then
    TID=$(grep -l '^audit-writer' /proc/"$WEERWAL"/task/*/comm | head -1 | cut -d/ -f5)
    if [[ -n "$TID" ]]; then
        a0=$(seq_now)
        timeout 20 strace -qq -e trace=write,writev,pwrite64 -o "$OUT/audit.strace" -p "$TID" &
        ST=$!
        sleep 1
        timeout 15 wrk -t2 -c50 -d2s -s "$OUT/blocked.lua" "http://$PROXY" >/dev/null
        sleep 0.5
        kill "$ST" 2>/dev/null || true
        wait "$ST" 2>/dev/null || true
        AUDIT_WRITES=$(grep -c 'write' "$OUT/audit.strace" || true)
        echo "$(( $(seq_now) - a0 ))" >"$OUT/strace.records"
    fi
fi

# Bulk transfers: STREAMS parallel curl processes, each fetching PATH REPEAT
# times over one connection; the rate is all bytes over the wall time.
xfer() { # streams repeat base-url path curl-args...: aggregate MiB/s
    local streams=$1 repeat=$2 base=$3 path=$4 t0 t1 i j bytes want size pids=() urls=()
    shift 4
    size=$(stat -L -c %s "$WORK/www/$path")
    for ((j = 0; j < repeat; j++)); do urls+=(-o /dev/null "$base/$path"); done
    t0=$(date +%s.%N)
    for ((i = 1; i <= streams; i++)); do
        timeout 300 curl -s -w '%{size_download} %{http_code}\n' "$@" "${urls[@]}" >"$OUT/xfer.$i" &
        pids+=($!)
    done
    wait "${pids[@]}" || true
    t1=$(date +%s.%N)
    bytes=$(cat "$OUT"/xfer.* | awk '$2 == 200 {s += $1} END {printf "%.0f\n", s}')
    want=$((streams * repeat * size))
    if [[ $bytes != "$want" ]]; then
        echo "bulk transfer incomplete: $bytes of $want bytes" >&2
        head -c 2000 "$OUT"/xfer.* | cat -v >&2
        exit 1
    fi
    rm -f "$OUT"/xfer.*
    awk -v b="$bytes" -v a="$t0" -v z="$t1" 'BEGIN {printf "%.1f\n", b / 1048576 / (z - a)}'
}

# (c) CONNECT tunnel bulk: 2 parallel streams of BULK_REPEAT x BIG_MIB each,
# HTTPS to the TLS origin (curl -x: CONNECT, then TLS inside the tunnel,
# which the proxies only carry). Direct: the same curl without a proxy.
want connect && for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: CONNECT bulk 2 streams x $BULK_REPEAT x $BIG_MIB MiB (direct, weerwal, Squid)"
    xfer 2 "$BULK_REPEAT" "$TLS_URL" big "${CACERT[@]}" >>"$OUT/connect.direct"
    w0=$(cpu_ticks "$WEERWAL")
    xfer 2 "$BULK_REPEAT" "$TLS_URL" big "${CACERT[@]}" -x "http://$PROXY" >>"$OUT/connect.proxy"
    echo "$(( $(cpu_ticks "$WEERWAL") - w0 ))" >>"$OUT/connect.ticks"
    s0=$(cpu_ticks "$SQUID_PID")
    xfer 2 "$BULK_REPEAT" "$TLS_URL" big "${CACERT[@]}" -x "http://$SQUID" >>"$OUT/connect.squid"
    echo "$(( $(cpu_ticks "$SQUID_PID") - s0 ))" >>"$OUT/connect.squidticks"
done

# (d) plain HTTP forwarding of a 100 MiB body (FWD_REPEAT times on one
# keep-alive connection per run), direct, weerwal and Squid in turn.
want fwd && for i in $(seq "$FWD_RUNS"); do
    log "forward run $i/$FWD_RUNS: $FWD_REPEAT x 100 MiB (direct, weerwal, Squid)"
    xfer 1 "$FWD_REPEAT" "http://$ORIGIN" 100m >>"$OUT/fwd.direct"
    w0=$(cpu_ticks "$WEERWAL")
    xfer 1 "$FWD_REPEAT" "http://$ORIGIN" 100m -x "http://$PROXY" >>"$OUT/fwd.proxy"
    echo "$(( $(cpu_ticks "$WEERWAL") - w0 ))" >>"$OUT/fwd.ticks"
    s0=$(cpu_ticks "$SQUID_PID")
    xfer 1 "$FWD_REPEAT" "http://$ORIGIN" 100m -x "http://$SQUID" >>"$OUT/fwd.squid"
    echo "$(( $(cpu_ticks "$SQUID_PID") - s0 ))" >>"$OUT/fwd.squidticks"
done

# (f) tunnel set-up rate: SETUP_CONNS workers, each in a loop: new
# connection, CONNECT, full TLS handshake with the origin through the
# tunnel, one 1 KiB GET, close (bench/tunnel_setup.rs). Direct: the same
# without CONNECT. CPU per tunnel from /proc as above (nginx's for direct).
SETUP=("$SETUP_TOOL" --ca "$WORK/tls/ca.pem" --origin "$TLS_ORIGIN" --name localhost --path /1k
    --conns "$SETUP_CONNS" --secs "$DURATION")
want setup && for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: tunnel set-ups (direct, weerwal, Squid)"
    n0=$(cpu_ticks $NGINX_PIDS)
    timeout $((DURATION + 60)) "${SETUP[@]}" >"$OUT/setup.direct.$r.json"
    echo "$(( $(cpu_ticks $NGINX_PIDS) - n0 ))" >"$OUT/setup.direct.$r.ticks"
    w0=$(cpu_ticks "$WEERWAL")
    timeout $((DURATION + 60)) "${SETUP[@]}" --proxy "$PROXY" >"$OUT/setup.proxy.$r.json"
    echo "$(( $(cpu_ticks "$WEERWAL") - w0 ))" >"$OUT/setup.proxy.$r.ticks"
    s0=$(cpu_ticks "$SQUID_PID")
    timeout $((DURATION + 60)) "${SETUP[@]}" --proxy "$SQUID" >"$OUT/setup.squid.$r.json"
    echo "$(( $(cpu_ticks "$SQUID_PID") - s0 ))" >"$OUT/setup.squid.$r.ticks"
    if [[ -n "$BASE_PID" ]]; then
        b0=$(cpu_ticks "$BASE_PID")
        timeout $((DURATION + 60)) "${SETUP[@]}" --proxy "$BASE_PROXY" >"$OUT/setup.base.$r.json"
        echo "$(( $(cpu_ticks "$BASE_PID") - b0 ))" >"$OUT/setup.base.$r.ticks"
    fi
done

# PERF=1: profile weerwal during extra short tunnel runs too (set-ups and
# bulk): $OUT/perf.setup*.txt, $OUT/perf.bulk*.txt.
if [[ "${PERF:-0}" == 1 ]]; then
    profile() { # name command...: perf report of weerwal while the command runs
        local name=$1
        shift
        timeout 120 perf record -q -e cpu-clock -F 999 --call-graph dwarf,16384 -p "$WEERWAL" \
            -o "$OUT/perf.$name.data" 2>/dev/null &
        local perfpid=$!
        sleep 0.5
        "$@" >/dev/null
        kill -INT "$perfpid" 2>/dev/null || true
        wait "$perfpid" || true
        perf report -i "$OUT/perf.$name.data" --no-children --stdio --percent-limit 0.7 -g none \
            >"$OUT/perf.$name.txt" 2>/dev/null || true
        perf report -i "$OUT/perf.$name.data" --children --stdio --percent-limit 2 -g none \
            >"$OUT/perf.$name.children.txt" 2>/dev/null || true
    }
    log "profiling weerwal: tunnel set-ups, tunnel bulk, forwarding (as run)"
    want setup && profile setup timeout 60 "${SETUP[@]}" --proxy "$PROXY"
    want fwd && profile fwd xfer 1 3 "http://$ORIGIN" 100m -x "http://$PROXY"
    want connect && profile bulk xfer 2 1 "$TLS_URL" big "${CACERT[@]}" -x "http://$PROXY"
fi

# (g) many open tunnels: HOLD_TUNNELS CONNECT tunnels to the echo origin
# (100 set-ups at a time), each starting with a TLS ClientHello and then
# sending 16 bytes every HOLD_EVERY_MS and reading them back, for
# HOLD_SECS. Each round starts a fresh proxy process on its own port (so
# no round reuses memory an earlier part or round freed: allocators keep
# freed pages), takes its RSS once it answers, and its RSS while the
# tunnels trickle (the tunnels' share: the difference over the number of
# tunnels) and its CPU over the trickling window, and the machine's
# unreclaimable kernel memory before and during; then stops it.
HOLD_PORT=3131
fresh_proxy() { # kind (weerwal|squid|base): starts one on 127.0.0.1:HOLD_PORT, prints its pid
    local kind=$1 dir="$WORK/hold-$1" bin=$WEERWAL_BIN
    rm -rf "$dir"
    mkdir -p "$dir"
    case $kind in
        squid)
            sed -e "s/^http_port .*/http_port 127.0.0.1:$HOLD_PORT/" -e "s#$WORK/squid/#$dir/#g" \
                "$WORK/squid/squid.conf" >"$dir/squid.conf"
            chown -R proxy "$dir" 2>/dev/null || true
            /usr/sbin/squid -N -f "$dir/squid.conf" >"$dir/out" 2>&1 &
            ;;
        *)
            [[ $kind == base ]] && bin=$BASELINE
            cp -r "$WORK/policy" "$dir/"
            sed -e "s/$PROXY/127.0.0.1:$HOLD_PORT/" "$WORK/weerwal.toml" >"$dir/weerwal.toml"
            (cd "$dir" && exec "$bin" serve --config "$dir/weerwal.toml") >"$dir/out" 2>&1 &
            ;;
    esac
    echo $!
}
# The kernel's unreclaimable slab memory, machine-wide (socket and pipe
# structures live there; pipe buffers are kernel memory, not the proxy's
# RSS): its growth while the tunnels are open, over the tunnels, is their
# kernel memory on all sides (client, proxy, echo origin), so it compares
# proxies but is not the proxy's alone.
kernel_kib() { awk '/^SUnreclaim:/ {print $2}' /proc/meminfo; }
hold() { # name kind round
    local name=$1 r=$3 ready="$OUT/hold.$1.$3.ready" pid before open t0 t1 open2 w0 w1 hp kb ko
    pid=$(fresh_proxy "$2")
    wait_port "127.0.0.1:$HOLD_PORT"
    sleep 2
    before=$(rss_kib "$pid"); kb=$(kernel_kib)
    timeout $((HOLD_SECS + 120)) "$SETUP_TOOL" hold --proxy "127.0.0.1:$HOLD_PORT" --origin "$ECHO" \
        --tunnels "$HOLD_TUNNELS" --every-ms "$HOLD_EVERY_MS" --secs "$HOLD_SECS" --ready "$ready" \
        >"$OUT/hold.$name.$r.json" &
    hp=$!
    for _ in $(seq 1200); do [[ -s "$ready" ]] && break; sleep 0.1; done
    sleep 2 # every tunnel has sent at least once
    open=$(rss_kib "$pid"); ko=$(kernel_kib); t0=$(cpu_ticks "$pid"); w0=$(date +%s.%N)
    sleep $((HOLD_SECS - 4))
    t1=$(cpu_ticks "$pid"); w1=$(date +%s.%N); open2=$(rss_kib "$pid")
    wait "$hp" || true
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    echo "$before $open $open2 $((t1 - t0)) $(awk -v a="$w0" -v b="$w1" 'BEGIN {print b - a}') $kb $ko" \
        >"$OUT/hold.$name.$r.meta"
}
want hold && for r in $(seq "$ROUNDS"); do
    log "round $r/$ROUNDS: $HOLD_TUNNELS open tunnels, a trickle each (fresh weerwal, Squid${BASELINE:+, baseline})"
    hold proxy weerwal "$r"
    hold squid squid "$r"
    if [[ -n "$BASELINE" ]]; then hold base base "$r"; fi
done


sleep 1
RSS_AFTER=$(rss_kib "$WEERWAL")

# (e) idle keep-alive client connections.
want idle && log "opening $IDLE_CONNS idle keep-alive connections"
want idle && timeout 300 python3 "$ROOT/bench/loadtool.py" idle "$IDLE_CONNS" "$PROXY" "http://$ORIGIN/1k" "$WEERWAL" >"$OUT/idle.json"

# ------------------------------------------------------------------ results
python3 "$ROOT/bench/loadtool.py" collect "$OUT" "$RSS_IDLE" "$RSS_AFTER" "$TICK" "$ROUNDS" "$AUDIT_WRITES" >"$OUT/results.json"
echo
echo "weerwal load benchmark — $(date -u +%FT%TZ), $(nproc) cores; before the run: CPU $BUSY_BEFORE % busy, load average $LOAD_BEFORE; at the end: load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "wrk -t2 -c50 -d${DURATION}s, median of $ROUNDS rounds; CONNECT: 2 streams × $BULK_REPEAT × $BIG_MIB MiB over TLS, median of $ROUNDS; forward: $FWD_REPEAT × 100 MiB per run, median of $FWD_RUNS; tunnel set-ups: $SETUP_CONNS at once for ${DURATION}s, median of $ROUNDS; many tunnels: $HOLD_TUNNELS, 16 bytes each way every $HOLD_EVERY_MS ms, median of $ROUNDS; parts run: $ONLY${BASELINE:+; baseline build: $BASELINE}"
echo
python3 "$ROOT/bench/loadtool.py" table "$OUT/results.json"
echo
if [[ "${KEEP:-0}" == 1 ]]; then echo "raw results: $OUT/results.json"; fi
