/* What the three test hosts of the DPF player share: their command line
 *   HOST PLUGIN RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress ...]
 * the test input written into the plugin's inputs, the interleaved float32 output file, and the
 * closing "ok rt NAME=COUNT... probe=N blocks=N" line tests/test_dpf_hosts.py reads. Blocks are
 * BLOCK frames (each host defines BLOCK before including this). */
#ifndef BARFORGE_DPF_TEST_HOST_COMMON_H
#define BARFORGE_DPF_TEST_HOST_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rt_probe.h"

struct host_args {
    double rate, bpm;
    int beats_per_bar;
    long blocks;
    int stress;   /* "stress" as the 7th argument */
    FILE *out;    /* NULL for "-" */
};

/* Parses argv; returns 0, or prints `usage` and returns 2 when arguments are missing. */
static inline int host_args_parse(int argc, char **argv, const char *usage, struct host_args *a)
{
    if (argc < 7) {
        fprintf(stderr, "usage: %s\n", usage);
        return 2;
    }
    a->rate = atof(argv[2]);
    a->bpm = atof(argv[3]);
    a->beats_per_bar = atoi(argv[4]);
    a->blocks = atol(argv[5]);
    a->stress = argc > 7 && strcmp(argv[7], "stress") == 0;
    a->out = strcmp(argv[6], "-") ? fopen(argv[6], "wb") : NULL;
    return 0;
}

/* The input of block `b`: a ramp on the left, its negation on the right (the capture test). */
static inline void host_fill_input(float *left, float *right, long b)
{
    for (int f = 0; f < BLOCK; ++f) {
        left[f] = (float)((b * BLOCK + f) % 1000) / 1000.0f;
        right[f] = -left[f];
    }
}

/* Appends one block of the plugin's stereo output, interleaved, to `out` (if any). */
static inline void host_write_block(FILE *out, const float *left, const float *right)
{
    static float inter[2 * BLOCK];
    if (!out)
        return;
    for (int f = 0; f < BLOCK; ++f) {
        inter[2 * f] = left[f];
        inter[2 * f + 1] = right[f];
    }
    fwrite(inter, sizeof(float), 2 * BLOCK, out);
}

/* Closes the output and prints the calls counted on the audio thread. */
static inline void host_finish(FILE *out, unsigned long probe, long blocks)
{
    if (out)
        fclose(out);
    printf("ok rt");
    for (int k = 0; k < RT_PROBE_N; ++k)
        if (rt_probe_counts[k])
            printf(" %s=%lu", rt_probe_names[k], rt_probe_counts[k]);
    printf(" probe=%lu blocks=%ld\n", probe, blocks);
}

#endif
