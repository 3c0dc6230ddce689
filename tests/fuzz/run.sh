#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Runs the libFuzzer targets of a fuzz build (make fuzz):
#   tests/fuzz/run.sh BUILD_DIR SECONDS [TARGET...]
# Each target runs for SECONDS on a fresh copy of its committed seed corpus
# (tests/fuzz/corpus/<target>/, never grown by a run) with the dictionary
# http.dict, under a per-input timeout and an RSS limit. Work files, logs
# and any crash / leak / timeout input go to BUILD_DIR/fuzz-work/<target>/.
# Prints one line per target (runs, exec/s, corpus size) and exits non-zero
# if any target found a crash, a leak or a timeout.
set -euo pipefail

if (($# < 2)); then
    echo "usage: $0 BUILD_DIR SECONDS [TARGET...]" >&2
    exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
shift 2
src=$(cd "$(dirname "$0")" && pwd)
targets=("$@")
if ((${#targets[@]} == 0)); then
    targets=(fuzz_http_server fuzz_http_client fuzz_url fuzz_chunk fuzz_runtime)
fi

# A hung input is one that takes longer than this (libFuzzer -timeout);
# the targets' own waits give up after 5 s each (FZ_WAIT_MS).
timeout_s=25
rss_mb=2560
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

stat() { sed -n "s/^stat::$1: *//p" "$2"; }

status=0
for t in "${targets[@]}"; do
    bin=$build/tests/fuzz/$t
    work=$build/fuzz-work/$t
    rm -rf "$work"
    mkdir -p "$work/corpus" "$work/artifacts"
    cp "$src/corpus/$t"/* "$work/corpus/"
    rc=0
    "$bin" -max_total_time="$seconds" -timeout="$timeout_s" \
        -rss_limit_mb="$rss_mb" -max_len=4096 -dict="$src/http.dict" \
        -artifact_prefix="$work/artifacts/" -print_final_stats=1 \
        "$work/corpus" >"$work/log" 2>&1 || rc=$?
    runs=$(stat number_of_executed_units "$work/log")
    eps=$(stat average_exec_per_sec "$work/log")
    files=$(find "$work/corpus" -type f | wc -l)
    if ((rc != 0)); then
        echo "FAIL $t (exit $rc) after ${runs:-?} runs; log: $work/log"
        grep -E '^(fuzz:|SUMMARY|==[0-9]+==ERROR)|runtime error' \
            "$work/log" | head -5 || true
        ls "$work/artifacts" | sed 's/^/  input: artifacts\//'
        status=1
    else
        echo "ok   $t: ${seconds} s clean, $runs runs, $eps exec/s," \
            "corpus $files files"
    fi
done
exit $status
