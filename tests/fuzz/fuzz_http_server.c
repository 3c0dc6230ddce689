/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target: bytes into a real connection of a running HTTP server
 * (one runtime and server per process, fuzz_util.c). Each input is sent
 * twice over fresh connections: whole, then cut into several pieces that
 * the server reads one at a time. The responses must not depend on how the
 * input was split: the two byte streams, with Date values replaced and
 * "100 Continue" interim responses dropped (fz_normalise), must be equal.
 * The first input byte chooses the cuts; the rest is what is sent.
 */
#include "fuzz_util.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CUTS 16

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fz_server_init();
    return 0;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Up to MAX_CUTS sorted cut positions in (0, n) from the selector byte:
 * its low 4 bits give the count, the whole byte seeds the positions. 0xff
 * cuts after every byte of the first MAX_CUTS.
 */
static size_t make_cuts(uint8_t sel, size_t n, size_t *cuts)
{
    if (n < 2)
        return 0;
    size_t k = 1 + (sel & 0x0f) % MAX_CUTS, m = 0;
    if (sel == 0xff) {
        for (size_t i = 1; i < n && m < MAX_CUTS; i++)
            cuts[m++] = i;
        return m;
    }
    uint32_t x = 2166136261u ^ sel ^ (uint32_t)n * 16777619u;
    for (size_t i = 0; i < k; i++) {
        x = x * 1103515245u + 12345u;
        cuts[m++] = 1 + (x >> 8) % (n - 1);
    }
    qsort(cuts, m, sizeof(*cuts), cmp_size);
    size_t u = 0;
    for (size_t i = 0; i < m; i++)
        if (!u || cuts[u - 1] != cuts[i])
            cuts[u++] = cuts[i];
    return u;
}

static void show(const char *what, const struct fz_buf *b)
{
    fprintf(stderr, "--- %s (%zu bytes):\n", what, b->len);
    for (size_t i = 0; i < b->len && i < 2048; i++) {
        unsigned char c = (unsigned char)b->p[i];
        if (c == '\n' || (c >= 0x20 && c < 0x7f))
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02x", c);
    }
    fputc('\n', stderr);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t sel = data[0];
    data++;
    size--;
    size_t cuts[MAX_CUTS];
    size_t ncuts = make_cuts(sel, size, cuts);
    struct fz_buf whole = {0}, split = {0};
    fz_server_exchange(data, size, NULL, 0, &whole);
    fz_server_exchange(data, size, cuts, ncuts, &split);
    fz_normalise(&whole);
    fz_normalise(&split);
    if (whole.len != split.len ||
        (whole.len && memcmp(whole.p, split.p, whole.len) != 0)) {
        fprintf(stderr, "cuts:");
        for (size_t i = 0; i < ncuts; i++)
            fprintf(stderr, " %zu", cuts[i]);
        fputc('\n', stderr);
        show("sent whole", &whole);
        show("sent in pieces", &split);
        fz_fail("the responses depend on how the request was split");
    }
    fz_buf_free(&whole);
    fz_buf_free(&split);
    return 0;
}
