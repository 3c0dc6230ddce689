#!/bin/bash
# SPDX-License-Identifier: MIT
#
# Runs perf/cluster_bench against a nats-server of its own (127.0.0.1, a
# free port chosen by the server, stopped by PID at the end): each case
# (send, rr, fan) on EventServer's cluster module (es) and on bare nats.c,
# once with nats.c's default options (raw) and once with SendAsap
# (raw-asap), interleaved, for $RUNS rounds (default 5; the order rotates
# by round). Then it writes docs/perf/cluster.md ($OUT): date, machine,
# commit, the medians over the rounds with their min-max, the ratios
# es/raw (raw: the better of the two for each figure), each target of
# issue 11 marked met or missed as measured, and every result line. The
# README section is printed at the end (and kept with the result lines in
# perf/results/cluster-<UTC stamp>/, gitignored). $CLUSTER_BENCH names the
# binary (default build/perf/cluster_bench); $CLUSTER_BENCH_ARGS go to
# every run (e.g. "--secs 2 --n 100000"). About 1.5 minutes by default.
#
#   perf/cluster_bench.sh          # 5 rounds
#   RUNS=3 perf/cluster_bench.sh
set -euo pipefail

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
# shellcheck source=perf/mem_common.sh
. "$root/perf/mem_common.sh" # machine
runs=${RUNS:-5}
bin=${CLUSTER_BENCH:-$root/build/perf/cluster_bench}
out=${OUT:-$root/docs/perf/cluster.md}
read -r -a extra <<<"${CLUSTER_BENCH_ARGS:-}"

case $runs in
'' | *[!0-9]* | 0)
    echo "cluster_bench.sh: RUNS must be a positive integer, got '$runs'" >&2
    exit 2
    ;;
esac
if [ ! -x "$bin" ]; then
    echo "cluster_bench.sh: $bin not found; build first or set" \
        "CLUSTER_BENCH" >&2
    exit 2
fi
for tool in nats-server python3; do
    command -v "$tool" >/dev/null 2>&1 || {
        echo "cluster_bench.sh: $tool is required" >&2
        exit 2
    }
done

dir=$root/perf/results/cluster-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$dir"
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# The server writes nats-server_<pid>.ports (JSON) once it listens.
nats-server -a 127.0.0.1 -p -1 --ports_file_dir "$dir" -l "$dir/nats.log" &
server_pid=$!
ports=$dir/nats-server_$server_pid.ports
for _ in $(seq 100); do
    [ -s "$ports" ] && break
    sleep 0.05
done
url=$(sed -n 's/.*"nats":\["\([^"]*\)".*/\1/p' "$ports" 2>/dev/null || true)
if [ -z "$url" ]; then
    echo "cluster_bench.sh: nats-server did not start (see $dir/nats.log)" >&2
    exit 1
fi
echo "cluster_bench.sh: nats-server $server_pid at $url" >&2

started=$(date +%s)
load_start=$(cut -d' ' -f1 /proc/loadavg)
: >"$dir/lines.txt"
for round in $(seq "$runs"); do
    case $((round % 3)) in
    1) impls="es raw raw-asap" ;;
    2) impls="raw raw-asap es" ;;
    *) impls="raw-asap es raw" ;;
    esac
    for c in send rr fan; do
        for impl in $impls; do
            status=0
            line=$("$bin" --url "$url" --impl "$impl" --case "$c" \
                --prefix "b$round$c$impl" "${extra[@]}") || status=$?
            if [ "$status" -gt 1 ] || [ -z "$line" ]; then
                echo "cluster_bench.sh: $impl $c exited with $status" >&2
                exit 1
            fi
            echo "round=$round $line" | tee -a "$dir/lines.txt" >&2
        done
    done
done
secs=$(($(date +%s) - started))
load="load average $load_start at the start, $(cut -d' ' -f1 /proc/loadavg) at the end"

commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git -C "$root" status --porcelain -- cluster perf include src \
    2>/dev/null)" ]; then
    commit="$commit (with uncommitted changes)"
fi
versions="nats-server $(nats-server --version | sed 's/^nats-server: *//'),"
versions="$versions nats.c $(pkg-config --modversion libnats 2>/dev/null ||
    echo '?')"

python3 - "$dir/lines.txt" "$out" "$dir/readme.md" "$(machine)" "$commit" \
    "$runs" "$secs" "$versions" "$load" "${CLUSTER_BENCH_ARGS:-}" <<'PY'
import statistics
import sys

lines_path, out_path, readme_path, machine, commit, runs, secs, versions, \
    load, args = sys.argv[1:]
rows = []
for raw in open(lines_path):
    rows.append(dict(kv.split("=", 1) for kv in raw.split()))


def values(case, impl, field):
    return [float(r[field]) for r in rows
            if r["case"] == case and r["impl"] == impl
            and r["status"] == "ok" and field in r]


def med(case, impl, field):
    v = values(case, impl, field)
    return statistics.median(v) if v else None


def spread(case, impl, field, scale, spec):
    v = values(case, impl, field)
    if not v:
        return "no result"
    return "%s (%s-%s)" % (format(statistics.median(v) * scale, spec),
                           format(min(v) * scale, spec),
                           format(max(v) * scale, spec))


def troubles(case, impl):
    mine = [r for r in rows if r["case"] == case and r["impl"] == impl]
    bad = [r for r in mine if r["status"] != "ok"]
    lost = sum(int(r.get("lost", 0)) for r in mine)
    failed = sum(int(r.get("failed", 0)) for r in mine)
    short = sum(int(r["sent"]) - int(r["received"]) for r in mine
                if "sent" in r)
    parts = []
    if bad:
        parts.append("%d of %d runs failed" % (len(bad), len(mine)))
    if lost:
        parts.append("%d lost" % lost)
    if failed:
        parts.append("%d requests/publishes incomplete" % failed)
    if short:
        parts.append("%d sends not received" % short)
    return "; ".join(parts) or "none"


def ratio(a, b):
    return None if a is None or not b else a / b


def verdict(value, ok):
    if value is None:
        return "not measured"
    return "met" if ok(value) else "missed"


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


# (case, label, field, unit, scale, spec, higher is better, target text,
# test on es/best-raw ("ratio") or on es's own figure ("abs"))
ROWS = (
    ("send", "one-way sends, 64 B", "rate", "k msgs/s delivered", 1e-3, ".0f",
     True, "es/raw >= 0.8", "ratio", lambda r: r >= 0.8),
    ("rr", "request/reply, 64 B", "p50_us", "p50 us", 1, ".0f", False,
     "es/raw <= 1.2", "ratio", lambda r: r <= 1.2),
    ("rr", "request/reply, 64 B", "p99_us", "p99 us", 1, ".0f", False,
     "es/raw <= 1.2", "ratio", lambda r: r <= 1.2),
    ("fan", "fan-out to 10,000, 100/s", "p50_us", "p50 ms to the last", 1e-3,
     ".2f", False, None, None, None),
    ("fan", "fan-out to 10,000, 100/s", "p99_us", "p99 ms to the last", 1e-3,
     ".2f", False, "es <= 5 ms", "abs", lambda v: v <= 5000),
)

table = [
    "| case | figure | es | raw nats.c, defaults | raw nats.c, SendAsap "
    "| es/best raw | target | |",
    "|---|---|---:|---:|---:|---:|---|---|",
]
for case, label, field, unit, scale, spec, higher, target, kind, ok in ROWS:
    es = med(case, "es", field)
    raws = [(med(case, i, field), i) for i in ("raw", "raw-asap")]
    raws = [r for r in raws if r[0] is not None]
    best = (max if higher else min)(raws) if raws else (None, None)
    r = ratio(es, best[0])
    if kind == "ratio":
        v = verdict(r, ok)
    elif kind == "abs":
        v = verdict(es, ok)
    else:
        v = ""
    table.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        label, unit, spread(case, "es", field, scale, spec),
        spread(case, "raw", field, scale, spec),
        spread(case, "raw-asap", field, scale, spec),
        "-" if r is None else "%.2f (vs %s)" % (r, best[1]), target or "-",
        v))

cases = (("send", "one-way sends"), ("rr", "request/reply"),
         ("fan", "fan-out"))
IMPLS = ("es", "raw", "raw-asap")
losses = ["| case | es | raw | raw-asap |", "|---|---|---|---|"]
losses += ["| %s | %s |" % (label, " | ".join(troubles(c, i) for i in IMPLS))
           for c, label in cases]
loss_text = "; ".join("%s: %s" % (label, ", ".join(
    "%s %s" % (i, troubles(c, i)) for i in IMPLS)) for c, label in cases)

head = ("**cluster_bench**, %s; commit %s; %s. %s round(s) of every case, "
        "es, raw and raw-asap interleaved (their order rotating by round), "
        "against one local nats-server; each figure is the median over the "
        "rounds with its min-max. *raw* is bare nats.c with its default "
        "options (publishes gathered by its flusher thread for about 1 ms; "
        "requests written at once), *raw-asap* the same with "
        "`natsOptions_SetSendAsap()` (every publish written at once); es is "
        "compared with the better of the two for each figure, from the "
        "medians. The whole run took %s s (%s).%s" % (
            machine, commit, versions, runs, secs, load,
            " Arguments: `%s`." % args if args else ""))

with open(readme_path, "w") as f:
    f.write(head + "\n\n" + "\n".join(table) + "\n\nLosses and failures "
            "summed over the rounds: " + loss_text + ".\n")

doc = ["# Cluster benchmark: EventServer's cluster module vs raw nats.c", "",
       "Generated by `perf/cluster_bench.sh` (do not edit by hand; rerun "
       "it).", "", head, "", "## What is measured", "",
       "Two processes (`perf/cluster_bench` and a child it forks) on one "
       "host and one nats-server on 127.0.0.1; the comment at the top of "
       "`perf/cluster_bench.c` has the details.", "",
       "- **one-way sends**: the parent's main thread sends 64-byte "
       "messages to a name held by an actor in the child (es: "
       "`es_cluster_send()`, the actor registered with "
       "`es_cluster_register()`; raw: `natsConnection_Publish()` to a "
       "subject the child subscribed). The child's count sits in shared "
       "memory, and the sender keeps at most a window of messages in "
       "flight, so neither side overruns the other into slow-consumer "
       "losses. Figure: messages received / (the child's last receipt - "
       "the first send).",
       "- **request/reply**: one request outstanding, 64-byte payload "
       "echoed back (es: an actor `es_request()`s the `es_cluster_lookup()` "
       "proxy of an echo actor in the child that `es_reply()`s; raw: "
       "`natsConnection_Request()` to a subscriber that publishes the "
       "payload to the reply subject). Figures: p50/p99 of the round trips "
       "after a warm-up.",
       "- **fan-out**: 10,000 subscribers, half in each process (es: "
       "actors, `es_cluster_subscribe()`, one broker subscription per "
       "process; raw: one subscription per process whose callback calls "
       "5,000 callbacks that bump counters); the parent publishes 100 "
       "times a second, each message stamped with CLOCK_MONOTONIC. Figure: "
       "per publish, the time the last subscriber of either process got "
       "it minus the stamp; p50/p99 over the publishes.", "",
       "## Medians and targets", "",
       *table, "", "## Losses and failures", "", "Summed over the rounds: "
       "messages the counters of either side reported lost, requests or "
       "publishes that never completed, sends that were not received, runs "
       "that ended in an error.", "", *losses, "", "## Every run", "",
       "One line per run as `perf/cluster_bench` printed it.", "", "```"]
doc += [l.rstrip("\n") for l in open(lines_path)]
doc += ["```", ""]
with open(out_path, "w") as f:
    f.write("\n".join(doc))
PY

echo "cluster_bench.sh: wrote $out; the README section:" >&2
cat "$dir/readme.md"
