/* SPDX-License-Identifier: MIT */
/*
 * The broker fixture itself (nats_server.c), which every other cluster
 * test trusts: the server it starts listens on loopback only, is stopped
 * by PID (nothing left running: the port refuses afterwards), restarts on
 * the same port, and leaves no directory behind.
 */
#include "es_test.h"

#include "nats_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static bool port_open(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;

    close(fd);
    return ok;
}

Test(cluster_fixture, start_stop_restart, .timeout = ES_TEST_TIMEOUT)
{
    struct test_nats s = {0};
    struct stat st;
    char url[64], dir[64];
    int port;

    TEST_NATS_REQUIRE();
    ES_OK(test_nats_start(&s, 30.0));
    cr_assert_gt(s.port, 0);
    cr_assert(port_open(s.port));
    port = s.port;
    snprintf(url, sizeof(url), "nats://127.0.0.1:%d", port);
    cr_assert_str_eq(s.url, url);
    snprintf(dir, sizeof(dir), "%s", s.dir);

    test_nats_stop(&s, true, 10.0); /* a crash */
    cr_assert_eq(s.pid, 0);
    cr_assert_not(port_open(port), "the killed server still listens");
    ES_OK(test_nats_start(&s, 30.0));
    cr_assert_eq(s.port, port, "restarted on another port");
    cr_assert(port_open(port));

    test_nats_stop(&s, false, 10.0); /* SIGTERM */
    cr_assert_not(port_open(port));
    test_nats_fini(&s);
    cr_assert_neq(stat(dir, &st), 0, "%s was left behind", dir);
}
