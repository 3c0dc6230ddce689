#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Sweeps perf/bench_library (libevent's test/bench.c workload) over pipes
# {1000, 9980} x active {1, 100, 1000} for EventServer with 1 and 2 demux
# threads, libevent, libev and libuv, K times (first argument, or $RUNS;
# default 5, or 3 with --quick), rotating the library order from one run
# and one configuration to the next so that a slow spell of the machine
# does not land on one library. Every run does 4 iterations (3 with
# --quick); the first re-arms watchers that were never armed, so it is
# dropped, and each figure is the median of the other iterations of all
# runs, with ratios to libevent's median and, less sensitive to a busy
# spell, the median over runs of the ratio within each run. Writes default
# to 100000 (20000 with --quick): about 0.4 s of loop time per iteration on
# the 2-vCPU dev box (about 0.1 s in quick mode), well above the 50 ms where
# timer and scheduler noise stop mattering. Then each library runs under
# valgrind --tool=callgrind at -n 1000 -a 100 with two write counts, for
# user-space instructions per event (callgrind counts no kernel
# instruction): total Ir / events of the larger run, and the marginal cost
# (difference of the two runs), split into the shared read callback with
# the recv/send it makes and everything else (the library's loop and
# dispatch). It writes docs/perf/bench_library.md (medians, ratios, the
# callgrind table, the targets) and PNG plots next to it (gnuplot,
# perf/plot_library.gp); raw outputs stay in
# perf/results/bench_library-<UTC stamp>/ (gitignored). $BENCH_LIBRARY
# names the binary (default build/perf/bench_library), $OUT_DIR the output
# directory (default docs/perf). Needs python3, valgrind and gnuplot.
#
#   perf/bench_library.sh             # 5 runs, about 5 minutes
#   perf/bench_library.sh --quick     # 3 short runs, about 1 minute
#   perf/bench_library.sh 9           # 9 runs
set -eu

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
quick=0
runs=${RUNS:-}
for arg in "$@"; do
    case $arg in
    --quick) quick=1 ;;
    -h | --help)
        sed -n '3,31p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) runs=$arg ;;
    esac
done
if [ "$quick" -eq 1 ]; then
    runs=${runs:-3} writes=20000 iters=3 cg_writes="10000 20000"
else
    runs=${runs:-5} writes=100000 iters=4 cg_writes="20000 40000"
fi
case $runs in
'' | *[!0-9]* | 0)
    echo "bench_library.sh: K must be a positive integer, got '$runs'" >&2
    exit 2
    ;;
esac

bin=${BENCH_LIBRARY:-$root/build/perf/bench_library}
out=${OUT_DIR:-$root/docs/perf}
if [ ! -x "$bin" ]; then
    echo "bench_library.sh: $bin not found; build first (cmake --build" \
        "build --target bench_library) or set BENCH_LIBRARY" >&2
    exit 2
fi
missing=
command -v python3 >/dev/null 2>&1 || missing="$missing python3"
command -v valgrind >/dev/null 2>&1 || missing="$missing valgrind"
command -v gnuplot >/dev/null 2>&1 || missing="$missing gnuplot-nox"
if [ -n "$missing" ]; then
    echo "bench_library.sh: missing tools. Run: apt-get install$missing" >&2
    exit 2
fi

pipes_list="1000 9980"
active_list="1 100 1000"
libs="es1 es2 libevent libev libuv"
nlibs=5
cg_libs="es1 es2 libevent libev libuv"
cg_pipes=1000 cg_active=100

raw=$root/perf/results/bench_library-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$raw" "$out"
started=$(date +%s)
# The tree the sweep starts from; build the binary from it just before.
es_rev=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git -C "$root" status --porcelain -- src actors include \
    2>/dev/null)" ]; then
    es_rev="$es_rev + uncommitted changes"
fi
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
# Another process on a CPU halves what es 2 threads can show: say so.
case ${load_before%% *} in
0.[0-4]*) ;;
*) echo "bench_library.sh: load average ${load_before%% *}: other work" \
    "is running; the figures will be noisy" >&2 ;;
esac

lib_args() {
    case $1 in
    es1) echo "--lib es --threads 1" ;;
    es2) echo "--lib es --threads 2" ;;
    *) echo "--lib $1" ;;
    esac
}

# The libraries, starting with the one at position $1 (mod their number).
rotated() {
    k=$(($1 % nlibs)) i=0 head='' tail=''
    for l in $libs; do
        if [ "$i" -lt "$k" ]; then head="$head $l"; else tail="$tail $l"; fi
        i=$((i + 1))
    done
    # shellcheck disable=SC2086 # word splitting wanted: a list of names
    echo $tail $head
}

# One bench_library process; a non-zero exit means the work check failed.
run_one() { # lib pipes active writes iters outfile
    # shellcheck disable=SC2046
    if ! "$bin" $(lib_args "$1") -n "$2" -a "$3" -w "$4" -i "$5" >"$6"; then
        echo "bench_library.sh: $bin $(lib_args "$1") -n $2 -a $3 -w $4" \
            "-i $5 failed" >&2
        exit 1
    fi
}

r=1
while [ "$r" -le "$runs" ]; do
    c=0
    for p in $pipes_list; do
        for a in $active_list; do
            echo "bench_library.sh: run $r/$runs: -n $p -a $a -w $writes" >&2
            for lib in $(rotated $((r + c))); do
                run_one "$lib" "$p" "$a" "$writes" "$iters" \
                    "$raw/sweep_r${r}_n${p}_a${a}_${lib}.txt"
            done
            c=$((c + 1))
        done
    done
    r=$((r + 1))
done

for lib in $cg_libs; do
    for w in $cg_writes; do
        echo "bench_library.sh: callgrind: $lib -n $cg_pipes -a $cg_active" \
            "-w $w" >&2
        base=$raw/cg_${lib}_$w
        # shellcheck disable=SC2046
        if ! valgrind --tool=callgrind --callgrind-out-file="$base.out" \
            "$bin" $(lib_args "$lib") -n $cg_pipes -a $cg_active -w "$w" \
            -i 2 >"$base.txt" 2>"$base.log"; then
            echo "bench_library.sh: callgrind run failed; see $base.log" >&2
            exit 1
        fi
        callgrind_annotate --inclusive=yes --threshold=100 "$base.out" \
            >"$base.annot" 2>/dev/null
    done
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
elapsed=$(($(date +%s) - started))
stamp=$(date -u '+%Y-%m-%d %H:%M UTC')
ncpu=$(nproc)
kernel=$(uname -r)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
versions="libevent $(pkg-config --modversion libevent_core 2>/dev/null ||
    echo '?'), libev $(dpkg-query -W -f='${Version}' libev-dev 2>/dev/null ||
    echo '?'), libuv $(pkg-config --modversion libuv 2>/dev/null || echo '?')"

export BL_RAW="$raw" BL_OUT="$out" BL_RUNS="$runs" BL_WRITES="$writes" \
    BL_ITERS="$iters" BL_PIPES="$pipes_list" BL_ACTIVE="$active_list" \
    BL_LIBS="$libs" BL_CG_LIBS="$cg_libs" BL_CG_WRITES="$cg_writes" \
    BL_CG_PIPES="$cg_pipes" BL_CG_ACTIVE="$cg_active" BL_QUICK="$quick" \
    BL_DATE="$stamp" BL_CPU="$cpu" \
    BL_NPROC="$ncpu" BL_KERNEL="$kernel" BL_ES_REV="$es_rev" \
    BL_VERSIONS="$versions" BL_LOAD="$load_before -> $load_after" \
    BL_ELAPSED="$elapsed"
python3 - <<'PY'
import glob
import os
import re
import statistics
import sys

env = os.environ
raw, out = env["BL_RAW"], env["BL_OUT"]
writes, iters = int(env["BL_WRITES"]), int(env["BL_ITERS"])
pipes = [int(p) for p in env["BL_PIPES"].split()]
actives = [int(a) for a in env["BL_ACTIVE"].split()]
libs = env["BL_LIBS"].split()
names = {"es1": "es 1 thread", "es2": "es 2 threads", "libevent": "libevent",
         "libev": "libev", "libuv": "libuv"}
TARGET_ES1, TARGET_ES2 = 1.0, 0.65


def parse(path, expect_iters, expect_events):
    rows, events = [], None
    with open(path) as f:
        for line in f:
            m = re.match(r"total_us=([\d.]+) loop_us=([\d.]+)$", line.strip())
            if m:
                rows.append((float(m.group(1)), float(m.group(2))))
            elif line.startswith("events="):
                events = int(line.split("=")[1])
    if len(rows) != expect_iters or events != expect_events:
        sys.exit("bench_library.sh: %s: %d iterations, events=%s; expected "
                 "%d and %d" % (path, len(rows), events, expect_iters,
                                expect_events))
    return rows


# samples[(pipes, active, lib)] = [(total_us, loop_us)] without warm-ups;
# per_run[(pipes, active, lib)][run] = median loop_us of that run
samples, per_run = {}, {}
for path in glob.glob(os.path.join(raw, "sweep_r*_n*_a*_*.txt")):
    m = re.search(r"sweep_r(\d+)_n(\d+)_a(\d+)_(\w+)\.txt$", path)
    run, p, a, lib = (int(m.group(1)), int(m.group(2)), int(m.group(3)),
                      m.group(4))
    rows = parse(path, iters, iters * (a + writes))
    samples.setdefault((p, a, lib), []).extend(rows[1:])
    per_run.setdefault((p, a, lib), {})[run] = statistics.median(
        r[1] for r in rows[1:])

med = {}
for key, rows in samples.items():
    med[key] = (statistics.median(r[0] for r in rows),
                statistics.median(r[1] for r in rows),
                min(r[1] for r in rows), max(r[1] for r in rows))


def ratio(p, a, lib, col):
    base = med.get((p, a, "libevent"))
    mine = med.get((p, a, lib))
    return mine[col] / base[col] if base and mine and base[col] else None


def paired(p, a, lib):
    """Median over runs of the loop-time ratio within each run."""
    mine, base = per_run.get((p, a, lib), {}), per_run.get((p, a, "libevent"))
    r = [mine[k] / base[k] for k in mine if base and base.get(k)]
    return statistics.median(r) if r else None


def fmt(v, spec):
    return "-" if v is None else format(v, spec)


lines = []
emit = lines.append
emit("# bench_library: EventServer vs libevent, libev, libuv")
emit("")
emit("Generated by `perf/bench_library.sh%s` on %s. Machine: %s, %s CPUs "
     "(nproc), Linux %s; load average %s (before -> after). EventServer %s; "
     "%s. The sweep took %s s." % (
         " --quick" if env["BL_QUICK"] == "1" else "", env["BL_DATE"],
         env["BL_CPU"], env["BL_NPROC"], env["BL_KERNEL"], env["BL_LOAD"],
         env["BL_ES_REV"], env["BL_VERSIONS"], env["BL_ELAPSED"]))
emit("")
emit("The workload is libevent's `test/bench.c`: `-n` non-blocking AF_UNIX "
     "socketpairs with a read watcher each, `-a` of them (evenly spaced) "
     "written to start, and every read callback writes one byte into the "
     "next pipe while a global budget of `-w` writes lasts. *Total* time "
     "starts before every watcher is removed and installed again (for "
     "EventServer: es_io_unwatch + es_io_watch by the actors that own the "
     "pipes); *loop* time starts just before the starting bytes are "
     "written. Both end in the callback that reads the last byte. All "
     "libraries use epoll. es 2 threads splits the pipes into two "
     "contiguous halves, one actor per demux thread.")
emit("")
emit("%s runs of %d iterations, writes = %d, library order rotated between "
     "runs; the first iteration of each run (first install) is dropped, so "
     "each cell is the median of %d samples. Ratios are to libevent's "
     "median in the same row group (below 1 = faster than libevent); "
     "*(paired)* is the median over runs of the ratio within each run, which "
     "a busy spell of the machine during one run disturbs less. The targets "
     "below are judged on the ratio of the medians." % (
         env["BL_RUNS"], iters, writes, int(env["BL_RUNS"]) * (iters - 1)))
emit("")
emit("| pipes | active | library | total ms | loop ms (min-max) "
     "| loop us/event | loop vs libevent | (paired) | total vs libevent |")
emit("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
for p in pipes:
    for a in actives:
        for lib in libs:
            m = med.get((p, a, lib))
            if not m:
                continue
            emit("| %d | %d | %s | %.1f | %.1f (%.0f-%.0f) | %.2f | %s | %s "
                 "| %s |" % (p, a, names[lib], m[0] / 1e3, m[1] / 1e3,
                             m[2] / 1e3, m[3] / 1e3, m[1] / (a + writes),
                             fmt(ratio(p, a, lib, 1), ".3f"),
                             fmt(paired(p, a, lib), ".3f"),
                             fmt(ratio(p, a, lib, 0), ".3f")))
emit("")

# Plot data: one file per (metric, pipes), milliseconds.
for p in pipes:
    for col, metric in ((0, "total"), (1, "loop")):
        with open(os.path.join(raw, "%s_%d.dat" % (metric, p)), "w") as f:
            f.write("active " + " ".join('"%s"' % names[l] for l in libs)
                    + "\n")
            for a in actives:
                f.write("%d %s\n" % (a, " ".join(
                    fmt(med[(p, a, l)][col] / 1e3 if (p, a, l) in med
                        else None, ".3f") for l in libs)))


# Callgrind: program total and pipe_ready inclusive, per write count.
def callgrind(lib, w):
    base = os.path.join(raw, "cg_%s_%s" % (lib, w))
    total = callback = None
    with open(base + ".annot") as f:
        for line in f:
            m = re.match(r"\s*([\d,]+)\s.*(PROGRAM TOTALS|:pipe_ready \[)",
                         line)
            if not m:
                continue
            n = int(m.group(1).replace(",", ""))
            if m.group(2) == "PROGRAM TOTALS" and total is None:
                total = n
            elif m.group(2) != "PROGRAM TOTALS" and callback is None:
                callback = n
    events = None
    with open(base + ".txt") as f:
        for line in f:
            if line.startswith("events="):
                events = int(line.split("=")[1])
    return total, callback, events


w_lo, w_hi = env["BL_CG_WRITES"].split()
cg = {}
for lib in env["BL_CG_LIBS"].split():
    t0, c0, e0 = callgrind(lib, w_lo)
    t1, c1, e1 = callgrind(lib, w_hi)
    de = e1 - e0
    cg[lib] = (t1 / e1, (t1 - t0) / de, (c1 - c0) / de,
               (t1 - t0 - (c1 - c0)) / de, e1)
emit("## User-space instructions per event (callgrind)")
emit("")
emit("`valgrind --tool=callgrind`, -n %s -a %s, -i 2, at -w %s and -w %s "
     "(callgrind counts user-space instructions only). *Total* is the "
     "program's whole Ir divided by its read events at -w %s (start-up, "
     "pipe set-up and re-arming included); *marginal* is the difference "
     "between the two runs divided by the difference in events, i.e. the "
     "steady-state cost of one event, split into the read callback every "
     "library shares (its own code plus the libc recv/send wrappers it "
     "calls) and the rest: the library's loop, dispatch and glue. The libc "
     "wrappers cost more in a multi-threaded process (glibc enables and "
     "disables asynchronous cancellation around every blocking syscall "
     "once a second thread exists); EventServer's demux threads always make "
     "it one, the single-threaded peers never are." % (
         env["BL_CG_PIPES"], env["BL_CG_ACTIVE"], w_lo, w_hi, w_hi))
emit("")
emit("| library | events | total Ir/event | marginal Ir/event | callback "
     "(incl. recv/send) | loop + dispatch |")
emit("|---|---:|---:|---:|---:|---:|")
for lib in env["BL_CG_LIBS"].split():
    t, m, c, rest, ev = cg[lib]
    emit("| %s | %d | %.0f | %.0f | %.0f | %.0f |" % (names[lib], ev, t, m, c,
                                                  rest))
emit("")

emit("## Targets (benchmark figures, never asserted in tests)")
emit("")


def verdict(ok):
    return "met" if ok else "**missed**"


es1 = [(p, a, ratio(p, a, "es1", 1)) for p in pipes for a in actives]
es1 = [x for x in es1 if x[2] is not None]
ok1 = [x for x in es1 if x[2] <= TARGET_ES1]
emit("- es 1 thread loop time <= %.2f x libevent: %s (met in %d of %d "
     "configurations; ratios %s)." % (
         TARGET_ES1, verdict(len(ok1) == len(es1)), len(ok1), len(es1),
         ", ".join("%d/%d: %.2f" % x for x in es1)))
es2 = [(p, a, ratio(p, a, "es2", 1)) for p in pipes for a in actives
       if a >= 100]
es2 = [x for x in es2 if x[2] is not None]
ok2 = [x for x in es2 if x[2] <= TARGET_ES2]
emit("- es 2 threads loop time <= %.2f x libevent at 100 and 1000 active: "
     "%s (met in %d of %d; ratios %s)." % (
         TARGET_ES2, verdict(len(ok2) == len(es2)), len(ok2), len(es2),
         ", ".join("%d/%d: %.2f" % x for x in es2)))
if "es1" in cg and "libev" in cg:
    emit("- es user-space instructions per event <= libev's: total %s "
         "(%.0f vs %.0f), marginal %s (%.0f vs %.0f), loop + dispatch %s "
         "(%.0f vs %.0f)." % (
             verdict(cg["es1"][0] <= cg["libev"][0]), cg["es1"][0],
             cg["libev"][0], verdict(cg["es1"][1] <= cg["libev"][1]),
             cg["es1"][1], cg["libev"][1],
             verdict(cg["es1"][3] <= cg["libev"][3]), cg["es1"][3],
             cg["libev"][3]))
emit("")
emit("Pipes/active in the ratio lists. Plots: loop time "
     + ", ".join("[%d pipes](bench_library_loop_%d.png)" % (p, p)
                 for p in pipes)
     + "; total time "
     + ", ".join("[%d pipes](bench_library_total_%d.png)" % (p, p)
                 for p in pipes) + ".")
emit("")
for p in pipes:
    emit("![loop time, %d pipes](bench_library_loop_%d.png)" % (p, p))
emit("")

with open(os.path.join(out, "bench_library.md"), "w") as f:
    f.write("\n".join(lines))
print("\n".join(lines))
PY

gnuplot -e "datadir='$raw'; outdir='$out'; pipes='$pipes_list'" \
    "$root/perf/plot_library.gp"
echo "bench_library.sh: $out/bench_library.md and plots written; raw" \
    "outputs in $raw (${elapsed}s)" >&2
