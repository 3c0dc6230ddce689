#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Soak test of the HTTP server: perf/http_server (the benchmark
# application, one demux thread per CPU) on 127.0.0.1 under perf/soak_load
# for MINUTES (default 10): 19,000 connections with churn (connect, 1..5
# keep-alive requests with think times, close or "Connection: close",
# reconnect at once) from 16 source addresses 127.0.0.1..16, 32 of them
# pipelining batches of 16 requests (GET, POST with Content-Length, POST
# chunked), every response checked. Server and load tool are separate
# processes (each may hold at most the hard RLIMIT_NOFILE fds). Every
# SAMPLE_S seconds it samples the server's RSS (/proc/PID/status), its fd
# count (/proc/PID/fd), its established sockets (ss) and the load tool's
# open connections and counters. After the clients leave it waits for the
# server's fd count to come back, then judges the targets: RSS when the
# load ends and after the clients left no more than 5 % above RSS after
# the first minute, fd count back to the baseline taken before the clients
# connected, zero errors. Writes docs/perf/soak.tsv (every sample),
# soak.md (figures, targets, one sample a minute) and soak.png (gnuplot,
# perf/soak.gp); exits 1 if a target is missed. Stops the server by PID.
# Usage:
#   perf/soak.sh [MINUTES]             (default 10, at least 2)
# Environment: BUILD (build), CONNS (19000), PIPES (32), SOURCES (16),
# THINK_MS (5000, mean think time), THREADS (server demux threads; one per
# CPU), SAMPLE_S (10), OUT_DIR (docs/perf), NO_INSTALL=1 (do not install
# gnuplot-nox when it is missing and we are root; only print the line).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
minutes=${1:-10}
build=${BUILD:-$root/build}
outdir=${OUT_DIR:-$root/docs/perf}
conns=${CONNS:-19000}
pipes=${PIPES:-32}
sources=${SOURCES:-16}
think=${THINK_MS:-5000}
period=${SAMPLE_S:-10}
srv_bin=$build/perf/http_server
load_bin=$build/perf/soak_load
# shellcheck source=perf/mem_common.sh
. "$root/perf/mem_common.sh" # machine, field, $hard

die() { echo "soak.sh: $*" >&2; exit 1; }
if ! [[ $minutes =~ ^[0-9]+$ ]] || ((minutes < 2 || minutes > 1440)); then
    die "MINUTES must be 2..1440 (the first minute is the RSS reference)"
fi
for b in "$srv_bin" "$load_bin"; do
    [[ -x $b ]] || die "$b not built (cmake --build $build --target ${b##*/})"
done
for t in ss awk; do command -v "$t" >/dev/null || die "$t not found"; done
maxconn=$((hard - 100)) # the server's own fds fit in the rest
((conns + 500 <= maxconn)) ||
    die "CONNS=$conns leaves no margin under the server's $maxconn"

if ! command -v gnuplot >/dev/null; then
    echo "soak.sh: gnuplot missing: apt-get install -y gnuplot-nox" >&2
    if [[ $(id -u) == 0 && -z ${NO_INSTALL:-} ]]; then
        apt-get install -y -qq gnuplot-nox >&2 || true
    fi
    command -v gnuplot >/dev/null || echo "soak.sh: no plot this run" >&2
fi

tmp=$(mktemp -d /tmp/soak.XXXXXX)
spid='' lpid=''
cleanup() {
    [[ -z $lpid ]] || kill -TERM "$lpid" 2>/dev/null || true
    [[ -z $spid ]] || kill -TERM "$spid" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
fd_count() { find "/proc/$1/fd" -mindepth 1 -maxdepth 1 | wc -l; }
estab() { ss -Htn state established "( sport = :$1 )" | wc -l; }
now_s() { echo "${EPOCHREALTIME/,/.}"; }

# start_server: http_server on a port of its choice; sets spid and port.
start_server() {
    local -a cmd=("$srv_bin" --port 0 --max-connections "$maxconn")
    [[ -z ${THREADS:-} ]] || cmd+=(--threads "$THREADS")
    "${cmd[@]}" >"$tmp/server.out" 2>&1 &
    spid=$!
    for _ in $(seq 100); do
        port=$(sed -n 's/.*listening on [0-9.]*:\([0-9]*\).*/\1/p' \
            "$tmp/server.out")
        [[ -z $port ]] || return 0
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    cat "$tmp/server.out" >&2
    die "http_server did not start"
}

# stop_server: SIGTERM by PID, 15 s to exit, then SIGKILL.
stop_server() {
    kill -TERM "$spid" 2>/dev/null || true
    for _ in $(seq 150); do
        kill -0 "$spid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$spid" 2>/dev/null; then
        echo "soak.sh: http_server ignored SIGTERM; killing it" >&2
        kill -KILL "$spid" 2>/dev/null || true
    fi
    wait "$spid" 2>/dev/null || true
    spid=
}

# sample PHASE: one row of soak.tsv from the server and the load tool.
sample() {
    local t l errs v k
    t=$(awk -v a="$(now_s)" -v b="$t0" 'BEGIN { printf "%.0f", a - b }')
    l=$(tail -n 1 "$tmp/load.out" 2>/dev/null || true)
    errs=0
    for k in err_connect err_reset err_bad err_timeout; do
        v=$(field "$k" "$l")
        errs=$((errs + ${v:-0}))
    done
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$1" "$(rss_kb "$spid")" \
        "$(fd_count "$spid")" "$(estab "$port")" "$(field open "$l")" \
        "$(field connects "$l")" "$(field responses "$l")" "$errs" \
        >>"$tsv"
    tail -n 1 "$tsv" >&2
}

# run_load: the load for $minutes, sampled every $period s; bounded.
run_load() {
    local k=1 limit=$((minutes * 60 + 120)) next
    "$load_bin" --port "$port" --connections "$conns" --pipelined "$pipes" \
        --sources "$sources" --think-ms "$think" \
        --seconds $((minutes * 60)) >"$tmp/load.out" 2>"$tmp/load.err" &
    lpid=$!
    t0=$(now_s)
    while kill -0 "$lpid" 2>/dev/null; do
        next=$(awk -v a="$t0" -v k="$k" -v p="$period" -v n="$(now_s)" \
            'BEGIN { d = a + k * p - n; printf "%.3f", (d > 0 ? d : 0) }')
        sleep "$next"
        kill -0 "$lpid" 2>/dev/null || break
        sample load
        k=$((k + 1))
        if ((k * period > limit)); then
            echo "soak.sh: soak_load overran; stopping it" >&2
            kill -TERM "$lpid" 2>/dev/null || true
        fi
    done
    lrc=0
    wait "$lpid" || lrc=$?
    lpid=
}

# settle: after the clients left, wait (60 s at most) for the fd count to
# come back to the baseline, then one more second; sample "after".
settle() {
    for _ in $(seq 60); do
        (($(fd_count "$spid") <= fd0)) && break
        sleep 1
    done
    sleep 1
    sample after
}

# col N ROW: field N of a tsv row.
col() { cut -f"$1" <<<"$2"; }

pct() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.1f", 100 * (a - b) / b }'; }

# judge: the targets from the samples; sets figures and $missed.
judge() {
    local m1 last after k v
    m1=$(awk -F'\t' '$2 == "load" && $1 >= 60 { print; exit }' "$tsv")
    last=$(awk -F'\t' '$2 == "load"' "$tsv" | tail -n 1)
    after=$(awk -F'\t' '$2 == "after"' "$tsv" | tail -n 1)
    [[ -n $m1 && -n $last && -n $after ]] || die "too few samples"
    rss_m1=$(col 3 "$m1") rss_last=$(col 3 "$last") rss_end=$(col 3 "$after")
    fd_end=$(col 4 "$after") fd_peak=$(awk -F'\t' 'NR > 1 && $4 > m { m = $4 }
        END { print m }' "$tsv")
    # Server fds once ramped up, before the wind-down: median and minimum.
    read -r fd_med fd_min < <(awk -F'\t' -v end=$((minutes * 60)) '
        $2 == "load" && $1 >= 60 && $1 < end { print $4 }' "$tsv" |
        sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)], a[1] }')
    final=$(grep 'soak_load: final' "$tmp/load.out" | tail -n 1 || true)
    errors=0
    for k in err_connect err_reset err_bad err_timeout; do
        v=$(field "$k" "$final")
        errors=$((errors + ${v:-1}))
    done
    missed=()
    awk -v a="$rss_last" -v b="$rss_m1" 'BEGIN { exit !(a <= 1.05 * b) }' ||
        missed+=("RSS when the load ended is $(pct "$rss_last" "$rss_m1") % from minute 1 (limit +5 %)")
    awk -v a="$rss_end" -v b="$rss_m1" 'BEGIN { exit !(a <= 1.05 * b) }' ||
        missed+=("RSS after the clients left is $(pct "$rss_end" "$rss_m1") % from minute 1 (limit +5 %)")
    ((fd_end == fd0)) ||
        missed+=("fd count $fd_end after the clients left, baseline $fd0")
    [[ -n $final && $errors == 0 && $lrc == 0 ]] ||
        missed+=("load tool: exit $lrc, $errors errors (see its stderr above)")
    [[ $(field open "$final") == 0 ]] ||
        missed+=("load tool still had connections open at its end")
}

verdict() { [[ $1 == 1 ]] && echo met || echo "**missed**"; }

report() {
    local commit dirty=""
    commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo "?")
    [[ -z $(git -C "$root" status --porcelain -- src actors http include \
        perf 2>/dev/null) ]] || dirty="+changes"
    echo "# Soak: the HTTP server under 19,000 churning connections"
    echo
    echo "$(machine); commit $commit$dirty; load average at the end" \
        "$(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "Generated by \`perf/soak.sh $minutes\` (how to run it and what it"
    echo "measures: [soak_howto.md](soak_howto.md)): $minutes minutes of"
    echo "$conns connections from perf/soak_load ($pipes of them pipelining"
    echo "16 requests at a time, $sources source addresses, mean think time"
    echo "$think ms) against perf/http_server on 127.0.0.1, $(sed -n \
        's/.*(\([0-9]*\) demux threads).*/\1/p' "$tmp/server.out") demux"
    echo "threads. Every sample: [soak.tsv](soak.tsv); plot: soak.png."
    echo
    echo "![soak](soak.png)"
    echo
    echo "| figure | value |"
    echo "|---|---|"
    echo "| RSS before the clients / after minute 1 / when the load ended / after the clients left | $rss0 / $rss_m1 / $rss_last / $rss_end kB |"
    echo "| RSS change from minute 1: load end / clients gone | $(pct "$rss_last" "$rss_m1") % / $(pct "$rss_end" "$rss_m1") % |"
    echo "| server fds: baseline / peak / after the clients left | $fd0 / $fd_peak / $fd_end |"
    echo "| server fds under load after minute 1: median / minimum (dips: the load tool's reconnects lag when the machine is busy) | $fd_med / $fd_min |"
    echo "| connections opened / requests answered and checked | $(field connects "$final") / $(field responses "$final") |"
    echo "| of which pipelined / chunked | $(field pipelined "$final") / $(field chunked "$final") |"
    echo "| errors: connect / reset / bad response / timeout | $(field err_connect "$final") / $(field err_reset "$final") / $(field err_bad "$final") / $(field err_timeout "$final") |"
    echo "| server's own count | $(sed -n 's/^http_server: stopped; //p' "$tmp/server.out") |"
    echo
    echo "| target | verdict |"
    echo "|---|---|"
    echo "| RSS when the load ended ≤ RSS after minute 1 + 5 % | $(verdict "$(awk -v a="$rss_last" -v b="$rss_m1" 'BEGIN { print (a <= 1.05 * b) }')") |"
    echo "| RSS after the clients left ≤ RSS after minute 1 + 5 % | $(verdict "$(awk -v a="$rss_end" -v b="$rss_m1" 'BEGIN { print (a <= 1.05 * b) }')") |"
    echo "| fd count back to the baseline | $(verdict "$((fd_end == fd0))") |"
    echo "| zero errors | $(verdict "$((errors == 0 && lrc == 0))") |"
    echo
    echo "## Samples, one a minute (all of them in soak.tsv)"
    echo
    echo "| t (s) | phase | RSS (kB) | fds | established (ss) | open (client) | connections opened | responses | errors |"
    echo "|---|---|---|---|---|---|---|---|---|"
    awk -F'\t' 'NR > 1 && ($1 % 60 < '"$period"' || $2 != "load") {
        printf "| %s |\n", $1 " | " $2 " | " $3 " | " $4 " | " $5 " | " $6 \
            " | " $7 " | " $8 " | " $9 }' "$tsv"
}

plot() {
    command -v gnuplot >/dev/null || return 0
    gnuplot -e "tsv='$tsv'; png='$outdir/soak.png'; rss_m1=$rss_m1;" \
        -e "fd0=$fd0; conns=$conns; title_text='$minutes min, $conns conns, commit $(git -C "$root" rev-parse --short HEAD 2>/dev/null)'" \
        "$root/perf/soak.gp" || echo "soak.sh: gnuplot failed" >&2
}

main() {
    mkdir -p "$outdir"
    tsv=$tmp/soak.tsv
    printf 't_s\tphase\trss_kb\tfds\testablished\tclient_open\tconnects\tresponses\terrors\n' >"$tsv"
    start_server
    sleep 2 # the runtime settles before the baseline
    fd0=$(fd_count "$spid") rss0=$(rss_kb "$spid") t0=$(now_s)
    sample before
    echo "soak.sh: server pid $spid on port $port; fds $fd0, RSS $rss0 kB;" \
        "$minutes min of load" >&2
    run_load
    cat "$tmp/load.err" >&2
    settle
    stop_server
    judge
    cp "$tsv" "$outdir/soak.tsv"
    report >"$outdir/soak.md"
    plot
    tail -n +3 "$tmp/load.out" | grep final >&2 || true
    echo "soak.sh: wrote $outdir/soak.md, soak.tsv, soak.png" >&2
    if ((${#missed[@]})); then
        printf 'soak.sh: TARGET MISSED: %s\n' "${missed[@]}" >&2
        exit 1
    fi
    echo "soak.sh: all targets met (RSS $(pct "$rss_end" "$rss_m1") % from" \
        "minute 1, fds $fd_end = baseline $fd0, 0 errors)" >&2
}

main
