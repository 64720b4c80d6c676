/*
 * Barforge Player: an LV2 plugin that plays the clips the Barforge server publishes in shared
 * memory, locked to the host's transport, and copies its audio input into the capture ring.
 * The playback engine (barforge_player_core.c) and the off-thread work (barforge_requests.c)
 * are the C core every build shares; this file is the LV2 glue: ports, atom events, worker.
 *
 * Audio thread (run): shared memory only. Worker thread (work): OSC requests and (re-)attaching
 * the segment. Every feature is optional: with no urid:map there is no transport (free-running
 * at the clip's tempo) and no prompt; with no worker the segment is attached once, at
 * instantiate.
 *
 * Configuration: BARFORGE_SHM_NAME (default "barforge"), BARFORGE_OSC_PORT (default 9000).
 */
#include "barforge_player_core.h"
#include "barforge_requests.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
#define CHECK_S 0.5            /* how often run() asks the worker to look at the segment */

typedef enum {
    IN_L, IN_R, OUT_L, OUT_R, CONTROL, BARS, GENERATE, CONTINUE, SLOT, BPM, BEATS_PER_BAR,
    CAPTURE, PLAYING, N_PORTS
} PortIndex;

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
            time_beatsPerBar, time_beatsPerMinute, time_speed, time_frame, patch_Set,
            patch_property, patch_value, prompt;
    } uris;

    bf_player player;
    bf_segment *seg;
    uint32_t ring_rate;
    float last_generate, last_continue;
    uint32_t frames_to_check;
    int check_in_flight;
    char prompt[BF_PROMPT_BYTES];

    bf_requester requester; /* worker side only */
} Player;

/* A number of any atom type a host may use; NAN when absent or not a number. */
static double get_num(const Player *self, const LV2_Atom *a)
{
    if (!a)
        return NAN;
    return a->type == self->uris.atom_Float    ? (double)((const LV2_Atom_Float *)a)->body
           : a->type == self->uris.atom_Double ? ((const LV2_Atom_Double *)a)->body
           : a->type == self->uris.atom_Long   ? (double)((const LV2_Atom_Long *)a)->body
           : a->type == self->uris.atom_Int    ? (double)((const LV2_Atom_Int *)a)->body
                                               : NAN;
}

static void apply_position(Player *self, const LV2_Atom_Object *obj)
{
    const LV2_Atom *bar = NULL, *bar_beat = NULL, *beat = NULL, *bpb = NULL, *bpm = NULL,
                   *speed = NULL, *frame = NULL;
    lv2_atom_object_get(obj, self->uris.time_bar, &bar, self->uris.time_barBeat, &bar_beat,
                        self->uris.time_beat, &beat, self->uris.time_beatsPerBar, &bpb,
                        self->uris.time_beatsPerMinute, &bpm, self->uris.time_speed, &speed,
                        self->uris.time_frame, &frame, 0);
    bf_host_position pos = {.beat = NAN, .bpm = get_num(self, bpm),
                            .beats_per_bar = get_num(self, bpb), .speed = get_num(self, speed),
                            .frame = -1};
    const double meter = isfinite(pos.beats_per_bar) && pos.beats_per_bar > 0
                             ? pos.beats_per_bar : self->player.beats_per_bar;
    const double b = get_num(self, bar), bb = get_num(self, bar_beat), f = get_num(self, frame);
    if (isfinite(b) && isfinite(bb))
        pos.beat = b * meter + bb;
    else
        pos.beat = get_num(self, beat);
    if (isfinite(f) && f >= 0)
        pos.frame = (long long)f;
    bf_player_position(&self->player, &pos);
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
            size_t n = value->size < BF_PROMPT_BYTES - 1 ? value->size : BF_PROMPT_BYTES - 1;
            memcpy(self->prompt, LV2_ATOM_BODY_CONST(value), n);
            self->prompt[n] = '\0';
        }
    }
}

static void request(Player *self, bf_request_kind kind)
{
    if (!self->schedule)
        return;
    const double bpb = bf_player_beats_per_bar(&self->player);
    bf_request r = {.kind = kind, .bars = (uint32_t)*self->bars,
                    .beats_per_bar = (uint32_t)(bpb + 0.5), .rate = (uint32_t)self->player.rate,
                    .capture = *self->capture >= 0.5f, .bpm = (float)bf_player_bpm(&self->player),
                    .segment = self->seg};
    memcpy(r.prompt, self->prompt, BF_PROMPT_BYTES);
    /* Flag first: a host with a synchronous worker (Ardour while exporting) runs work() and
     * work_response() inside schedule_work(), and work_response() clears it. */
    if (kind == BF_REQ_CHECK)
        self->check_in_flight = 1;
    if (self->schedule->schedule_work(self->schedule->handle, sizeof r, &r) != LV2_WORKER_SUCCESS &&
        kind == BF_REQ_CHECK)
        self->check_in_flight = 0;
}

static void run(LV2_Handle instance, uint32_t n_frames)
{
    Player *self = (Player *)instance;
    if (self->frames_to_check <= n_frames && !self->check_in_flight) {
        self->frames_to_check = (uint32_t)(CHECK_S * self->player.rate);
        request(self, BF_REQ_CHECK);
    } else if (self->frames_to_check > n_frames) {
        self->frames_to_check -= n_frames;
    }

    bf_player_poll(&self->player, self->seg, (long)*self->slot, *self->bpm_port, *self->bpb_port);

    uint32_t done = 0;
    if (self->control && self->map) {
        LV2_ATOM_SEQUENCE_FOREACH (self->control, ev) {
            uint32_t t = ev->time.frames < n_frames ? (uint32_t)ev->time.frames : n_frames;
            if (t > done) {
                bf_player_render(&self->player, self->out[0], self->out[1], done, t);
                done = t;
            }
            apply_event(self, ev);
        }
    }
    bf_player_render(&self->player, self->out[0], self->out[1], done, n_frames);

    /* Control-port triggers: rising edges become requests for the worker, after this block's
     * events, so that they carry a prompt or tempo that arrived with them. */
    if (*self->generate >= 0.5f && self->last_generate < 0.5f)
        request(self, BF_REQ_GENERATE);
    if (*self->cont >= 0.5f && self->last_continue < 0.5f)
        request(self, BF_REQ_CONTINUE);
    self->last_generate = *self->generate;
    self->last_continue = *self->cont;

    /* Samples played out of a slot that changed during the block may be torn: drop them. */
    if (self->seg) {
        if (bf_player_torn(&self->player, self->seg)) {
            memset(self->out[0], 0, n_frames * sizeof(float));
            memset(self->out[1], 0, n_frames * sizeof(float));
        }
        bf_capture_state st;
        if (bf_capture_state_read(self->seg, &st) == BF_OK)
            self->ring_rate = st.sample_rate;
        if (*self->capture >= 0.5f && self->player.speed != 0.0 &&
            self->ring_rate == (uint32_t)self->player.rate)
            bf_capture_write(self->seg, self->in, 2, 1, n_frames, self->player.beat);
    }
    *self->playing = (float)bf_player_playing(&self->player);
}

/* ---- worker ------------------------------------------------------------------------ */

static LV2_Worker_Status work(LV2_Handle instance, LV2_Worker_Respond_Function respond,
                              LV2_Worker_Respond_Handle handle, uint32_t size, const void *data)
{
    Player *self = (Player *)instance;
    bf_request r;
    if (size != sizeof r)
        return LV2_WORKER_ERR_UNKNOWN;
    memcpy(&r, data, sizeof r);
    bf_segment *fresh = bf_requester_handle(&self->requester, &r);
    if (r.kind == BF_REQ_CHECK)
        respond(handle, sizeof fresh, &fresh); /* NULL: keep what we have */
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
        bf_request r = {.kind = BF_REQ_FREE, .segment = self->seg};
        bf_player_drop_voices(&self->player);
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
    Player *self = calloc(1, sizeof *self);
    if (!self)
        return NULL;
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
        MAP(time_frame, LV2_TIME__frame);
        MAP(patch_Set, LV2_PATCH__Set);
        MAP(patch_property, LV2_PATCH__property);
        MAP(patch_value, LV2_PATCH__value);
        MAP(prompt, PROMPT_URI);
#undef MAP
    }
    bf_requester_open(&self->requester, "lv2");
    bf_player_reset(&self->player, rate);
    self->seg = bf_segment_open(self->requester.shm_name);
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
    bf_player_reset(&self->player, self->player.rate);
    self->last_generate = self->last_continue = 0.0f;
    self->frames_to_check = 0;
}

static void cleanup(LV2_Handle instance)
{
    Player *self = (Player *)instance;
    bf_segment_free(self->seg);
    bf_requester_close(&self->requester);
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
