// SPDX-License-Identifier: MIT
//
// Savina big on CAF 0.17 (see es_big.c): SAVINA_BIG_ACTORS actors each send
// n pings, one at a time, to neighbours drawn by savina_big_pick(); every
// ping is answered by a pong. check = the sum of the neighbours drawn.
#include "caf_common.hpp"

using namespace caf;

using go_atom = atom_constant<atom("go")>;
using ping_atom = atom_constant<atom("ping")>;
using pong_atom = atom_constant<atom("pong")>;
using done_atom = atom_constant<atom("done")>;

namespace
{

// Filled by main before the driver sends go; the go message orders it
// before every read.
std::vector<actor> members;

struct member_state {
    uint64_t rng = 0;
    uint64_t left = 0;
    uint64_t sum = 0;
    actor driver;
};

void ping_next(stateful_actor<member_state> *self, uint64_t index)
{
    member_state &m = self->state;
    uint64_t to = savina_big_pick(&m.rng, index, SAVINA_BIG_ACTORS);
    m.sum += to;
    self->send(members[to], ping_atom::value);
}

behavior member_actor(stateful_actor<member_state> *self, uint64_t index,
                      uint64_t n)
{
    self->state.rng = index;
    self->state.left = n;
    return {
        [=](go_atom) {
            self->state.driver = caf_sender(self);
            ping_next(self, index);
        },
        [=](ping_atom) { return pong_atom::value; },
        [=](pong_atom) {
            member_state &m = self->state;
            if (--m.left == 0)
                self->send(m.driver, done_atom::value, m.sum);
            else
                ping_next(self, index);
        },
    };
}

struct driver_state {
    unsigned finished = 0;
    uint64_t sum = 0;
};

behavior driver_actor(stateful_actor<driver_state> *self)
{
    for (auto &m : members)
        self->send(m, go_atom::value);
    return {[=](done_atom, uint64_t sum) {
        driver_state &d = self->state;
        d.sum += sum;
        if (++d.finished == SAVINA_BIG_ACTORS) {
            caf_bench_finish(d.sum);
            self->quit();
        }
    }};
}

} // namespace

int main(int argc, char **argv)
{
    int rc = caf_bench_main(
        argc, argv, "big", 20000,
        [](actor_system &sys) {
            for (uint64_t i = 0; i < SAVINA_BIG_ACTORS; i++)
                members.push_back(sys.spawn(member_actor, i, bench.args.n));
            std::vector<actor> all = members;
            all.push_back(sys.spawn(driver_actor));
            return all;
        },
        [](uint64_t n) { return savina_big_expected(SAVINA_BIG_ACTORS, n); });
    members.clear();
    return rc;
}
