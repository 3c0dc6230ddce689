#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# The comet capacity table (issue 12): for N = 10,000, 50,000 and 100,000
# parked long-poll subscribers (NS), K = ceil(N / PER_PROC) processes on
# one port of 127.0.0.1 with SO_REUSEPORT, loaded by perf/comet_load:
#   epoll_min  perf/comet_epoll_min, K processes: the fan-out limit of
#              this machine (one canned write per parked socket);
#   comet      examples/comet's http_comet, K processes with --reuseport
#              and --nats (a private nats-server on a free port), its
#              poll timeout out of the way (1 h), --threads max(1, CPUs/K);
#   nginx      nginx with the echo module (echo_sleep 3600), K workers
#              with reuseport: memory only (no publish).
# For epoll_min and comet, comet_load publishes MSGS messages one at a
# time through POST /pub on one connection and times each to its last
# subscriber; for all three it reads the servers' memory from /proc
# before, once parked, and (with messages) after. Every peer is stopped
# by PID. The result lines are kept in perf/results/comet-<stamp>/
# (gitignored); the report goes to docs/perf/comet_capacity.md ($OUT) and
# the README section to readme.md there. When N would not fit in memory
# (MEM_PER_CONN_KB per connection, both ends and the load tool, against
# MemAvailable) the largest multiple of 10,000 that fits is measured and
# the report says so. Usage:
#   perf/comet_capacity.sh [BUILD_DIR]      (default: build)
# Environment: NS, MSGS (20), PER_PROC (19000), NO_NGINX=1, OUT.
set -euo pipefail

root=$(CDPATH='' cd -- "$(dirname -- "$0")/.." && pwd)
build=${1:-$root/build}
# shellcheck source=perf/mem_common.sh
. "$root/perf/mem_common.sh" # machine, field
rows=${NS:-"10000 50000 100000"}
msgs=${MSGS:-20}
per_proc=${PER_PROC:-19000}
out=${OUT:-$root/docs/perf/comet_capacity.md}
mem_per_conn_kb=${MEM_PER_CONN_KB:-16}
load_bin=$build/perf/comet_load
min_bin=$build/perf/comet_epoll_min
comet_bin=$build/examples/http_comet
echo_mod=/usr/lib/nginx/modules/ngx_http_echo_module.so

for b in "$load_bin" "$min_bin" "$comet_bin"; do
    [[ -x $b ]] || { echo "comet_capacity.sh: $b not built" >&2; exit 2; }
done
command -v nats-server >/dev/null ||
    { echo "comet_capacity.sh: nats-server is required" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)"

dir=$root/perf/results/comet-$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$dir"
lines=$dir/lines.txt
: >"$lines"
pids=()  # every peer this script started, stopped by PID
nats_pid=
cleanup() {
    local p
    for p in "${pids[@]}" $nats_pid; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}" $nats_pid; do
        wait "$p" 2>/dev/null || true
    done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT: until something accepts on it (<= 10 s)
    for _ in $(seq 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    return 1
}

stop() { # stop PID...: SIGTERM, then wait for each
    local p
    for p in "$@"; do kill "$p" 2>/dev/null || true; done
    for p in "$@"; do wait "$p" 2>/dev/null || true; done
    pids=()
}

children() { # children PID: its child PIDs, comma-separated
    tr ' ' '\n' <"/proc/$1/task/$1/children" | grep . | paste -sd,
}

load() { # load NAME N K PORT SERVER_PIDS MSGS: one comet_load run
    local l
    echo "comet_capacity.sh: $1 N=$2 K=$3" >&2
    if l=$(timeout 900 "$load_bin" --port "$4" --connections "$2" \
        --messages "$6" --per-proc "$per_proc" --server-pids "$5" \
        --channel load 2>>"$dir/$1.$2.err" | tee "$dir/$1.$2.out" |
        grep '^comet_load '); then
        echo "$l" >&2
        echo "row server=$1 k=$3 threads=${7:-1} $l" >>"$lines"
    else
        echo "comet_capacity.sh: $1 N=$2 failed (see $dir/$1.$2.err)" >&2
    fi
}

run_min() { # run_min N K
    local port p
    port=$(free_port)
    "$min_bin" --port "$port" --procs "$2" >"$dir/min.$1.log" &
    pids=($!)
    wait_port "$port" || { echo "comet_epoll_min did not start" >&2; stop "${pids[@]}"; return 1; }
    p=$(sed -n 's/.*pids //p' "$dir/min.$1.log")
    load epoll_min "$1" "$2" "$port" "$p" "$msgs"
    stop "${pids[@]}"
}

run_comet() { # run_comet N K THREADS
    local port i
    port=$(free_port)
    for i in $(seq "$2"); do
        "$comet_bin" --listen "127.0.0.1:$port" --reuseport --nats "$nats_url" \
            --threads "$3" --poll-timeout 3600000 --node "cap$i" \
            >>"$dir/comet.$1.log" 2>&1 &
        pids+=($!)
    done
    wait_port "$port" || { echo "http_comet did not start" >&2; stop "${pids[@]}"; return 1; }
    sleep 0.5 # every process joined the cluster
    load comet "$1" "$2" "$port" "$(IFS=,; echo "${pids[*]}")" "$msgs" "$3"
    stop "${pids[@]}"
}

run_nginx() { # run_nginx N K: memory only
    local port d w
    port=$(free_port)
    d=$dir/nginx.$1
    mkdir -p "$d"
    cat >"$d/nginx.conf" <<CONF
load_module $echo_mod;
daemon off;
worker_processes $2;
worker_rlimit_nofile $hard;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections $((hard - 100)); }
http {
    access_log off;
    client_body_temp_path $d/body;
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    server {
        listen 127.0.0.1:$port reuseport backlog=4096;
        location /sub { echo_sleep 3600; echo ok; }
    }
}
CONF
    nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf" &
    pids=($!)
    wait_port "$port" || { echo "nginx did not start" >&2; stop "${pids[@]}"; return 1; }
    sleep 0.3 # every worker up
    w=$(children "${pids[0]}")
    load nginx "$1" "$2" "$port" "$w" 0
    stop "${pids[@]}"
}

# The private nats-server writes nats-server_<pid>.ports once it listens.
nats-server -a 127.0.0.1 -p -1 --ports_file_dir "$dir" -l "$dir/nats.log" &
nats_pid=$!
for _ in $(seq 100); do
    [[ -s $dir/nats-server_$nats_pid.ports ]] && break
    sleep 0.05
done
nats_url=$(sed -n 's/.*"nats":\["\([^"]*\)".*/\1/p' \
    "$dir/nats-server_$nats_pid.ports" 2>/dev/null || true)
[[ -n $nats_url ]] || { echo "comet_capacity.sh: no nats-server" >&2; exit 1; }

# The commit measured: read before the runs.
commit=$(git -C "$root" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$root" status --porcelain -- examples perf http src \
    actors cluster include 2>/dev/null) ]]; then
    commit="$commit (with uncommitted changes)"
fi
avail_kb=$(sed -n 's/^MemAvailable: *\([0-9]*\).*/\1/p' /proc/meminfo)
fit=$((avail_kb * 8 / 10 / mem_per_conn_kb / 10000 * 10000))
notes=""
started=$(date +%s)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
for n in $rows; do
    if ((n > fit)); then
        notes+="N = $n does not fit (MemAvailable $avail_kb kB at"
        notes+=" $mem_per_conn_kb kB per connection): measured $fit instead. "
        n=$fit
    fi
    k=$(((n + per_proc - 1) / per_proc))
    threads=$(($(nproc) / k))
    ((threads >= 1)) || threads=1
    run_min "$n" "$k" || true
    run_comet "$n" "$k" "$threads" || true
    if [[ -z ${NO_NGINX:-} && -r $echo_mod ]] && command -v nginx >/dev/null
    then
        run_nginx "$n" "$k" || true
    fi
done
secs=$(($(date +%s) - started))
stop $nats_pid
nats_pid=

versions="nats-server $(nats-server --version | sed 's/^nats-server: *//'),"
versions+=" $(nginx -v 2>&1 | sed 's/^nginx version: //') with echo"
versions+=" $(dpkg-query -W -f='${Version}' libnginx-mod-http-echo \
    2>/dev/null || echo '?')"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
mem_total=$(sed -n 's/^MemTotal: *\([0-9]*\).*/\1/p' /proc/meminfo)

python3 - "$lines" "$out.tmp" "$dir/readme.md" \
    "$(machine)" "$commit" "$versions" "$secs" "$load_start" "$load_end" \
    "$msgs" "$per_proc" "$mem_total" "$(nproc)" "$notes" <<'PY'
import math
import sys

(lines_path, out_path, readme_path, machine, commit, versions, secs,
 load_start, load_end, msgs, per_proc, mem_total_kb, ncpu,
 notes) = sys.argv[1:]
rows = []
for line in open(lines_path):
    r = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
    rows.append(r)


def num(r, key):
    try:
        return float(r[key])
    except (KeyError, ValueError):
        return None


def fmt(v, nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"


def find(server, n):
    for r in rows:
        if r["server"] == server and r["n"] == n:
            return r
    return None


ns = []
for r in rows:
    if r["n"] not in ns:
        ns.append(r["n"])
out = []
w = out.append
w("# Comet capacity: parked long-polls, fan-out and memory")
w("")
w(f"{machine}; commit {commit}; {versions}. Load average {load_start} at "
  f"the start, {load_end} at the end (the machine is shared); the run took "
  f"{secs} s.")
if notes:
    w("")
    w(f"**{notes.strip()}**")
w("")
w("Generated by `perf/comet_capacity.sh`. Everything on 127.0.0.1. For each "
  f"N, K = ceil(N / {int(per_proc):,}) server processes share one port "
  "with SO_REUSEPORT: `perf/comet_epoll_min` (K single-threaded processes "
  "that park each `GET /sub` and, on a publish, write one canned response "
  "to every parked socket: this machine's fan-out limit), `http_comet` "
  f"(K processes, `--reuseport --nats` to a private nats-server, "
  "`--poll-timeout 3600000`, `--threads max(1, CPUs / K)`) and nginx with "
  "the echo module (`echo_sleep 3600`, K workers, reuseport; memory "
  "only). `perf/comet_load` parks the N subscribers (plain "
  "`GET /sub?ch=load HTTP/1.1`, keep-alive) from ceil(N / 19,000) forked "
  "processes, each bound to its own source address 127.0.0.x, then "
  f"publishes {msgs} messages one at a time through `POST /pub?ch=load` "
  "on one connection (so on one server process). Each subscriber re-issues "
  "its poll as soon as it has a response; the next message is published "
  "once every subscriber has re-issued, the server processes have used "
  "< 2 ms of CPU in two successive 50 ms windows, and 200 ms more have "
  "passed. A message's latency is from the write of its /pub to the last "
  "subscriber's complete response (CLOCK_MONOTONIC across the load "
  "processes); deliveries/s is N / the p50 latency. Each subscriber counts "
  "a message body it already had as duplicated and each of the messages it "
  "never got as lost. Quantiles are nearest-rank over the "
  f"{msgs} messages (so p99 is the largest but one only with ≥ 100).")
w("")
w("Memory comes from /proc: the servers' VmRSS, RssAnon and VmSize summed "
  "over the K processes, before the first connection (the baseline: "
  "started, cluster joined, no channel yet) and once all N are parked "
  "(\"parked\") and after the messages, all re-parked (\"after\"); per "
  "connection is the growth divided by N. Kernel memory is the growth of "
  "/proc/meminfo's Slab and of the slab caches a connection uses (TCP, "
  "sock_inode_cache, filp, eventpoll_epi, dentry; /proc/slabinfo) divided "
  "by N: on loopback both ends of each connection live in this kernel, so "
  "these figures hold two sockets per connection (the server's share is "
  "about half), and the Slab figure also moves with whatever else runs. "
  "/proc/net/sockstat's TCP buffer memory stays near 0: a parked "
  "connection has no queued bytes.")
w("")
w("## Fan-out of one publish to every parked subscriber")
w("")
w("| N | server | processes x threads | connected | park (s) | p50 ms to the "
  "last | p99 ms | max ms | deliveries/s | vs epoll_min | lost | duplicated |")
w("|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
ratios = {}
for n in ns:
    base = find("epoll_min", n)
    for server in ("epoll_min", "comet"):
        r = find(server, n)
        if not r:
            continue
        rate = num(r, "deliveries_per_s")
        ratio = None
        if base and num(base, "deliveries_per_s"):
            ratio = rate / num(base, "deliveries_per_s")
        if server == "comet":
            ratios[n] = ratio
        w(f"| {int(n):,} | {server} | {r['k']} x {r['threads']} | "
          f"{fmt(num(r, 'connected'))} | {r['park_s']} | {r.get('p50_ms')} | "
          f"{r.get('p99_ms')} | {r.get('max_ms')} | {fmt(rate)} | "
          f"{fmt(ratio, 2)} | {r['lost']} | {r['dups']} |")
w("")
w("## Memory")
w("")
w("| N | server | processes | fds per process | RSS per process, largest "
  "(kB) | VIRT per process, largest (kB) | RSS/conn parked (B) | RSS/conn "
  "after (B) | RssAnon/conn (B) | VIRT/conn (B) | kernel Slab/conn, both "
  "ends (B) | of it TCP + inode + filp + epoll + dentry (B) |")
w("|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for n in ns:
    for server in ("comet", "nginx", "epoll_min"):
        r = find(server, n)
        if not r:
            continue
        caches = sum(num(r, k) or 0 for k in (
            "k_tcp_per_conn", "k_inode_per_conn", "k_filp_per_conn",
            "k_epi_per_conn", "k_dentry_per_conn"))
        after = r.get("after_rss_per_conn", "n/a")
        w(f"| {int(n):,} | {server} | {r['srv_procs']} | {r['srv_fds']} | "
          f"{fmt(num(r, 'parked_rss_proc_max_kb'))} | "
          f"{fmt(num(r, 'parked_virt_proc_max_kb'))} | "
          f"{fmt(num(r, 'parked_rss_per_conn'))} | "
          f"{fmt(num(r, 'after_rss_per_conn'))} | "
          f"{fmt(num(r, 'parked_anon_per_conn'))} | "
          f"{fmt(num(r, 'parked_virt_per_conn'))} | "
          f"{fmt(num(r, 'k_slab_per_conn'))} | {fmt(caches)} |")
w("")
w("epoll_min's memory is not an anchor: it keeps a 520-byte slot per "
  "possible fd, for simplicity. nginx's is (echo_sleep parks the request "
  "on a timer, as http_comet parks a /sub).")

# Targets, as measured.
w("")
w("## Targets")
w("")
w("| target | N | measured | verdict |")
w("|---|---:|---|---|")
verdicts = {}
top = ns[-1] if ns else None
r = find("comet", top) if top else None
if r:
    user = max(num(r, "parked_rss_per_conn") or 0,
               num(r, "after_rss_per_conn") or 0)
    verdicts["mem"] = "met" if user <= 700 else "missed"
    w(f"| ≤ 700 B user-space memory per parked connection (RSS, the larger "
      f"of parked and after) | {int(top):,} | {fmt(user)} B | "
      f"{verdicts['mem']} |")
for n in ns:
    ratio = ratios.get(n)
    if ratio is not None:
        v = "met" if ratio >= 0.7 else "missed"
        verdicts.setdefault("fan", []).append(v)
        w(f"| fan-out deliveries/s ≥ 0.7 x epoll_min's | {int(n):,} | "
          f"{ratio:.2f} x | {v} |")
for n in ns:
    r = find("comet", n)
    if r:
        bad = int(r["lost"]) + int(r["dups"])
        v = "met" if bad == 0 and r["complete"] == msgs else "missed"
        verdicts.setdefault("loss", []).append(v)
        w(f"| zero lost or duplicated deliveries | {int(n):,} | lost "
          f"{r['lost']}, duplicated {r['dups']} of {int(r['connected']) * int(msgs):,} "
          f"| {v} |")

# How the figures grow.
w("")
w("## How the figures grow with N, and what a bigger host would hold")
w("")
comets = [find("comet", n) for n in ns if find("comet", n)]
if comets:
    per = ", ".join(f"{fmt(num(c, 'after_rss_per_conn'))} B at "
                    f"{int(c['n']):,}" for c in comets)
    proc = ", ".join(f"{fmt(num(c, 'parked_rss_proc_max_kb'))} kB with "
                     f"{c['srv_fds'].split('/')[0]}+ fds" for c in comets)
    lat = ", ".join(f"{c.get('p50_ms')} ms at {int(c['n']):,}"
                    for c in comets)
    us = ", ".join(f"{num(c, 'p50_ms') * 1e3 / int(c['n']):.1f} µs"
                   for c in comets if num(c, "p50_ms"))
    kern = ", ".join(f"{fmt(num(c, 'k_slab_per_conn'))} B" for c in comets)
    w(f"- **User-space memory per connection** (http_comet, after): {per}. "
      "It is a per-connection cost (the connection, its parked request and "
      "response, the hub's `struct sub` and timer) plus each process's "
      "allocator slack, so it stays roughly flat as N grows; the fixed "
      "part (runtime, cluster link, channel) is paid once per process, in "
      "the baseline.")
    w(f"- **Per process** (largest): {proc}: each process holds about "
      f"N / K connections, at most {int(per_proc):,} here (under the "
      "RLIMIT_NOFILE above), so a process's RSS is bounded by that share "
      "whatever N; N grows by adding processes.")
    w(f"- **Kernel memory per connection**, both ends: {kern} (the server's "
      "socket, inode, file, epoll item and dentry are about half).")
    w(f"- **Fan-out latency** with N: p50 {lat}, i.e. {us} per delivery, "
      f"on {ncpu} CPUs shared by the servers, the load tool and other "
      "jobs.")
    rs = [v for v in ratios.values() if v is not None]
    if rs and min(rs) >= 0.9:
        w("- http_comet and epoll_min deliver at about the same rate at "
          "every N: the ceiling measured here is this machine's CPUs, "
          "shared by the servers, the load tool (which reads each response "
          "and re-issues its poll at once) and loopback TCP, not the comet "
          "server; its own limit is above what this host can show.")
    c = comets[-1]
    user = num(c, "after_rss_per_conn") or 0
    kserver = (num(c, "k_slab_per_conn") or 0) / 2
    if user + kserver > 0:
        each = user + kserver
        hosts = []
        for gib in (24, 64, 256):
            hosts.append(f"{gib} GiB: ~{0.8 * gib * 2**30 / each / 1e6:.1f} M")
        w(f"- **A bigger host**: at {fmt(user)} B of user space plus ~"
          f"{fmt(kserver)} B of the server's kernel memory per connection, "
          "80 % of the memory of a host holds " + "; ".join(hosts) +
          " parked connections (in K = N / 19,000 processes here, or fewer "
          "with a higher RLIMIT_NOFILE). Fan-out time grows with N and "
          "shrinks with cores as far as the K processes spread over them "
          "(each has its own hub and demux threads; the NATS message reaches "
          "them all at once): this run measured "
          f"{fmt(num(c, 'deliveries_per_s'))} deliveries/s on {ncpu} CPUs, "
          "which, if it scales with cores, a 32-core host would multiply by "
          "up to 16 (an extrapolation, not measured).")
w("")
w("Every result line:")
w("")
w("```")
for line in open(lines_path):
    w(line.rstrip())
w("```")
open(out_path, "w").write("\n".join(out) + "\n")

# The README section.
date = machine.split(",")[0]
rd = []
a = rd.append
a(f"### Comet capacity: `perf/comet_capacity.sh` ({date.split()[0]}, "
  f"commit {commit.split()[0]})")
a("")
a("Parked plain long-polls (`GET /sub?ch=`) over K = ⌈N / 19,000⌉ "
  "`http_comet` processes on one port (`--reuseport --nats`), loaded by "
  "`perf/comet_load` from 127.0.0.x; "
  f"{msgs} publishes, each timed to its last subscriber; anchors in the "
  "same run: `perf/comet_epoll_min` (one canned write per parked socket) "
  "for fan-out, nginx + echo (`echo_sleep`) for memory. Method, every "
  "figure and how they grow: "
  "[`docs/perf/comet_capacity.md`](docs/perf/comet_capacity.md).")
if notes:
    a("")
    a(notes.strip())
a("")
a("| N | K | p50 / p99 / max ms to the last | deliveries/s | epoll_min "
  "deliveries/s | ratio | lost / dup | RSS/conn (B) | nginx+echo RSS/conn "
  "(B) | kernel/conn, both ends (B) |")
a("|---:|---:|---|---:|---:|---:|---|---:|---:|---:|")
for n in ns:
    c, m, g = find("comet", n), find("epoll_min", n), find("nginx", n)
    if not c:
        continue
    a(f"| {int(n):,} | {c['k']} | {c.get('p50_ms')} / {c.get('p99_ms')} / "
      f"{c.get('max_ms')} | {fmt(num(c, 'deliveries_per_s'))} | "
      f"{fmt(num(m, 'deliveries_per_s')) if m else 'n/a'} | "
      f"{fmt(ratios.get(n), 2)} | {c['lost']} / {c['dups']} | "
      f"{fmt(num(c, 'after_rss_per_conn'))} | "
      f"{fmt(num(g, 'parked_rss_per_conn')) if g else 'n/a'} | "
      f"{fmt(num(c, 'k_slab_per_conn'))} |")
a("")
t = []
if "mem" in verdicts:
    t.append(f"≤ 700 B per parked connection at {int(top):,}: "
             f"{verdicts['mem']}")
if "fan" in verdicts:
    t.append("fan-out ≥ 0.7x epoll_min: " + ", ".join(
        f"{v} at {int(n):,}" for n, v in zip(ns, verdicts["fan"])))
if "loss" in verdicts:
    t.append("zero lost or duplicated: " + ", ".join(
        f"{v} at {int(n):,}" for n, v in zip(ns, verdicts["loss"])))
a("Targets: " + "; ".join(t) + ".")
open(readme_path, "w").write("\n".join(rd) + "\n")
PY
mv "$out.tmp" "$out"
echo "comet_capacity.sh: wrote $out and $dir/readme.md (${secs} s)" >&2
cat "$dir/readme.md"
