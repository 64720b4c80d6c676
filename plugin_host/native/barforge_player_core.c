/* The playback engine of every Barforge Player build; see barforge_player_core.h. */
#include "barforge_player_core.h"

#include <limits.h>
#include <math.h>
#include <string.h>

#define XFADE_S 0.005 /* crossfade length when a clip replaces another */

static double loop_beats(const bf_clip_meta *m) { return (double)m->bars * m->beats_per_bar; }

/* The loop's length in frames at the clip's rate: the bar grid's, not the clip's frame count
 * (at 97 BPM two bars are 237525.77 frames; wrapping at a whole frame would drift). */
static double loop_frames(const bf_clip_meta *m)
{
    return loop_beats(m) * 60.0 * m->sample_rate / m->bpm;
}

/* Put voice v at the clip position that matches the session beat. */
static void voice_sync(bf_voice *v, double beat)
{
    double origin = v->meta.start_beat >= 0 ? v->meta.start_beat : 0.0;
    double span = loop_beats(&v->meta), b = fmod(beat - origin, span);
    if (b < 0)
        b += span;
    double pos = b * 60.0 * v->meta.sample_rate / v->meta.bpm, near = floor(pos + 0.5);
    v->pos = fabs(pos - near) < 1e-6 ? near : pos; /* land bar lines on exact frames */
    if (v->pos >= loop_frames(&v->meta))
        v->pos = 0.0;
}

static float voice_sample(const bf_voice *v, uint32_t channel)
{
    const uint32_t ch = v->meta.channels, c = channel < ch ? channel : ch - 1, n = v->meta.frames;
    uint32_t i = (uint32_t)v->pos;
    if (i >= n) /* the last fraction of a frame of a loop longer than its clip */
        i = n - 1;
    const uint32_t j = i + 1 < n ? i + 1 : 0;
    const float a = v->audio[(size_t)i * ch + c], t = (float)(v->pos - i);
    return t == 0.0f ? a : a + (v->audio[(size_t)j * ch + c] - a) * t;
}

static void voice_advance(bf_voice *v, double step)
{
    const double len = loop_frames(&v->meta);
    v->pos += step;
    if (v->pos < 0.0 || v->pos >= len) { /* looped, either way (speed < 0) */
        v->pos = fmod(v->pos, len);
        if (v->pos < 0.0)
            v->pos += len;
        if (v->pos >= len) /* -tiny + len rounds up to len */
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

double bf_player_bpm(const bf_player *p)
{
    if (p->host_transport)
        return p->bpm;
    return p->cur.active ? p->cur.meta.bpm : p->free_bpm;
}

double bf_player_beats_per_bar(const bf_player *p)
{
    if (p->host_transport)
        return p->beats_per_bar;
    return p->cur.active ? p->cur.meta.beats_per_bar : p->free_bpb;
}

/* Tempo in force: the host's, or free-running at the playing clip's own. */
static void update_free_tempo(bf_player *p)
{
    if (!p->host_transport) {
        p->bpm = bf_player_bpm(p);
        p->beats_per_bar = bf_player_beats_per_bar(p);
        p->speed = 1.0;
    }
}

/* Start the pending clip now (a bar line, or nothing playing). A clip that starts mid-bar or
 * replaces another fades in; with the transport stopped nothing is audible, so there is
 * nothing to fade (a fade begun while stopped would only finish after the next roll began). */
static void start_pending(bf_player *p, int on_bar)
{
    const float fade = (float)(1.0 / (XFADE_S * p->rate));
    const int stopped = p->speed == 0.0;
    if (p->cur.active && !stopped) {
        p->old = p->cur;
        p->old.ramp = -fade;
    } else if (stopped) {
        p->old.active = 0;
    }
    p->cur = p->pending;
    p->pending.active = 0;
    p->cur.gain = stopped || (!p->old.active && on_bar) ? 1.0f : 0.0f;
    p->cur.ramp = p->cur.gain < 1.0f ? fade : 0.0f;
    update_free_tempo(p);
    voice_sync(&p->cur, p->beat);
}

void bf_player_reset(bf_player *p, double rate)
{
    memset(p, 0, sizeof *p);
    p->rate = rate;
    p->speed = 1.0;
    p->bpm = p->free_bpm = 120.0;
    p->beats_per_bar = p->free_bpb = 4.0;
    p->last_bar = LONG_MIN;
    p->next_frame = -1;
}

void bf_player_drop_voices(bf_player *p) { p->cur.active = p->old.active = p->pending.active = 0; }

/* Look for a clip to switch to: the newest, or the one in the slot asked for. */
static void poll_slots(bf_player *p, const bf_segment *seg, long want)
{
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
    if (seq == 0 || (seq & 1) || (p->cur.active && p->cur.slot == slot && p->cur.seq == seq) ||
        (p->pending.active && p->pending.slot == slot && p->pending.seq == seq))
        return;
    bf_voice v = {.active = 1, .slot = slot};
    v.seq = bf_slot_begin(seg, slot, &v.meta, &v.audio);
    if (v.seq && v.meta.frames && v.meta.bpm > 0 && v.meta.bars && v.meta.beats_per_bar &&
        v.meta.sample_rate)
        p->pending = v; /* (a slot being written is simply looked at again next block) */
}

void bf_player_poll(bf_player *p, const bf_segment *seg, long want_slot, double free_bpm,
                    double free_bpb)
{
    if (free_bpm > 0 && isfinite(free_bpm))
        p->free_bpm = free_bpm;
    if (free_bpb > 0 && isfinite(free_bpb))
        p->free_bpb = free_bpb;
    if (seg) {
        bf_voice *vs[3] = {&p->cur, &p->old, &p->pending};
        for (int k = 0; k < 3; ++k)
            if (vs[k]->active && !bf_slot_check(seg, vs[k]->slot, vs[k]->seq))
                vs[k]->active = 0;
        poll_slots(p, seg, want_slot);
    }
    update_free_tempo(p);
}

void bf_player_position(bf_player *p, const bf_host_position *pos)
{
    int changed = !p->host_transport, jumped = 0;
    p->host_transport = 1;
    if (isfinite(pos->bpm) && pos->bpm > 0 && pos->bpm != p->bpm) {
        p->bpm = pos->bpm;
        changed = 1;
    }
    if (isfinite(pos->beats_per_bar) && pos->beats_per_bar > 0 &&
        pos->beats_per_bar != p->beats_per_bar) {
        p->beats_per_bar = pos->beats_per_bar;
        changed = 1;
    }
    if (isfinite(pos->speed) && pos->speed != p->speed) {
        p->speed = pos->speed;
        changed = 1;
    }
    if (pos->frame >= 0) {
        jumped = p->next_frame >= 0 && pos->frame != p->next_frame;
        p->next_frame = p->speed == 1.0 ? pos->frame : -1; /* varispeed: frames are not ours */
    }
    if (isfinite(pos->beat) &&
        (changed || jumped || fabs(pos->beat - p->beat) > BF_HOST_RESOLUTION_BEATS)) {
        p->beat = pos->beat;
        p->resyncs++;
        changed = 1;
    }
    if (changed && p->cur.active)
        voice_sync(&p->cur, p->beat);
}

void bf_player_render(bf_player *p, float *l, float *r, uint32_t begin, uint32_t end)
{
    const double bpb = p->beats_per_bar > 0 ? p->beats_per_bar : 4.0;
    for (uint32_t f = begin; f < end; ++f) {
        const double inc = p->speed * p->bpm / (60.0 * p->rate);
        const long bar = (long)floor(p->beat / bpb + 1e-9);
        const int on_bar = bar != p->last_bar && p->beat - bar * bpb < fabs(inc) + 1e-9;
        p->last_bar = bar;
        if (p->pending.active && (on_bar || !p->cur.active) &&
            (p->pending.meta.start_beat < 0 || p->beat + 1e-9 >= p->pending.meta.start_beat))
            start_pending(p, on_bar);
        float a = 0.0f, b = 0.0f;
        if (p->speed != 0.0) {
            bf_voice *vs[2] = {&p->cur, &p->old};
            for (int k = 0; k < 2; ++k) {
                bf_voice *v = vs[k];
                if (!v->active)
                    continue;
                a += v->gain * voice_sample(v, 0);
                b += v->gain * voice_sample(v, 1);
                voice_advance(v, p->speed * p->bpm / v->meta.bpm * v->meta.sample_rate / p->rate);
            }
        }
        l[f] = a;
        r[f] = b;
        p->beat += inc;
    }
    if (p->next_frame >= 0)
        p->next_frame += end - begin;
}

int bf_player_torn(bf_player *p, const bf_segment *seg)
{
    int torn = 0;
    if (seg) {
        bf_voice *vs[2] = {&p->cur, &p->old};
        for (int k = 0; k < 2; ++k)
            if (vs[k]->active && !bf_slot_check(seg, vs[k]->slot, vs[k]->seq)) {
                vs[k]->active = 0;
                torn = 1;
            }
    }
    return torn;
}

long bf_player_playing(const bf_player *p) { return p->cur.active ? (long)p->cur.slot : -1; }
