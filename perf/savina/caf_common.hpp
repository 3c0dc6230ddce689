// SPDX-License-Identifier: MIT
//
// The CAF 0.17 side of the Savina benchmarks: one actor system with
// args.threads scheduler threads, the same command line, clock and result
// line as the EventServer versions (savina_common.h), and the hand-off that
// lets the benchmark's last handler stop the clock and wake main.
#ifndef SAVINA_CAF_COMMON_HPP
#define SAVINA_CAF_COMMON_HPP

#include "savina_common.h"

#include <cstdint>
#include <future>
#include <vector>

#include <caf/all.hpp>

struct caf_bench {
    savina_args args;
    savina_clock clock;
    std::promise<uint64_t> done;
};

inline caf_bench bench;

// Stops the clock with the result and wakes main. Thread: any, once.
inline void caf_bench_finish(uint64_t check)
{
    savina_clock_stop(&bench.clock);
    bench.done.set_value(check);
}

// The reply address of the message being handled.
inline caf::actor caf_sender(caf::local_actor *self)
{
    return caf::actor_cast<caf::actor>(self->current_sender());
}

// Runs one benchmark: parses argv, builds the actor system, starts the
// clock, calls start(system), which spawns the actors and returns those
// still alive at the end, waits for caf_bench_finish(), prints the result
// line, then sends those actors an exit and tears the system down.
// Returns: the exit status (0 only if the check equals expected(n)).
template <class Start, class Expected>
int caf_bench_main(int argc, char **argv, const char *name, uint64_t default_n,
                   Start start, Expected expected)
{
    if (savina_parse(argc, argv, default_n, &bench.args) < 0)
        return 2;
    if (bench.args.placed || bench.args.split) {
        std::fprintf(stderr, "%s: --placed and --split are es only\n", name);
        return 2;
    }
    caf::actor_system_config cfg;
    cfg.set("scheduler.max-threads", static_cast<int64_t>(bench.args.threads));
    caf::actor_system system{cfg};
    std::future<uint64_t> result = bench.done.get_future();
    savina_clock_start(&bench.clock);
    std::vector<caf::actor> alive = start(system);
    uint64_t check = result.get();
    int rc = savina_report(name, "caf", &bench.args, &bench.clock, check,
                           expected(bench.args.n));
    for (auto &a : alive)
        caf::anon_send_exit(a, caf::exit_reason::user_shutdown);
    return rc;
}

#endif // SAVINA_CAF_COMMON_HPP
