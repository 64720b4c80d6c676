/*
 * barforge_requests: what a Barforge Player does off the audio thread, for every build (the
 * LV2 worker, the DPF plugin's request thread): OSC requests to the server over UDP, and
 * (re-)attaching to the shared-memory segment when there is none or a new server replaced it
 * (its heartbeat says nothing about that: a server restarted within seconds leaves a fresh one).
 *
 * The audio thread fills a bf_request (plain data, no pointers it owns but `segment`) and hands
 * it over through a lock-free queue; nothing here is real-time safe.
 * Configuration: BARFORGE_SHM_NAME (default "barforge"), BARFORGE_OSC_PORT (default 9000).
 */
#ifndef BARFORGE_REQUESTS_H
#define BARFORGE_REQUESTS_H

#include "barforge_server_status.h"
#include "barforge_shm.h"

#include <netinet/in.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BF_PROMPT_BYTES 512

typedef enum { BF_REQ_CHECK, BF_REQ_GENERATE, BF_REQ_CONTINUE, BF_REQ_FREE } bf_request_kind;

typedef struct {
    bf_request_kind kind;
    uint32_t bars, beats_per_bar, rate, capture;
    float bpm;
    bf_segment *segment; /* CHECK: the one in use (may be NULL); FREE: the one to unmap */
    char prompt[BF_PROMPT_BYTES];
} bf_request;

typedef struct {
    int sock;
    struct sockaddr_in server;
    char shm_name[32];
    char job_prefix[16];
    unsigned instance, job_counter;  /* job ids: <prefix>-<pid>-<instance>-<n>, unique in the host */
    const bf_segment *capture_asked; /* the segment /barforge/capture was sent for */
    bf_server_status status;         /* from the replies, and whether there is a segment */
} bf_requester;

/* Open the UDP socket and read the configuration; job_prefix names the build ("lv2", "dpf"). */
void bf_requester_open(bf_requester *q, const char *job_prefix);
void bf_requester_close(bf_requester *q);
/* Read the replies that arrived (without waiting) into q->status. */
void bf_requester_poll(bf_requester *q);
/* Carry out one request (after reading the replies). For BF_REQ_CHECK: returns a freshly attached segment when the one in
 * use is missing or was replaced (the caller swaps it in and hands the old one back with
 * BF_REQ_FREE), else NULL. */
bf_segment *bf_requester_handle(bf_requester *q, const bf_request *r);
/* Map the segment `name` (NULL when there is none) / unmap and free one. */
bf_segment *bf_segment_open(const char *name);
void bf_segment_free(bf_segment *seg);

#ifdef __cplusplus
}
#endif

#endif /* BARFORGE_REQUESTS_H */
