/* barforge_shm: see barforge_shm.h for the contract; docs/PROTOCOL.md for the layout. */
#define _GNU_SOURCE
#include "barforge_shm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Header fields (byte offsets). */
enum {
    H_MAGIC = 0, H_VERSION = 8, H_HEADER_BYTES = 12, H_N_SLOTS = 16, H_SLOT_CAP = 20,
    H_MAX_CH = 24, H_SLOT_TABLE = 32, H_SLOT_DATA = 40, H_CAPTURE = 48, H_HEARTBEAT = 56,
    H_TOTAL = 64, H_PUBLISH_COUNT = 72, H_NEWEST = 80, H_SERVER_PID = 84
};
/* Slot table entry fields. */
enum {
    S_SEQ = 0, S_FRAMES = 8, S_RATE = 12, S_CHANNELS = 16, S_BARS = 20, S_BPM = 24,
    S_BPB = 32, S_FLAGS = 36, S_START_BEAT = 40, S_JOB = 48
};
/* Capture ring header fields. */
enum {
    C_SEQ = 0, C_WRITE_FRAMES = 8, C_CAPACITY = 16, C_CHANNELS = 20, C_RATE = 24,
    C_BEAT = 32, C_RESET_FRAMES = 40, C_DATA = 64
};

#define A64(p) ((_Atomic uint64_t *)(void *)(p))
#define A32(p) ((_Atomic uint32_t *)(void *)(p))

static uint64_t align64(uint64_t x) { return (x + BF_ALIGN - 1) / BF_ALIGN * BF_ALIGN; }
static uint32_t get32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }
static double getf64(const uint8_t *p) { double v; memcpy(&v, p, 8); return v; }
static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }
static void putf64(uint8_t *p, double v) { memcpy(p, &v, 8); }

static uint8_t *slot_entry(const bf_segment *seg, uint32_t slot)
{
    return seg->base + seg->layout.slot_table_offset + (uint64_t)slot * BF_SLOT_ENTRY_BYTES;
}
static float *slot_audio(const bf_segment *seg, uint32_t slot)
{
    return (float *)(void *)(seg->base + seg->layout.slot_data_offset +
                             (uint64_t)slot * seg->layout.slot_stride_bytes);
}
static uint8_t *capture(const bf_segment *seg) { return seg->base + seg->layout.capture_offset; }

const char *bf_strerror(int err)
{
    switch (err) {
    case BF_OK: return "ok";
    case BF_ENOENT: return "no shared-memory segment of that name (is the server running?)";
    case BF_EMAGIC: return "not a Barforge segment (magic is not BARFORGE)";
    case BF_EVERSION: return "unsupported protocol version (this library speaks version 1)";
    case BF_ESIZE: return "segment is smaller than its header says (truncated)";
    case BF_ELAYOUT: return "segment header is inconsistent (offsets or sizes)";
    case BF_ESYS: return "system call failed";
    case BF_EINVAL: return "invalid argument";
    case BF_EBUSY: return "being written; try again";
    case BF_EEMPTY: return "empty";
    case BF_EOVERRUN: return "capture ring overran the window during the copy";
    case BF_ELIVE: return "a running server owns a segment of that name (fresh heartbeat, live pid)";
    default: return "unknown error";
    }
}

int bf_layout_compute(bf_layout *out, uint32_t n_slots, uint32_t slot_capacity_frames,
                      uint32_t max_channels, uint32_t capture_capacity_frames)
{
    if (!n_slots || !slot_capacity_frames || !max_channels || !capture_capacity_frames ||
        capture_capacity_frames <= BF_CAPTURE_MAX_BLOCK || max_channels > 64 ||
        slot_capacity_frames > UINT32_MAX - BF_SLOT_FRAMES_ALIGN)
        return BF_EINVAL;
    uint32_t cap = (slot_capacity_frames + BF_SLOT_FRAMES_ALIGN - 1) / BF_SLOT_FRAMES_ALIGN *
                   BF_SLOT_FRAMES_ALIGN;
    out->n_slots = n_slots;
    out->slot_capacity_frames = cap;
    out->max_channels = max_channels;
    out->capture_capacity_frames = capture_capacity_frames;
    out->slot_table_offset = BF_HEADER_BYTES;
    out->slot_data_offset = align64(BF_HEADER_BYTES + (uint64_t)n_slots * BF_SLOT_ENTRY_BYTES);
    out->slot_stride_bytes = (uint64_t)cap * max_channels * 4;
    out->capture_offset = align64(out->slot_data_offset + n_slots * out->slot_stride_bytes);
    out->total_bytes = align64(out->capture_offset + BF_CAPTURE_HEADER_BYTES +
                               (uint64_t)capture_capacity_frames * max_channels * 4);
    return BF_OK;
}

static int shm_path(char *path, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 30 || strchr(name, '/'))
        return BF_EINVAL;
    path[0] = '/';
    memcpy(path + 1, name, n + 1);
    return BF_OK;
}

static int map_fd(bf_segment *seg, int fd, size_t size)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return BF_ESYS;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return BF_ESYS;
    seg->base = p;
    seg->dev = (uint64_t)st.st_dev;
    seg->ino = (uint64_t)st.st_ino;
    return BF_OK;
}

/* Whether the object at `path` is a Barforge segment whose server is alive: its heartbeat is
 * fresh and its pid (when it recorded one) runs. Anything unreadable counts as stale. */
static int is_live(const char *path)
{
    struct stat st;
    int fd = shm_open(path, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    void *p = fstat(fd, &st) == 0 && (uint64_t)st.st_size >= BF_HEADER_BYTES
                  ? mmap(NULL, BF_HEADER_BYTES, PROT_READ, MAP_SHARED, fd, 0)
                  : MAP_FAILED;
    close(fd);
    if (p == MAP_FAILED)
        return 0;
    const uint8_t *h = p;
    uint64_t beat = atomic_load_explicit(A64((void *)(h + H_HEARTBEAT)), memory_order_acquire);
    uint32_t pid = get32(h + H_SERVER_PID);
    int ours = memcmp(h + H_MAGIC, BF_MAGIC, 8) == 0;
    munmap(p, BF_HEADER_BYTES);
    uint64_t now = bf_now_ns();
    int fresh = ours && (beat >= now || now - beat < BF_HEARTBEAT_STALE_NS);
    int running = pid == 0 || pid > (uint32_t)INT32_MAX || kill((pid_t)pid, 0) == 0 || errno == EPERM;
    return fresh && running;
}

int bf_create(bf_segment *seg, const char *name, uint32_t n_slots,
              uint32_t slot_capacity_frames, uint32_t max_channels,
              uint32_t capture_capacity_frames)
{
    char path[40];
    bf_layout L;
    memset(seg, 0, sizeof *seg);
    if (shm_path(path, name) != BF_OK ||
        bf_layout_compute(&L, n_slots, slot_capacity_frames, max_channels,
                          capture_capacity_frames) != BF_OK)
        return BF_EINVAL;
    if (is_live(path))
        return BF_ELIVE;
    shm_unlink(path); /* a stale segment of a server that did not exit cleanly */
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0)
        return errno == EEXIST ? BF_ELIVE : BF_ESYS; /* another server created it just now */
    if (ftruncate(fd, (off_t)L.total_bytes) != 0 || map_fd(seg, fd, L.total_bytes) != BF_OK) {
        int e = errno;
        close(fd);
        shm_unlink(path);
        errno = e;
        return BF_ESYS;
    }
    close(fd);
    seg->layout = L;
    seg->mapped_bytes = L.total_bytes;
    seg->owner = 1;
    uint8_t *h = seg->base; /* ftruncate zero-filled everything */
    memcpy(h + H_MAGIC, BF_MAGIC, 8);
    put32(h + H_VERSION, BF_VERSION);
    put32(h + H_HEADER_BYTES, BF_HEADER_BYTES);
    put32(h + H_N_SLOTS, n_slots);
    put32(h + H_SLOT_CAP, L.slot_capacity_frames);
    put32(h + H_MAX_CH, max_channels);
    put64(h + H_SLOT_TABLE, L.slot_table_offset);
    put64(h + H_SLOT_DATA, L.slot_data_offset);
    put64(h + H_CAPTURE, L.capture_offset);
    put64(h + H_TOTAL, L.total_bytes);
    put32(capture(seg) + C_CAPACITY, capture_capacity_frames);
    put32(capture(seg) + C_CHANNELS, max_channels);
    put32(h + H_SERVER_PID, (uint32_t)getpid());
    bf_heartbeat_write(seg, bf_now_ns());
    return BF_OK;
}

/* off + len <= end, computed without wrap-around (all three may come from a hostile header). */
static int span_ok(uint64_t off, uint64_t len, uint64_t end) { return off <= end && len <= end - off; }

/* Check the header against the file size before trusting any offset in it. */
static int validate(const uint8_t *h, uint64_t file_size, bf_layout *L)
{
    if (memcmp(h + H_MAGIC, BF_MAGIC, 8) != 0)
        return BF_EMAGIC;
    if (get32(h + H_VERSION) != BF_VERSION)
        return BF_EVERSION;
    if (get32(h + H_HEADER_BYTES) != BF_HEADER_BYTES)
        return BF_ELAYOUT;
    L->n_slots = get32(h + H_N_SLOTS);
    L->slot_capacity_frames = get32(h + H_SLOT_CAP);
    L->max_channels = get32(h + H_MAX_CH);
    L->slot_table_offset = get64(h + H_SLOT_TABLE);
    L->slot_data_offset = get64(h + H_SLOT_DATA);
    L->capture_offset = get64(h + H_CAPTURE);
    L->total_bytes = get64(h + H_TOTAL);
    L->slot_stride_bytes = (uint64_t)L->slot_capacity_frames * L->max_channels * 4;
    if (L->total_bytes > file_size)
        return BF_ESIZE;
    /* n_slots <= 2^20 and max_channels <= 64 keep every product below 2^61; each sum is
     * checked with span_ok, which never adds two values from the header. */
    if (!L->n_slots || !L->slot_capacity_frames || !L->max_channels ||
        L->n_slots > (1u << 20) || L->max_channels > 64 ||
        (L->slot_table_offset | L->slot_data_offset | L->capture_offset) % BF_ALIGN ||
        L->slot_table_offset < BF_HEADER_BYTES ||
        !span_ok(L->slot_table_offset, (uint64_t)L->n_slots * BF_SLOT_ENTRY_BYTES, L->slot_data_offset) ||
        !span_ok(L->slot_data_offset, L->n_slots * L->slot_stride_bytes, L->capture_offset) ||
        !span_ok(L->capture_offset, BF_CAPTURE_HEADER_BYTES, L->total_bytes))
        return BF_ELAYOUT;
    const uint8_t *c = h + L->capture_offset;
    L->capture_capacity_frames = get32(c + C_CAPACITY);
    /* the ring has max_channels channels (PROTOCOL.md); later calls rely on it */
    if (L->capture_capacity_frames <= BF_CAPTURE_MAX_BLOCK || get32(c + C_CHANNELS) != L->max_channels ||
        !span_ok(L->capture_offset + BF_CAPTURE_HEADER_BYTES,
                 (uint64_t)L->capture_capacity_frames * L->max_channels * 4, L->total_bytes))
        return BF_ELAYOUT;
    return BF_OK;
}

int bf_attach(bf_segment *seg, const char *name)
{
    char path[40];
    struct stat st;
    memset(seg, 0, sizeof *seg);
    if (shm_path(path, name) != BF_OK)
        return BF_EINVAL;
    int fd = shm_open(path, O_RDWR, 0);
    if (fd < 0)
        return errno == ENOENT ? BF_ENOENT : BF_ESYS;
    if (fstat(fd, &st) != 0) {
        close(fd);
        return BF_ESYS;
    }
    if ((uint64_t)st.st_size < BF_HEADER_BYTES) {
        close(fd);
        return BF_ESIZE; /* cannot even hold a header */
    }
    int rc = map_fd(seg, fd, (size_t)st.st_size);
    close(fd);
    if (rc != BF_OK)
        return rc;
    rc = validate(seg->base, (uint64_t)st.st_size, &seg->layout);
    if (rc != BF_OK) {
        munmap(seg->base, (size_t)st.st_size);
        seg->base = NULL;
        return rc;
    }
    seg->mapped_bytes = (uint64_t)st.st_size;
    return BF_OK;
}

void bf_detach(bf_segment *seg)
{
    if (seg->base)
        munmap(seg->base, seg->mapped_bytes);
    seg->base = NULL;
}

int bf_unlink(const char *name)
{
    char path[40];
    if (shm_path(path, name) != BF_OK)
        return BF_EINVAL;
    return shm_unlink(path) == 0 ? BF_OK : (errno == ENOENT ? BF_ENOENT : BF_ESYS);
}

int bf_same_segment(const bf_segment *seg, const char *name)
{
    char path[40];
    struct stat st;
    if (!seg->base || shm_path(path, name) != BF_OK)
        return 0;
    int fd = shm_open(path, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    int same = fstat(fd, &st) == 0 && (uint64_t)st.st_dev == seg->dev &&
               (uint64_t)st.st_ino == seg->ino;
    close(fd);
    return same;
}

/* ---- slots ------------------------------------------------------------------------- */

int bf_slot_write(bf_segment *seg, uint32_t slot, const bf_clip_meta *meta, const float *audio)
{
    const bf_layout *L = &seg->layout;
    if (slot >= L->n_slots || !meta->channels || meta->channels > L->max_channels ||
        meta->frames > L->slot_capacity_frames)
        return BF_EINVAL;
    uint8_t *e = slot_entry(seg, slot);
    uint64_t s = atomic_load_explicit(A64(e + S_SEQ), memory_order_relaxed);
    atomic_store_explicit(A64(e + S_SEQ), s + 1, memory_order_relaxed); /* odd: writing */
    atomic_thread_fence(memory_order_release); /* the data stores below stay after it */
    put32(e + S_FRAMES, meta->frames);
    put32(e + S_RATE, meta->sample_rate);
    put32(e + S_CHANNELS, meta->channels);
    put32(e + S_BARS, meta->bars);
    putf64(e + S_BPM, meta->bpm);
    put32(e + S_BPB, meta->beats_per_bar);
    put32(e + S_FLAGS, meta->flags);
    putf64(e + S_START_BEAT, meta->start_beat);
    memset(e + S_JOB, 0, BF_JOB_ID_BYTES);
    memcpy(e + S_JOB, meta->job_id, strnlen(meta->job_id, BF_JOB_ID_BYTES));
    memcpy(slot_audio(seg, slot), audio, (size_t)meta->frames * meta->channels * 4);
    /* release: a reader that sees s + 2 sees everything written above */
    atomic_store_explicit(A64(e + S_SEQ), s + 2, memory_order_release);
    return BF_OK;
}

int bf_publish(bf_segment *seg, const bf_clip_meta *meta, const float *audio)
{
    /* Slots are reused in turn, so the next one is always the least recently published. */
    uint64_t count = atomic_load_explicit(A64(seg->base + H_PUBLISH_COUNT), memory_order_relaxed);
    uint32_t slot = count ? (bf_newest_slot(seg) + 1) % seg->layout.n_slots : 0;
    int rc = bf_slot_write(seg, slot, meta, audio);
    if (rc != BF_OK)
        return rc;
    atomic_store_explicit(A32(seg->base + H_NEWEST), slot, memory_order_release);
    atomic_fetch_add_explicit(A64(seg->base + H_PUBLISH_COUNT), 1, memory_order_release);
    return (int)slot;
}

uint64_t bf_publish_count(const bf_segment *seg)
{
    return atomic_load_explicit(A64(seg->base + H_PUBLISH_COUNT), memory_order_acquire);
}

uint32_t bf_newest_slot(const bf_segment *seg)
{
    return atomic_load_explicit(A32(seg->base + H_NEWEST), memory_order_acquire);
}

uint64_t bf_slot_seq(const bf_segment *seg, uint32_t slot)
{
    if (slot >= seg->layout.n_slots)
        return 1;
    return atomic_load_explicit(A64(slot_entry(seg, slot) + S_SEQ), memory_order_acquire);
}

static void read_meta(const uint8_t *e, bf_clip_meta *m)
{
    m->frames = get32(e + S_FRAMES);
    m->sample_rate = get32(e + S_RATE);
    m->channels = get32(e + S_CHANNELS);
    m->bars = get32(e + S_BARS);
    m->bpm = getf64(e + S_BPM);
    m->beats_per_bar = get32(e + S_BPB);
    m->flags = get32(e + S_FLAGS);
    m->start_beat = getf64(e + S_START_BEAT);
    memcpy(m->job_id, e + S_JOB, BF_JOB_ID_BYTES);
    m->job_id[BF_JOB_ID_BYTES] = '\0';
}

static int meta_fits(const bf_segment *seg, const bf_clip_meta *m)
{
    return m->channels && m->channels <= seg->layout.max_channels &&
           m->frames <= seg->layout.slot_capacity_frames;
}

int bf_slot_read(const bf_segment *seg, uint32_t slot, bf_clip_meta *meta, float *audio,
                 size_t capacity_samples)
{
    if (slot >= seg->layout.n_slots)
        return BF_EINVAL;
    const uint8_t *e = slot_entry(seg, slot);
    uint64_t s1 = atomic_load_explicit(A64(e + S_SEQ), memory_order_acquire);
    if (s1 & 1)
        return BF_EBUSY;
    if (s1 == 0)
        return BF_EEMPTY;
    read_meta(e, meta);
    if (!meta_fits(seg, meta))
        return BF_EBUSY; /* a torn header: the seq check below would fail too */
    size_t n = (size_t)meta->frames * meta->channels;
    if (n > capacity_samples)
        return BF_EINVAL;
    memcpy(audio, slot_audio(seg, slot), n * 4);
    atomic_thread_fence(memory_order_acquire); /* the copies above stay before the re-check */
    uint64_t s2 = atomic_load_explicit(A64(e + S_SEQ), memory_order_relaxed);
    return s1 == s2 ? BF_OK : BF_EBUSY;
}

uint64_t bf_slot_begin(const bf_segment *seg, uint32_t slot, bf_clip_meta *meta,
                       const float **audio)
{
    if (slot >= seg->layout.n_slots)
        return 0;
    const uint8_t *e = slot_entry(seg, slot);
    uint64_t s1 = atomic_load_explicit(A64(e + S_SEQ), memory_order_acquire);
    if (s1 == 0 || (s1 & 1))
        return 0;
    bf_clip_meta m;
    read_meta(e, &m);
    atomic_thread_fence(memory_order_acquire); /* the metadata copy stays before the re-check */
    if (atomic_load_explicit(A64(e + S_SEQ), memory_order_relaxed) != s1 || !meta_fits(seg, &m))
        return 0;
    *meta = m;
    *audio = slot_audio(seg, slot);
    return s1;
}

int bf_slot_check(const bf_segment *seg, uint32_t slot, uint64_t seq)
{
    /* acquire fence: the samples the player read stay before this load */
    atomic_thread_fence(memory_order_acquire);
    return atomic_load_explicit(A64(slot_entry(seg, slot) + S_SEQ), memory_order_relaxed) == seq;
}

/* ---- capture ring ------------------------------------------------------------------ */

void bf_capture_reset(bf_segment *seg, uint32_t sample_rate)
{
    /* The writer's fields are never stored to here (one writer per field): the reset is a
     * mark at the writer's current position, which readers subtract. */
    uint8_t *c = capture(seg);
    uint64_t wf = atomic_load_explicit(A64(c + C_WRITE_FRAMES), memory_order_acquire);
    atomic_store_explicit(A32(c + C_RATE), sample_rate, memory_order_relaxed);
    /* release: a reader that sees the new mark sees the new rate */
    atomic_store_explicit(A64(c + C_RESET_FRAMES), wf, memory_order_release);
}

int bf_capture_write(bf_segment *seg, const float *const *planes, uint32_t n_planes,
                     size_t stride, uint32_t frames, double beat_at_end)
{
    uint8_t *c = capture(seg);
    /* the validated sizes, not the header's: a rewritten header cannot move the ring */
    const uint32_t cap = seg->layout.capture_capacity_frames, ch = seg->layout.max_channels;
    float *ring = (float *)(void *)(c + C_DATA);
    if (!n_planes || !stride)
        return BF_EINVAL;
    /* One writer: our own earlier stores, read back without synchronisation. */
    uint64_t wf = get64(c + C_WRITE_FRAMES);
    double beat0 = getf64(c + C_BEAT);
    uint32_t done = 0;
    while (done < frames) {
        uint32_t n = frames - done < BF_CAPTURE_MAX_BLOCK ? frames - done : BF_CAPTURE_MAX_BLOCK;
        for (uint32_t f = 0; f < n; ++f) { /* audio first */
            float *dst = ring + ((wf + f) % cap) * ch;
            size_t src = (size_t)(done + f) * stride;
            for (uint32_t k = 0; k < ch; ++k)
                dst[k] = planes[k % n_planes][src];
        }
        done += n;
        wf += n;
        double beat = done == frames ? beat_at_end
                                     : beat0 + (beat_at_end - beat0) * done / (double)frames;
        uint64_t s = atomic_load_explicit(A64(c + C_SEQ), memory_order_relaxed);
        atomic_store_explicit(A64(c + C_SEQ), s + 1, memory_order_relaxed);
        atomic_thread_fence(memory_order_release); /* audio and the fields before, seq after */
        atomic_store_explicit(A64(c + C_WRITE_FRAMES), wf, memory_order_relaxed);
        putf64(c + C_BEAT, beat);
        atomic_store_explicit(A64(c + C_SEQ), s + 2, memory_order_release);
    }
    return BF_OK;
}

/* The header under its seqlock; *raw_frames gets the writer's write_frames, out->write_frames
 * the frames since the last reset. */
static int capture_snapshot(const bf_segment *seg, bf_capture_state *out, uint64_t *raw_frames)
{
    const uint8_t *c = capture(seg);
    uint64_t s1 = atomic_load_explicit(A64(c + C_SEQ), memory_order_acquire);
    if (s1 & 1)
        return BF_EBUSY;
    uint64_t wf = get64(c + C_WRITE_FRAMES);
    double beat = getf64(c + C_BEAT);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(A64(c + C_SEQ), memory_order_relaxed) != s1)
        return BF_EBUSY;
    /* acquire pairs with bf_capture_reset's release: the rate read next is the mark's */
    uint64_t mark = atomic_load_explicit(A64(c + C_RESET_FRAMES), memory_order_acquire);
    /* A writer that counts from 0 again after /barforge/capture (version 1's server zeroed
     * write_frames for it) went below the mark: all it wrote since is new. */
    if (wf < mark)
        mark = 0;
    *raw_frames = wf;
    out->write_frames = wf - mark;
    out->capacity_frames = seg->layout.capture_capacity_frames;
    out->channels = seg->layout.max_channels;
    out->sample_rate = atomic_load_explicit(A32(c + C_RATE), memory_order_relaxed);
    out->beat_at_write = beat;
    return BF_OK;
}

int bf_capture_state_read(const bf_segment *seg, bf_capture_state *out)
{
    uint64_t raw;
    return capture_snapshot(seg, out, &raw);
}

int bf_capture_read(const bf_segment *seg, float *out, uint32_t frames, bf_capture_state *state)
{
    uint64_t wf;
    int rc = capture_snapshot(seg, state, &wf);
    if (rc != BF_OK)
        return rc;
    const uint64_t cap = state->capacity_frames, ch = state->channels;
    if (state->write_frames == 0)
        return BF_EEMPTY;
    uint64_t n = frames;
    if (n > state->write_frames)
        n = state->write_frames;
    if (n > cap - BF_CAPTURE_MAX_BLOCK)
        n = cap - BF_CAPTURE_MAX_BLOCK;
    const float *ring = (const float *)(const void *)(capture(seg) + C_DATA);
    uint64_t first = wf - n, head = first % cap;
    uint64_t part = n < cap - head ? n : cap - head; /* up to the end of the ring, then wrap */
    memcpy(out, ring + head * ch, part * ch * 4);
    memcpy(out + part * ch, ring, (n - part) * ch * 4);
    atomic_thread_fence(memory_order_acquire); /* the copies stay before the re-check */
    uint64_t wf2 = atomic_load_explicit(A64(capture(seg) + C_WRITE_FRAMES), memory_order_relaxed);
    /* The writer may be storing up to BF_CAPTURE_MAX_BLOCK frames past wf2 right now. */
    if (wf2 < wf || wf2 + BF_CAPTURE_MAX_BLOCK > first + cap)
        return BF_EOVERRUN;
    return (int)n;
}

/* ---- heartbeat --------------------------------------------------------------------- */

void bf_heartbeat_write(bf_segment *seg, uint64_t ns)
{
    atomic_store_explicit(A64(seg->base + H_HEARTBEAT), ns, memory_order_release);
}

uint64_t bf_heartbeat_read(const bf_segment *seg)
{
    return atomic_load_explicit(A64(seg->base + H_HEARTBEAT), memory_order_acquire);
}

uint64_t bf_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint32_t bf_server_pid(const bf_segment *seg)
{
    return get32(seg->base + H_SERVER_PID);
}
