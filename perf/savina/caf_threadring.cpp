// SPDX-License-Identifier: MIT
//
// Savina threadring on CAF 0.17 (see es_threadring.c): SAVINA_RING_ACTORS
// actors in a ring pass one token n times. check = the hops the token
// counted (0 if it ended at the wrong actor).
#include "caf_common.hpp"

using namespace caf;

using next_atom = atom_constant<atom("next")>;
using token_atom = atom_constant<atom("token")>;

namespace
{

struct member_state {
    actor next;
};

behavior member_actor(stateful_actor<member_state> *self, uint64_t index)
{
    return {
        [=](next_atom, actor next) { self->state.next = std::move(next); },
        [=](token_atom, uint64_t left, uint64_t hops) {
            if (left == 0) {
                bool here = index == bench.args.n % SAVINA_RING_ACTORS;
                caf_bench_finish(here ? hops : 0);
                return;
            }
            self->send(self->state.next, token_atom::value, left - 1, hops + 1);
        },
    };
}

} // namespace

int main(int argc, char **argv)
{
    return caf_bench_main(
        argc, argv, "threadring", 2000000,
        [](actor_system &sys) {
            std::vector<actor> ring;
            for (uint64_t i = 0; i < SAVINA_RING_ACTORS; i++)
                ring.push_back(sys.spawn(member_actor, i));
            for (size_t i = 0; i < ring.size(); i++)
                anon_send(ring[i], next_atom::value,
                          ring[(i + 1) % ring.size()]);
            anon_send(ring[0], token_atom::value, bench.args.n, uint64_t{0});
            return ring;
        },
        [](uint64_t n) { return n; });
}
