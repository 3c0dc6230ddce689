#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Runs the Savina benchmarks (perf/savina) and writes docs/perf/savina.md.
# Builds nothing: give the build directory (default build/). Each round runs
# every benchmark in four configurations, interleaved so that drift on the
# machine spreads over all of them: es with 1 thread, es with 2 threads and
# default placement, es with 2 threads hand-placed (--placed), caf with 2
# scheduler threads; pingpong also runs --placed --split (ping and pong on
# two loops: the cross-thread round trip). idle_actors runs once. The
# report holds the medians of wall and CPU time per configuration, the
# ratios of the medians of wall time, and the issue's targets, met or
# missed as measured.
#
# Then the request/reply ports (issue 10): every program that waits for an
# answer (req_benches) runs plain and with --request, at 1 thread and at 2
# threads with default placement, interleaved in rounds of their own; the
# report's "Request/reply ports" section holds the medians of wall time
# and the ratios request/plain.
#
# Usage: perf/savina/run.sh [BUILD_DIR]
#        SAVINA_RAW=FILE perf/savina/run.sh   (re-render a report from the
#        "Raw lines" of an earlier one, without running anything)
#        SAVINA_ONLY=request perf/savina/run.sh [BUILD_DIR]   (run only the
#        request/reply part; its raw lines replace the earlier ones of that
#        part in SAVINA_OUT, the rest of the report is re-rendered from the
#        raw lines kept there, so only its section changes)
# Env: SAVINA_ROUNDS (default 5), SAVINA_OUT (default docs/perf/savina.md),
# SAVINA_TIMEOUT (seconds per run, default 30: a run past it counts as
# failed, "timed out", and is left out of the medians), SAVINA_ONLY
# (empty: everything; "request": the request/reply part alone).
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
build=$(cd "${1:-$root/build}" && pwd)
bin=$build/perf/savina
rounds=${SAVINA_ROUNDS:-5}
limit=${SAVINA_TIMEOUT:-30}
out=${SAVINA_OUT:-$root/docs/perf/savina.md}
only=${SAVINA_ONLY:-}
benches=(pingpong counting threadring fjthroughput fjcreation big chameneos)
# The programs that wait for answers and have --request (threadring and
# fjthroughput wait for none), and the configurations of that part.
req_benches=(pingpong counting fjcreation big chameneos)
req_configs=(es1plain es1req es2plain es2req)
case $only in
"" | request) ;;
*) echo "run.sh: SAVINA_ONLY=$only: only \"request\" is known" >&2; exit 1 ;;
esac
# shellcheck source=perf/mem_common.sh
source "$root/perf/mem_common.sh" # field, machine

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
raw=$tmp/raw

# raw_lines FILE: the "Raw lines" of an earlier report.
raw_lines() { sed -n '/^## Raw lines/,$p' "$1" | grep -v '^##\|^```\|^$' || true; }
# not_req_lines: filters out the lines of the request/reply part (its meta
# lines "#req_*" and its runs, tagged BENCH/CONFIG with CONFIG one of
# req_configs).
not_req_lines() {
    awk -v c="${req_configs[*]}" 'BEGIN { n = split(c, a, " "); for (i = 1; i <= n; i++) is[a[i]] = 1 }
        $1 ~ /^#req_/ { next }
        { split($1, p, "/"); if (p[2] in is) next; print }'
}

if [[ -n ${SAVINA_RAW:-} ]]; then
    raw_lines "$SAVINA_RAW" >"$raw"
else
if [[ -z $only ]]; then
    run_benches=("${benches[@]}")
else
    run_benches=("${req_benches[@]}")
fi
for b in "${run_benches[@]}"; do
    [[ -x $bin/es_$b ]] || { echo "run.sh: $bin/es_$b missing (build first)" >&2; exit 1; }
done
commit=$(git -C "$root" rev-parse --short HEAD)
git -C "$root" diff --quiet HEAD -- src include actors perf/savina || commit="$commit (with local changes)"
if [[ $only == request ]]; then
    # Keep everything of the earlier report but its request/reply part.
    [[ -f $out ]] || { echo "run.sh: SAVINA_ONLY=request needs an earlier $out" >&2; exit 1; }
    raw_lines "$out" | not_req_lines >"$raw"
else
[[ -x $bin/idle_actors ]] || { echo "run.sh: $bin/idle_actors missing" >&2; exit 1; }
have_caf=1
for b in "${benches[@]}"; do
    [[ -x $bin/caf_$b ]] || have_caf=0
done
((have_caf)) || echo "run.sh: caf_* binaries missing; CAF columns stay empty" >&2

{
    echo "#machine $(machine)"
    echo "#commit $commit"
    echo "#limit $limit"
} >"$raw"
fi

# run LABEL BINARY ARGS...: one run; its line goes to $raw tagged with
# LABEL, or a failure line if it exits nonzero (wrong check or crash).
run() {
    local label=$1 exe=$2 line rc=0
    shift 2
    line=$(timeout "$limit" "$bin/$exe" "$@" 2>"$tmp/err") || rc=$?
    if ((rc == 0)); then
        echo "$label $line" >>"$raw"
    elif ((rc == 124)); then
        echo "$label FAILED $exe $* : timed out after $limit s" >>"$raw"
        echo "run.sh: $exe $* timed out after $limit s" >&2
    else
        echo "$label FAILED $exe $* : $(tr '\n' ' ' <"$tmp/err")" >>"$raw"
        echo "run.sh: $exe $* failed: $(cat "$tmp/err")" >&2
    fi
}

if [[ -z $only ]]; then
for ((r = 1; r <= rounds; r++)); do
    echo "run.sh: round $r/$rounds" >&2
    for b in "${benches[@]}"; do
        run "$b/es1" "es_$b" --threads 1
        run "$b/es2" "es_$b" --threads 2
        run "$b/es2p" "es_$b" --threads 2 --placed
        if ((have_caf)); then
            run "$b/caf" "caf_$b" --threads 2
        fi
        if [[ $b == pingpong ]]; then
            # Every cross-thread round trip may cost two sleeps and two
            # wakeups: a tenth of the round trips keeps the run short.
            # With and without adaptive spinning (SAVINA_ES_SPIN).
            SAVINA_ES_SPIN=1 run "$b/split" "es_$b" --threads 2 --placed \
                --split --n 50000
            SAVINA_ES_SPIN=-1 run "$b/split_nospin" "es_$b" --threads 2 \
                --placed --split --n 50000
        fi
    done
done
idle=$("$bin/idle_actors" --threads 2 2>&1) || idle="FAILED: $idle"
echo "idle $idle" >>"$raw"
fi

# The request/reply part: plain and --request side by side in each round.
{
    echo "#req_machine $(machine)"
    echo "#req_commit $commit"
} >>"$raw"
for ((r = 1; r <= rounds; r++)); do
    echo "run.sh: request/reply round $r/$rounds" >&2
    for b in "${req_benches[@]}"; do
        run "$b/es1plain" "es_$b" --threads 1
        run "$b/es1req" "es_$b" --threads 1 --request
        run "$b/es2plain" "es_$b" --threads 2
        run "$b/es2req" "es_$b" --threads 2 --request
    done
done
fi
rounds=$(awk '$1 == "pingpong/es1"' "$raw" | wc -l)
req_rounds=$(awk '$1 == "pingpong/es1req"' "$raw" | wc -l)

idle=$(awk '$1 == "idle"' "$raw" | cut -d' ' -f2-)
meta() { awk -v k="#$1" '$1 == k' "$raw" | cut -d' ' -f2-; }
limit=$(meta limit)
limit=${limit:-30}

# median LABEL KEY: the median of KEY over the runs tagged LABEL ("" if none).
median() {
    awk -v l="$1" -v k="$2" '$1 == l && $2 != "FAILED" {
            for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] }
        }' "$raw" | sort -g | awk '{ v[NR] = $1 }
        END { if (NR) printf "%.3f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
runs() { awk -v l="$1" '$1 == l && $2 != "FAILED"' "$raw" | wc -l; }
fails() { awk -v l="$1" '$1 == l && $2 == "FAILED"' "$raw" | wc -l; }
# ratio A B: A/B with two decimals; "<x" when B is a lower bound (">ms").
ratio() {
    [[ -n $1 && -n $2 ]] || return 1
    if [[ $2 == \>* ]]; then
        awk -v a="$1" -v b="${2#>}" 'BEGIN { printf "<%.3f", a / b }'
    else
        awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
    fi
}
# meets V T: ratio V (possibly "<x", a bound) is at most the target T.
meets() { [[ -n $1 ]] && awk -v v="${1#<}" -v t="$2" 'BEGIN { exit !(v <= t) }'; }
# row NAME A B TARGET: a ratio row, A/B against "<= TARGET".
row() {
    local v status
    v=$(ratio "$2" "$3" || true)
    if [[ -z $v ]]; then
        status="not measured"
    elif meets "$v" "$4"; then
        status=met
    else
        status=missed
    fi
    echo "| $1 | ${v:-n/a} | <= $4x | $status |"
}

timeouts() { awk -v l="$1" '$1 == l && $2 == "FAILED" && /timed out/' "$raw" | wc -l; }
# caf_wall B: CAF's median wall ms, or ">LIMIT" when every run timed out.
caf_wall() {
    local m
    m=$(median "$1/caf" wall_ms)
    if [[ -z $m && $(timeouts "$1/caf") -gt 0 ]]; then
        m=">$((limit * 1000))"
    fi
    echo "$m"
}

# checks B: the issue's targets for benchmark B, one "NAME|A|B|TARGET" line
# each (A/B <= TARGET; A or B empty when not measured).
checks() {
    local b=$1 es1 es2 es2p caf t21=1.0
    es1=$(median "$b/es1" wall_ms)
    es2=$(median "$b/es2" wall_ms)
    es2p=$(median "$b/es2p" wall_ms)
    caf=$(caf_wall "$b")
    if [[ $b == big || $b == fjthroughput ]]; then
        t21=0.7 # they have parallelism to use
    fi
    printf '%s\n' "es2/es1|$es2|$es1|$t21" "es2/es2p|$es2|$es2p|1.2" \
        "es1/caf|$es1|$caf|0.3" "es2/caf|$es2|$caf|0.3" "es2p/caf|$es2p|$caf|0.3"
}

# requests B N: how many requests benchmark B makes at size N (the
# constants of savina_common.h): pingpong and fjcreation one per message,
# big SAVINA_BIG_ACTORS * N, chameneos one per meeting of each creature and
# one more each to be sent home (2N + SAVINA_CHAMENEOS), counting one.
requests() {
    case $1 in
    pingpong | fjcreation) echo "$2" ;;
    big) echo $((120 * $2)) ;;
    chameneos) echo $((2 * $2 + 100)) ;;
    *) echo 1 ;;
    esac
}
# extra_ns REQ PLAIN COUNT: (REQ - PLAIN) ms spread over COUNT requests, in
# ns; "-" when there are too few requests for the difference to mean
# anything.
extra_ns() {
    [[ -n $1 && -n $2 && $3 -ge 1000 ]] || { echo -; return; }
    awk -v a="$1" -v b="$2" -v c="$3" 'BEGIN { printf "%.0f", (a - b) * 1e6 / c }'
}

# req_section: the report's section on the request/reply ports.
req_section() {
    local b n rq p1 q1 p2 q2 ok bad total_ok=0 total_bad=0
    echo
    echo "## Request/reply ports (issue 10)"
    echo
    echo "$(meta req_machine)."
    echo "Commit $(meta req_commit); $req_rounds rounds, interleaved: in each"
    echo "round every program runs plain, then with \`--request\`, at 1 thread"
    echo "(es1) and at 2 threads with default placement (es2)."
    echo "With \`--request\` the side that waits for an answer asks with"
    echo "\`es_request()\` (no deadline) and is answered with \`es_reply()\`:"
    echo "pingpong's ping, counting's question for the total after the n"
    echo "increments, fjcreation's message to each new worker, big's pings;"
    echo "chameneos's mall keeps the first asker's \`es_reply_token()\` until a"
    echo "partner comes and answers it with \`es_reply_to()\`. The ratio"
    echo "request/plain of the medians of wall time is what the request"
    echo "bookkeeping (a pending entry per request, found again by the reply's"
    echo "id and removed) costs over a plain send and a plain send of the"
    echo "answer: 1.00 is nothing, 1.20 is 20% more time for the whole program."
    echo "Extra ns per request spreads the difference of the medians (request"
    echo "less plain) over the requests the program makes. The checks are the"
    echo "same numbers as in plain mode, so a lost or duplicated answer, or a"
    echo "request that fails, fails the run (counted under failed)."
    echo
    echo "Two things weigh beyond the bookkeeping. A kept reply token (chameneos)"
    echo "also holds a watch on the mall for the requester (link.c: an entry"
    echo "taken under a lock, so that the requester learns at once if the mall"
    echo "stops), added and removed for every meeting. And a reply does not"
    echo "count against the requester's mailbox while a plain answer does: where"
    echo "many answers arrive while the requester is busy (fjcreation's driver"
    echo "spawning), the plain answers mute their senders and the replies do"
    echo "not (\`SAVINA_ES_STATS=1\` prints the mutes), so a ratio below 1 is"
    echo "possible."
    echo
    echo "| benchmark | n | requests | es1 plain ms | es1 request ms | es1 request/plain | es1 extra ns/request | es2 plain ms | es2 request ms | es2 request/plain | es2 extra ns/request | runs | failed |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for b in "${req_benches[@]}"; do
        n=$(field n "$(awk -v l="$b/es1req" '$1 == l && $2 != "FAILED"' "$raw" | head -1)")
        rq=$(requests "$b" "${n:-0}")
        p1=$(median "$b/es1plain" wall_ms)
        q1=$(median "$b/es1req" wall_ms)
        p2=$(median "$b/es2plain" wall_ms)
        q2=$(median "$b/es2req" wall_ms)
        ok=0 bad=0
        for c in "${req_configs[@]}"; do
            ok=$((ok + $(runs "$b/$c")))
            bad=$((bad + $(fails "$b/$c")))
        done
        total_ok=$((total_ok + ok)) total_bad=$((total_bad + bad))
        echo "| $b | ${n:-?} | $rq | $p1 | $q1 | $(ratio "$q1" "$p1" || echo n/a) | $(extra_ns "$q1" "$p1" "$rq") | $p2 | $q2 | $(ratio "$q2" "$p2" || echo n/a) | $(extra_ns "$q2" "$p2" "$rq") | $ok | $bad |"
    done
    echo
    echo "Checks: $total_ok runs passed theirs, $total_bad failed or timed out."
}

{
    echo "# Savina actor benchmarks: EventServer vs CAF"
    echo
    echo "$(meta machine)."
    echo "Commit $(meta commit); $rounds rounds, interleaved; CAF $(dpkg-query -W -f='${Version}' libcaf-dev 2>/dev/null || echo '?')."
    echo "Produced by \`perf/savina/run.sh\` (sources and what each benchmark does:"
    echo "perf/savina/). Times are medians over the rounds; wall and CPU run from"
    echo "the first spawn to the end of the benchmark (runtime start and teardown"
    echo "excluded); CPU is the process's user+sys time. Ratios compare medians"
    echo "of wall time. es1: EventServer, 1 thread; es2: 2 threads, default"
    echo "placement; es2p: 2 threads, hand-placed (\`--placed\`); caf: CAF, 2"
    echo "scheduler threads. Targets are the issue's goals."
    echo
    echo "## Summary (wall time, medians)"
    echo
    echo "| benchmark | es1 ms | es2 ms | es2/es1 | es2/es2p | es2/caf | targets met |"
    echo "|---|---:|---:|---:|---:|---:|---|"
    for b in "${benches[@]}"; do
        es1=$(median "$b/es1" wall_ms)
        es2=$(median "$b/es2" wall_ms)
        es2p=$(median "$b/es2p" wall_ms)
        caf=$(caf_wall "$b")
        met=0 all=0
        while IFS='|' read -r _ a bb t; do
            all=$((all + 1))
            if meets "$(ratio "$a" "$bb" || true)" "$t"; then
                met=$((met + 1))
            fi
        done < <(checks "$b")
        echo "| $b | $es1 | $es2 | $(ratio "$es2" "$es1" || echo n/a) | $(ratio "$es2" "$es2p" || echo n/a) | $(ratio "$es2" "$caf" || echo n/a) | $met of $all |"
    done
    for b in "${benches[@]}"; do
        n=$(field n "$(awk -v l="$b/es1" '$1 == l && $2 != "FAILED"' "$raw" | head -1)")
        echo
        echo "## $b (n=${n:-?})"
        echo
        echo "| config | wall ms | CPU ms | runs | failed |"
        echo "|---|---:|---:|---:|---:|"
        for c in es1 es2 es2p caf; do
            w=$(median "$b/$c" wall_ms)
            if [[ -z $w && $(timeouts "$b/$c") -gt 0 ]]; then
                w=">$((limit * 1000)) (timed out)"
            fi
            echo "| $c | $w | $(median "$b/$c" cpu_ms) | $(runs "$b/$c") | $(fails "$b/$c") |"
        done
        if [[ $b == pingpong ]]; then
            echo "| es2p --split, adaptive spin (n=50000) | $(median "$b/split" wall_ms) | $(median "$b/split" cpu_ms) | $(runs "$b/split") | $(fails "$b/split") |"
            echo "| es2p --split, no spin (n=50000) | $(median "$b/split_nospin" wall_ms) | $(median "$b/split_nospin" cpu_ms) | $(runs "$b/split_nospin") | $(fails "$b/split_nospin") |"
        fi
        echo
        echo "| ratio (wall) | value | target | status |"
        echo "|---|---:|---|---|"
        while IFS='|' read -r name a bb t; do
            row "$name" "$a" "$bb" "$t"
        done < <(checks "$b")
        if [[ $b == pingpong ]]; then
            echo
            for c in es2p split split_nospin; do
                w=$(median "$b/$c" wall_ms)
                cpu=$(median "$b/$c" cpu_ms)
                cn=$(field n "$(awk -v l="$b/$c" '$1 == l && $2 != "FAILED"' "$raw" | head -1)")
                [[ -n $w && -n $cn ]] || continue
                rt=$(awk -v w="$w" -v n="$cn" 'BEGIN { printf "%.3f", w * 1000 / n }')
                rc=$(awk -v w="$cpu" -v n="$cn" 'BEGIN { printf "%.3f", w * 1000 / n }')
                case $c in
                es2p) what="both on one loop" ;;
                split) what="on two loops, adaptive spinning (the default)" ;;
                *) what="on two loops, adaptive spinning off" ;;
                esac
                echo "Round trip, $what: $rt µs, CPU $rc µs per round trip (medians / n, n=$cn)."
                echo
            done
        fi
    done
    if ((req_rounds > 0)); then
        req_section
    fi
    echo
    echo "## idle_actors"
    echo
    echo "1,000,000 idle actors spawned from main (2 threads, default placement),"
    echo "one run; bytes per actor = RSS growth / actors."
    echo
    echo '```'
    echo "$idle"
    echo '```'
    echo
    echo "## Runs that failed or timed out"
    echo
    echo '```'
    awk '$2 == "FAILED"' "$raw"
    echo '```'
    echo
    echo "## Raw lines"
    echo
    echo '```'
    cat "$raw"
    echo '```'
} >"$out"
echo "run.sh: wrote $out" >&2
