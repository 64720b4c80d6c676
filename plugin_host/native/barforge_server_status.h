/*
 * barforge_server_status: what a player shows of the server, read from the OSC replies to its
 * own requests (docs/PROTOCOL.md): not connected (no segment), idle, queued, generating with a
 * progress, done, or an error with its protocol code. Not real-time safe (it parses datagrams
 * on the requests thread); a player hands the result to its audio thread as numbers.
 */
#ifndef BARFORGE_SERVER_STATUS_H
#define BARFORGE_SERVER_STATUS_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    BF_SERVER_NOT_CONNECTED, BF_SERVER_IDLE, BF_SERVER_QUEUED, BF_SERVER_GENERATING,
    BF_SERVER_DONE, BF_SERVER_ERROR, BF_SERVER_N_STATES
} bf_server_state;

/* The protocol's error codes, 1-based in bf_server_status.error (0: none or not one of these),
 * and the states' names. In the header: a UI shows them without linking the parser. */
#define BF_SERVER_N_ERRORS 10
static const char *const bf_server_error_codes[BF_SERVER_N_ERRORS] = {
    "unknown_address", "bad_argument", "too_long", "busy", "unknown_job", "cancelled",
    "no_transport", "no_capture", "shutting_down", "internal"};
static const char *const bf_server_state_names[BF_SERVER_N_STATES] = {
    "not connected", "idle", "queued", "generating", "done", "error"};

typedef struct {
    bf_server_state state;
    float progress; /* 0..1 while generating */
    int error;      /* 1 + index in bf_server_error_codes, 0 for none */
} bf_server_status;

/* Update st from one reply datagram; returns 1 when it was a reply this understood. */
int bf_server_status_apply(bf_server_status *st, const char *msg, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* BARFORGE_SERVER_STATUS_H */
