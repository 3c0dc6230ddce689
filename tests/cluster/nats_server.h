/* SPDX-License-Identifier: MIT */
/*
 * Test fixtures for the cluster tests: a private nats-server on 127.0.0.1
 * (a free port, a temporary directory for its ports file and log, stopped
 * by PID and restartable on the same port) and cluster_node processes (the
 * second and third processes of a test, see cluster_node.h). Every process
 * started here is killed by the kernel if the test process dies first
 * (PR_SET_PDEATHSIG), so a failed test leaves nothing running; a passing
 * test stops each one itself and reaps it with waitpid().
 */
#ifndef ES_TEST_NATS_SERVER_H
#define ES_TEST_NATS_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <sys/types.h>

/* A nats-server started by the test. */
struct test_nats {
    pid_t pid;     /* 0 while stopped */
    int port;      /* chosen by the first start, kept across restarts */
    char dir[64];  /* temporary directory: ports file, log */
    char url[64];  /* "nats://127.0.0.1:<port>" */
    char exe[256]; /* the nats-server executable */
};

/* The apt-get line printed when nats-server is missing. */
#define TEST_NATS_INSTALL "apt-get install nats-server"

/*
 * Finds nats-server (PATH, then /usr/sbin and /usr/bin) and copies its path
 * into exe (size bytes). Returns: true if found.
 */
bool test_nats_find(char *exe, size_t size);

/*
 * Skips the calling Criterion test, loudly (stderr and the skip message),
 * when nats-server is not installed. Use first in every broker test.
 */
#define TEST_NATS_REQUIRE()                                                    \
    do {                                                                       \
        char test_nats_exe_[256];                                              \
        if (!test_nats_find(test_nats_exe_, sizeof(test_nats_exe_))) {         \
            fprintf(stderr, "*** SKIPPED: nats-server is not installed; "      \
                            "run: " TEST_NATS_INSTALL " ***\n");               \
            cr_skip_test("nats-server is not installed: " TEST_NATS_INSTALL);  \
        }                                                                      \
    } while (0)

/*
 * Starts nats-server on 127.0.0.1: on a port the server picks (-p -1, read
 * back from its ports file) the first time, on s->port after a stop. Waits
 * (at most `secs`) until the port accepts TCP connections.
 * Returns: 0; -ENOENT (no nats-server); -ETIMEDOUT (it did not come up;
 * its log is in s->dir/log); -errno of a failed system call.
 */
int test_nats_start(struct test_nats *s, double secs);

/*
 * Stops the server: SIGTERM, then SIGKILL if it has not exited in `secs`,
 * and waitpid(). With hard = true, SIGKILL at once (a crashed broker).
 * The port and directory are kept for test_nats_start(). No-op if stopped.
 */
void test_nats_stop(struct test_nats *s, bool hard, double secs);

/* Stops the server (if running) and removes its directory. */
void test_nats_fini(struct test_nats *s);

/* A cluster_node process started by the test. */
struct test_node {
    pid_t pid;  /* 0 once reaped */
    int out_fd; /* read end of its stdout, -1 once closed */
};

/*
 * Starts `argv[0]` (argv NULL-terminated) with stdout to a pipe and stderr
 * inherited, and waits at most `secs` for the line "ready".
 * Returns: 0; -ETIMEDOUT (no "ready": the node was killed and reaped);
 * -EPIPE (it exited first); -errno of a failed system call.
 */
int test_node_start(struct test_node *n, char *const argv[], double secs);

/*
 * Stops the node: SIGTERM (hard = false: it leaves the cluster and exits)
 * or SIGKILL (hard = true), waits at most `secs` (then SIGKILL), reaps it.
 * Returns: its exit status as waitpid() gives it, or -1 if it was not
 * running.
 */
int test_node_stop(struct test_node *n, bool hard, double secs);

#endif /* ES_TEST_NATS_SERVER_H */
