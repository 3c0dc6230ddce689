/* SPDX-License-Identifier: MIT */
/*
 * The /proc readers of perf/comet_load (see comet_sys.h): a server
 * process's memory, descriptors and CPU time, and the kernel's TCP and
 * slab memory.
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "comet_sys.h"

#define QUIET_WINDOW_MS 50
#define QUIET_CPU_NS 2000000 /* 2 ms of CPU in a window: quiet */

double comet_now_ms(void)
{
    return (double)comet_now_ns() / 1e6;
}

int64_t comet_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void comet_sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long count_fds(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    for (struct dirent *e; (e = readdir(d));)
        n += e->d_name[0] != '.';
    closedir(d);
    return n;
}

int comet_pmem_read(pid_t pid, struct comet_pmem *m)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -errno;
    *m = (struct comet_pmem){-1, -1, -1, -1};
    while (fgets(line, sizeof(line), f)) {
        sscanf(line, "VmRSS: %ld", &m->rss_kb);
        sscanf(line, "RssAnon: %ld", &m->anon_kb);
        sscanf(line, "VmSize: %ld", &m->virt_kb);
    }
    fclose(f);
    m->fds = count_fds(pid);
    return m->rss_kb < 0 ? -EIO : 0;
}

/* Adds the bytes of the slab caches a connection uses to k. */
static void read_slabinfo(struct comet_kmem *k)
{
    static const struct {
        const char *name;
        size_t off;
    } caches[] = {
        {"TCP", offsetof(struct comet_kmem, tcp_b)},
        {"sock_inode_cache", offsetof(struct comet_kmem, sock_inode_b)},
        {"filp", offsetof(struct comet_kmem, filp_b)},
        {"eventpoll_epi", offsetof(struct comet_kmem, epi_b)},
        {"dentry", offsetof(struct comet_kmem, dentry_b)},
    };
    char line[512], name[64];
    long long active, objsize;
    FILE *f = fopen("/proc/slabinfo", "r");
    if (!f)
        return;
    while (fgets(line, sizeof(line), f)) {
        if (sscanf(line, "%63s %lld %*d %lld", name, &active, &objsize) != 3)
            continue;
        for (size_t i = 0; i < sizeof(caches) / sizeof(caches[0]); i++)
            if (strcmp(name, caches[i].name) == 0)
                *(long long *)((char *)k + caches[i].off) = active * objsize;
    }
    fclose(f);
}

int comet_kmem_read(struct comet_kmem *k)
{
    char line[256];
    *k = (struct comet_kmem){-1, -1, -1, -1, -1, -1, -1, -1};
    FILE *f = fopen("/proc/net/sockstat", "r");
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f))
        sscanf(line, "TCP: inuse %ld orphan %*d tw %*d alloc %*d mem %ld",
               &k->tcp_inuse, &k->tcp_mem_pages);
    fclose(f);
    if ((f = fopen("/proc/meminfo", "r"))) {
        while (fgets(line, sizeof(line), f))
            sscanf(line, "Slab: %ld", &k->slab_kb);
        fclose(f);
    }
    read_slabinfo(k);
    return k->tcp_inuse < 0 ? -EIO : 0;
}

int64_t comet_cpu_ns(pid_t pid)
{
    char path[96];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    int64_t sum = 0;
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        long long ns = 0;
        snprintf(path, sizeof(path), "/proc/%d/task/%.20s/schedstat", (int)pid,
                 e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue; /* the thread just exited */
        if (fscanf(f, "%lld", &ns) == 1)
            sum += ns;
        fclose(f);
    }
    closedir(d);
    return sum;
}

static int64_t cpu_total(const pid_t *pids, unsigned n)
{
    int64_t sum = 0;
    for (unsigned i = 0; i < n; i++) {
        int64_t ns = comet_cpu_ns(pids[i]);
        sum += ns > 0 ? ns : 0;
    }
    return sum;
}

int comet_wait_quiet(const pid_t *pids, unsigned n, unsigned max_ms)
{
    double start = comet_now_ms();
    int64_t prev = cpu_total(pids, n);
    unsigned quiet = 0;
    while (quiet < 2) {
        if (comet_now_ms() - start > max_ms)
            return -ETIMEDOUT;
        comet_sleep_ms(QUIET_WINDOW_MS);
        int64_t cur = cpu_total(pids, n);
        quiet = cur - prev < QUIET_CPU_NS ? quiet + 1 : 0;
        prev = cur;
    }
    return (int)(comet_now_ms() - start);
}
