// SPDX-License-Identifier: MIT
//
// Savina fork-join throughput on CAF 0.17 (see es_fjthroughput.c): a
// driver sends n messages to each of SAVINA_FJ_ACTORS workers, round by
// round; each costs one savina_work(). check = the messages handled.
#include "caf_common.hpp"

#include <cmath>

using namespace caf;

using work_atom = atom_constant<atom("work")>;
using done_atom = atom_constant<atom("done")>;

namespace
{

struct worker_state {
    uint64_t count = 0;
    double acc = 0.0;
};

behavior worker_actor(stateful_actor<worker_state> *self, uint64_t n)
{
    return {[=](work_atom, uint64_t v) {
        worker_state &w = self->state;
        w.acc += savina_work(v);
        if (++w.count == n)
            self->send(caf_sender(self), done_atom::value, w.count, w.acc);
    }};
}

struct driver_state {
    uint64_t handled = 0;
    unsigned finished = 0;
    double acc = 0.0;
};

behavior driver_actor(stateful_actor<driver_state> *self,
                      std::vector<actor> workers, uint64_t n)
{
    for (uint64_t m = 0; m < n; m++)
        for (auto &w : workers)
            self->send(w, work_atom::value, m);
    return {[=](done_atom, uint64_t count, double acc) {
        driver_state &d = self->state;
        d.handled += count;
        d.acc += acc;
        if (++d.finished == SAVINA_FJ_ACTORS) {
            caf_bench_finish(std::isfinite(d.acc) ? d.handled : 0);
            self->quit();
        }
    }};
}

} // namespace

int main(int argc, char **argv)
{
    return caf_bench_main(
        argc, argv, "fjthroughput", 20000,
        [](actor_system &sys) {
            std::vector<actor> all;
            for (unsigned k = 0; k < SAVINA_FJ_ACTORS; k++)
                all.push_back(sys.spawn(worker_actor, bench.args.n));
            all.push_back(sys.spawn(driver_actor, all, bench.args.n));
            return all;
        },
        [](uint64_t n) { return n * SAVINA_FJ_ACTORS; });
}
