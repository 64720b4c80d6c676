/*
 * Barforge Player: an LV2 plugin that plays the clips the Barforge server publishes in shared
 * memory, locked to the host's transport, and copies its audio input into the capture ring.
 *
 * Audio thread (run): shared memory only, through barforge_shm.c: it plays straight out of a
 * slot, re-checks the slot's seq every block, switches to a new clip on the next bar line with
 * a short crossfade, and never waits on anything. Worker thread (work): OSC requests over UDP
 * and (re-)attaching to the segment when there is none or a new server replaced it (its
 * heartbeat says nothing about that: a server restarted within seconds leaves a fresh one).
 * Every feature is optional: with no urid:map there is no transport (free-running at the
 * clip's tempo) and no prompt; with no worker the segment is attached once, at instantiate.
 *
 * Configuration: BARFORGE_SHM_NAME (default "barforge"), BARFORGE_OSC_PORT (default 9000).
 */
#define _GNU_SOURCE
#include "barforge_shm.h"

#include <arpa/inet.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <lv2/atom/atom.h>
#include <lv2/atom/util.h>
#include <lv2/core/lv2.h>
#include <lv2/core/lv2_util.h>
#include <lv2/patch/patch.h>
#include <lv2/time/time.h>
#include <lv2/urid/urid.h>
#include <lv2/worker/worker.h>

#define PLAYER_URI "http://barforge.dev/lv2/player"
#define PROMPT_URI PLAYER_URI "#prompt"
#define PROMPT_BYTES 512
#define XFADE_S 0.005          /* crossfade length */
#define CHECK_S 0.5            /* how often run() asks the worker to look at the segment */

typedef enum {
    IN_L, IN_R, OUT_L, OUT_R, CONTROL, BARS, GENERATE, CONTINUE, SLOT, BPM, BEATS_PER_BAR,
    CAPTURE, PLAYING, N_PORTS
} PortIndex;

/* A clip being played straight out of its slot. */
typedef struct {
    int active;
    uint32_t slot;
    uint64_t seq;
    bf_clip_meta meta;
    const float *audio;
    double pos;       /* frame position in the clip */
    float gain, ramp; /* ramp: gain change per frame while fading */
} Voice;

typedef enum { REQ_CHECK, REQ_GENERATE, REQ_CONTINUE, REQ_FREE } RequestKind;

typedef struct {
    RequestKind kind;
    uint32_t bars, beats_per_bar, rate, capture;
    float bpm;
    bf_segment *segment; /* REQ_FREE */
    char prompt[PROMPT_BYTES];
} Request;

typedef struct {
    const float *in[2];
    float *out[2];
    const LV2_Atom_Sequence *control;
    const float *bars, *generate, *cont, *slot, *bpm_port, *bpb_port, *capture;
    float *playing;

    LV2_URID_Map *map;
    LV2_Worker_Schedule *schedule;
    struct {
        LV2_URID atom_Blank, atom_Object, atom_Float, atom_Double, atom_Int, atom_Long,
            atom_String, atom_URID, time_Position, time_bar, time_barBeat, time_beat,
            time_beatsPerBar, time_beatsPerMinute, time_speed, patch_Set, patch_property,
            patch_value, prompt;
    } uris;

    double rate;
    bf_segment *seg;
    char shm_name[32];

    /* Transport: the session beat of the next frame, and the tempo. */
    int host_transport;
    double beat, bpm, beats_per_bar, speed;
    long last_bar;

    Voice cur, old, pending;
    uint32_t ring_rate;
    float last_generate, last_continue;
    uint32_t frames_to_check;
    int check_in_flight;
    char prompt[PROMPT_BYTES];

    /* Worker side only. */
    int sock;
    struct sockaddr_in server;
    unsigned instance, job_counter; /* job ids: lv2-<pid>-<instance>-<n>, unique in the host */
    const bf_segment *capture_asked; /* the segment /barforge/capture was sent for */
} Player;

/* ---- OSC (worker thread) ----------------------------------------------------------- */

typedef struct {
    char buf[1024];
    size_t len;
} Osc;

static void osc_str(Osc *m, const char *s)
{
    size_t n = strnlen(s, PROMPT_BYTES), pad = 4 - n % 4; /* NUL then pad to 4 bytes */
    if (m->len + n + pad > sizeof m->buf)
        return;
    memcpy(m->buf + m->len, s, n);
    memset(m->buf + m->len + n, 0, pad);
    m->len += n + pad;
}

static void osc_u32(Osc *m, uint32_t v)
{
    v = htonl(v);
    if (m->len + 4 <= sizeof m->buf) {
        memcpy(m->buf + m->len, &v, 4);
        m->len += 4;
    }
}

static void osc_float(Osc *m, float f)
{
    uint32_t v;
    memcpy(&v, &f, 4);
    osc_u32(m, v);
}

/* types: OSC type tags without the ','; args: the strings and numbers in order. */
static void osc_send(Player *self, const char *address, const char *types, ...)
{
    Osc m = {.len = 0};
    char tags[16] = ",";
    va_list ap;
    strncat(tags, types, sizeof tags - 2);
    osc_str(&m, address);
    osc_str(&m, tags);
    va_start(ap, types);
    for (const char *t = types; *t; ++t) {
        if (*t == 's')
            osc_str(&m, va_arg(ap, const char *));
        else if (*t == 'i')
            osc_u32(&m, (uint32_t)va_arg(ap, int));
        else if (*t == 'f')
            osc_float(&m, (float)va_arg(ap, double));
    }
    va_end(ap);
    if (self->sock >= 0)
        sendto(self->sock, m.buf, m.len, 0, (struct sockaddr *)&self->server, sizeof self->server);
}

/* ---- segment (worker thread or instantiate) ---------------------------------------- */

static bf_segment *attach_segment(const char *name)
{
    bf_segment *seg = calloc(1, sizeof *seg);
    if (seg && bf_attach(seg, name) == BF_OK)
        return seg;
    free(seg);
    return NULL;
}

static void free_segment(bf_segment *seg)
{
    if (seg) {
        bf_detach(seg);
        free(seg);
    }
}

/* ---- playback (audio thread) ------------------------------------------------------- */

static double loop_beats(const bf_clip_meta *m) { return (double)m->bars * m->beats_per_bar; }

/* Put voice v at the clip position that matches the session beat. */
static void voice_sync(Voice *v, double beat)
{
    double origin = v->meta.start_beat >= 0 ? v->meta.start_beat : 0.0;
    double span = loop_beats(&v->meta), b = fmod(beat - origin, span);
    if (b < 0)
        b += span;
    double pos = b * 60.0 * v->meta.sample_rate / v->meta.bpm, near = floor(pos + 0.5);
    v->pos = fabs(pos - near) < 1e-6 ? near : pos; /* land bar lines on exact frames */
    if (v->pos >= v->meta.frames)
        v->pos -= v->meta.frames;
}

static float voice_sample(const Voice *v, uint32_t channel)
{
    const uint32_t ch = v->meta.channels, c = channel < ch ? channel : ch - 1;
    const uint32_t i = (uint32_t)v->pos, j = i + 1 < v->meta.frames ? i + 1 : 0;
    const float a = v->audio[(size_t)i * ch + c], t = (float)(v->pos - i);
    return t == 0.0f ? a : a + (v->audio[(size_t)j * ch + c] - a) * t;
}

static void voice_advance(Voice *v, double step)
{
    v->pos += step;
    if (v->pos < 0.0 || v->pos >= v->meta.frames) { /* looped, either way (speed < 0) */
        v->pos = fmod(v->pos, (double)v->meta.frames);
        if (v->pos < 0.0)
            v->pos += v->meta.frames;
        if (v->pos >= v->meta.frames) /* -tiny + frames rounds up to frames */
            v->pos = 0.0;
    }
    if (v->ramp != 0.0f) {
        v->gain += v->ramp;
        if (v->gain >= 1.0f) {
            v->gain = 1.0f;
            v->ramp = 0.0f;
        } else if (v->gain <= 0.0f) {
            v->active = 0;
        }
    }
}

static double free_bpm(const Player *self)
{
    return self->cur.active ? self->cur.meta.bpm : (double)*self->bpm_port;
}

/* Tempo in force: the host's, or free-running at the playing clip's own. */
static void update_free_tempo(Player *self)
{
    if (!self->host_transport) {
        self->bpm = free_bpm(self);
        self->beats_per_bar = self->cur.active ? self->cur.meta.beats_per_bar
                                               : (double)*self->bpb_port;
        self->speed = 1.0;
    }
}

/* Start the pending clip now (a bar line, or nothing playing). */
static void start_pending(Player *self, int on_bar)
{
    const float fade = (float)(1.0 / (XFADE_S * self->rate));
    if (self->cur.active) {
        self->old = self->cur;
        self->old.ramp = -fade;
    }
    self->cur = self->pending;
    self->pending.active = 0;
    self->cur.gain = (self->old.active || !on_bar) ? 0.0f : 1.0f;
    self->cur.ramp = self->cur.gain < 1.0f ? fade : 0.0f;
    update_free_tempo(self);
    voice_sync(&self->cur, self->beat);
}

static void render(Player *self, uint32_t begin, uint32_t end)
{
    for (uint32_t f = begin; f < end; ++f) {
        const double bpb = self->beats_per_bar > 0 ? self->beats_per_bar : 4.0;
        const double inc = self->speed * self->bpm / (60.0 * self->rate);
        const long bar = (long)floor(self->beat / bpb + 1e-9);
        const int on_bar = bar != self->last_bar && self->beat - bar * bpb < fabs(inc) + 1e-9;
        self->last_bar = bar;
        if (self->pending.active && (on_bar || !self->cur.active) &&
            (self->pending.meta.start_beat < 0 || self->beat + 1e-9 >= self->pending.meta.start_beat))
            start_pending(self, on_bar);
        float l = 0.0f, r = 0.0f;
        if (self->speed != 0.0) {
            Voice *vs[2] = {&self->cur, &self->old};
            for (int k = 0; k < 2; ++k) {
                Voice *v = vs[k];
                if (!v->active)
                    continue;
                l += v->gain * voice_sample(v, 0);
                r += v->gain * voice_sample(v, 1);
                voice_advance(v, self->speed * self->bpm / v->meta.bpm * v->meta.sample_rate /
                                     self->rate);
            }
        }
        self->out[0][f] = l;
        self->out[1][f] = r;
        self->beat += inc;
    }
}

/* Look for a clip to switch to: the newest, or the one in the slot the port names. */
static void poll_slots(Player *self)
{
    const bf_segment *seg = self->seg;
    long want = (long)*self->slot;
    uint32_t slot;
    if (want >= 0)
        slot = (uint32_t)want;
    else if (bf_publish_count(seg))
        slot = bf_newest_slot(seg);
    else
        return;
    if (slot >= seg->layout.n_slots)
        return;
    uint64_t seq = bf_slot_seq(seg, slot);
    if (seq == 0 || (seq & 1) || (self->cur.active && self->cur.slot == slot && self->cur.seq == seq) ||
        (self->pending.active && self->pending.slot == slot && self->pending.seq == seq))
        return;
    Voice v = {.active = 1, .slot = slot};
    v.seq = bf_slot_begin(seg, slot, &v.meta, &v.audio);
    if (v.seq && v.meta.frames && v.meta.bpm > 0 && v.meta.bars && v.meta.beats_per_bar &&
        v.meta.sample_rate)
        self->pending = v; /* (a slot being written is simply looked at again next block) */
}

/* A number of any atom type a host may use; 0 when absent, not a number or not finite. */
static int get_num(const Player *self, const LV2_Atom *a, double *out)
{
    if (!a)
        return 0;
    double v = a->type == self->uris.atom_Float    ? (double)((const LV2_Atom_Float *)a)->body
               : a->type == self->uris.atom_Double ? ((const LV2_Atom_Double *)a)->body
               : a->type == self->uris.atom_Long   ? (double)((const LV2_Atom_Long *)a)->body
               : a->type == self->uris.atom_Int    ? (double)((const LV2_Atom_Int *)a)->body
                                                   : NAN;
    *out = v;
    return isfinite(v);
}

static void apply_position(Player *self, const LV2_Atom_Object *obj)
{
    const LV2_Atom *bar = NULL, *bar_beat = NULL, *beat = NULL, *bpb = NULL, *bpm = NULL,
                   *speed = NULL;
    lv2_atom_object_get(obj, self->uris.time_bar, &bar, self->uris.time_barBeat, &bar_beat,
                        self->uris.time_beat, &beat, self->uris.time_beatsPerBar, &bpb,
                        self->uris.time_beatsPerMinute, &bpm, self->uris.time_speed, &speed, 0);
    double v, w;
    self->host_transport = 1;
    if (get_num(self, bpm, &v) && v > 0)
        self->bpm = v;
    if (get_num(self, bpb, &v) && v > 0)
        self->beats_per_bar = v;
    if (get_num(self, speed, &v))
        self->speed = v;
    if (get_num(self, bar, &v) && get_num(self, bar_beat, &w))
        self->beat = v * self->beats_per_bar + w;
    else if (get_num(self, beat, &v))
        self->beat = v;
    if (self->cur.active)
        voice_sync(&self->cur, self->beat);
}

static void apply_event(Player *self, const LV2_Atom_Event *ev)
{
    const LV2_Atom_Object *obj = (const LV2_Atom_Object *)&ev->body;
    if (ev->body.type != self->uris.atom_Object && ev->body.type != self->uris.atom_Blank)
        return;
    if (obj->body.otype == self->uris.time_Position) {
        apply_position(self, obj);
    } else if (obj->body.otype == self->uris.patch_Set) {
        const LV2_Atom *property = NULL, *value = NULL;
        lv2_atom_object_get(obj, self->uris.patch_property, &property, self->uris.patch_value,
                            &value, 0);
        if (property && property->type == self->uris.atom_URID &&
            ((const LV2_Atom_URID *)property)->body == self->uris.prompt && value &&
            value->type == self->uris.atom_String) {
            size_t n = value->size < PROMPT_BYTES - 1 ? value->size : PROMPT_BYTES - 1;
            memcpy(self->prompt, LV2_ATOM_BODY_CONST(value), n);
            self->prompt[n] = '\0';
        }
    }
}

static void request(Player *self, RequestKind kind)
{
    if (!self->schedule)
        return;
    Request r = {.kind = kind, .bars = (uint32_t)*self->bars,
                 .beats_per_bar = (uint32_t)(self->beats_per_bar + 0.5),
                 .rate = (uint32_t)self->rate, .capture = *self->capture >= 0.5f,
                 .bpm = (float)self->bpm, .segment = self->seg};
    if (!self->host_transport) {
        r.bpm = (float)free_bpm(self);
        r.beats_per_bar = (uint32_t)(self->beats_per_bar + 0.5);
    }
    memcpy(r.prompt, self->prompt, PROMPT_BYTES);
    if (self->schedule->schedule_work(self->schedule->handle, sizeof r, &r) == LV2_WORKER_SUCCESS &&
        kind == REQ_CHECK)
        self->check_in_flight = 1;
}

static void run(LV2_Handle instance, uint32_t n_frames)
{
    Player *self = (Player *)instance;
    if (self->frames_to_check <= n_frames && !self->check_in_flight) {
        request(self, REQ_CHECK);
        self->frames_to_check = (uint32_t)(CHECK_S * self->rate);
    } else if (self->frames_to_check > n_frames) {
        self->frames_to_check -= n_frames;
    }

    /* Clips still there? (the seq check of the previous block's end covers this block's
     * start); anything new to switch to? */
    if (self->seg) {
        Voice *vs[3] = {&self->cur, &self->old, &self->pending};
        for (int k = 0; k < 3; ++k)
            if (vs[k]->active && !bf_slot_check(self->seg, vs[k]->slot, vs[k]->seq))
                vs[k]->active = 0;
        poll_slots(self);
    }
    update_free_tempo(self);

    uint32_t done = 0;
    if (self->control && self->map) {
        LV2_ATOM_SEQUENCE_FOREACH (self->control, ev) {
            uint32_t t = ev->time.frames < n_frames ? (uint32_t)ev->time.frames : n_frames;
            if (t > done) {
                render(self, done, t);
                done = t;
            }
            apply_event(self, ev);
        }
    }
    render(self, done, n_frames);

    /* Control-port triggers: rising edges become requests for the worker, after this block's
     * events, so that they carry a prompt or tempo that arrived with them. */
    if (*self->generate >= 0.5f && self->last_generate < 0.5f)
        request(self, REQ_GENERATE);
    if (*self->cont >= 0.5f && self->last_continue < 0.5f)
        request(self, REQ_CONTINUE);
    self->last_generate = *self->generate;
    self->last_continue = *self->cont;

    /* Samples played out of a slot that changed during the block may be torn: drop them. */
    if (self->seg) {
        int torn = 0;
        Voice *vs[2] = {&self->cur, &self->old};
        for (int k = 0; k < 2; ++k)
            if (vs[k]->active && !bf_slot_check(self->seg, vs[k]->slot, vs[k]->seq)) {
                vs[k]->active = 0;
                torn = 1;
            }
        if (torn) {
            memset(self->out[0], 0, n_frames * sizeof(float));
            memset(self->out[1], 0, n_frames * sizeof(float));
        }
        bf_capture_state st;
        if (bf_capture_state_read(self->seg, &st) == BF_OK)
            self->ring_rate = st.sample_rate;
        if (*self->capture >= 0.5f && self->speed != 0.0 && self->ring_rate == (uint32_t)self->rate)
            bf_capture_write(self->seg, self->in, 2, 1, n_frames, self->beat);
    }
    *self->playing = self->cur.active ? (float)self->cur.slot : -1.0f;
}

/* ---- worker ------------------------------------------------------------------------ */

static LV2_Worker_Status work(LV2_Handle instance, LV2_Worker_Respond_Function respond,
                              LV2_Worker_Respond_Handle handle, uint32_t size, const void *data)
{
    Player *self = (Player *)instance;
    Request r;
    char drain[512];
    if (size != sizeof r)
        return LV2_WORKER_ERR_UNKNOWN;
    memcpy(&r, data, sizeof r);
    while (self->sock >= 0 && recv(self->sock, drain, sizeof drain, MSG_DONTWAIT) > 0) {
    } /* replies are not needed: clips arrive through shared memory */
    char job[64];
    if (r.kind == REQ_GENERATE || r.kind == REQ_CONTINUE)
        snprintf(job, sizeof job, "lv2-%d-%u-%u", (int)getpid(), self->instance,
                 ++self->job_counter);
    switch (r.kind) {
    case REQ_FREE:
        free_segment(r.segment);
        break;
    case REQ_GENERATE:
        osc_send(self, "/barforge/transport", "fii", (double)r.bpm, (int)r.beats_per_bar, (int)r.rate);
        osc_send(self, "/barforge/generate", "ssi", job, r.prompt, (int)r.bars);
        break;
    case REQ_CONTINUE:
        osc_send(self, "/barforge/transport", "fii", (double)r.bpm, (int)r.beats_per_bar, (int)r.rate);
        if (r.prompt[0])
            osc_send(self, "/barforge/continue", "sis", job, (int)r.bars, r.prompt);
        else
            osc_send(self, "/barforge/continue", "si", job, (int)r.bars);
        break;
    case REQ_CHECK: {
        bf_segment *seg = r.segment, *fresh = NULL;
        if (!seg || !bf_same_segment(seg, self->shm_name)) {
            fresh = attach_segment(self->shm_name);
            if (fresh)
                self->capture_asked = NULL;
        }
        const bf_segment *now = fresh ? fresh : seg; /* ask once per segment, the first too */
        if (now && r.capture && now != self->capture_asked) {
            osc_send(self, "/barforge/capture", "i", (int)r.rate);
            self->capture_asked = now;
        }
        respond(handle, sizeof fresh, &fresh); /* NULL: keep what we have */
        break;
    }
    }
    return LV2_WORKER_SUCCESS;
}

static LV2_Worker_Status work_response(LV2_Handle instance, uint32_t size, const void *data)
{
    Player *self = (Player *)instance;
    bf_segment *fresh;
    if (size != sizeof fresh)
        return LV2_WORKER_ERR_UNKNOWN;
    memcpy(&fresh, data, sizeof fresh);
    self->check_in_flight = 0;
    if (fresh) { /* swap: the voices point into the old mapping, which the worker unmaps */
        Request r = {.kind = REQ_FREE, .segment = self->seg};
        self->cur.active = self->old.active = self->pending.active = 0;
        self->seg = fresh;
        if (r.segment)
            self->schedule->schedule_work(self->schedule->handle, sizeof r, &r);
    }
    return LV2_WORKER_SUCCESS;
}

/* ---- LV2 boilerplate --------------------------------------------------------------- */

static LV2_Handle instantiate(const LV2_Descriptor *descriptor, double rate, const char *bundle_path,
                              const LV2_Feature *const *features)
{
    (void)descriptor;
    (void)bundle_path;
    static atomic_uint instances; /* a DAW runs many instances in one process */
    Player *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
    self->instance = atomic_fetch_add(&instances, 1) + 1;
    lv2_features_query(features, LV2_URID__map, &self->map, false, LV2_WORKER__schedule,
                       &self->schedule, false, NULL);
    if (self->map) {
        LV2_URID_Map *m = self->map;
#define MAP(field, uri) self->uris.field = m->map(m->handle, uri)
        MAP(atom_Blank, LV2_ATOM__Blank);
        MAP(atom_Object, LV2_ATOM__Object);
        MAP(atom_Float, LV2_ATOM__Float);
        MAP(atom_Double, LV2_ATOM__Double);
        MAP(atom_Int, LV2_ATOM__Int);
        MAP(atom_Long, LV2_ATOM__Long);
        MAP(atom_String, LV2_ATOM__String);
        MAP(atom_URID, LV2_ATOM__URID);
        MAP(time_Position, LV2_TIME__Position);
        MAP(time_bar, LV2_TIME__bar);
        MAP(time_barBeat, LV2_TIME__barBeat);
        MAP(time_beat, LV2_TIME__beat);
        MAP(time_beatsPerBar, LV2_TIME__beatsPerBar);
        MAP(time_beatsPerMinute, LV2_TIME__beatsPerMinute);
        MAP(time_speed, LV2_TIME__speed);
        MAP(patch_Set, LV2_PATCH__Set);
        MAP(patch_property, LV2_PATCH__property);
        MAP(patch_value, LV2_PATCH__value);
        MAP(prompt, PROMPT_URI);
#undef MAP
    }
    const char *name = getenv("BARFORGE_SHM_NAME"), *port = getenv("BARFORGE_OSC_PORT");
    snprintf(self->shm_name, sizeof self->shm_name, "%s", name && *name ? name : "barforge");
    self->rate = rate;
    self->seg = attach_segment(self->shm_name);
    self->sock = socket(AF_INET, SOCK_DGRAM, 0);
    self->server.sin_family = AF_INET;
    self->server.sin_port = htons((uint16_t)(port && *port ? atoi(port) : 9000));
    self->server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return self;
}

static void connect_port(LV2_Handle instance, uint32_t port, void *data)
{
    Player *self = (Player *)instance;
    switch ((PortIndex)port) {
    case IN_L: self->in[0] = data; break;
    case IN_R: self->in[1] = data; break;
    case OUT_L: self->out[0] = data; break;
    case OUT_R: self->out[1] = data; break;
    case CONTROL: self->control = data; break;
    case BARS: self->bars = data; break;
    case GENERATE: self->generate = data; break;
    case CONTINUE: self->cont = data; break;
    case SLOT: self->slot = data; break;
    case BPM: self->bpm_port = data; break;
    case BEATS_PER_BAR: self->bpb_port = data; break;
    case CAPTURE: self->capture = data; break;
    case PLAYING: self->playing = data; break;
    case N_PORTS: break;
    }
}

static void activate(LV2_Handle instance)
{
    Player *self = (Player *)instance;
    self->host_transport = 0;
    self->beat = 0.0;
    self->speed = 1.0;
    self->last_bar = LONG_MIN;
    self->cur.active = self->old.active = self->pending.active = 0;
    self->last_generate = self->last_continue = 0.0f;
    self->frames_to_check = 0;
}

static void cleanup(LV2_Handle instance)
{
    Player *self = (Player *)instance;
    free_segment(self->seg);
    if (self->sock >= 0)
        close(self->sock);
    free(self);
}

static const void *extension_data(const char *uri)
{
    static const LV2_Worker_Interface worker = {work, work_response, NULL};
    return strcmp(uri, LV2_WORKER__interface) == 0 ? &worker : NULL;
}

static const LV2_Descriptor descriptor = {PLAYER_URI, instantiate, connect_port, activate, run,
                                          NULL, cleanup, extension_data};

LV2_SYMBOL_EXPORT const LV2_Descriptor *lv2_descriptor(uint32_t index)
{
    return index == 0 ? &descriptor : NULL;
}
