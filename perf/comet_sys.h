/* SPDX-License-Identifier: MIT */
/*
 * What perf/comet_load.c reads from /proc about the servers it loads and
 * the kernel: each server process's memory, descriptors and CPU time, and
 * the kernel's TCP and slab memory, so that the load tool can subtract an
 * idle baseline and wait until the servers have gone quiet. Linux only;
 * nothing here needs privileges except /proc/slabinfo (root), whose
 * figures are -1 when it cannot be read.
 */
#ifndef ES_PERF_COMET_SYS_H
#define ES_PERF_COMET_SYS_H

#include <stdint.h>
#include <sys/types.h>

/* One process: VmRSS, RssAnon, VmSize (kB) and open descriptors. */
struct comet_pmem {
    long rss_kb, anon_kb, virt_kb, fds;
};

/* The whole kernel: /proc/net/sockstat's TCP sockets in use and their
 * buffer pages, /proc/meminfo's Slab (kB), and bytes held by the slab
 * caches a TCP connection takes objects from (active objects x object
 * size; -1 when /proc/slabinfo is unreadable). */
struct comet_kmem {
    long tcp_inuse, tcp_mem_pages, slab_kb;
    long long tcp_b, sock_inode_b, filp_b, epi_b, dentry_b;
};

/* Reads pid's struct comet_pmem. Returns: 0, -errno, -EIO (no VmRSS). */
int comet_pmem_read(pid_t pid, struct comet_pmem *m);

/* Reads the kernel figures. Returns: 0, -errno, -EIO (no sockstat). */
int comet_kmem_read(struct comet_kmem *k);

/* CPU time of every thread of pid, from /proc/PID/task/{*}/schedstat.
 * Returns: nanoseconds, or -1 if pid is gone. */
int64_t comet_cpu_ns(pid_t pid);

/*
 * Waits until the n processes of pids together use less than 2 ms of CPU
 * in each of two successive 50 ms windows, at most max_ms.
 * Returns: the milliseconds waited, or -ETIMEDOUT.
 */
int comet_wait_quiet(const pid_t *pids, unsigned n, unsigned max_ms);

/* Milliseconds and nanoseconds on the monotonic clock. */
double comet_now_ms(void);
int64_t comet_now_ns(void);

/* Sleeps ms milliseconds. */
void comet_sleep_ms(unsigned ms);

#endif /* ES_PERF_COMET_SYS_H */
