#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# Makes sure the Debian packages needed to build and test EventServer are
# installed. Does nothing when they all are; as root it installs the missing
# ones (running `apt-get update` first only if apt has no candidate for one
# of them, e.g. on a fresh container with empty package lists); otherwise it
# prints the command to run and fails.
set -euo pipefail

packages=(
    cmake pkg-config gcc libc6-dev make
    libck-dev libcriterion-dev node-llhttp libuv1-dev
    # the io_uring backend (src/backend_uring.c; liburing 2.3 in Debian 12)
    liburing-dev
    # perf/bench_library links the peers it compares against
    libevent-dev libev-dev
    # perf/savina: CAF 0.17, a benchmark peer only (caf_* targets)
    libcaf-dev g++
    # tests/http drives the server with curl and Python's http.client and
    # runs the HTTP client against nginx (each test skips if one is missing)
    curl python3 nginx-light
    # tests/http/test_http_metrics.c parses /metrics with prometheus_client
    # (the test skips, loudly, without it)
    python3-prometheus-client
    # perf/http_bench.sh: the load generators
    wrk apache2-utils
    # the cluster module (cluster/, nats.c) and its tests, which start
    # their own nats-server (tests/cluster/)
    libnats-dev nats-server
    # make fuzz: clang and its runtimes (libFuzzer, ASan, UBSan)
    clang libclang-rt-14-dev
    # tests/comet/comet_browser.py opens the comet page in headless Chromium
    # (the test skips, loudly, without it)
    chromium
    # perf/comet_capacity.sh measures nginx with the echo module
    # (echo_sleep parks a request) as its memory anchor
    libnginx-mod-http-echo
)

if ! command -v dpkg-query >/dev/null 2>&1; then
    echo "deps.sh: not a Debian system; skipping the package check" >&2
    exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
    status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
    if [[ $status != "install ok installed" ]]; then
        missing+=("$pkg")
    fi
done

if ((${#missing[@]} == 0)); then
    exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
    echo "Missing packages. Run: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

# An installable package shows "Candidate: <version>"; with empty or stale
# lists apt shows "Candidate: (none)" or nothing at all.
need_update=0
for pkg in "${missing[@]}"; do
    policy=$(apt-cache policy "$pkg" 2>/dev/null || true)
    if ! grep -Eq '^[[:space:]]*Candidate: [^(]' <<<"$policy"; then
        need_update=1
        break
    fi
done

echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ((need_update)); then
    apt-get update
fi
apt-get install -y --no-install-recommends "${missing[@]}"
