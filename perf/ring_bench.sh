#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Runs `ring_bench --json` K times (first argument, or $RUNS; default 3) and
# prints, for pasting into the README, a markdown table of each case's
# median across the runs (msgs/s with its min-max spread, ns/msg,
# wakeups/msg, p50, p99) and the design-target ratios recomputed from those
# medians. Every raw JSON file and the table land in
# perf/results/<UTC stamp>/ (gitignored). Arguments after K go to ring_bench
# (e.g. --quick, --case es_cross_thread); $RING_BENCH names the binary
# (default build/perf/ring_bench).
#
#   perf/ring_bench.sh            # 3 default-mode runs, ~5 minutes
#   perf/ring_bench.sh 5 --quick  # 5 quick runs
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
runs=${RUNS:-3}
case ${1:-} in
'' | -*) ;;
*) runs=$1; shift ;;
esac
case $runs in
'' | *[!0-9]* | 0)
    echo "ring_bench.sh: K must be a positive integer, got '$runs'" >&2
    exit 2
    ;;
esac

bin=${RING_BENCH:-$root/build/perf/ring_bench}
if [ ! -x "$bin" ]; then
    echo "ring_bench.sh: $bin not found; build first (make run) or set" \
        "RING_BENCH" >&2
    exit 2
fi
command -v python3 >/dev/null 2>&1 || {
    echo "ring_bench.sh: python3 is required" >&2
    exit 2
}

dir=$root/perf/results/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$dir"

i=1
while [ "$i" -le "$runs" ]; do
    echo "ring_bench.sh: run $i/$runs: $bin --json $*" >&2
    # Exit status 1 means a case failed; its JSON still says which and why.
    status=0
    "$bin" --json "$@" >"$dir/run-$i.json" || status=$?
    if [ "$status" -gt 1 ]; then
        echo "ring_bench.sh: ring_bench exited with $status" >&2
        exit "$status"
    fi
    i=$((i + 1))
done

python3 - "$dir"/run-*.json <<'PY' | tee "$dir/summary.md"
import json
import math
import statistics
import sys

runs = [json.load(open(path)) for path in sys.argv[1:]]
names = []
for run in runs:
    for case in run["cases"]:
        if case["name"] not in names:
            names.append(case["name"])


def values(name, field):
    out = []
    for run in runs:
        for case in run["cases"]:
            if case["name"] == name and case.get(field) is not None:
                out.append(case[field])
    return out


def med(name, field):
    v = values(name, field)
    return statistics.median(v) if v else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


def errors(name):
    return sum(1 for run in runs for case in run["cases"]
               if case["name"] == name and case.get("error"))


first = runs[0]
print("### ring_bench: %s, %s" % (first["date"], first["machine"]))
print()
print("%d run(s) of `ring_bench --json` (mode %s, N = %s, %s runs per case "
      "inside each); every figure is the median across the runs, msgs/s "
      "with its min-max." % (len(runs), first.get("mode", "?"),
                             first.get("msgs", "?"), first.get("repeats", "?")))
print()
print("| case | M msgs/s (min-max) | ns/msg | wakeups/msg | p50 ns | p99 ns |")
print("|---|---:|---:|---:|---:|---:|")
medians = {}
for name in names:
    rate = med(name, "msgs_per_sec")
    medians[name] = {"msgs_per_sec": rate,
                     "wakeups_per_msg": med(name, "wakeups_per_msg")}
    rates = values(name, "msgs_per_sec")
    cell = "-"
    if rate is not None:
        cell = "%.2f (%.2f-%.2f)" % (rate / 1e6, min(rates) / 1e6,
                                     max(rates) / 1e6)
    failed = errors(name)
    if failed:
        cell += " (failed in %d of %d runs)" % (failed, len(runs))
    print("| %s | %s | %s | %s | %s | %s |" % (
        name, cell, fmt(1e9 / rate if rate else None, ".1f"),
        fmt(medians[name]["wakeups_per_msg"], ".5f"),
        fmt(med(name, "p50_ns"), ".0f"), fmt(med(name, "p99_ns"), ".0f")))

print()
print("| ratio (from the medians) | value | target | |")
print("|---|---:|---:|---|")
for r in first.get("ratios", []):
    num = medians.get(r["num"], {}).get(r["field"])
    den = medians.get(r["den"], {}).get(r["field"]) if r["den"] else 1.0
    value = num / den if num is not None and den else None
    scale, unit = (1e-6, " M/s") if (r["den"] is None and
                                     r["field"] == "msgs_per_sec") else (1, "")
    verdict = "n/a"
    if value is not None and math.isfinite(value):
        met = value <= r["target"] if r["op"] == "<=" else value >= r["target"]
        verdict = "met" if met else "missed"
    print("| %s | %s | %s %g%s | %s |" % (
        r["name"], fmt(value * scale if value is not None else None, ".4g")
        + (unit if value is not None else ""), r["op"], r["target"] * scale,
        unit, verdict))
PY
echo "ring_bench.sh: results in $dir" >&2
