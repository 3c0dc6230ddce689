/* SPDX-License-Identifier: MIT */
/*
 * Tests of es_addr_parse() (actors/addr.c), the one parser of listen
 * addresses: IPv4 and bracketed IPv6 with a port, Unix paths, and the
 * inputs it must refuse (host names, missing or out-of-range ports, IPv6
 * without brackets, empty strings, signs, spaces, trailing bytes). Checks
 * the socket address it fills byte for byte, that NULL out-parameters only
 * validate, and that es_listen() refuses what the parser refuses.
 */
#include "es_test.h"

#include <eventserver/conn.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/un.h>

/* Parses a and fails the test unless it gives AF_INET ip:port. */
static void expect_v4(const char *a, const char *ip, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
    struct in_addr want;

    cr_assert_eq(es_addr_parse(a, &ss, &len), 0, "%s", a);
    cr_assert_eq(inet_pton(AF_INET, ip, &want), 1);
    cr_assert_eq(ss.ss_family, AF_INET, "%s", a);
    cr_assert_eq(len, sizeof(struct sockaddr_in), "%s", a);
    cr_assert_eq(in->sin_addr.s_addr, want.s_addr, "%s", a);
    cr_assert_eq(ntohs(in->sin_port), port, "%s", a);
}

static void expect_v6(const char *a, const char *ip, int port)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    const struct sockaddr_in6 *in = (const struct sockaddr_in6 *)&ss;
    struct in6_addr want;

    cr_assert_eq(es_addr_parse(a, &ss, &len), 0, "%s", a);
    cr_assert_eq(inet_pton(AF_INET6, ip, &want), 1);
    cr_assert_eq(ss.ss_family, AF_INET6, "%s", a);
    cr_assert_eq(len, sizeof(struct sockaddr_in6), "%s", a);
    cr_assert_eq(memcmp(&in->sin6_addr, &want, sizeof(want)), 0, "%s", a);
    cr_assert_eq(ntohs(in->sin6_port), port, "%s", a);
}

Test(addr, ipv4)
{
    expect_v4("127.0.0.1:8080", "127.0.0.1", 8080);
    expect_v4("0.0.0.0:0", "0.0.0.0", 0);
    expect_v4("255.255.255.255:65535", "255.255.255.255", 65535);
    expect_v4("10.1.2.3:00080", "10.1.2.3", 80); /* 5 digits at most */
}

Test(addr, ipv6)
{
    expect_v6("[::1]:0", "::1", 0);
    expect_v6("[::]:443", "::", 443);
    expect_v6("[fe80::1:2]:65535", "fe80::1:2", 65535);
    expect_v6("[::ffff:1.2.3.4]:1", "::ffff:1.2.3.4", 1);
}

Test(addr, unix_path)
{
    struct sockaddr_storage ss;
    socklen_t len = 0;
    const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
    char longest[sizeof(un->sun_path) + 8], too_long[sizeof(longest) + 1];

    cr_assert_eq(es_addr_parse("unix:/tmp/x.sock", &ss, &len), 0);
    cr_assert_eq(ss.ss_family, AF_UNIX);
    cr_assert_str_eq(un->sun_path, "/tmp/x.sock");
    cr_assert_eq(len, offsetof(struct sockaddr_un, sun_path) + 12);
    /* 107 bytes fit (and the NUL); 108 do not. */
    memcpy(longest, "unix:", 5);
    memset(longest + 5, 'a', sizeof(un->sun_path) - 1);
    longest[5 + sizeof(un->sun_path) - 1] = '\0';
    cr_assert_eq(es_addr_parse(longest, &ss, &len), 0);
    memcpy(too_long, longest, strlen(longest));
    strcpy(too_long + strlen(longest), "a");
    cr_assert_eq(es_addr_parse(too_long, &ss, &len), -ENAMETOOLONG);
}

Test(addr, refused)
{
    static const char *const bad[] = {
        "",
        ":",
        ":80",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:99999",
        "127.0.0.1:100000",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1: 80",
        "127.0.0.1:80 ",
        "127.0.0.1:80x",
        "127.0.0.1:0x50",
        " 127.0.0.1:80",
        "127.0.0.1 :80",
        "1.2.3:80",
        "1.2.3.4.5:80",
        "256.1.1.1:80",
        "01.2.3.4:80",
        "localhost:80",
        "example.com:80",
        "::1:80",
        "[::1]",
        "[::1]:",
        "[::1]80",
        "[::1]x:80",
        "[127.0.0.1]:80",
        "[zz::1]:80",
        "[]:80",
        "[::1:80",
        "::1]:80",
        "unix:",
        "UNIX:/tmp/x",
    };
    struct sockaddr_storage ss;
    socklen_t len;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int rc = es_addr_parse(bad[i], &ss, &len);
        cr_assert_eq(rc, -EINVAL, "\"%s\": %d", bad[i], rc);
    }
    cr_assert_eq(es_addr_parse(NULL, &ss, &len), -EINVAL);
}

Test(addr, validate_only)
{
    cr_assert_eq(es_addr_parse("127.0.0.1:1", NULL, NULL), 0);
    cr_assert_eq(es_addr_parse("[::1]:1", NULL, NULL), 0);
    cr_assert_eq(es_addr_parse("unix:/x", NULL, NULL), 0);
    cr_assert_eq(es_addr_parse("localhost:1", NULL, NULL), -EINVAL);
}

static int cb_none(es_actor_t *self, es_msg_t *msg)
{
    (void)self;
    (void)msg;
    return 0;
}

/* es_listen() takes the parser's verdict (and binds nothing). */
Test(addr, listen_uses_parser, .timeout = ES_TEST_TIMEOUT)
{
    es_runtime_t *rt = es_test_runtime_start(1);
    es_listen_opts_t o = {.conn = {.behaviour = cb_none}};
    es_listener_t *l = NULL;
    int rc[3];

    o.address = "localhost:0";
    rc[0] = es_listen(rt, &o, &l);
    o.address = "::1:0";
    rc[1] = es_listen(rt, &o, &l);
    o.address = "127.0.0.1:65536";
    rc[2] = es_listen(rt, &o, &l);
    es_test_free(rt);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(rc[i], -EINVAL, "case %d: %d", i, rc[i]);
    cr_assert_null(l);
}
