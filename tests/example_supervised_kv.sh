#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Runs examples/supervised_kv --demo and checks its transcript: the store
# crashes on the poison key, the request that hit it fails with -ESRCH at
# once, the supervisor restarts the store under its name, and both clients
# go on using it on the same connections.
# Usage: example_supervised_kv.sh PATH_TO_supervised_kv
set -eu
exe=$1
out=$(timeout 30 "$exe" --demo 2>/dev/null) || {
    echo "supervised_kv --demo failed (rc $?):"
    echo "$out"
    exit 1
}
echo "$out"
expect() {
    printf '%s\n' "$out" | grep -qxF -- "$1" || {
        echo "missing line: $1"
        exit 1
    }
}
expect "< VALUE blue"
expect "< ERR store crashed and restarted, try again"
expect "< NOTFOUND"
expect "store started 2 times"
[ "$(printf '%s\n' "$out" | grep -cxF '< VALUE green')" = 2 ] || {
    echo "want '< VALUE green' twice (both clients after the restart)"
    exit 1
}
