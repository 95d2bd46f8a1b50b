#!/usr/bin/env bash
# The quick start's test command: installs what is missing, then builds and
# runs every test three ways:
#   1. a warning-free (-Werror) build: unit, integration and benchmark tests,
#      and every unit test again under valgrind;
#   2. an AddressSanitizer + UndefinedBehaviorSanitizer build of the whole suite;
#   3. a clang libFuzzer build: each fuzzer runs for FUZZ_SECONDS (default 60).
# Then the benchmarks print their figures.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
out=${MND_BUILD_DIR:-$top/build}
jobs=$(nproc)
fuzz_seconds=${FUZZ_SECONDS:-60}

step() { printf '\n==== %s\n' "$*"; }

# The unit tests (pure, or on a virtual clock) run in parallel.  Everything
# else runs one test at a time: the daemon, the simulated pens and the
# real-time link tests keep 50-250 ms heartbeat and lease deadlines, which a
# second test competing for the two CPUs can make them miss (the safe way:
# a pen reported not answering), so they get the machine to themselves.
# run_ctest BUILD_DIR [LABELS_TO_LEAVE_OUT]
run_ctest() {
        local dir=$1 skip=${2:-}

        ctest --test-dir "$dir" -j "$jobs" --output-on-failure --timeout 600 -L '^unit$' \
                ${skip:+-LE "$skip"}
        ctest --test-dir "$dir" -j 1 --output-on-failure --timeout 600 -LE "^unit\$${skip:+|$skip}"
}

step "dependencies"
"$top/scripts/install-deps.sh"

step "build: release with warnings as errors"
cmake -S "$top" -B "$out/release" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMND_WERROR=ON >/dev/null
ninja -C "$out/release"
step "tests: unit, integration, benchmarks (quick), valgrind"
run_ctest "$out/release"

step "build: AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S "$top" -B "$out/asan" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DMND_SANITIZE=ON -DMND_WERROR=ON >/dev/null
ninja -C "$out/asan"
step "tests under the sanitizers"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:verify_asan_link_order=0 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        run_ctest "$out/asan" '^bench$'

step "build: libFuzzer (clang)"
CC=clang cmake -S "$top" -B "$out/fuzz" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMND_FUZZ=ON >/dev/null
ninja -C "$out/fuzz"
step "fuzzing, ${fuzz_seconds} s per target"
fuzzers=0
for fuzzer in "$out"/fuzz/tests/fuzz/fuzz-*; do
        [ -x "$fuzzer" ] || continue
        name=$(basename "$fuzzer")
        corpus="$out/fuzz/corpus/$name"
        mkdir -p "$corpus"
        seeds="$top/tests/fuzz/corpus/${name#fuzz-}"
        echo "-- $name"
        log="$out/fuzz/$name.log"
        status=0
        "$fuzzer" -max_total_time="$fuzz_seconds" -print_final_stats=1 "$corpus" \
                $( [ -d "$seeds" ] && echo "$seeds" ) >"$log" 2>&1 || status=$?
        grep -E '^(stat::number_of_executed_units|stat::new_units_added|#[0-9]+ +DONE)' "$log" || true
        if [ "$status" -ne 0 ]; then
                tail -n 60 "$log"
                echo "$name failed (exit $status); the crashing input is named above" >&2
                exit 1
        fi
        fuzzers=$((fuzzers + 1))
done
if [ "$fuzzers" -eq 0 ]; then
        echo "no fuzz targets were built" >&2
        exit 1
fi

step "benchmarks"
rel="$out/release"
bench() { printf '\n-- %s\n' "$(basename "$1")"; "$@"; }
bench "$rel/tests/bench/bench-frame"
bench "$rel/tests/bench/bench-audit"
bench "$rel/tests/bench/bench-mnd" --mnsim "$rel/firmware-sim/mnsim" "$rel/daemon/mnd"
bench "$rel/tests/bench/bench-mnctl"

step "all tests passed"
