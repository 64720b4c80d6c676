/*
 * lv2_harness: a small LV2 host that drives the Barforge Player through the paths lv2apply
 * cannot reach (urid:map, an atom control port, the worker), block by block, under the
 * control of a test.
 *
 *   lv2_harness PLUGIN.so RATE OUT.f32 [INSTANCES]
 *
 * INSTANCES (default 1) instances run side by side in this one process, as in a DAW, with the
 * same ports and events; OUT.f32 gets the first one's output.
 * Commands, one per line on stdin; each is answered by one line on stdout ("ok ..." or
 * "error ..."):
 *   port INDEX VALUE               set a control input port (index as in the .ttl)
 *   pos FRAME KEY=VALUE...         queue a time:Position at FRAME (0..127) of the next block;
 *                                  keys bar (Long), barbeat, beat, bpb, bpm, speed (Float)
 *   prompt FRAME TEXT...           queue a patch:Set of the prompt (the rest of the line)
 *   run N                          run N blocks of 128 frames -> "ok FRAMES PLAYING"
 *   sync 0|1                       worker asynchronous (default: after run()) or synchronous
 *                                  (inside schedule_work, as Ardour's while exporting)
 *   stats                          -> "ok rt NAME=COUNT... probe=N blocks=N median_ns=X
 *                                     p999_ns=X max_ns=X" (run() of the first instance)
 *   quit                           close the output and exit
 *
 * Every block's output (out_l, out_r interleaved, float32) is appended to OUT.f32. The audio
 * inputs carry in_l = (frame % 1000) / 1000, in_r = -in_l, frame counted from the start.
 *
 * The worker runs synchronously after each run(): the work scheduled during run() or during
 * the previous block's work_response, then work_response for each response (in the audio
 * context, as LV2 requires), then end_run.
 *
 * Real-time check (plugin_host/rt_probe): this executable defines malloc, free, pthread_mutex_lock, write, sendto,
 * shm_open, mmap, nanosleep and friends (it is linked with -rdynamic, so they interpose on the
 * plugin's calls) and counts every call made while the audio thread is inside run() or
 * work_response(). A probe during instantiate (which may allocate) proves the interposition
 * reaches the plugin.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <lv2/atom/forge.h>
#include <lv2/core/lv2.h>
#include <lv2/patch/patch.h>
#include <lv2/time/time.h>
#include <lv2/urid/urid.h>
#include <lv2/worker/worker.h>

#include "rt_probe.h"

#define BLOCK 128
#define PLUGIN_URI "http://barforge.dev/lv2/player"
#define N_PORTS 13
enum { IN_L, IN_R, OUT_L, OUT_R, CONTROL, PLAYING = 12 };

#include "urid_map.h"

/* ---- worker: fixed queues, run synchronously after run() --------------------------- */

#define QUEUE 32
#define ITEM_BYTES 2048
#define MAX_INSTANCES 4
typedef struct {
    uint32_t n, size[QUEUE], instance[QUEUE];
    uint8_t data[QUEUE][ITEM_BYTES];
} Queue;
static Queue work_q, resp_q;

static uint32_t instance_ids[MAX_INSTANCES] = {0, 1, 2, 3}; /* the handles: which instance */

static LV2_Worker_Status push(Queue *q, void *instance, uint32_t size, const void *data)
{
    if (q->n == QUEUE || size > ITEM_BYTES)
        return LV2_WORKER_ERR_NO_SPACE;
    memcpy(q->data[q->n], data, size);
    q->instance[q->n] = *(const uint32_t *)instance;
    q->size[q->n++] = size;
    return LV2_WORKER_SUCCESS;
}

/* "sync 1": a synchronous worker, as Ardour's while it exports: schedule_work runs work()
 * at once, and respond runs work_response() at once, inside it. */
static int sync_worker;
static const LV2_Worker_Interface *worker_iface;
static LV2_Handle handles[MAX_INSTANCES];

static LV2_Worker_Status respond(LV2_Worker_Respond_Handle h, uint32_t size, const void *data)
{
    if (sync_worker)
        return worker_iface->work_response(handles[*(const uint32_t *)h], size, data);
    return push(&resp_q, h, size, data);
}

static LV2_Worker_Status schedule_work(LV2_Worker_Schedule_Handle h, uint32_t size, const void *data)
{
    if (sync_worker && worker_iface) {
        const int was_rt = rt_probe_in_rt; /* (the work itself may do anything) */
        rt_probe_in_rt = 0;
        LV2_Worker_Status st = worker_iface->work(handles[*(const uint32_t *)h], respond, h,
                                                  size, data);
        rt_probe_in_rt = was_rt;
        return st;
    }
    return push(&work_q, h, size, data);
}

/* ---- the host ---------------------------------------------------------------------- */

typedef struct {
    LV2_URID atom_Sequence, time_Position, time_bar, time_barBeat, time_beat, time_beatsPerBar,
        time_beatsPerMinute, time_speed, patch_Set, patch_property, patch_value, prompt;
} Uris;

#define MAX_EVENTS 64
#define TEXT_BYTES 1024
typedef struct {
    uint32_t frame;
    int is_prompt;
    int has[6]; /* bar, barbeat, beat, bpb, bpm, speed */
    double val[6];
    char text[TEXT_BYTES];
} Event;
static const char *const pos_keys[6] = {"bar", "barbeat", "beat", "bpb", "bpm", "speed"};
static Event events[MAX_EVENTS];
static uint32_t n_events;

#define MAX_TIMED (1u << 20)
static uint64_t block_ns[MAX_TIMED];
static uint64_t n_blocks;

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void forge_events(LV2_Atom_Forge *forge, const Uris *u, uint8_t *buf, uint32_t size)
{
    LV2_Atom_Forge_Frame seq, obj;
    lv2_atom_forge_set_buffer(forge, buf, size);
    lv2_atom_forge_sequence_head(forge, &seq, 0);
    for (uint32_t k = 0; k < n_events; ++k) { /* in time order: stable sort by frame */
        const Event *e = &events[k];
        lv2_atom_forge_frame_time(forge, e->frame);
        if (e->is_prompt) {
            lv2_atom_forge_object(forge, &obj, 0, u->patch_Set);
            lv2_atom_forge_key(forge, u->patch_property);
            lv2_atom_forge_urid(forge, u->prompt);
            lv2_atom_forge_key(forge, u->patch_value);
            lv2_atom_forge_string(forge, e->text, (uint32_t)strlen(e->text));
        } else {
            const LV2_URID keys[6] = {u->time_bar, u->time_barBeat, u->time_beat,
                                      u->time_beatsPerBar, u->time_beatsPerMinute, u->time_speed};
            lv2_atom_forge_object(forge, &obj, 0, u->time_Position);
            for (int i = 0; i < 6; ++i) {
                if (!e->has[i])
                    continue;
                lv2_atom_forge_key(forge, keys[i]);
                if (i == 0)
                    lv2_atom_forge_long(forge, (int64_t)e->val[i]);
                else
                    lv2_atom_forge_float(forge, (float)e->val[i]);
            }
        }
        lv2_atom_forge_pop(forge, &obj);
    }
    lv2_atom_forge_pop(forge, &seq);
    n_events = 0;
}

static void insert_event(const Event *e)
{
    uint32_t k = n_events++;
    while (k > 0 && events[k - 1].frame > e->frame) {
        events[k] = events[k - 1];
        --k;
    }
    events[k] = *e;
}

int main(int argc, char **argv)
{
    rt_probe_resolve();
    const int n_inst = argc == 5 ? atoi(argv[4]) : 1;
    if ((argc != 4 && argc != 5) || n_inst < 1 || n_inst > MAX_INSTANCES) {
        fprintf(stderr, "usage: %s PLUGIN.so RATE OUT.f32 [INSTANCES 1..4]\n", argv[0]);
        return 2;
    }
    const double rate = atof(argv[2]);
    FILE *out = fopen(argv[3], "wb");
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib || !out) {
        fprintf(stderr, "cannot open %s or %s: %s\n", argv[1], argv[3], dlerror());
        return 1;
    }
    LV2_Descriptor_Function df = (LV2_Descriptor_Function)dlsym(lib, "lv2_descriptor");
    const LV2_Descriptor *d = df ? df(0) : NULL;
    if (!d || strcmp(d->URI, PLUGIN_URI) != 0) {
        fprintf(stderr, "no %s in %s\n", PLUGIN_URI, argv[1]);
        return 1;
    }
    const LV2_Worker_Interface *wi = d->extension_data
                                         ? d->extension_data(LV2_WORKER__interface) : NULL;

    LV2_URID_Map map = {NULL, map_uri};
    LV2_Worker_Schedule sched[MAX_INSTANCES];
    LV2_Feature f_map = {LV2_URID__map, &map}, f_sched[MAX_INSTANCES];
    Uris u = {
        map_uri(NULL, LV2_ATOM__Sequence), map_uri(NULL, LV2_TIME__Position),
        map_uri(NULL, LV2_TIME__bar), map_uri(NULL, LV2_TIME__barBeat),
        map_uri(NULL, LV2_TIME__beat), map_uri(NULL, LV2_TIME__beatsPerBar),
        map_uri(NULL, LV2_TIME__beatsPerMinute), map_uri(NULL, LV2_TIME__speed),
        map_uri(NULL, LV2_PATCH__Set), map_uri(NULL, LV2_PATCH__property),
        map_uri(NULL, LV2_PATCH__value), map_uri(NULL, PLUGIN_URI "#prompt")};
    LV2_Atom_Forge forge;
    lv2_atom_forge_init(&forge, &map);

    static float in[2][BLOCK], outb[MAX_INSTANCES][2][BLOCK], inter[2 * BLOCK];
    static uint8_t ctrl[16384];
    static float ports[MAX_INSTANCES][N_PORTS];
    LV2_Handle hs[MAX_INSTANCES];
    unsigned long probe = 0;
    for (int i = 0; i < n_inst; ++i) {
        sched[i] = (LV2_Worker_Schedule){&instance_ids[i], schedule_work};
        f_sched[i] = (LV2_Feature){LV2_WORKER__schedule, &sched[i]};
        const LV2_Feature *features[] = {&f_map, &f_sched[i], NULL};
        /* Probe: instantiate allocates and opens the segment; those calls must be seen. */
        rt_probe_in_rt = 1;
        hs[i] = d->instantiate(d, rate, "", features);
        rt_probe_in_rt = 0;
        for (int k = 0; k < RT_PROBE_N; ++k) {
            probe += rt_probe_counts[k];
            rt_probe_counts[k] = 0;
        }
        if (!hs[i]) {
            fprintf(stderr, "instantiate failed\n");
            return 1;
        }
        const float defaults[N_PORTS] = {0, 0, 0, 0, 0, 4, 0, 0, -1, 120, 4, 1, 0};
        memcpy(ports[i], defaults, sizeof defaults);
        for (uint32_t p = 0; p < N_PORTS; ++p)
            d->connect_port(hs[i], p, p == IN_L || p == IN_R ? (void *)in[p]
                                      : p == OUT_L || p == OUT_R ? (void *)outb[i][p - OUT_L]
                                      : p == CONTROL ? (void *)ctrl : (void *)&ports[i][p]);
        if (d->activate)
            d->activate(hs[i]);
        handles[i] = hs[i];
    }
    worker_iface = wi;

    uint64_t frame = 0;
    char line[4096];
    setvbuf(stdout, NULL, _IOLBF, 0);
    while (fgets(line, sizeof line, stdin)) {
        char cmd[16] = "";
        int used = 0;
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "%15s %n", cmd, &used) < 1)
            continue;
        const char *rest = line + used;
        if (strcmp(cmd, "port") == 0) {
            unsigned idx;
            float v;
            if (sscanf(rest, "%u %f", &idx, &v) != 2 || idx >= N_PORTS) {
                printf("error port\n");
                continue;
            }
            for (int i = 0; i < n_inst; ++i)
                ports[i][idx] = v;
            printf("ok\n");
        } else if (strcmp(cmd, "pos") == 0 || strcmp(cmd, "prompt") == 0) {
            Event e = {.is_prompt = cmd[1] == 'r'};
            int n = 0;
            if (n_events == MAX_EVENTS || sscanf(rest, "%u %n", &e.frame, &n) < 1 ||
                e.frame >= BLOCK) {
                printf("error event\n");
                continue;
            }
            rest += n;
            if (e.is_prompt) {
                snprintf(e.text, sizeof e.text, "%s", rest);
            } else {
                char key[16];
                double v;
                while (sscanf(rest, "%15[a-z]=%lf %n", key, &v, &n) == 2) {
                    for (int i = 0; i < 6; ++i)
                        if (strcmp(key, pos_keys[i]) == 0) {
                            e.has[i] = 1;
                            e.val[i] = v;
                        }
                    rest += n;
                }
            }
            insert_event(&e);
            printf("ok\n");
        } else if (strcmp(cmd, "run") == 0) {
            long blocks = atol(rest);
            for (long b = 0; b < blocks; ++b) {
                forge_events(&forge, &u, ctrl, sizeof ctrl);
                for (uint32_t f = 0; f < BLOCK; ++f) {
                    in[0][f] = (float)((frame + f) % 1000) / 1000.0f;
                    in[1][f] = -in[0][f];
                }
                for (int i = 0; i < n_inst; ++i) { /* the first one is timed */
                    uint64_t t0 = now_ns();
                    rt_probe_in_rt = 1;
                    d->run(hs[i], BLOCK);
                    rt_probe_in_rt = 0;
                    uint64_t t1 = now_ns();
                    if (i == 0 && n_blocks < MAX_TIMED)
                        block_ns[n_blocks] = t1 - t0;
                }
                ++n_blocks;
                frame += BLOCK;
                for (uint32_t f = 0; f < BLOCK; ++f) {
                    inter[2 * f] = outb[0][0][f];
                    inter[2 * f + 1] = outb[0][1][f];
                }
                fwrite(inter, sizeof(float), 2 * BLOCK, out);
                if (wi) { /* the worker, then its responses in the audio context */
                    static Queue todo, answers;
                    todo = work_q;
                    work_q.n = 0;
                    for (uint32_t k = 0; k < todo.n; ++k)
                        wi->work(hs[todo.instance[k]], respond, &instance_ids[todo.instance[k]],
                                 todo.size[k], todo.data[k]);
                    answers = resp_q;
                    resp_q.n = 0;
                    rt_probe_in_rt = 1;
                    for (uint32_t k = 0; k < answers.n; ++k)
                        wi->work_response(hs[answers.instance[k]], answers.size[k],
                                          answers.data[k]);
                    if (wi->end_run)
                        for (int i = 0; i < n_inst; ++i)
                            wi->end_run(hs[i]);
                    rt_probe_in_rt = 0;
                }
            }
            fflush(out);
            printf("ok %llu %g\n", (unsigned long long)frame, ports[0][PLAYING]);
        } else if (strcmp(cmd, "sync") == 0) {
            sync_worker = atoi(rest) != 0;
            printf("ok\n");
        } else if (strcmp(cmd, "stats") == 0) {
            uint64_t n = n_blocks < MAX_TIMED ? n_blocks : MAX_TIMED, med = 0, p999 = 0, max = 0;
            if (n) {
                qsort(block_ns, n, sizeof block_ns[0], cmp_u64);
                med = block_ns[n / 2];
                p999 = block_ns[n * 999 / 1000];
                max = block_ns[n - 1];
            }
            printf("ok rt");
            for (int k = 0; k < RT_PROBE_N; ++k)
                if (rt_probe_counts[k])
                    printf(" %s=%lu", rt_probe_names[k], rt_probe_counts[k]);
            printf(" probe=%lu blocks=%llu median_ns=%llu p999_ns=%llu max_ns=%llu\n", probe,
                   (unsigned long long)n_blocks, (unsigned long long)med,
                   (unsigned long long)p999, (unsigned long long)max);
            n_blocks = 0;
        } else if (strcmp(cmd, "quit") == 0) {
            break;
        } else {
            printf("error unknown command %s\n", cmd);
        }
    }
    for (int i = 0; i < n_inst; ++i) {
        if (d->deactivate)
            d->deactivate(hs[i]);
        d->cleanup(hs[i]);
    }
    fclose(out);
    dlclose(lib);
    return 0;
}
