// SPDX-License-Identifier: MIT
//
// Savina fork-join creation on CAF 0.17 (see es_fjcreation.c): a driver
// spawns n workers and sends each one message; a worker does one
// savina_work(), answers and quits. check = the answers the driver got.
#include "caf_common.hpp"

#include <cmath>

using namespace caf;

using work_atom = atom_constant<atom("work")>;
using done_atom = atom_constant<atom("done")>;

namespace
{

behavior worker_actor(event_based_actor *self)
{
    return {[=](work_atom, uint64_t v) {
        self->send(caf_sender(self), done_atom::value, savina_work(v));
        self->quit();
    }};
}

struct driver_state {
    uint64_t answers = 0;
    double acc = 0.0;
};

behavior driver_actor(stateful_actor<driver_state> *self, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        self->send(self->spawn(worker_actor), work_atom::value, i);
    return {[=](done_atom, double r) {
        driver_state &d = self->state;
        d.acc += r;
        if (++d.answers == n) {
            caf_bench_finish(std::isfinite(d.acc) ? d.answers : 0);
            self->quit();
        }
    }};
}

} // namespace

int main(int argc, char **argv)
{
    return caf_bench_main(
        argc, argv, "fjcreation", 200000,
        [](actor_system &sys) {
            return std::vector<actor>{sys.spawn(driver_actor, bench.args.n)};
        },
        [](uint64_t n) { return n; });
}
