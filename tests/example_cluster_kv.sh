#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Runs examples/cluster_kv as separate processes and checks the transcript:
# a nats-server on 127.0.0.1 (a free port), two stores (a pool under the
# name "kv.store") and a front; one client connection PUTs and GETs; store-a
# is killed with SIGKILL and the front goes on answering from store-b, which
# holds every key (PUTs are broadcast to all stores); store-b leaves and a
# GET fails at once (no store holds the name); store-c starts, empty, and
# serves. Every process is started here and stopped by its PID; every wait
# is bounded. Exit 77 (ctest: skipped) if nats-server is not installed.
# Usage: example_cluster_kv.sh PATH_TO_cluster_kv
set -eu
exe=$1
if ! command -v nats-server >/dev/null 2>&1; then
    echo "SKIPPED: nats-server is not installed (apt-get install nats-server);"
    echo "SKIPPED: example_cluster_kv needs a NATS broker and did not run"
    exit 77
fi

dir=$(mktemp -d)
pids=""
cleanup() {
    exec 3>&- 2>/dev/null || true
    for p in $pids; do
        kill -9 "$p" 2>/dev/null || true
    done
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
    echo "FAIL: $*"
    for f in "$dir"/*.log "$dir"/client.out; do
        [ -f "$f" ] && { echo "--- $(basename "$f")"; cat "$f"; }
    done
    exit 1
}

# wait_for FILE PATTERN: until a line of FILE matches (at most 15 s).
wait_for() {
    i=0
    until grep -q -- "$2" "$1" 2>/dev/null; do
        i=$((i + 1))
        [ $i -le 150 ] || fail "no '$2' in $(basename "$1") after 15 s"
        sleep 0.1
    done
}

# stop_pid PID SIGNAL [clean]: signals a process started here and reaps
# it; with "clean" it must exit 0 (a clean leave, no leak under ASan).
stop_pid() {
    kill "-$2" "$1"
    rc=0
    wait "$1" || rc=$?
    pids=$(echo "$pids" | sed "s/\b$1\b//")
    [ "${3:-}" != clean ] || [ $rc = 0 ] || fail "pid $1 exited $rc after SIG$2"
}

nats-server -a 127.0.0.1 -p -1 --ports_file_dir "$dir" >"$dir/nats.log" 2>&1 &
nats=$!
pids="$pids $nats"
wait_for "$dir/nats-server_$nats.ports" nats://
url=$(sed 's/.*"\(nats:[^"]*\)".*/\1/' "$dir/nats-server_$nats.ports")

store() {
    # 3>&-: a store started later must not hold the client's FIFO open.
    "$exe" store --nats "$url" --node "$1" >"$dir/$1.log" 2>&1 3>&- &
    eval "pid_$(echo "$1" | tr - _)=$!"
    pids="$pids $!"
    wait_for "$dir/$1.log" "serving"
}
store store-a
store store-b
"$exe" front --nats "$url" --port 0 >"$dir/front.log" 2>&1 &
front=$!
pids="$pids $front"
wait_for "$dir/front.log" "listening on"
port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$dir/front.log")

# One client connection for the whole run, fed line by line through a FIFO.
mkfifo "$dir/in"
"$exe" client --port "$port" <"$dir/in" >"$dir/client.out" 2>&1 &
client=$!
pids="$pids $client"
exec 3>"$dir/in"

note() { echo "# $*" >&3; }
# ask COMMAND: sends it and waits for its answer line (at most 15 s: the
# front's two tries take at most 2 x 2 s).
ask() {
    n=$(grep -c '^[<!]' "$dir/client.out" || true)
    echo "$1" >&3
    i=0
    while [ "$(grep -c '^[<!]' "$dir/client.out" || true)" -le "$n" ]; do
        i=$((i + 1))
        [ $i -le 150 ] || fail "no answer to '$1' after 15 s"
        sleep 0.1
    done
}

note "store-a and store-b serve kv.store; the front asks either"
ask "PUT colour blue"
ask "PUT shape round"
ask "PUT size 42"
ask "GET colour"
ask "GET shape"
ask "GET size"
stop_pid "$pid_store_a" KILL
note "store-a killed (SIGKILL): the front goes on with store-b"
ask "GET colour"
ask "GET shape"
ask "GET size"
ask "PUT colour green"
ask "GET colour"
stop_pid "$pid_store_b" TERM clean
note "store-b stopped (SIGTERM): no store holds kv.store"
ask "GET colour"
store store-c
note "store-c started: a new store starts empty"
ask "GET colour"
ask "PUT colour red"
ask "GET colour"
exec 3>&-
wait "$client" || fail "client failed"
pids=$(echo "$pids" | sed "s/\b$client\b//")
stop_pid "$front" TERM clean
stop_pid "$pid_store_c" TERM clean
stop_pid "$nats" TERM # nats-server exits 1 on SIGTERM

out=$(cat "$dir/client.out")
echo "$out"
for f in store-a store-b store-c front; do
    echo "--- $f"
    cat "$dir/$f.log"
done

expect() {
    printf '%s\n' "$out" | grep -qxF -- "$1" || fail "missing line: $1"
}
count() {
    [ "$(printf '%s\n' "$out" | grep -cxF -- "$1")" = "$2" ] ||
        fail "want '$1' $2 times"
}
count "< OK" 5
count "< VALUE blue" 2
count "< VALUE round" 2
count "< VALUE 42" 2
count "< VALUE green" 1
count "< NOTFOUND" 1
count "< VALUE red" 1
count "< ERR no store holds kv.store" 1
grep -q "^! " "$dir/client.out" && fail "the client lost the front"
# store-b and store-c stopped cleanly and said what they did.
grep -q "^store store-b: .* served" "$dir/store-b.log" || fail "store-b summary"
grep -q "^store store-c: .* served" "$dir/store-c.log" || fail "store-c summary"
grep -q "requests sent a second time" "$dir/front.log" || fail "front summary"
echo "example_cluster_kv: ok"
