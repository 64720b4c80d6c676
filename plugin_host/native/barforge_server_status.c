/* Reading the server's replies into a player's status; see barforge_server_status.h. */
#include "barforge_server_status.h"

#include <stdint.h>
#include <string.h>

/* An OSC string at *at (NUL-terminated, padded to 4 bytes); NULL when malformed. */
static const char *osc_string(const char *msg, size_t len, size_t *at)
{
    if (*at >= len)
        return NULL;
    const char *s = msg + *at, *end = memchr(s, '\0', len - *at);
    if (!end)
        return NULL;
    *at += ((size_t)(end - s) / 4 + 1) * 4;
    return *at <= len ? s : NULL;
}

static int osc_float(const char *msg, size_t len, size_t *at, float *out)
{
    if (*at + 4 > len)
        return 0;
    uint32_t v;
    memcpy(&v, msg + *at, 4);
    v = __builtin_bswap32(v); /* OSC is big-endian; the library supports little-endian hosts */
    memcpy(out, &v, 4);
    *at += 4;
    return 1;
}

int bf_server_status_apply(bf_server_status *st, const char *msg, size_t len)
{
    size_t at = 0;
    const char *address = osc_string(msg, len, &at), *tags = osc_string(msg, len, &at);
    if (!address || !tags || tags[0] != ',')
        return 0;
    if (strcmp(address, "/barforge/accepted") == 0) {
        st->state = BF_SERVER_QUEUED;
        st->progress = 0.0f;
        st->error = 0;
    } else if (strcmp(address, "/barforge/progress") == 0 && strcmp(tags, ",sf") == 0) {
        float f;
        if (!osc_string(msg, len, &at) || !osc_float(msg, len, &at, &f))
            return 0;
        st->state = BF_SERVER_GENERATING;
        st->progress = f < 0.0f ? 0.0f : f > 1.0f ? 1.0f : f;
    } else if (strcmp(address, "/barforge/done") == 0) {
        st->state = BF_SERVER_DONE;
        st->progress = 1.0f;
        st->error = 0;
    } else if (strcmp(address, "/barforge/error") == 0 && strncmp(tags, ",ss", 3) == 0) {
        const char *code;
        if (!osc_string(msg, len, &at) || !(code = osc_string(msg, len, &at)))
            return 0;
        st->state = BF_SERVER_ERROR;
        st->error = 0;
        for (int k = 0; k < BF_SERVER_N_ERRORS; ++k)
            if (strcmp(code, bf_server_error_codes[k]) == 0)
                st->error = k + 1;
    } else {
        return 0;
    }
    return 1;
}
