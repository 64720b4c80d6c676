/*
 * barforge_player_core: the playback engine every Barforge Player build shares (the hand-written
 * LV2 plugin and the DPF LV2/VST3/CLAP plugin): clips played straight out of their slots in the
 * shared-memory segment, on the bar grid of the host's transport.
 *
 * Transport lock: the engine keeps its own session beat and advances it by exactly
 * bpm / (60 * rate) per frame. A host position re-syncs it only when it means something new:
 * the first position, a tempo, meter or speed change, a frame that does not follow the last
 * block, or a beat more than the host's resolution away from the engine's. Hosts round their
 * positions (Ardour sends whole 1/1920-beat ticks, 12.5 samples at 120 BPM); re-syncing on every
 * rounded position shifts the clip by a few samples every block.
 *
 * Every function here is real-time safe (no allocation, lock, log or system call).
 */
#ifndef BARFORGE_PLAYER_CORE_H
#define BARFORGE_PLAYER_CORE_H

#include "barforge_shm.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The coarsest position rounding we know of in a host: Ardour's tick. A position closer than
 * this to the engine's own beat is taken as the same position, rounded. */
#define BF_HOST_RESOLUTION_BEATS (1.0 / 1920.0)

/* A clip being played straight out of its slot. */
typedef struct {
    int active;
    uint32_t slot;
    uint64_t seq;
    bf_clip_meta meta;
    const float *audio;
    double pos;       /* frame position in the clip */
    float gain, ramp; /* ramp: gain change per frame while fading */
} bf_voice;

typedef struct {
    double rate;
    int host_transport;                       /* a host position has arrived */
    double beat, bpm, beats_per_bar, speed;   /* the session beat of the next frame */
    long last_bar;
    long long next_frame;                     /* host frame expected next; -1: unknown */
    double free_bpm, free_bpb;                /* tempo with no host and nothing playing */
    bf_voice cur, old, pending;
    unsigned resyncs;                         /* how often a host position moved the beat */
} bf_player;

/* A host position; a field the host did not send is NAN (frame: -1). beat: session beats
 * from the start (bar * beats_per_bar + beat in bar, bars counted from 0). */
typedef struct {
    double beat, bpm, beats_per_bar, speed;
    long long frame;
} bf_host_position;

void bf_player_reset(bf_player *p, double rate);
/* Forget every voice (the segment they point into is going away). */
void bf_player_drop_voices(bf_player *p);
/* Start of a block: drop clips that left their slots, look for one to switch to (want_slot,
 * or the newest when < 0) and, with no host transport, free-run at the playing clip's tempo
 * (or free_bpm / free_bpb when nothing plays). seg may be NULL. */
void bf_player_poll(bf_player *p, const bf_segment *seg, long want_slot, double free_bpm,
                    double free_bpb);
/* A host position at the frame rendering has reached. */
void bf_player_position(bf_player *p, const bf_host_position *pos);
/* Render frames [begin, end) of the block into l and r, advancing the beat. */
void bf_player_render(bf_player *p, float *l, float *r, uint32_t begin, uint32_t end);
/* End of a block: 1 when a playing clip changed while it was read (its samples may be torn and
 * the caller silences the block); such voices are dropped. */
int bf_player_torn(bf_player *p, const bf_segment *seg);
/* The slot playing, or -1. */
long bf_player_playing(const bf_player *p);
/* The tempo and meter a request should carry: the host's, or the playing clip's. */
double bf_player_bpm(const bf_player *p);
double bf_player_beats_per_bar(const bf_player *p);

#ifdef __cplusplus
}
#endif

#endif /* BARFORGE_PLAYER_CORE_H */
