/* Off-the-audio-thread work of every Barforge Player build; see barforge_requests.h. */
#define _GNU_SOURCE
#include "barforge_requests.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

typedef struct {
    char buf[1024];
    size_t len;
} Osc;

static void osc_str(Osc *m, const char *s)
{
    size_t n = strlen(s), pad = 4 - n % 4; /* NUL then pad to 4 bytes; prompts end within BF_PROMPT_BYTES */
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
static void osc_send(bf_requester *q, const char *address, const char *types, ...)
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
    if (q->sock >= 0)
        sendto(q->sock, m.buf, m.len, 0, (struct sockaddr *)&q->server, sizeof q->server);
}

bf_segment *bf_segment_open(const char *name)
{
    bf_segment *seg = calloc(1, sizeof *seg);
    if (seg && bf_attach(seg, name) == BF_OK)
        return seg;
    free(seg);
    return NULL;
}

void bf_segment_free(bf_segment *seg)
{
    if (seg) {
        bf_detach(seg);
        free(seg);
    }
}

void bf_requester_open(bf_requester *q, const char *job_prefix)
{
    static atomic_uint instances; /* a DAW runs many instances in one process */
    const char *name = getenv("BARFORGE_SHM_NAME"), *port = getenv("BARFORGE_OSC_PORT");
    memset(q, 0, sizeof *q);
    q->instance = atomic_fetch_add(&instances, 1) + 1;
    snprintf(q->job_prefix, sizeof q->job_prefix, "%s", job_prefix);
    snprintf(q->shm_name, sizeof q->shm_name, "%s", name && *name ? name : "barforge");
    q->sock = socket(AF_INET, SOCK_DGRAM, 0);
    q->server.sin_family = AF_INET;
    q->server.sin_port = htons((uint16_t)(port && *port ? atoi(port) : 9000));
    q->server.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
}

void bf_requester_close(bf_requester *q)
{
    if (q->sock >= 0)
        close(q->sock);
    q->sock = -1;
}

void bf_requester_poll(bf_requester *q)
{
    char reply[1024];
    ssize_t n;
    while (q->sock >= 0 && (n = recv(q->sock, reply, sizeof reply, MSG_DONTWAIT)) > 0)
        bf_server_status_apply(&q->status, reply, (size_t)n); /* (clips come through memory) */
}

bf_segment *bf_requester_handle(bf_requester *q, const bf_request *r)
{
    char job[64];
    bf_requester_poll(q);
    if (r->kind == BF_REQ_GENERATE || r->kind == BF_REQ_CONTINUE)
        snprintf(job, sizeof job, "%s-%d-%u-%u", q->job_prefix, (int)getpid(), q->instance,
                 ++q->job_counter);
    switch (r->kind) {
    case BF_REQ_FREE:
        bf_segment_free(r->segment);
        break;
    case BF_REQ_GENERATE:
        osc_send(q, "/barforge/transport", "fii", (double)r->bpm, (int)r->beats_per_bar, (int)r->rate);
        osc_send(q, "/barforge/generate", "ssi", job, r->prompt, (int)r->bars);
        break;
    case BF_REQ_CONTINUE:
        osc_send(q, "/barforge/transport", "fii", (double)r->bpm, (int)r->beats_per_bar, (int)r->rate);
        if (r->prompt[0])
            osc_send(q, "/barforge/continue", "sis", job, (int)r->bars, r->prompt);
        else
            osc_send(q, "/barforge/continue", "si", job, (int)r->bars);
        break;
    case BF_REQ_CHECK: {
        bf_segment *seg = r->segment, *fresh = NULL;
        if (!seg || !bf_same_segment(seg, q->shm_name)) {
            fresh = bf_segment_open(q->shm_name);
            if (fresh)
                q->capture_asked = NULL;
        }
        const bf_segment *now = fresh ? fresh : seg; /* ask once per segment, the first too */
        if (!now)
            q->status.state = BF_SERVER_NOT_CONNECTED;
        else if (q->status.state == BF_SERVER_NOT_CONNECTED)
            q->status.state = BF_SERVER_IDLE;
        if (now && r->capture && now != q->capture_asked) {
            osc_send(q, "/barforge/capture", "i", (int)r->rate);
            q->capture_asked = now;
        }
        return fresh;
    }
    }
    return NULL;
}
