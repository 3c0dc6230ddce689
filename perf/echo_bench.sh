#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# TCP echo throughput and server CPU per message: the EventServer echo
# server (examples/echo_server, 1 demux thread) against a libevent
# bufferevent server and a libuv server (perf/echo_peers), all driven by the
# same load client (perf/echo_load) on 127.0.0.1. Pinned table: server on
# CPU 0, client on CPU 1 (taskset). Each configuration runs RUNS times with
# the servers interleaved (so drift hits them alike); the table shows
# medians of messages/s and of server CPU (utime + stime from /proc) per
# message, and ratios to libevent. A second, unpinned table adds the
# EventServer server on 2 demux threads (client and server then share both
# CPUs). EventServer runs on each IO backend: es1 / es2 on epoll, es1u on
# io_uring (ES_BACKEND). Prints markdown to stdout and writes docs/perf/echo.md. Usage:
#   perf/echo_bench.sh [BUILD_DIR]          (default: build)
# Environment: RUNS (5), SECS (5 per run, after a 1 s warm-up), CONNS (50),
# DEPTH (16 messages in flight per connection), SIZES ("64 4096"),
# NO_UNPINNED=1 skips the second table, OUT=path overrides the output file.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
out=${OUT:-$root/docs/perf/echo.md}
runs=${RUNS:-5}
secs=${SECS:-5}
conns=${CONNS:-50}
depth=${DEPTH:-16}
sizes=${SIZES:-"64 4096"}
es_bin=$build/examples/echo_server
peers=$build/perf/echo_peers
load=$build/perf/echo_load
for b in "$es_bin" "$peers" "$load"; do
    [[ -x $b ]] || { echo "echo_bench.sh: $b not built" >&2; exit 1; }
done
tmp=$(mktemp -d /tmp/echo_bench.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# start_server NAME SERVER_CPUS: starts it on a free port; sets spid, sport.
# Each start gets its own output file: the shell truncates a redirect in the
# forked child, so reusing one file could show the previous server's port.
starts=0
start_server() {
    local cmd sout
    starts=$((starts + 1))
    sout=$tmp/server.$starts.out
    case $1 in
    es1) cmd=(env ES_BACKEND=epoll "$es_bin" --port 0 --threads 1 --seconds 600) ;;
    es1u) cmd=(env ES_BACKEND=io_uring "$es_bin" --port 0 --threads 1 --seconds 600) ;;
    es2) cmd=(env ES_BACKEND=epoll "$es_bin" --port 0 --threads 2 --seconds 600) ;;
    libevent | libuv) cmd=("$peers" --lib "$1" --port 0 --seconds 600) ;;
    esac
    if [[ -n $2 ]]; then cmd=(taskset -c "$2" "${cmd[@]}"); fi
    "${cmd[@]}" >"$sout" 2>&1 &
    spid=$!
    sport=
    for _ in $(seq 100); do
        sport=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' \
            "$sout")
        [[ -n $sport ]] && return 0
        sleep 0.05
    done
    echo "echo_bench.sh: $1 did not start: $(cat "$sout")" >&2
    kill "$spid" 2>/dev/null || true
    return 1
}

stop_server() {
    kill -TERM "$spid" 2>/dev/null || true
    wait "$spid" 2>/dev/null || true
}

# one NAME SIZE SERVER_CPUS CLIENT_CPUS: one run; appends
# "msgs/s ns/msg server-busy-%" to a file.
one() {
    local l ccmd=("$load")
    start_server "$1" "$3" || return 1
    if [[ -n $4 ]]; then ccmd=(taskset -c "$4" "$load"); fi
    if l=$(timeout $((secs + 60)) "${ccmd[@]}" --port "$sport" \
        --connections "$conns" --depth "$depth" --size "$2" \
        --seconds "$secs" --warmup 1 --server-pid "$spid"); then
        echo "$1 size=$2: $l" >&2
        sed -n 's/.*seconds=\([^ ]*\) msgs_per_s=\([^ ]*\).*server_cpu_s=\([^ ]*\) server_ns_per_msg=\([^ ]*\).*/\2 \4 \3 \1/p' \
            <<<"$l" | awk '{ printf "%s %s %.0f\n", $1, $2, 100 * $3 / $4 }' \
            >>"$tmp/$1.$2.$3"
    else
        echo "echo_bench.sh: $1 size=$2 run failed" >&2
    fi
    stop_server
}

median() { # median COLUMN FILE
    [[ -s $2 ]] || { echo n/a; return; }
    cut -d' ' -f"$1" "$2" | sort -g | awk '{a[NR]=$1} END {
        if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "n/a" || b == "n/a" || b == 0) print "n/a";
    else printf "%.2f", a / b }'; }

# table TITLE SERVER_CPUS CLIENT_CPUS NAMES...
table() {
    local title=$1 scpu=$2 ccpu=$3 size name
    shift 3
    for size in $sizes; do
        for _ in $(seq "$runs"); do
            for name in "$@"; do one "$name" "$size" "$scpu" "$ccpu" || true; done
        done
    done
    echo "## $title"
    echo
    echo "| server | msg size (B) | messages/s | vs libevent |" \
        "server CPU/msg (ns) | vs libevent | server busy | runs |"
    echo "|---|---|---|---|---|---|---|---|"
    for size in $sizes; do
        local base_m base_c f
        base_m=$(median 1 "$tmp/libevent.$size.$scpu")
        base_c=$(median 2 "$tmp/libevent.$size.$scpu")
        for name in "$@"; do
            f=$tmp/$name.$size.$scpu
            local m c b n
            m=$(median 1 "$f")
            c=$(median 2 "$f")
            b=$(median 3 "$f")
            n=$( ([[ -f $f ]] && wc -l <"$f") || echo 0)
            printf '| %s | %s | %.0f | %s | %.0f | %s | %.0f %% | %s |\n' \
                "$(label "$name")" "$size" "${m/n\/a/0}" \
                "$(ratio "$m" "$base_m")" "${c/n\/a/0}" \
                "$(ratio "$c" "$base_c")" "${b/n\/a/0}" "$n/$runs"
        done
    done
    echo
}

label() {
    case $1 in
    es1) echo "EventServer, 1 thread" ;;
    es1u) echo "EventServer, 1 thread, io_uring" ;;
    es2) echo "EventServer, 2 threads" ;;
    libevent) echo "libevent $(pkg-config --modversion libevent 2>/dev/null)" ;;
    libuv) echo "libuv $(pkg-config --modversion libuv 2>/dev/null)" ;;
    esac
}

report() {
    echo "# TCP echo: EventServer vs libevent vs libuv"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm)," \
        "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
        "$(nproc) CPUs; load average before the run:" \
        "$(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Generated by \`perf/echo_bench.sh\`: $conns connections, $depth"
    echo "messages in flight on each, ${secs} s measured after 1 s of warm-up,"
    echo "$runs runs per server with the servers interleaved; medians."
    echo "Messages/s counts echoed messages seen by the load client"
    echo "(perf/echo_load, which checks every byte); server CPU/msg is the"
    echo "server's utime + stime over the measured window (/proc, 10 ms"
    echo "ticks) divided by those messages. All servers set TCP_NODELAY."
    echo "\"vs libevent\" above 1 means more messages/s, or more CPU per"
    echo "message (worse). \"server busy\" is the server's CPU time over the"
    echo "window (100 % = one CPU): well under 100 % means the single-threaded"
    echo "load client and wakeup latency set the pace, not the server, so"
    echo "compare CPU/msg first. The machine may be shared: see the load"
    echo "average. libevent's bufferevent echoes in two loop turns (read, then"
    echo "write on the next EPOLLOUT, toggling EPOLLOUT with epoll_ctl each"
    echo "time); that is its usual API, not tuned away here."
    echo
    table "Pinned: server on CPU 0, client on CPU 1" 0 1 es1 es1u libevent libuv
    if [[ -z ${NO_UNPINNED:-} ]]; then
        table "Unpinned: client and server share both CPUs" "" "" \
            es1 es1u es2 libevent libuv
    fi
}

mkdir -p "$(dirname "$out")"
report | tee "$out.tmp"
mv "$out.tmp" "$out"
echo "echo_bench.sh: wrote $out" >&2
