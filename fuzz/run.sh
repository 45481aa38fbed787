#!/usr/bin/env bash
# Runs each fuzz target for a bounded time: FUZZ_SECONDS each (default 60).
# Not part of `cargo test` or CI.
#
#   fuzz/run.sh                      # every target
#   FUZZ_SECONDS=600 fuzz/run.sh host_decide
#
# Engines, chosen in this order (FUZZ_ENGINE=cargo-fuzz|stable forces one):
#   cargo-fuzz  `cargo +nightly fuzz run`, when nightly and cargo-fuzz are
#               installed (adds AddressSanitizer);
#   stable      libFuzzer on the stable toolchain: the fuzz crate is built in
#               release mode with SanitizerCoverage passes (the flags below,
#               as cargo-fuzz sets them) and each binary is run directly.
#
# The corpus grows in fuzz/corpus/TARGET (git-ignored), seeded from
# fuzz/seeds/TARGET (tests/fixtures for client_hello). A crash or a failed
# invariant leaves its input in fuzz/artifacts/TARGET/ and makes this script
# exit 1; keep every such input as a row in tests/it/fuzz_regressions.rs.
set -euo pipefail
cd "$(dirname "$0")"

seconds=${FUZZ_SECONDS:-60}
all_targets=(client_hello host_decide policy_parse dns_query)
if [ $# -gt 0 ]; then targets=("$@"); else targets=("${all_targets[@]}"); fi

seeds_for() {
  case $1 in
    client_hello) echo ../tests/fixtures ;;
    *) echo "seeds/$1" ;;
  esac
}

# libFuzzer options per target: dictionaries, and room for whole policy files.
options_for() {
  case $1 in
    host_decide) echo "-dict=dicts/host.dict" ;;
    policy_parse) echo "-dict=dicts/policy.dict -max_len=16384" ;;
    dns_query) echo "-max_len=1024" ;;
    *) echo "" ;;
  esac
}

engine=${FUZZ_ENGINE:-}
if [ -z "$engine" ]; then
  if cargo +nightly fuzz --version >/dev/null 2>&1; then
    engine=cargo-fuzz
  else
    engine=stable
  fi
fi

# The fuzz crate has its own lock file; start it from the main crate's so
# both build the same dependency versions.
[ -f Cargo.lock ] || cp ../Cargo.lock Cargo.lock

host=$(rustc -vV | sed -n 's/^host: //p')
if [ "$engine" = stable ]; then
  echo "fuzz: building the targets with libFuzzer on stable ($(rustc --version))"
  # --target keeps these flags off build scripts and proc macros; a target
  # dir of its own keeps cargo-fuzz's (differently built) binaries apart.
  RUSTFLAGS="-Cpasses=sancov-module \
    -Cllvm-args=-sanitizer-coverage-level=4 \
    -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
    -Cllvm-args=-sanitizer-coverage-pc-table \
    -Cllvm-args=-sanitizer-coverage-trace-compares \
    --cfg fuzzing -Cdebug-assertions -Coverflow-checks" \
    cargo build --release --target "$host" --target-dir target/stable $(printf -- '--bin %s ' "${targets[@]}")
else
  echo "fuzz: using cargo-fuzz on nightly ($(cargo +nightly fuzz --version))"
fi

failed=()
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  log="artifacts/$t/last-run.log"
  # shellcheck disable=SC2046
  common=(-max_total_time="$seconds" -timeout=10 -print_final_stats=1 $(options_for "$t"))
  echo "fuzz: $t for ${seconds}s (log: fuzz/$log)"
  set +e
  if [ "$engine" = stable ]; then
    "target/stable/$host/release/$t" "${common[@]}" -artifact_prefix="artifacts/$t/" \
      "corpus/$t" "$(seeds_for "$t")" >"$log" 2>&1
  else
    cargo +nightly fuzz run "$t" "corpus/$t" "$(seeds_for "$t")" -- "${common[@]}" >"$log" 2>&1
  fi
  status=$?
  set -e
  grep -E '^stat::number_of_executed_units|^stat::new_units_added|^Done [0-9]+ runs' "$log" | sed 's/^/  /' || true
  if [ $status -ne 0 ]; then
    echo "fuzz: $t FAILED (exit $status); last lines of the log:"
    tail -n 30 "$log" | sed 's/^/  /'
    ls "artifacts/$t" | grep -v last-run.log | sed "s|^|  artifact: fuzz/artifacts/$t/|" || true
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: findings in: ${failed[*]}"
  exit 1
fi
echo "fuzz: no findings in ${targets[*]} (${seconds}s each)"
