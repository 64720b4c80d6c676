/* urid:map for the LV2 test hosts (lv2_harness.c, and the DPF player's lv2_host.c): a table
 * of the URIs seen so far, URID = index + 1. Not real-time safe; hosts map before run(). */
#ifndef BARFORGE_TEST_URID_MAP_H
#define BARFORGE_TEST_URID_MAP_H

#include <stdint.h>
#include <string.h>

#include <lv2/urid/urid.h>

#define MAX_URIS 256
static char *uri_table[MAX_URIS];
static uint32_t n_uris;

static LV2_URID map_uri(LV2_URID_Map_Handle handle, const char *uri)
{
    (void)handle;
    for (uint32_t i = 0; i < n_uris; ++i)
        if (strcmp(uri_table[i], uri) == 0)
            return i + 1;
    if (n_uris == MAX_URIS)
        return 0;
    uri_table[n_uris] = strdup(uri);
    return ++n_uris;
}

#endif
