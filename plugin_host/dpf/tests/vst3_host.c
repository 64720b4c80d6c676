/*
 * vst3_host: a small VST3 host for the DPF Barforge Player's .vst3 bundle, written against
 * DPF's C ABI headers (travesty). It loads the module (ModuleEntry, GetPluginFactory), creates
 * the audio component, and drives process() block by block with a playing ProcessContext whose
 * position is rounded to whole 1/1920-beat ticks, as Ardour passes it.
 *
 *   vst3_host PLUGIN.so RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress]
 *
 * OUT.f32 gets the output, interleaved float32 (or nothing for "-"). With "stress", every
 * 700th block presses Generate and the next releases it (parameter changes, its id looked up
 * by title), every 1000th
 * relocates by 3.3 beats and every 1500th changes the tempo. Prints "ok rt NAME=COUNT...
 * probe=N blocks=N": the calls the plugin made inside process() (plugin_host/rt_probe), and a
 * probe count from creating the component.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "travesty/audio_processor.h"
#include "travesty/component.h"
#include "travesty/factory.h"
/* view.h (pulled in by edit_controller.h) names these structs without `struct`, as C++ does */
typedef struct v3_event_handler v3_event_handler;
typedef struct v3_timer_handler v3_timer_handler;
#include "travesty/edit_controller.h"

#include "rt_probe.h"

#define BLOCK 1024
#include "host_common.h"
#define TICKS 1920.0

/* ---- one parameter change (Generate = 1 at frame 0): the two interfaces process() reads -- */

static v3_result V3_API no_interface(void *self, const v3_tuid iid, void **obj)
{
    (void)self;
    (void)iid;
    *obj = NULL;
    return V3_NO_INTERFACE;
}
static uint32_t V3_API one_ref(void *self) { (void)self; return 1; }

static v3_param_id generate_id;
static int pressing;     /* a change of Generate in this block */
static double button;    /* its value: 1 pressed, 0 released */

static v3_param_id V3_API queue_id(void *self) { (void)self; return generate_id; }
static int32_t V3_API queue_count(void *self) { (void)self; return 1; }
static v3_result V3_API queue_point(void *self, int32_t idx, int32_t *offset, double *value)
{
    (void)self;
    if (idx != 0)
        return V3_INVALID_ARG;
    *offset = 0;
    *value = button;
    return V3_OK;
}
static v3_result V3_API queue_add(void *self, int32_t offset, double value, int32_t *idx)
{
    (void)self;
    (void)offset;
    (void)value;
    (void)idx;
    return V3_NOT_IMPLEMENTED;
}
static const struct v3_param_value_queue queue_vtbl = {
    .query_interface = no_interface, .ref = one_ref, .unref = one_ref,
    .get_param_id = queue_id, .get_point_count = queue_count, .get_point = queue_point,
    .add_point = queue_add};
static const struct v3_param_value_queue *queue_obj = &queue_vtbl;

static int32_t V3_API changes_count(void *self) { (void)self; return pressing; }
static struct v3_param_value_queue **V3_API changes_get(void *self, int32_t idx)
{
    (void)self;
    return idx == 0 && pressing ? (struct v3_param_value_queue **)&queue_obj : NULL;
}
static struct v3_param_value_queue **V3_API changes_add(void *self, v3_param_id *id, int32_t *idx)
{
    (void)self;
    (void)id;
    (void)idx;
    return NULL;
}
static const struct v3_param_changes changes_vtbl = {
    .query_interface = no_interface, .ref = one_ref, .unref = one_ref,
    .get_param_count = changes_count, .get_param_data = changes_get, .add_param_data = changes_add};
static const struct v3_param_changes *changes_obj = &changes_vtbl;

/* Output parameter changes (the player's "Slot playing", its latency): taken and dropped. */
static v3_result V3_API sink_add(void *self, int32_t offset, double value, int32_t *idx)
{
    (void)self;
    (void)offset;
    (void)value;
    *idx = 0;
    return V3_OK;
}
static const struct v3_param_value_queue sink_queue_vtbl = {
    .query_interface = no_interface, .ref = one_ref, .unref = one_ref,
    .get_param_id = queue_id, .get_point_count = queue_count, .get_point = queue_point,
    .add_point = sink_add};
static const struct v3_param_value_queue *sink_queue_obj = &sink_queue_vtbl;
static int32_t V3_API sink_count(void *self) { (void)self; return 0; }
static struct v3_param_value_queue **V3_API sink_get(void *self, int32_t idx)
{
    (void)self;
    (void)idx;
    return NULL;
}
static struct v3_param_value_queue **V3_API sink_add_data(void *self, v3_param_id *id, int32_t *idx)
{
    (void)self;
    (void)id;
    *idx = 0;
    return (struct v3_param_value_queue **)&sink_queue_obj;
}
static const struct v3_param_changes sink_vtbl = {
    .query_interface = no_interface, .ref = one_ref, .unref = one_ref,
    .get_param_count = sink_count, .get_param_data = sink_get, .add_param_data = sink_add_data};
static const struct v3_param_changes *sink_obj = &sink_vtbl;

/* The id of the parameter titled `title` (UTF-16 in the info), or -1. */
static long find_param(struct v3_edit_controller **ctl, const char *title)
{
    for (int32_t i = 0, n = (*ctl)->get_parameter_count(ctl); i < n; ++i) {
        struct v3_param_info info;
        if ((*ctl)->get_parameter_info(ctl, i, &info) != V3_OK)
            continue;
        size_t k = 0;
        while (title[k] && info.title[k] == (int16_t)title[k])
            ++k;
        if (!title[k] && info.title[k] == 0)
            return info.param_id;
    }
    return -1;
}

int main(int argc, char **argv)
{
    rt_probe_resolve();
    struct host_args args;
    if (host_args_parse(argc, argv, "vst3_host PLUGIN.so RATE BPM BEATS_PER_BAR BLOCKS OUT.f32|- [stress]", &args))
        return 2;
    const double rate = args.rate;
    double bpm = args.bpm; /* stress changes it */
    const int bpb = args.beats_per_bar, stress = args.stress;
    const long blocks = args.blocks;
    FILE *out = args.out;

    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    bool (*entry)(void *) = lib ? (bool (*)(void *))dlsym(lib, "ModuleEntry") : NULL;
    struct v3_plugin_factory **(*get_factory)(void) =
        lib ? (struct v3_plugin_factory **(*)(void))dlsym(lib, "GetPluginFactory") : NULL;
    if (!entry || !get_factory || !entry(lib)) {
        fprintf(stderr, "not a VST3 module: %s\n", argv[1]);
        return 1;
    }
    struct v3_plugin_factory **factory = get_factory();
    struct v3_class_info info;
    int32_t found = -1;
    for (int32_t i = 0, n = (*factory)->num_classes(factory); i < n && found < 0; ++i)
        if ((*factory)->get_class_info(factory, i, &info) == V3_OK &&
            strcmp(info.category, "Audio Module Class") == 0)
            found = i;
    if (found < 0) {
        fprintf(stderr, "no audio module class\n");
        return 1;
    }
    struct v3_component **comp = NULL;
    rt_probe_in_rt = 1; /* probe: creating the component allocates and maps the segment */
    v3_result made = (*factory)->create_instance(factory, info.class_id, v3_component_iid,
                                                 (void **)&comp);
    if (made == V3_OK)
        made = (*comp)->initialize(comp, NULL);
    rt_probe_in_rt = 0;
    unsigned long probe = 0;
    for (int k = 0; k < RT_PROBE_N; ++k) {
        probe += rt_probe_counts[k];
        rt_probe_counts[k] = 0;
    }
    struct v3_audio_processor **proc = NULL;
    if (made != V3_OK ||
        (*comp)->query_interface(comp, v3_audio_processor_iid, (void **)&proc) != V3_OK) {
        fprintf(stderr, "could not create the component\n");
        return 1;
    }
    struct v3_edit_controller **ctl = NULL;
    if (stress) { /* the parameter ids: from the component itself or its own controller class */
        long id = -1;
        v3_tuid ctl_class;
        if ((*comp)->query_interface(comp, v3_edit_controller_iid, (void **)&ctl) != V3_OK) {
            ctl = NULL;
            if ((*comp)->get_controller_class_id(comp, ctl_class) == V3_OK &&
                (*factory)->create_instance(factory, ctl_class, v3_edit_controller_iid,
                                            (void **)&ctl) == V3_OK &&
                (*ctl)->initialize(ctl, NULL) != V3_OK)
                ctl = NULL;
        }
        if (ctl)
            id = find_param(ctl, "Generate");
        if (id < 0) {
            fprintf(stderr, "no Generate parameter\n");
            return 1;
        }
        generate_id = (v3_param_id)id;
    }
    struct v3_process_setup setup = {.process_mode = V3_REALTIME,
                                     .symbolic_sample_size = V3_SAMPLE_32,
                                     .max_block_size = BLOCK, .sample_rate = rate};
    (*proc)->setup_processing(proc, &setup);
    (*comp)->activate_bus(comp, V3_AUDIO, V3_INPUT, 0, 1);
    (*comp)->activate_bus(comp, V3_AUDIO, V3_OUTPUT, 0, 1);
    (*comp)->set_active(comp, 1);
    (*proc)->set_processing(proc, 1);

    static float in_l[BLOCK], in_r[BLOCK], out_l[BLOCK], out_r[BLOCK];
    float *ins[2] = {in_l, in_r}, *outs[2] = {out_l, out_r};
    struct v3_audio_bus_buffers in_bus = {.num_channels = 2, .channel_buffers_32 = ins};
    struct v3_audio_bus_buffers out_bus = {.num_channels = 2, .channel_buffers_32 = outs};
    struct v3_process_context ctx;
    struct v3_param_changes **changes = (struct v3_param_changes **)&changes_obj;
    struct v3_process_data data = {.process_mode = V3_REALTIME,
                                   .symbolic_sample_size = V3_SAMPLE_32, .nframes = BLOCK,
                                   .num_input_buses = 1, .num_output_buses = 1,
                                   .inputs = &in_bus, .outputs = &out_bus,
                                   .input_params = changes,
                                   .output_params = (struct v3_param_changes **)&sink_obj,
                                   .ctx = &ctx};
    double beat = 0.0;   /* the exact song position; the plugin sees it rounded to ticks */
    long long frame = 0; /* the transport's frame: it jumps with a relocation */
    for (long b = 0; b < blocks; ++b) {
        if (stress && b && b % 1000 == 0) {
            beat += 3.3;
            frame += (long long)llround(3.3 * 60.0 / bpm * rate);
        }
        if (stress && b && b % 1500 == 0)
            bpm = bpm == 120.0 ? 97.0 : 120.0;
        pressing = stress && (b % 700 == 350 || b % 700 == 351); /* press, release */
        button = b % 700 == 350 ? 1.0 : 0.0;
        const double ticked = floor(beat * TICKS + 0.5) / TICKS;
        const long bar = (long)floor(ticked / bpb + 1e-9);
        memset(&ctx, 0, sizeof ctx);
        ctx.state = V3_PROCESS_CTX_PLAYING | V3_PROCESS_CTX_PROJECT_TIME_VALID |
                    V3_PROCESS_CTX_TEMPO_VALID | V3_PROCESS_CTX_BAR_POSITION_VALID |
                    V3_PROCESS_CTX_TIME_SIG_VALID | V3_PROCESS_CTX_CONT_TIME_VALID;
        ctx.sample_rate = rate;
        ctx.project_time_in_samples = frame;
        ctx.continuous_time_in_samples = (int64_t)b * BLOCK;
        ctx.project_time_quarters = ticked;
        ctx.bar_position_quarters = (double)bar * bpb;
        ctx.bpm = bpm;
        ctx.time_sig_numerator = bpb;
        ctx.time_sig_denom = 4;
        host_fill_input(in_l, in_r, b);
        rt_probe_in_rt = 1;
        (*proc)->process(proc, &data);
        rt_probe_in_rt = 0;
        beat += BLOCK * bpm / (60.0 * rate);
        frame += BLOCK;
        host_write_block(out, out_l, out_r);
    }
    (*proc)->set_processing(proc, 0);
    (*comp)->set_active(comp, 0);
    if (ctl) {
        (*ctl)->terminate(ctl);
        (*ctl)->unref(ctl);
    }
    (*proc)->unref(proc);
    (*comp)->terminate(comp);
    (*comp)->unref(comp);
    host_finish(out, probe, blocks);
    return 0;
}
