// SPDX-License-Identifier: MIT
//
// Savina pingpong on CAF 0.17 (see es_pingpong.c): n round trips one after
// another. check = the pongs ping got.
#include "caf_common.hpp"

using namespace caf;

using ping_atom = atom_constant<atom("ping")>;
using pong_atom = atom_constant<atom("pong")>;

namespace
{

behavior pong_actor(event_based_actor *)
{
    return {[](ping_atom) { return pong_atom::value; }};
}

struct ping_state {
    uint64_t got = 0;
};

behavior ping_actor(stateful_actor<ping_state> *self, actor pong, uint64_t n)
{
    self->send(pong, ping_atom::value);
    return {[=](pong_atom) {
        if (++self->state.got == n) {
            caf_bench_finish(self->state.got);
            self->quit();
        } else {
            self->send(pong, ping_atom::value);
        }
    }};
}

} // namespace

int main(int argc, char **argv)
{
    return caf_bench_main(
        argc, argv, "pingpong", 500000,
        [](actor_system &sys) {
            actor pong = sys.spawn(pong_actor);
            actor ping = sys.spawn(ping_actor, pong, bench.args.n);
            return std::vector<actor>{pong, ping};
        },
        [](uint64_t n) { return n; });
}
