# shellcheck shell=bash
# SPDX-License-Identifier: MIT
#
# What perf/conn_memory.sh and perf/http_memory.sh share; both source it
# once $root is set. It sets the connection counts ($ns, from NS, where
# "max" is the most one process may hold: the hard RLIMIT_NOFILE in $hard
# less a reserve) and holds the helpers both reports are built from: one
# key=value field of a result line, the machine line under a report's
# title, the nginx configuration both measure against, and the rows of a
# per-allocation breakdown.

hard=$(ulimit -Hn)
max=$((hard - 40)) # listener, epoll, wakeup pipes, signalfd, stdio, pipes
ns=${NS:-"1000 10000 max"}
ns=${ns//max/$max}

field() { # field KEY LINE
    sed -n "s/.* $1=\([^ ]*\).*/\1/p; s/^$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1
}

machine() { # machine: date, kernel, CPU, CPUs, open-file limit, libc
    echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(uname -srm)," \
        "$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')," \
        "$(nproc) CPUs, RLIMIT_NOFILE hard $hard, $(getconf GNU_LIBC_VERSION)"
}

# nginx_conf DIR N SERVER: DIR/nginx.conf for one nginx process (master
# off) that keeps N idle keep-alive connections for 600 s, its connection
# array preallocated (worker_connections N + 64); SERVER is the server {}
# block.
nginx_conf() {
    cat >"$1/nginx.conf" <<CONF
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile $hard;
pid $1/nginx.pid;
error_log $1/error.log warn;
events { worker_connections $(($2 + 64 > hard ? hard : $2 + 64)); }
http {
    access_log off;
    client_body_temp_path $1/body;
    keepalive_timeout 600s;
    keepalive_requests 100000;
    client_header_timeout 600s;
$3
}
CONF
}

alloc_rows() { # alloc_rows <OUTPUT: a program's "#alloc" lines as table rows
    sed -n 's/^#alloc usable=\([^ ]*\) live_per_conn=\([^ ]*\) bytes_per_conn=\([^ ]*\)$/| \1 | \2 | \3 |/p'
}
