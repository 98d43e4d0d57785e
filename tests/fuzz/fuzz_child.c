/*
 * fuzz_child.c - libFuzzer target: the child's parsers.
 *
 * The first byte picks one:
 *   0: cd_child_identity_parse, the <data>/child file (written by us, but a
 *      disk or an operator may damage it): refused with CD_ECORRUPT or
 *      parsed; what parses saves and parses back to the same identity;
 *   1: health_add, one "check = ..." line of the child's configuration:
 *      refused with CD_ECONFIG and a message, or added; never more than
 *      HEALTH_MAX_CHECKS checks.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agents/health.h"
#include "cluster/client.h"
#include "lib/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

static void identity(const char *text, size_t len)
{
    struct cd_child_identity id, again;
    int rc = cd_child_identity_parse(text, len, &id);
    if (rc != 0) {
        if (rc != CD_ECORRUPT) {
            abort();
        }
        return;
    }
    if (id.cluster_id == 0 || id.child_id == 0) {
        abort();
    }
    char buf[1024];
    int n = snprintf(buf, sizeof buf,
                     "cluster_id=%016llx\nchild_id=%llu\nregistered_rev=%llu\n"
                     "endpoints=%s\n",
                     (unsigned long long)id.cluster_id,
                     (unsigned long long)id.child_id,
                     (unsigned long long)id.registered_rev, id.endpoints);
    if (n < 0 || (size_t)n >= sizeof buf ||
        cd_child_identity_parse(buf, (size_t)n, &again) != 0 ||
        memcmp(&id, &again, sizeof id) != 0) {
        abort();
    }
}

static void health_spec(const uint8_t *data, size_t len)
{
    static struct health h;
    char err[256];
    char *spec = malloc(len + 1);
    if (spec == NULL) {
        return;
    }
    memcpy(spec, data, len);
    spec[len] = '\0';
    health_init(&h);
    /* Twice: a second check of the same name must be refused. */
    for (int i = 0; i < 2; i++) {
        err[0] = '\0';
        int rc = health_add(&h, spec, err, sizeof err);
        if (rc != 0 && (rc != CD_ECONFIG || err[0] == '\0')) {
            abort();
        }
    }
    if (h.n > 1 || h.n > HEALTH_MAX_CHECKS) {
        abort();
    }
    free(spec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    if (len == 0) {
        return 0;
    }
    uint8_t which = data[0] % 2;
    data++;
    len--;
    if (which == 0) {
        identity((const char *)data, len);
    } else {
        health_spec(data, len);
    }
    return 0;
}
