/*
 * clap_host: a small CLAP host for the Barforge Player's .clap (no CLAP host is packaged in
 * Debian). It loads the bundle through its clap_entry, creates the plugin, and drives
 * process() block by block with a playing transport at a tempo and meter, the way a DAW does:
 * each block's song position is rounded to whole 1/1920-beat ticks, as Ardour rounds its own.
 *
 *   clap_host PLUGIN.clap RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress]
 *
 * OUT.f32 gets the output, interleaved float32 (or nothing for "-"). With "stress", every
 * 700th block presses Generate and the next releases it (parameter events), every 1000th relocates by 3.3 beats and
 * every 1500th changes the tempo: the paths run() takes besides plain playing.
 * Prints "ok rt NAME=COUNT... probe=N blocks=N": the calls the plugin made inside process()
 * (plugin_host/rt_probe), and a probe count from creating the plugin, which must allocate.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clap/entry.h"
#include "clap/events.h"
#include "clap/plugin-factory.h"
#include "clap/process.h"

#include "rt_probe.h"

#define BLOCK 1024
#include "host_common.h"
#define PLAYER_ID "dev.barforge.player"
#define GENERATE_PARAM 1 /* DPF: parameter id = index (BarforgePlayer.cpp) */
#define TICKS 1920.0

static const void *host_get_extension(const clap_host_t *h, const char *id)
{
    (void)h;
    (void)id;
    return NULL;
}
static void host_nothing(const clap_host_t *h) { (void)h; }

static const clap_host_t host = {
    .clap_version = CLAP_VERSION_INIT, .name = "barforge clap_host", .vendor = "Barforge",
    .url = "", .version = "1", .get_extension = host_get_extension,
    .request_restart = host_nothing, .request_process = host_nothing,
    .request_callback = host_nothing};

/* Input events: at most one parameter event per block. */
static clap_event_param_value_t pending;
static int has_pending;
static uint32_t in_size(const clap_input_events_t *l) { (void)l; return (uint32_t)has_pending; }
static const clap_event_header_t *in_get(const clap_input_events_t *l, uint32_t i)
{
    (void)l;
    return i == 0 && has_pending ? &pending.header : NULL;
}
static bool out_push(const clap_output_events_t *l, const clap_event_header_t *e)
{
    (void)l;
    (void)e;
    return true;
}

int main(int argc, char **argv)
{
    rt_probe_resolve();
    struct host_args args;
    if (host_args_parse(argc, argv, "clap_host PLUGIN.clap RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress]", &args))
        return 2;
    const double rate = args.rate;
    double bpm = args.bpm; /* stress changes it */
    const int bpb = args.beats_per_bar, stress = args.stress;
    const long blocks = args.blocks;
    FILE *out = args.out;

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    const clap_plugin_entry_t *entry = lib ? dlsym(lib, "clap_entry") : NULL;
    if (!entry || !entry->init(argv[1])) {
        fprintf(stderr, "no clap_entry in %s: %s\n", argv[1], dlerror());
        return 1;
    }
    const clap_plugin_factory_t *factory = entry->get_factory(CLAP_PLUGIN_FACTORY_ID);
    rt_probe_in_rt = 1; /* probe: creating the plugin allocates and maps the segment */
    const clap_plugin_t *plugin = factory ? factory->create_plugin(factory, &host, PLAYER_ID) : NULL;
    const int created = plugin && plugin->init(plugin);
    rt_probe_in_rt = 0;
    unsigned long probe = 0;
    for (int k = 0; k < RT_PROBE_N; ++k) {
        probe += rt_probe_counts[k];
        rt_probe_counts[k] = 0;
    }
    if (!created) {
        fprintf(stderr, "could not create %s\n", PLAYER_ID);
        return 1;
    }
    if (!plugin->activate(plugin, rate, 1, BLOCK) || !plugin->start_processing(plugin)) {
        fprintf(stderr, "activate/start_processing failed\n");
        return 1;
    }

    static float in_l[BLOCK], in_r[BLOCK], out_l[BLOCK], out_r[BLOCK];
    float *ins[2] = {in_l, in_r}, *outs[2] = {out_l, out_r};
    clap_audio_buffer_t ain = {.data32 = ins, .channel_count = 2};
    clap_audio_buffer_t aout = {.data32 = outs, .channel_count = 2};
    clap_input_events_t in_events = {.ctx = NULL, .size = in_size, .get = in_get};
    clap_output_events_t out_events = {.ctx = NULL, .try_push = out_push};
    clap_event_transport_t tr;
    clap_process_t proc = {.frames_count = BLOCK, .transport = &tr, .audio_inputs = &ain,
                           .audio_outputs = &aout, .audio_inputs_count = 1,
                           .audio_outputs_count = 1, .in_events = &in_events,
                           .out_events = &out_events};
    double beat = 0.0; /* the exact song position; the plugin sees it rounded to ticks */
    for (long b = 0; b < blocks; ++b) {
        if (stress && b && b % 1000 == 0)
            beat += 3.3;
        if (stress && b && b % 1500 == 0)
            bpm = bpm == 120.0 ? 97.0 : 120.0;
        has_pending = stress && (b % 700 == 350 || b % 700 == 351); /* press, release */
        if (has_pending)
            pending = (clap_event_param_value_t){
                .header = {.size = sizeof pending, .time = 0, .space_id = CLAP_CORE_EVENT_SPACE_ID,
                           .type = CLAP_EVENT_PARAM_VALUE},
                .param_id = GENERATE_PARAM, .note_id = -1, .port_index = -1, .channel = -1,
                .key = -1, .value = b % 700 == 350 ? 1.0 : 0.0};
        const double ticked = floor(beat * TICKS + 0.5) / TICKS;
        const long bar = (long)floor(ticked / bpb + 1e-9);
        tr = (clap_event_transport_t){
            .header = {.size = sizeof tr, .time = 0, .space_id = CLAP_CORE_EVENT_SPACE_ID,
                       .type = CLAP_EVENT_TRANSPORT},
            .flags = CLAP_TRANSPORT_HAS_TEMPO | CLAP_TRANSPORT_HAS_BEATS_TIMELINE |
                     CLAP_TRANSPORT_HAS_SECONDS_TIMELINE | CLAP_TRANSPORT_HAS_TIME_SIGNATURE |
                     CLAP_TRANSPORT_IS_PLAYING,
            .song_pos_beats = llround(ticked * CLAP_BEATTIME_FACTOR),
            .song_pos_seconds = llround(ticked * 60.0 / bpm * CLAP_SECTIME_FACTOR),
            .tempo = bpm, .bar_start = llround(bar * bpb * (double)CLAP_BEATTIME_FACTOR),
            .bar_number = (int32_t)bar, .tsig_num = (uint16_t)bpb, .tsig_denom = 4};
        proc.steady_time = (int64_t)b * BLOCK;
        host_fill_input(in_l, in_r, b);
        rt_probe_in_rt = 1;
        plugin->process(plugin, &proc);
        rt_probe_in_rt = 0;
        beat += BLOCK * bpm / (60.0 * rate);
        host_write_block(out, out_l, out_r);
    }
    plugin->stop_processing(plugin);
    plugin->deactivate(plugin);
    plugin->destroy(plugin);
    entry->deinit();
    host_finish(out, probe, blocks);
    return 0;
}
