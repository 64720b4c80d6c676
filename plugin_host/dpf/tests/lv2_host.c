/*
 * lv2_host: a small LV2 host for the DPF Barforge Player's LV2 build, giving it what Ardour
 * gives it: urid:map, options (block length, rate), a worker, a time:Position every block
 * with the bar and beat rounded to whole 1/1920-beat ticks and the frame, as Ardour sends them.
 *
 *   lv2_host PLUGIN_dsp.so RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress [PROMPT [roundtrip]]]
 *
 * OUT.f32 gets the output, interleaved float32 (or nothing for "-"). With "stress", block 10
 * carries a patch:Set of the prompt (PROMPT, default "stress"), every 700th block presses
 * Generate (the control port is 1 for that block only), every 1000th relocates by 3.3 beats and every
 * 1500th changes the tempo. With "roundtrip" the prompt is set in an earlier instance instead
 * (a patch:Set handed to its worker, as DPF's run() does), whose state is saved through the
 * LV2 state interface and restored into the instance that runs: a DAW session saved and
 * loaded. The worker runs after run(), outside the audio context (as an
 * asynchronous host worker does). Prints "ok rt NAME=COUNT... probe=N blocks=N": the calls the
 * plugin made inside run() (plugin_host/rt_probe), and a probe count from instantiate().
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lv2/atom/forge.h>
#include <lv2/buf-size/buf-size.h>
#include <lv2/core/lv2.h>
#include <lv2/options/options.h>
#include <lv2/parameters/parameters.h>
#include <lv2/patch/patch.h>
#include <lv2/state/state.h>
#include <lv2/time/time.h>
#include <lv2/urid/urid.h>
#include <lv2/worker/worker.h>

#include "rt_probe.h"

#define BLOCK 1024
#include "host_common.h"
#define PLAYER_URI "http://barforge.dev/plugins/player"
#define TICKS 1920.0
/* Port indices of the DPF build (BarforgePlayer_dsp.ttl). */
enum { IN_L, IN_R, OUT_L, OUT_R, EVENTS_IN, EVENTS_OUT, LATENCY, BARS, GENERATE, CONTINUE,
       SLOT, BPM, BEATS_PER_BAR, CAPTURE, PLAYING, N_PORTS };

#include "urid_map.h"

/* The worker's queue: filled by schedule_work (from run()), drained after run(). */
static uint8_t work_buf[65536];
static uint32_t work_used;

static LV2_Worker_Status schedule_work(LV2_Worker_Schedule_Handle h, uint32_t size, const void *data)
{
    (void)h;
    if (work_used + sizeof size + size > sizeof work_buf)
        return LV2_WORKER_ERR_NO_SPACE;
    memcpy(work_buf + work_used, &size, sizeof size);
    memcpy(work_buf + work_used + sizeof size, data, size);
    work_used += sizeof size + size;
    return LV2_WORKER_SUCCESS;
}

static LV2_Worker_Status respond(LV2_Worker_Respond_Handle h, uint32_t size, const void *data)
{
    (void)h;
    (void)size;
    (void)data;
    return LV2_WORKER_SUCCESS; /* (the player's state messages need no answer) */
}

/* The saved state: one property (the player has one, its prompt). */
static struct {
    uint32_t key, type;
    size_t size;
    char value[1024];
} saved;

static LV2_State_Status store(LV2_State_Handle h, uint32_t key, const void *value, size_t size,
                              uint32_t type, uint32_t flags)
{
    (void)h;
    (void)flags;
    if (size > sizeof saved.value)
        return LV2_STATE_ERR_NO_SPACE;
    saved.key = key;
    saved.type = type;
    saved.size = size;
    memcpy(saved.value, value, size);
    return LV2_STATE_SUCCESS;
}

static const void *retrieve(LV2_State_Handle h, uint32_t key, size_t *size, uint32_t *type,
                            uint32_t *flags)
{
    (void)h;
    if (!saved.size || key != saved.key)
        return NULL;
    *size = saved.size;
    *type = saved.type;
    *flags = LV2_STATE_IS_POD | LV2_STATE_IS_PORTABLE;
    return saved.value;
}

int main(int argc, char **argv)
{
    rt_probe_resolve();
    struct host_args args;
    if (host_args_parse(argc, argv, "lv2_host PLUGIN_dsp.so RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress [PROMPT]]", &args))
        return 2;
    const double rate = args.rate;
    double bpm = args.bpm; /* stress changes it */
    const int bpb = args.beats_per_bar, stress = args.stress;
    const long blocks = args.blocks;
    const char *prompt = argc > 8 ? argv[8] : "stress";
    const int roundtrip = argc > 9 && strcmp(argv[9], "roundtrip") == 0;
    FILE *out = args.out;

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    LV2_Descriptor_Function df = lib ? (LV2_Descriptor_Function)dlsym(lib, "lv2_descriptor") : NULL;
    const LV2_Descriptor *d = df ? df(0) : NULL;
    if (!d || strcmp(d->URI, PLAYER_URI) != 0) {
        fprintf(stderr, "no %s in %s\n", PLAYER_URI, argv[1]);
        return 1;
    }
    const LV2_Worker_Interface *wi = d->extension_data
                                         ? d->extension_data(LV2_WORKER__interface) : NULL;
    LV2_URID_Map map = {NULL, map_uri};
    const int32_t block = BLOCK;
    const float rate_f = (float)rate;
    LV2_Options_Option options[] = {
        {LV2_OPTIONS_INSTANCE, 0, map_uri(NULL, LV2_BUF_SIZE__maxBlockLength), sizeof block,
         map_uri(NULL, LV2_ATOM__Int), &block},
        {LV2_OPTIONS_INSTANCE, 0, map_uri(NULL, LV2_BUF_SIZE__nominalBlockLength), sizeof block,
         map_uri(NULL, LV2_ATOM__Int), &block},
        {LV2_OPTIONS_INSTANCE, 0, map_uri(NULL, LV2_PARAMETERS__sampleRate), sizeof rate_f,
         map_uri(NULL, LV2_ATOM__Float), &rate_f},
        {LV2_OPTIONS_INSTANCE, 0, 0, 0, 0, NULL}};
    LV2_Worker_Schedule sched = {NULL, schedule_work};
    LV2_Feature f_map = {LV2_URID__map, &map}, f_opts = {LV2_OPTIONS__options, options},
                f_sched = {LV2_WORKER__schedule, &sched};
    const LV2_Feature *features[] = {&f_map, &f_opts, &f_sched, NULL};

    const LV2_State_Interface *state = d->extension_data
                                           ? d->extension_data(LV2_STATE__interface) : NULL;
    if (roundtrip) { /* the session before: the prompt set, the state saved */
        static uint8_t set_buf[2048];
        LV2_Atom_Forge f;
        LV2_Atom_Forge_Frame obj;
        lv2_atom_forge_init(&f, &map);
        lv2_atom_forge_set_buffer(&f, set_buf, sizeof set_buf);
        lv2_atom_forge_object(&f, &obj, 0, map_uri(NULL, LV2_PATCH__Set));
        lv2_atom_forge_key(&f, map_uri(NULL, LV2_PATCH__property));
        lv2_atom_forge_urid(&f, map_uri(NULL, PLAYER_URI "#prompt"));
        lv2_atom_forge_key(&f, map_uri(NULL, LV2_PATCH__value));
        lv2_atom_forge_string(&f, prompt, (uint32_t)strlen(prompt));
        lv2_atom_forge_pop(&f, &obj);
        LV2_Handle before = d->instantiate(d, rate, "", features);
        const LV2_Atom *set = (const LV2_Atom *)set_buf;
        if (!before || !wi || !state ||
            wi->work(before, respond, NULL, sizeof *set + set->size, set) != LV2_WORKER_SUCCESS ||
            state->save(before, store, NULL, LV2_STATE_IS_POD | LV2_STATE_IS_PORTABLE, NULL) !=
                LV2_STATE_SUCCESS) {
            fprintf(stderr, "could not set and save the prompt\n");
            return 1;
        }
        d->cleanup(before);
        fprintf(stderr, "saved %s (%zu bytes)\n", uri_table[saved.key - 1], saved.size);
    }

    rt_probe_in_rt = 1; /* probe: instantiate allocates and maps the segment */
    LV2_Handle h = d->instantiate(d, rate, "", features);
    rt_probe_in_rt = 0;
    unsigned long probe = 0;
    for (int k = 0; k < RT_PROBE_N; ++k) {
        probe += rt_probe_counts[k];
        rt_probe_counts[k] = 0;
    }
    if (!h) {
        fprintf(stderr, "instantiate failed\n");
        return 1;
    }
    static float in[2][BLOCK], outb[2][BLOCK];
    static uint8_t events_in[16384], events_out[16384];
    float ports[N_PORTS] = {[BARS] = 4, [SLOT] = -1, [BPM] = 120, [BEATS_PER_BAR] = 4, [CAPTURE] = 1};
    for (uint32_t p = 0; p < N_PORTS; ++p)
        d->connect_port(h, p, p <= IN_R ? (void *)in[p] : p <= OUT_R ? (void *)outb[p - OUT_L]
                              : p == EVENTS_IN ? (void *)events_in
                              : p == EVENTS_OUT ? (void *)events_out : (void *)&ports[p]);
    if (roundtrip && state->restore(h, retrieve, NULL, 0, NULL) != LV2_STATE_SUCCESS) {
        fprintf(stderr, "restore failed\n");
        return 1;
    }
    if (d->activate)
        d->activate(h);

    const LV2_URID position = map_uri(NULL, LV2_TIME__Position), bar_u = map_uri(NULL, LV2_TIME__bar),
                   bar_beat = map_uri(NULL, LV2_TIME__barBeat),
                   beat_unit = map_uri(NULL, LV2_TIME__beatUnit),
                   beats_per_bar = map_uri(NULL, LV2_TIME__beatsPerBar),
                   beats_per_minute = map_uri(NULL, LV2_TIME__beatsPerMinute),
                   speed = map_uri(NULL, LV2_TIME__speed), frame_u = map_uri(NULL, LV2_TIME__frame),
                   patch_set = map_uri(NULL, LV2_PATCH__Set),
                   patch_property = map_uri(NULL, LV2_PATCH__property),
                   patch_value = map_uri(NULL, LV2_PATCH__value),
                   prompt_u = map_uri(NULL, PLAYER_URI "#prompt");
    LV2_Atom_Forge forge;
    lv2_atom_forge_init(&forge, &map);

    double beat = 0.0;    /* the exact song position; the plugin sees it rounded to ticks */
    long long frame = 0;  /* the transport's frame: it jumps with a relocation */
    for (long b = 0; b < blocks; ++b) {
        if (stress && b && b % 1000 == 0) {
            beat += 3.3;
            frame += (long long)llround(3.3 * 60.0 / bpm * rate);
        }
        if (stress && b && b % 1500 == 0)
            bpm = bpm == 120.0 ? 97.0 : 120.0;
        ports[GENERATE] = stress && b % 700 == 350 ? 1.0f : 0.0f;

        lv2_atom_forge_set_buffer(&forge, events_in, sizeof events_in);
        LV2_Atom_Forge_Frame seq, obj;
        lv2_atom_forge_sequence_head(&forge, &seq, 0);
        const double ticked = floor(beat * TICKS + 0.5) / TICKS;
        const long bar = (long)floor(ticked / bpb + 1e-9);
        lv2_atom_forge_frame_time(&forge, 0);
        lv2_atom_forge_object(&forge, &obj, 0, position);
        lv2_atom_forge_key(&forge, frame_u);
        lv2_atom_forge_long(&forge, frame);
        lv2_atom_forge_key(&forge, speed);
        lv2_atom_forge_float(&forge, 1.0f);
        lv2_atom_forge_key(&forge, bar_u);
        lv2_atom_forge_long(&forge, bar);
        lv2_atom_forge_key(&forge, bar_beat);
        lv2_atom_forge_float(&forge, (float)(ticked - bar * bpb));
        lv2_atom_forge_key(&forge, beat_unit);
        lv2_atom_forge_int(&forge, 4);
        lv2_atom_forge_key(&forge, beats_per_bar);
        lv2_atom_forge_float(&forge, (float)bpb);
        lv2_atom_forge_key(&forge, beats_per_minute);
        lv2_atom_forge_float(&forge, (float)bpm);
        lv2_atom_forge_pop(&forge, &obj);
        if (stress && b == 10 && !roundtrip) {
            lv2_atom_forge_frame_time(&forge, 0);
            lv2_atom_forge_object(&forge, &obj, 0, patch_set);
            lv2_atom_forge_key(&forge, patch_property);
            lv2_atom_forge_urid(&forge, prompt_u);
            lv2_atom_forge_key(&forge, patch_value);
            lv2_atom_forge_string(&forge, prompt, (uint32_t)strlen(prompt));
            lv2_atom_forge_pop(&forge, &obj);
        }
        lv2_atom_forge_pop(&forge, &seq);
        ((LV2_Atom *)events_out)->size = sizeof events_out - sizeof(LV2_Atom);
        ((LV2_Atom *)events_out)->type = 0;
        for (int f = 0; f < BLOCK; ++f) {
            in[0][f] = (float)((b * BLOCK + f) % 1000) / 1000.0f;
            in[1][f] = -in[0][f];
        }

        rt_probe_in_rt = 1;
        d->run(h, BLOCK);
        rt_probe_in_rt = 0;

        for (uint32_t at = 0; at < work_used;) { /* the worker, outside the audio context */
            uint32_t size;
            memcpy(&size, work_buf + at, sizeof size);
            if (wi)
                wi->work(h, respond, NULL, size, work_buf + at + sizeof size);
            at += sizeof size + size;
        }
        work_used = 0;
        beat += BLOCK * bpm / (60.0 * rate);
        frame += BLOCK;
        host_write_block(out, outb[0], outb[1]);
    }
    if (d->deactivate)
        d->deactivate(h);
    d->cleanup(h);
    host_finish(out, probe, blocks);
    return 0;
}
