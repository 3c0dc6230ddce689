#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# HTTP throughput and server CPU per request: perf/http_server (EventServer,
# 1 and 2 demux threads) against nginx (1 worker, master_process off) in
# the same run, GET /plaintext ("Hello, World!", text/plain) driven by wrk
# and ab on 127.0.0.1. Modes:
#   ka64    wrk, 64 keep-alive connections
#   ka256   wrk, 256 keep-alive connections
#   pipe16  wrk, 64 connections, 16 requests pipelined on each (Lua script)
#   close   ab -c 64 without -k: a new connection per request (HTTP/1.0)
# Pinned table: server on CPU 0 (taskset -c 0, every thread of it), client
# on CPU 1. Unpinned table: nothing pinned, EventServer on 1 and 2 threads
# and nginx share both CPUs with the client. Each mode runs RUNS times
# with the servers interleaved (so drift hits them alike), each run on a
# fresh server after 1 s of warm-up; the tables show medians of
# requests/s and of server CPU (utime + stime of the server process from
# /proc/PID/stat, before and after the measured run) per completed
# request, and the ratios to nginx in the same table. Before the runs, curl
# checks that both servers answer "Hello, World!". Non-2xx responses and
# socket errors reported by wrk / ab are counted and flagged. Prints
# markdown to stdout and writes docs/perf/http.md; raw outputs go to
# perf/results/http-<timestamp>/. Usage:
#   perf/http_bench.sh [BUILD_DIR]          (default: build)
# A last table counts user-space instructions per request under callgrind
# (es1 and nginx, ka64 and pipe16, minus an idle baseline), a figure the
# machine's load does not move; NO_CALLGRIND=1 skips it.
# Environment: RUNS (5), DURATION (10, seconds per run), MODES ("ka64 ka256
# pipe16 close"), PINNED_WRK_THREADS (1), UNPINNED_WRK_THREADS (2),
# CG_SECONDS (6, load under callgrind), NO_UNPINNED=1 skips the unpinned
# table, OUT=path overrides the output file.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-$root/build}
out=${OUT:-$root/docs/perf/http.md}
runs=${RUNS:-5}
dur=${DURATION:-10}
dur=${dur%s}
modes=${MODES:-"ka64 ka256 pipe16 close"}
pinned_wt=${PINNED_WRK_THREADS:-1}
unpinned_wt=${UNPINNED_WRK_THREADS:-2}
es_bin=$build/perf/http_server
nginx_bin=${NGINX:-/usr/sbin/nginx}
hz=$(getconf CLK_TCK)
[[ -x $es_bin ]] || { echo "http_bench.sh: $es_bin not built" >&2; exit 1; }
for t in wrk ab curl taskset "$nginx_bin"; do
    command -v "$t" >/dev/null ||
        { echo "http_bench.sh: $t not found" >&2; exit 1; }
done

stamp=$(date -u '+%Y%m%dT%H%M%SZ')
results=$root/perf/results/http-$stamp
tmp=$(mktemp -d /tmp/http_bench.XXXXXX)
# Raw outputs gather in $tmp/raw and are copied to $results at the end.
raw=$tmp/raw
mkdir -p "$raw"
spid=
cleanup() {
    if [[ -n $spid ]]; then kill -TERM "$spid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT

# The pipelining script: each wrk request is 16 GETs sent back to back.
cat >"$raw/pipeline.lua" <<'EOF'
-- 16 GET /plaintext requests in one write; wrk counts each response.
local depth = 16
local batch
init = function(args)
    local one = wrk.format("GET", "/plaintext")
    batch = string.rep(one, depth)
end
request = function()
    return batch
end
EOF

# A port below the ephemeral range (32768 and up here), so that no client
# socket of an earlier run holds it.
free_port() {
    local p
    for _ in $(seq 50); do
        p=$((10000 + RANDOM % 22000))
        if ! ss -Htln "sport = :$p" | grep -q .; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

nginx_conf() { # nginx_conf DIR PORT
    mkdir -p "$1"
    cat >"$1/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 4096;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections 2048; }
http {
    access_log off;
    client_body_temp_path $1/body;
    keepalive_timeout 600s;
    keepalive_requests 100000000;
    server {
        listen 127.0.0.1:$2 backlog=4096;
        location /plaintext {
            default_type text/plain;
            return 200 "Hello, World!";
        }
    }
}
EOF
}

# start_server NAME SERVER_CPUS: starts it on a free port, waits until it
# answers; sets spid and sport. Tries three ports before giving up.
start_server() {
    local i
    for i in 1 2 3; do
        if start_once "$@"; then return 0; fi
        echo "http_bench.sh: $1 did not start (try $i)" >&2
    done
    return 1
}

# start_once NAME SERVER_CPUS: one try. taskset execs the server, so $! is
# its pid.
starts=0
start_once() {
    local cmd sout pre=()
    starts=$((starts + 1))
    sout=$tmp/server.$starts.out
    if [[ -n $2 ]]; then pre=(taskset -c "$2"); fi
    sport=$(free_port)
    case $1 in
    es1 | es2)
        cmd=("$es_bin" --port "$sport" --threads "${1#es}")
        ;;
    nginx)
        nginx_conf "$tmp/nginx.$starts" "$sport"
        cmd=("$nginx_bin" -p "$tmp/nginx.$starts" -e "$tmp/nginx.$starts/error.log"
            -c "$tmp/nginx.$starts/nginx.conf")
        ;;
    esac
    "${pre[@]}" "${cmd[@]}" >"$sout" 2>&1 &
    spid=$!
    for _ in $(seq 100); do
        if curl -sf -o /dev/null "http://127.0.0.1:$sport/plaintext"; then
            return 0
        fi
        sleep 0.05
    done
    cat "$sout" >&2
    stop_server
    return 1
}

stop_server() {
    if [[ -n $spid ]]; then
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
    fi
    spid=
}

cpu_ticks() { # "utime stime" of a process (all threads), in clock ticks
    local s
    s=$(<"/proc/$1/stat")
    s=${s##*) }
    # shellcheck disable=SC2086
    set -- $s
    echo "${12} ${13}"
}

# client MODE PORT CLIENT_CPUS WRK_THREADS SECONDS: runs the load.
client() {
    local pre=() url=http://127.0.0.1:$2/plaintext
    if [[ -n $3 ]]; then pre=(taskset -c "$3"); fi
    case $1 in
    ka64) "${pre[@]}" wrk -t "$4" -c 64 -d "${5}s" "$url" ;;
    ka256) "${pre[@]}" wrk -t "$4" -c 256 -d "${5}s" "$url" ;;
    pipe16)
        "${pre[@]}" wrk -t "$4" -c 64 -d "${5}s" -s "$raw/pipeline.lua" "$url"
        ;;
    close) "${pre[@]}" ab -q -r -t "$5" -n 2000000 -c 64 "$url" ;;
    esac
}

# parse MODE FILE: prints "requests seconds errors" from a client's output.
parse() {
    if [[ $1 == close ]]; then
        awk '/^Complete requests:/ { n = $3 }
             /^Failed requests:/ { e += $3 }
             /^Non-2xx responses:/ { e += $3 }
             /^Time taken for tests:/ { t = $5 }
             END { if (n == "" || t == "") exit 1; print n, t, e + 0 }' "$2"
    else
        awk '/ requests in / { n = $1; t = $4; sub(/,$/, "", t)
                 if (t ~ /ms$/) { sub(/ms$/, "", t); t /= 1000 }
                 else if (t ~ /m$/) { sub(/m$/, "", t); t *= 60 }
                 else sub(/s$/, "", t) }
             /Non-2xx or 3xx responses:/ { e += $NF }
             /Socket errors:/ { gsub(/,/, ""); e += $4 + $6 + $8 + $10 }
             END { if (n == "" || t == "") exit 1; print n, t, e + 0 }' "$2"
    fi
}

# one NAME MODE SERVER_CPUS CLIENT_CPUS WRK_THREADS TAG: one run; appends
# "requests/s cpu_us/request busy% errors user%" to $tmp/TAG.NAME.MODE
# (user%: the share of the server's CPU time spent in user space).
one() {
    local name=$1 mode=$2 tag=$6 f c0 c1 r
    f=$raw/$tag.$name.$mode.$(date -u +%H%M%S).$RANDOM.txt
    start_server "$name" "$3" || return 1
    client "$mode" "$sport" "$4" "$5" 1 >/dev/null 2>&1 || true # warm-up
    c0=$(cpu_ticks "$spid")
    if ! client "$mode" "$sport" "$4" "$5" "$dur" >"$f" 2>&1; then
        echo "http_bench.sh: $name $mode: client failed (see $f)" >&2
    fi
    c1=$(cpu_ticks "$spid")
    stop_server
    if ! r=$(parse "$mode" "$f"); then
        echo "http_bench.sh: $name $mode: no result (see $f)" >&2
        return 1
    fi
    # shellcheck disable=SC2086
    set -- $r
    awk -v n="$1" -v t="$2" -v e="$3" -v c0="$c0" -v c1="$c1" -v hz="$hz" '
    BEGIN {
        split(c0, a, " "); split(c1, b, " ")
        u = b[1] - a[1]; c = u + b[2] - a[2]
        if (n == 0) exit 1
        printf "%.1f %.3f %.0f %d %.0f\n", n / t, c / hz / n * 1e6,
            100 * c / hz / t, e, c ? 100 * u / c : 0 }' \
        >>"$tmp/$tag.$name.$mode"
    echo "$tag $name $mode: $(tail -1 "$tmp/$tag.$name.$mode")" \
        "(req/s cpu_us/req busy% errors user%)" >&2
}

median() { # median COLUMN FILE
    [[ -s $2 ]] || { echo n/a; return; }
    cut -d' ' -f"$1" "$2" | sort -g | awk '{a[NR]=$1} END {
        if (NR % 2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2 }'
}

total() { # total COLUMN FILE
    [[ -s $2 ]] || { echo 0; return; }
    awk -v c="$1" '{ s += $c } END { print s + 0 }' "$2"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "n/a" || b == "n/a" || b == 0) print "n/a";
    else printf "%.2f", a / b }'; }

label() {
    case $1 in
    es1) echo "EventServer, 1 thread" ;;
    es2) echo "EventServer, 2 threads" ;;
    nginx) echo "nginx $($nginx_bin -v 2>&1 | sed 's/.*nginx\///'), 1 worker" ;;
    esac
}

mode_label() {
    case $1 in
    ka64) echo "keep-alive, 64 conns" ;;
    ka256) echo "keep-alive, 256 conns" ;;
    pipe16) echo "pipelined x16, 64 conns" ;;
    close) echo "new conn per request, ab -c 64" ;;
    esac
}

# measure TAG SERVER_CPUS CLIENT_CPUS WRK_THREADS NAMES...
measure() {
    local tag=$1 scpu=$2 ccpu=$3 wt=$4 mode name
    shift 4
    for mode in $modes; do
        for _ in $(seq "$runs"); do
            for name in "$@"; do
                one "$name" "$mode" "$scpu" "$ccpu" "$wt" "$tag" || true
            done
        done
    done
}

# cg_one NAME MODE SECONDS: user-space instructions of the server under
# callgrind (server on CPU 0, wrk on CPU 1) while wrk runs for SECONDS (0:
# idle baseline, only the readiness probe). Prints "requests instructions".
cg_one() {
    local name=$1 mode=$2 secs=$3 port cgout n=0 cmd pre=(taskset -c 0)
    port=$(free_port)
    cgout=$raw/callgrind.$name.$mode.$secs.out
    case $name in
    es1) cmd=("$es_bin" --port "$port" --threads 1) ;;
    nginx)
        nginx_conf "$tmp/cg.nginx" "$port"
        cmd=("$nginx_bin" -p "$tmp/cg.nginx" -e "$tmp/cg.nginx/error.log"
            -c "$tmp/cg.nginx/nginx.conf")
        ;;
    esac
    "${pre[@]}" valgrind --tool=callgrind --callgrind-out-file="$cgout" \
        "${cmd[@]}" >"$tmp/cg.$name.log" 2>&1 &
    spid=$!
    for _ in $(seq 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$port/plaintext" && break
        sleep 0.1
    done
    if [[ $secs != 0 ]]; then
        n=$(client "$mode" "$port" 1 1 "$secs" | awk '/ requests in / { print $1 }')
    fi
    stop_server
    echo "${n:-0} $(sed -n 's/^totals: *//p' "$cgout")"
}

# callgrind_table: instructions per request, es1 and nginx.
callgrind_table() {
    local mode name base run per ratio_to
    echo "## User-space instructions per request (callgrind)"
    echo
    echo "Each server ran under callgrind (server on CPU 0, wrk on CPU 1) while"
    echo "wrk loaded it for ${CG_SECONDS:-6} s; its instructions (all threads,"
    echo "user space only: callgrind sees no kernel work) minus those of an idle"
    echo "baseline run (start, one probe, stop), divided by the requests wrk"
    echo "completed. The server runs about 50 times slower under callgrind, so"
    echo "each epoll_wait returns more events than in the runs above; both servers"
    echo "see the same conditions. One run each: instruction counts barely vary."
    echo
    echo "| server | mode | requests | instructions/request | vs nginx |"
    echo "|---|---|---|---|---|"
    for mode in ka64 pipe16; do
        ratio_to=
        for name in nginx es1; do
            base=$(cg_one "$name" "$mode" 0)
            run=$(cg_one "$name" "$mode" "${CG_SECONDS:-6}")
            per=$(awk -v b="$base" -v r="$run" 'BEGIN {
                split(b, x, " "); split(r, y, " ")
                if (y[1] == 0 || y[2] == "" || x[2] == "") print "n/a"
                else printf "%.0f", (y[2] - x[2]) / y[1] }')
            [[ $name == nginx ]] && ratio_to=$per
            echo "$name $mode: baseline $base, run $run" >&2
            printf '| %s | %s | %s | %s | %s |\n' "$(label "$name")" \
                "$(mode_label "$mode")" "${run%% *}" "$per" \
                "$(ratio "$per" "$ratio_to")"
        done
    done
    echo
    callgrind_annotate "$raw/callgrind.es1.ka64.${CG_SECONDS:-6}.out" \
        >"$raw/callgrind.es1.ka64.annotate.txt" 2>/dev/null || true
    callgrind_annotate "$raw/callgrind.nginx.ka64.${CG_SECONDS:-6}.out" \
        >"$raw/callgrind.nginx.ka64.annotate.txt" 2>/dev/null || true
}

# table TAG TITLE PINNING NAMES...: prints the table from measure's files.
table() {
    local tag=$1 title=$2 pin=$3 mode name f
    shift 3
    echo "## $title"
    echo
    echo "| server | mode | pinning | requests/s | vs nginx |" \
        "server CPU/request (µs) | vs nginx | server busy | user share |" \
        "errors | runs |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|"
    for mode in $modes; do
        local base_r base_c
        base_r=$(median 1 "$tmp/$tag.nginx.$mode")
        base_c=$(median 2 "$tmp/$tag.nginx.$mode")
        for name in "$@"; do
            f=$tmp/$tag.$name.$mode
            local r c b e u n flag=""
            r=$(median 1 "$f")
            c=$(median 2 "$f")
            b=$(median 3 "$f")
            e=$(total 4 "$f")
            u=$(median 5 "$f")
            n=$( ([[ -f $f ]] && wc -l <"$f") || echo 0)
            [[ $e == 0 ]] || flag=" **!**"
            printf '| %s | %s | %s | %.0f | %s | %.2f | %s | %.0f %% |' \
                "$(label "$name")" "$(mode_label "$mode")" \
                "$(pin_label "$pin")" "${r/n\/a/0}" "$(ratio "$r" "$base_r")" \
                "${c/n\/a/0}" "$(ratio "$c" "$base_c")" "${b/n\/a/0}"
            printf ' %.0f %% | %s%s | %s |\n' "${u/n\/a/0}" "$e" "$flag" \
                "$n/$runs"
        done
    done
    echo
}

pin_label() {
    if [[ $1 == pinned ]]; then
        echo "server CPU 0, wrk/ab CPU 1"
    else
        echo "none"
    fi
}

# targets: the two goals, judged from the medians above.
targets() {
    local mode c_es c_ng r_es2 r_ng verdict
    echo "## Targets"
    echo
    echo "| target | mode | measured | verdict |"
    echo "|---|---|---|---|"
    for mode in $modes; do
        c_es=$(median 2 "$tmp/pinned.es1.$mode")
        c_ng=$(median 2 "$tmp/pinned.nginx.$mode")
        verdict=$(awk -v a="$c_es" -v b="$c_ng" 'BEGIN {
            if (a == "n/a" || b == "n/a" || b == 0) print "n/a";
            else print (a / b <= 0.9 ? "met" : "missed") }')
        echo "| server CPU/request ≤ 0.9× nginx (pinned, 1 thread) |" \
            "$(mode_label "$mode") | $(ratio "$c_es" "$c_ng")× | $verdict |"
    done
    if [[ -z ${NO_UNPINNED:-} ]]; then
        for mode in $modes; do
            r_es2=$(median 1 "$tmp/unpinned.es2.$mode")
            r_ng=$(median 1 "$tmp/unpinned.nginx.$mode")
            verdict=$(awk -v a="$r_es2" -v b="$r_ng" 'BEGIN {
                if (a == "n/a" || b == "n/a" || b == 0) print "n/a";
                else print (a > b ? "met" : "missed") }')
            echo "| 2 threads: more requests/s than nginx, 1 worker" \
                "(unpinned) | $(mode_label "$mode") |" \
                "$(ratio "$r_es2" "$r_ng")× | $verdict |"
        done
    fi
    echo
}

# sanity: both servers answer /plaintext with "Hello, World!"; EventServer
# also /echo, /hold and 404.
sanity() {
    local name body
    for name in es1 nginx; do
        start_server "$name" "" || exit 1
        body=$(curl -sf "http://127.0.0.1:$sport/plaintext")
        [[ $body == "Hello, World!" ]] ||
            { echo "http_bench.sh: $name /plaintext says '$body'" >&2; exit 1; }
        curl -si "http://127.0.0.1:$sport/plaintext" >"$raw/sanity.$name.txt"
        if [[ $name == es1 ]]; then
            body=$(curl -sf -H 'Content-Type: text/x-test' --data-binary abc \
                "http://127.0.0.1:$sport/echo")
            [[ $body == abc ]] ||
                { echo "http_bench.sh: /echo says '$body'" >&2; exit 1; }
            body=$(curl -sf "http://127.0.0.1:$sport/hold?ms=50")
            [[ $body == held ]] ||
                { echo "http_bench.sh: /hold says '$body'" >&2; exit 1; }
            body=$(curl -s -o /dev/null -w '%{http_code}' \
                "http://127.0.0.1:$sport/nope")
            [[ $body == 404 ]] ||
                { echo "http_bench.sh: /nope gave $body" >&2; exit 1; }
        fi
        stop_server
    done
    echo "http_bench.sh: sanity checks passed" >&2
}

report() {
    local load0=$1
    echo "# HTTP: EventServer vs nginx"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm)," \
        "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
        "$(nproc) CPUs; $($nginx_bin -v 2>&1 | sed 's/^nginx version: //')," \
        "wrk $(wrk -v 2>&1 | sed -n '1s/^wrk \([^ ]*\).*/\1/p')," \
        "ab $(ab -V | sed -n '1s/.*Version \([^ ,]*\).*/\1/p'). Load average" \
        "before the runs: $load0; after: $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Generated by \`perf/http_bench.sh\` (raw outputs in"
    echo "\`perf/results/http-$stamp/\`): GET /plaintext, answered"
    echo "\"Hello, World!\" as text/plain by perf/http_server (the"
    echo "EventServer HTTP module) and by nginx (\`return 200\`, 1 worker,"
    echo "master_process off, access_log off, keepalive_requests 10^8). Each"
    echo "run starts a fresh server, warms it up for 1 s with the same load,"
    echo "then measures ${dur} s; $runs runs per server and mode, servers"
    echo "interleaved; medians. Requests/s is the client's count of completed"
    echo "requests over its own run time. Server CPU/request is the server"
    echo "process's utime + stime (all threads, /proc/PID/stat, 1/$hz s ticks)"
    echo "over the measured run divided by those requests. \"server busy\" is"
    echo "that CPU time over the run (100 % = one CPU), \"user share\" the"
    echo "part of it spent in user space (the rest is the kernel's: TCP,"
    echo "epoll, the syscalls). \"vs nginx\" compares"
    echo "with nginx in the same table: above 1 is more requests/s, or more CPU"
    echo "per request (worse). Errors are non-2xx responses plus socket"
    echo "errors (wrk) or failed requests (ab), summed over the runs;"
    echo "**!** flags a row with any. wrk: $pinned_wt thread pinned,"
    echo "$unpinned_wt unpinned; ab is single-threaded and sends HTTP/1.0"
    echo "without keep-alive. The machine may be shared: see the load average."
    echo
    table pinned "Pinned: server on CPU 0, client on CPU 1" pinned es1 nginx
    if [[ -z ${NO_UNPINNED:-} ]]; then
        table unpinned "Unpinned: server and client share both CPUs" none \
            es1 es2 nginx
    fi
    targets
    cat "$tmp/callgrind.md" 2>/dev/null || true
    echo "Memory per idle keep-alive connection and per parked long-poll:"
    echo "[\`http_memory.md\`](http_memory.md) (\`perf/http_memory.sh\`)."
}

sanity
load0=$(cut -d' ' -f1-3 /proc/loadavg)
measure pinned 0 1 "$pinned_wt" es1 nginx
if [[ -z ${NO_UNPINNED:-} ]]; then
    measure unpinned "" "" "$unpinned_wt" es1 es2 nginx
fi
if [[ -z ${NO_CALLGRIND:-} ]] && command -v valgrind >/dev/null; then
    callgrind_table >"$tmp/callgrind.md"
fi
cp "$tmp"/pinned.* "$tmp"/unpinned.* "$raw/" 2>/dev/null || true
report "$load0" | tee "$raw/summary.md"
mkdir -p "$(dirname "$out")" "$results"
cp "$raw/summary.md" "$out"
cp -r "$raw"/. "$results/"
echo "http_bench.sh: wrote $out and $results" >&2
