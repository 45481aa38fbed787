#!/usr/bin/env bash
# Installs the tools the test suite drives, on a fresh Debian machine.
# Safe to run again: only missing tools are installed, and `apt-get update`
# runs once, only when a Debian package is missing.
#
#   curl         used by tests and the README's examples
#   iproute2     tests/it/own_host.rs (a network namespace with a second address)
#   chromium     tests/it/pac.rs (headless Chromium with --proxy-pac-url) and
#                tests/it/history_browsers.rs (Chromium writes its own History)
#   firefox-esr  tests/it/history_browsers.rs (Firefox writes its own places.sqlite)
#   node + npm   tests/pac.rs: the real PAC engine in tests/pac_engine/
#                (pac-resolver on QuickJS, pinned by its package-lock.json);
#                tests/admin_browser.rs: playwright-core in tests/browser/
#                driving Debian's chromium (no browser download)
#   postgresql  tests/it/cluster.rs: each test runs its own server (initdb +
#                postgres in a temporary directory, as the unprivileged
#                `postgres` user when run as root); the system cluster the
#                package starts is never used
#   prometheus_client (PyPI)  tests/admin.rs parses /metrics with its parser
#   unbound, bind9-utils (named-checkzone), bind9-dnsutils (dig), dnsmasq-base,
#   squid        tests/it/dns.rs: the exported policy checked by the programs
#                that consume it, a real Unbound as upstream and RPZ resolver
#   slapd + ldap-utils  tests/it/directory.rs starts its own OpenLDAP slapd
#                (own slapd.conf, temp dir, loopback ports; the package's own
#                instance is never used) and loads it with ldapadd/ldapmodify
#   systemd      tests/package.rs: systemd-analyze verify/security on the unit
#                (only the tool: no running systemd is needed or started)
#   adduser      the .deb's postinst creates the `weerwal` system user with it
#   cargo-deb    tests/package.rs builds the .deb (crates.io, pinned version)
#   certutil (libnss3-tools)  tests/it/hardening2.rs: Chromium trusts a test CA
#                through its NSS database
#   script (bsdutils), strace  tests/it/hardening2.rs: `users add` on a real
#                terminal; the dashboard's file accesses while it serves
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi

need=()
command -v curl >/dev/null || need+=(curl)
command -v ip >/dev/null || need+=(iproute2)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v firefox-esr >/dev/null || need+=(firefox-esr)
# The machine image ships Node.js 20 with npm; Debian's own nodejs is only
# the fallback for a machine without any.
command -v node >/dev/null || need+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v unbound >/dev/null || need+=(unbound)
command -v named-checkzone >/dev/null || need+=(bind9-utils)
command -v dig >/dev/null || need+=(bind9-dnsutils)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v squid >/dev/null || [ -x /usr/sbin/squid ] || need+=(squid)
[ -x /usr/sbin/slapd ] || need+=(slapd)
command -v ldapadd >/dev/null || need+=(ldap-utils)
# The Debian package test (tests/it/package.rs).
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v adduser >/dev/null || need+=(adduser)
command -v certutil >/dev/null || need+=(libnss3-tools)
command -v script >/dev/null || need+=(bsdutils)
command -v strace >/dev/null || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  # unbound and squid are services in Debian: the tests start their own
  # instances, so the system ones are not started by the install (a system
  # Squid would take port 3128, weerwal's default). policy-rc.d is Debian's
  # switch for that; one already present is left alone.
  added_policy_rc=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    added_policy_rc=yes
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
  [ -z "$added_policy_rc" ] || $SUDO rm -f /usr/sbin/policy-rc.d
fi

# The PAC engine: installed exactly as locked, into tests/pac_engine/node_modules
# (git-ignored). Re-run only when it is missing or the lock file changed.
engine=tests/pac_engine
if [ ! -f "$engine/node_modules/pac-resolver/package.json" ] \
  || [ ! -f "$engine/node_modules/quickjs-wasi/package.json" ] \
  || [ "$engine/package-lock.json" -nt "$engine/node_modules/.package-lock.json" ]; then
  (cd "$engine" && npm ci --ignore-scripts --no-audit --no-fund)
fi

# The dashboard's browser test: playwright-core (a library only: it drives
# /usr/bin/chromium and never downloads a browser), installed as locked.
browser=tests/browser
if [ ! -f "$browser/node_modules/playwright-core/package.json" ] \
  || [ "$browser/package-lock.json" -nt "$browser/node_modules/.package-lock.json" ]; then
  (cd "$browser" && npm ci --ignore-scripts --no-audit --no-fund)
fi

# The Prometheus text-format parser tests/admin.rs checks /metrics with.
if ! python3 -c 'import prometheus_client.parser' 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'prometheus_client==0.26.0' \
    || { $SUDO apt-get update -qq \
         && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends python3-prometheus-client; }
fi

# The Debian package test builds the .deb with cargo-deb (from the binary
# `cargo test` builds anyway: no release build). Pinned: newer versions
# may refuse the dev profile the test packages.
if ! cargo deb --version >/dev/null 2>&1; then
  cargo install cargo-deb --locked --version 3.8.0
fi
