#!/bin/sh
# SPDX-License-Identifier: MIT
#
# Installs the build into a temporary prefix and checks what an application
# gets from it: `pkg-config --cflags` of eventserver and eventserver-http
# carries no -D (Concurrency Kit is private to the library, and its .pc
# defines the architecture, e.g. -D__x86_64__, which must not reach users),
# the installed CMake package puts no ck target or compile definition in an
# INTERFACE property, and a program compiled and linked with the pkg-config
# flags alone builds and runs.
#
# Usage: install_test.sh BUILD_DIR CC [EXTRA_CFLAGS]
#   EXTRA_CFLAGS: what every object of the build was compiled with that an
#   application must match (the sanitizer flags of an ES_SANITIZE build).
set -eu

build=$1
cc=$2
extra=${3:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/es_install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

fail() {
    echo "install_test: FAIL: $*" >&2
    exit 1
}

cmake --install "$build" --prefix "$tmp/prefix" >"$tmp/install.log" 2>&1 ||
    { cat "$tmp/install.log" >&2; fail "cmake --install"; }

pcdir=$(find "$tmp/prefix" -name eventserver.pc -path '*/pkgconfig/*' |
    head -n 1)
[ -n "$pcdir" ] || fail "no eventserver.pc installed"
pcdir=$(dirname "$pcdir")
PKG_CONFIG_PATH=$pcdir
export PKG_CONFIG_PATH
libdir=$(pkg-config --variable=libdir eventserver)

static=
if [ ! -e "$libdir/libeventserver.so" ]; then
    static=--static
fi

# The cluster module is there when nats.c was (ES_BUILD_CLUSTER).
mods="eventserver eventserver-http"
if [ -e "$pcdir/eventserver-cluster.pc" ]; then
    mods="$mods eventserver-cluster"
fi

# 1. No preprocessor definition in the public compile flags.
for mod in $mods; do
    cflags=$(pkg-config --cflags $static "$mod") ||
        fail "pkg-config --cflags $mod"
    echo "pkg-config --cflags $static $mod: $cflags"
    for flag in $cflags; do
        case $flag in
        -D*) fail "pkg-config --cflags $mod leaks $flag" ;;
        esac
    done
done

# 2. The CMake package: ck stays out of every INTERFACE property except as
#    $<LINK_ONLY:...> (a static library must still link it), and no target
#    exports a compile definition.
targets=$(find "$tmp/prefix" -name 'eventserverTargets*.cmake')
[ -n "$targets" ] || fail "no eventserverTargets.cmake installed"
# shellcheck disable=SC2086
if grep -n 'INTERFACE_COMPILE_DEFINITIONS\|__x86_64__' $targets; then
    fail "the CMake package exports compile definitions"
fi
# shellcheck disable=SC2086
if grep -n 'PkgConfig::CK' $targets | grep -v 'LINK_ONLY:PkgConfig::CK'; then
    fail "the CMake package exports ck's usage requirements"
fi

# 3. A program built with the pkg-config flags alone.
cat >"$tmp/app.c" <<'EOF'
#include <eventserver/eventserver.h>
#include <eventserver/http.h>

#include <stdio.h>

int main(void)
{
    es_runtime_opts_t opts = {.threads = 1};
    es_runtime_t *rt;
    int rc = es_runtime_new(&opts, &rt);

    if (rc != 0) {
        fprintf(stderr, "es_runtime_new: %s\n", es_strerror(rc));
        return 1;
    }
    es_runtime_free(rt);
    puts("ok");
    return 0;
}
EOF
# shellcheck disable=SC2046,SC2086
"$cc" -std=c11 -Wall $extra $(pkg-config --cflags eventserver-http) \
    -o "$tmp/app" "$tmp/app.c" \
    $(pkg-config --libs $static eventserver-http) ||
    fail "the program does not build with the pkg-config flags"
out=$(LD_LIBRARY_PATH=$libdir "$tmp/app") || fail "the program failed"
[ "$out" = ok ] || fail "the program printed '$out'"

# 4. The same for the cluster module: its header and library alone.
case $mods in
*eventserver-cluster*)
    cat >"$tmp/capp.c" <<'EOF'
#include <eventserver/cluster.h>

#include <errno.h>
#include <stdio.h>

int main(void)
{
    es_cluster_opts_t o = {0};
    es_cluster_t *c;
    /* No servers: refused before any network is touched. */
    puts(es_cluster_join(NULL, &o, &c) == -EINVAL ? "ok" : "bad");
    return 0;
}
EOF
    # shellcheck disable=SC2046,SC2086
    "$cc" -std=c11 -Wall $extra $(pkg-config --cflags eventserver-cluster) \
        -o "$tmp/capp" "$tmp/capp.c" \
        $(pkg-config --libs $static eventserver-cluster) ||
        fail "a cluster program does not build with the pkg-config flags"
    out=$(LD_LIBRARY_PATH=$libdir "$tmp/capp") || fail "the cluster program failed"
    [ "$out" = ok ] || fail "the cluster program printed '$out'"
    ;;
esac
echo "install_test: ok"
