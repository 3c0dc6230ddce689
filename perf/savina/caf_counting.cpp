// SPDX-License-Identifier: MIT
//
// Savina counting on CAF 0.17 (see es_counting.c): a producer sends n
// increments to a counter, then asks for the count. check = the count.
#include "caf_common.hpp"

using namespace caf;

using inc_atom = atom_constant<atom("inc")>;
using get_atom = atom_constant<atom("get")>;
using count_atom = atom_constant<atom("count")>;

namespace
{

struct counter_state {
    uint64_t count = 0;
};

behavior counter_actor(stateful_actor<counter_state> *self)
{
    return {
        [=](inc_atom) { self->state.count++; },
        [=](get_atom) {
            self->send(caf_sender(self), count_atom::value, self->state.count);
        },
    };
}

behavior producer_actor(event_based_actor *self, actor counter, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++)
        self->send(counter, inc_atom::value);
    self->send(counter, get_atom::value);
    return {[=](count_atom, uint64_t count) {
        caf_bench_finish(count);
        self->quit();
    }};
}

} // namespace

int main(int argc, char **argv)
{
    return caf_bench_main(
        argc, argv, "counting", 2000000,
        [](actor_system &sys) {
            actor counter = sys.spawn(counter_actor);
            actor producer = sys.spawn(producer_actor, counter, bench.args.n);
            return std::vector<actor>{counter, producer};
        },
        [](uint64_t n) { return n; });
}
