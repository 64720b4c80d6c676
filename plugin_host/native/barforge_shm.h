/*
 * barforge_shm: the shared-memory segment of the Barforge bridge protocol, version 1
 * (docs/PROTOCOL.md). The memory layout is written down here, once, for both sides:
 * the server (creates the segment, publishes clips, reads the capture ring) and any
 * host (attaches, plays clips, writes the capture ring).
 *
 * The contract:
 * - One writer per slot table (the server) and any number of readers. A slot is guarded by a
 *   seqlock: readers never block the writer and never spin; a read that overlaps a write fails
 *   with BF_EBUSY and the caller looks again later (next audio block).
 * - One capture writer (the host that sent /barforge/capture) and one reader (the server).
 *   The writer stores audio first, then advances write_frames and beat_at_write under the
 *   ring's seqlock; nobody else ever stores to them. The reader copies the window it wants
 *   and checks afterwards that the writer did not come round over it. A reset
 *   (/barforge/capture) is the server's only store to the ring: it records the writer's
 *   write_frames in reset_frames and sets sample_rate; frames up to reset_frames are gone.
 * - A segment is live while its heartbeat is fresh (BF_HEARTBEAT_STALE_NS) and its
 *   server_pid runs; bf_create never removes or replaces a live segment.
 * - Every offset and size read from a segment is checked against the mapped size (without
 *   integer wrap-around) at bf_attach; later calls use the validated layout, never the
 *   header again, so a peer that rewrites the header cannot make a call leave the mapping.
 * - The segment holds offsets, never pointers; every offset is a multiple of 64.
 * - Real-time safe (no allocation, lock or system call): every bf_slot_*, bf_capture_*,
 *   bf_heartbeat_*, bf_publish*, bf_newest_slot, bf_publish_count and bf_server_pid call.
 *   NOT real-time safe: bf_create, bf_attach, bf_detach, bf_unlink, bf_same_segment,
 *   bf_now_ns (a vDSO clock read: cheap, but keep it out of audio threads anyway).
 * - All integers little-endian (the library supports little-endian machines only); all audio
 *   float32, interleaved by channel.
 */
#ifndef BARFORGE_SHM_H
#define BARFORGE_SHM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BF_MAGIC "BARFORGE"
#define BF_VERSION 1u
#define BF_HEADER_BYTES 256u
#define BF_SLOT_ENTRY_BYTES 128u
#define BF_CAPTURE_HEADER_BYTES 64u
#define BF_ALIGN 64u
#define BF_JOB_ID_BYTES 64u
/* slot_capacity_frames is rounded up to a multiple of this, so every slot's audio starts on a
 * 64-byte boundary whatever max_channels is. */
#define BF_SLOT_FRAMES_ALIGN 16u
/* The most frames one capture commit carries; a capture reader leaves this many frames of
 * the ring alone ahead of the write head (the block the writer may be storing right now). */
#define BF_CAPTURE_MAX_BLOCK 8192u
#define BF_FLAG_LOOP_SEAM 1u
/* A heartbeat older than this (CLOCK_MONOTONIC ns) means the server is gone or hung. */
#define BF_HEARTBEAT_STALE_NS 3000000000u

/* Error codes (negative). Calls returning int give BF_OK (0) or one of these, except:
 * bf_publish (the slot index, >= 0, on success), bf_capture_read (the number of frames
 * copied, >= 0), bf_slot_check and bf_same_segment (1 or 0, never an error). bf_detach,
 * bf_capture_reset and bf_heartbeat_write return nothing; bf_slot_begin returns a seq (0:
 * nothing to play); the other uint32_t / uint64_t calls return a value, never an error. */
enum {
    BF_OK = 0,
    BF_ENOENT = -1,   /* no segment of that name */
    BF_EMAGIC = -2,   /* it does not start with "BARFORGE" */
    BF_EVERSION = -3, /* another protocol version */
    BF_ESIZE = -4,    /* the segment is smaller than its header says */
    BF_ELAYOUT = -5,  /* header fields inconsistent with each other */
    BF_ESYS = -6,     /* a system call failed; errno says why */
    BF_EINVAL = -7,   /* a caller mistake: bad name, slot index, size */
    BF_EBUSY = -8,    /* a seqlock reader overlapped a write: try again next block */
    BF_EEMPTY = -9,   /* nothing there yet (no clip in the slot, nothing captured) */
    BF_EOVERRUN = -10, /* the capture writer came round over the window while it was copied */
    BF_ELIVE = -11     /* bf_create: a live server owns a segment of that name */
};

/* Byte offsets and sizes of a segment, from n_slots, capacities and channels. */
typedef struct {
    uint32_t n_slots;
    uint32_t slot_capacity_frames;
    uint32_t max_channels;
    uint32_t capture_capacity_frames;
    uint64_t slot_table_offset;
    uint64_t slot_data_offset;
    uint64_t slot_stride_bytes;
    uint64_t capture_offset;
    uint64_t total_bytes;
} bf_layout;

/* A mapped segment (process-local; lives in the caller's memory). */
typedef struct {
    uint8_t *base;
    bf_layout layout;
    uint64_t mapped_bytes;
    uint64_t dev, ino; /* identity of the shared-memory object, to notice a replaced one */
    int owner;         /* created by this process (bf_create) */
} bf_segment;

/* A slot's metadata, as in the slot table. */
typedef struct {
    uint32_t frames;
    uint32_t sample_rate;
    uint32_t channels;
    uint32_t bars;
    double bpm;
    uint32_t beats_per_bar;
    uint32_t flags;
    double start_beat;
    char job_id[BF_JOB_ID_BYTES + 1]; /* NUL-terminated copy */
} bf_clip_meta;

/* Snapshot of the capture ring's header. */
typedef struct {
    uint64_t write_frames;
    uint32_t capacity_frames;
    uint32_t channels;
    uint32_t sample_rate;
    double beat_at_write;
} bf_capture_state;

const char *bf_strerror(int err);

/* Compute the layout for the given sizes (slot_capacity_frames rounded up). */
int bf_layout_compute(bf_layout *out, uint32_t n_slots, uint32_t slot_capacity_frames,
                      uint32_t max_channels, uint32_t capture_capacity_frames);

/* Server: create the segment `name` (no leading '/', at most 30 characters), mode 0600,
 * replacing a stale one; BF_ELIVE (nothing touched) when a live server owns the name.
 * Records this process's pid in the header. Not real-time safe. */
int bf_create(bf_segment *seg, const char *name, uint32_t n_slots,
              uint32_t slot_capacity_frames, uint32_t max_channels,
              uint32_t capture_capacity_frames);
/* Host: map an existing segment read-write and validate its header. Not real-time safe. */
int bf_attach(bf_segment *seg, const char *name);
/* Unmap. Not real-time safe. */
void bf_detach(bf_segment *seg);
/* Remove the name (the memory lives until the last unmap). Not real-time safe. */
int bf_unlink(const char *name);
/* 1 when `name` still names the object mapped by seg, 0 when it was removed or replaced.
 * Not real-time safe. */
int bf_same_segment(const bf_segment *seg, const char *name);

/* Server: write a clip into slot `slot` under its seqlock. audio: meta->frames *
 * meta->channels samples. */
int bf_slot_write(bf_segment *seg, uint32_t slot, const bf_clip_meta *meta, const float *audio);
/* Server: write the clip into the least recently published slot and publish it
 * (newest_slot, then publish_count, with release). Returns the slot index or an error. */
int bf_publish(bf_segment *seg, const bf_clip_meta *meta, const float *audio);
uint64_t bf_publish_count(const bf_segment *seg);
uint32_t bf_newest_slot(const bf_segment *seg);

/* Copying read: metadata and up to capacity_samples samples of audio into the caller's
 * buffers. BF_EBUSY when the slot was being written or changed during the copy, BF_EEMPTY
 * when it never held a clip, BF_EINVAL when audio is too small. */
int bf_slot_read(const bf_segment *seg, uint32_t slot, bf_clip_meta *meta, float *audio,
                 size_t capacity_samples);
/* Zero-copy read for a player: returns the slot's (even) seq and fills meta and *audio (a
 * pointer into the segment), or 0 with nothing filled when the slot is being written, empty
 * or inconsistent. Play out of *audio, then call bf_slot_check with that seq after each
 * block: 0 means the clip is gone and the samples just played may be torn. */
uint64_t bf_slot_begin(const bf_segment *seg, uint32_t slot, bf_clip_meta *meta,
                       const float **audio);
int bf_slot_check(const bf_segment *seg, uint32_t slot, uint64_t seq);
/* The slot's seq (acquire), for a player that wants to notice a change cheaply. */
uint64_t bf_slot_seq(const bf_segment *seg, uint32_t slot);

/* Server: reset the capture ring and set its sample rate: reset_frames = the writer's
 * write_frames, so readers see nothing captured until the writer's next commit. Stores only
 * to reset_frames and sample_rate (the writer's fields stay the writer's). */
void bf_capture_reset(bf_segment *seg, uint32_t sample_rate);
/* Host: append `frames` frames. Channel c of frame f is planes[c % n_planes][f * stride]
 * (interleaved: planes[c] = buf + c, stride = channels; planar: stride = 1). A mono source
 * fills every ring channel. beat_at_end: the session beat just after the last frame.
 * Commits at most BF_CAPTURE_MAX_BLOCK frames at a time; the beats of intermediate commits
 * are interpolated from the ring's previous beat_at_write. */
int bf_capture_write(bf_segment *seg, const float *const *planes, uint32_t n_planes,
                     size_t stride, uint32_t frames, double beat_at_end);
/* The ring's header under its seqlock; BF_EBUSY when it overlapped a commit. write_frames
 * counts the frames written since the last reset (the header's write_frames minus
 * reset_frames); capacity_frames and channels are the validated layout's. */
int bf_capture_state_read(const bf_segment *seg, bf_capture_state *out);
/* Server: copy the last min(frames, written since reset, capacity - BF_CAPTURE_MAX_BLOCK) frames
 * (interleaved, ring channels) into out; *state gets the header they end at. Returns the
 * number of frames copied, BF_EEMPTY when nothing was written, BF_EBUSY or BF_EOVERRUN when
 * a commit overlapped the copy (try again). */
int bf_capture_read(const bf_segment *seg, float *out, uint32_t frames, bf_capture_state *state);

/* Heartbeat: CLOCK_MONOTONIC nanoseconds written by the server. */
void bf_heartbeat_write(bf_segment *seg, uint64_t ns);
uint64_t bf_heartbeat_read(const bf_segment *seg);
uint64_t bf_now_ns(void);
/* The pid of the server that created the segment (0 if it did not say). */
uint32_t bf_server_pid(const bf_segment *seg);

#ifdef __cplusplus
}
#endif

#endif /* BARFORGE_SHM_H */
