#!/usr/bin/env bash
# fuzz/run.sh SECONDS [--debug-assertions]
# Runs every cargo-fuzz target for SECONDS seconds (default 60), then minimises its corpus in
# place (fuzz/corpus/<target>, kept in the repository) and prints each target's executions.
# Crashes and miscompiles land in fuzz/artifacts/<target>/; the script goes on with the other
# targets and fails at the end, naming them. To keep one as a regression test:
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin -O <target> fuzz/artifacts/<target>/<file>
#   cp <the minimised file> fuzz/regressions/<target>/<what it found>
# (`cargo test` replays fuzz/corpus and fuzz/regressions through the targets' bodies.)
#
# Only the stable toolchain exists on these machines. cargo-fuzz passes nightly flags
# (-Zsanitizer=address and libFuzzer's coverage passes); RUSTC_BOOTSTRAP=1 lets the stable
# compiler accept them.
#
# The default build is release without overflow checks (fastest); `cargo test` replays every
# corpus file with overflow checks. --debug-assertions fuzzes with them (and with Cranelift's IR
# verifier on every generated kernel), slower and after a full rebuild.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-60}"
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || { echo "usage: fuzz/run.sh SECONDS [--debug-assertions]" >&2; exit 2; }
build=(-O)
case "${2:-}" in
  "") ;;
  --debug-assertions) build+=(-a) ;;
  *) echo "usage: fuzz/run.sh SECONDS [--debug-assertions]" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
cargo fuzz build "${build[@]}"
mkdir -p logs
failed=()
summary=""
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target" "artifacts/$target"
  log="logs/$target.log"
  echo "== $target: ${seconds} s"
  # -rss_limit_mb: a target that allocates without bound fails; -timeout: one input may not hang.
  if ! cargo fuzz run "${build[@]}" "$target" "corpus/$target" -- -max_total_time="$seconds" -rss_limit_mb=3072 \
    -timeout=120 -print_final_stats=1 >"$log" 2>&1; then
    failed+=("$target")
    tail -n 30 "$log"
  fi
  executions=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
  # Keep the corpus small: only inputs that add coverage stay.
  cargo fuzz cmin "${build[@]}" "$target" "corpus/$target" >"logs/$target.cmin.log" 2>&1 || true
  files=$(find "corpus/$target" -type f | wc -l)
  summary+="$target: $executions executions in ${seconds} s, corpus $files files"$'\n'
done
printf '%s' "$summary"
if [ "${#failed[@]}" -gt 0 ]; then
  echo "crashes or miscompiles in: ${failed[*]} (inputs in fuzz/artifacts/, logs in fuzz/logs/)" >&2
  exit 1
fi
