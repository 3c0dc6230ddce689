// SPDX-License-Identifier: MIT
//
// Savina chameneos on CAF 0.17 (see es_chameneos.c): SAVINA_CHAMENEOS
// creatures meet through one mall; after n meetings the mall sends every
// asker home and sums the meetings they report. check = that sum (2n).
#include "caf_common.hpp"

using namespace caf;

using meet_atom = atom_constant<atom("meet")>;
using mate_atom = atom_constant<atom("mate")>;
using change_atom = atom_constant<atom("change")>;
using home_atom = atom_constant<atom("home")>;
using count_atom = atom_constant<atom("count")>;

namespace
{

struct mall_state {
    uint64_t left = 0;
    actor waiting;
    unsigned exited = 0;
    uint64_t meetings = 0;
};

behavior mall_actor(stateful_actor<mall_state> *self, uint64_t n)
{
    self->state.left = n;
    return {
        [=](meet_atom, uint64_t colour) {
            mall_state &m = self->state;
            if (m.left == 0) {
                self->send(caf_sender(self), home_atom::value);
            } else if (!m.waiting) {
                m.waiting = caf_sender(self);
            } else {
                m.left--;
                self->send(m.waiting, mate_atom::value, colour,
                           caf_sender(self));
                m.waiting = nullptr;
            }
        },
        [=](count_atom, uint64_t meetings) {
            mall_state &m = self->state;
            m.meetings += meetings;
            if (++m.exited == SAVINA_CHAMENEOS) {
                caf_bench_finish(m.meetings);
                self->quit();
            }
        },
    };
}

struct creature_state {
    uint64_t colour = 0; // 0, 1 or 2
    uint64_t meetings = 0;
};

uint64_t complement(uint64_t a, uint64_t b)
{
    return a == b ? a : 3 - a - b;
}

behavior creature_actor(stateful_actor<creature_state> *self, actor mall,
                        uint64_t colour)
{
    self->state.colour = colour;
    self->send(mall, meet_atom::value, colour);
    return {
        [=](mate_atom, uint64_t other_colour, actor other) {
            creature_state &c = self->state;
            c.colour = complement(c.colour, other_colour);
            c.meetings++;
            self->send(other, change_atom::value, c.colour);
            self->send(mall, meet_atom::value, c.colour);
        },
        [=](change_atom, uint64_t new_colour) {
            creature_state &c = self->state;
            c.colour = new_colour;
            c.meetings++;
            self->send(mall, meet_atom::value, c.colour);
        },
        [=](home_atom) {
            self->send(mall, count_atom::value, self->state.meetings);
            self->quit();
        },
    };
}

} // namespace

int main(int argc, char **argv)
{
    return caf_bench_main(
        argc, argv, "chameneos", 200000,
        [](actor_system &sys) {
            std::vector<actor> all{sys.spawn(mall_actor, bench.args.n)};
            for (uint64_t i = 0; i < SAVINA_CHAMENEOS; i++)
                all.push_back(sys.spawn(creature_actor, all[0], i % 3));
            return all;
        },
        [](uint64_t n) { return 2 * n; });
}
