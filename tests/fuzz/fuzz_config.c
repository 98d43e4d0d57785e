/*
 * fuzz_config.c - libFuzzer target: clusterd's configuration file
 * (config_parse + config_finish over lib/kvconf.h).
 *
 * Whatever the bytes: 0 or CD_ECONFIG with a message, never anything
 * else; every string setting stays NUL-terminated inside its field; a
 * configuration that config_finish accepts keeps its own invariants
 * (election at least two heartbeats, an odd voter target, a lease under
 * the bound, a connect retry set).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/config.h"
#include "lib/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

#define TERMINATED(f) (memchr((f), '\0', sizeof(f)) != NULL)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct cd_config c;
    char err[512];
    config_defaults(&c);
    err[0] = '\0';
    int rc = config_parse(&c, (const char *)data, len, err, sizeof err);
    if (rc != 0 && (rc != CD_ECONFIG || err[0] == '\0')) {
        abort();
    }
    if (!TERMINATED(c.data_dir) || !TERMINATED(c.raft_addr) ||
        !TERMINATED(c.api_addr) || !TERMINATED(c.join) ||
        !TERMINATED(c.token) || !TERMINATED(c.profile) || !TERMINATED(c.vip) ||
        !TERMINATED(c.vip_interface) || !TERMINATED(c.metrics_addr)) {
        abort();
    }
    if (rc != 0) {
        return 0;
    }
    err[0] = '\0';
    rc = config_finish(&c, err, sizeof err);
    if (rc != 0) {
        if (rc != CD_ECONFIG || err[0] == '\0') {
            abort();
        }
        return 0;
    }
    if (c.election_ms < 2 * c.heartbeat_ms || c.voters % 2 == 0 ||
        c.connect_retry_ms == 0 || c.raft_addr[0] == '\0' ||
        c.api_addr[0] == '\0') {
        abort();
    }
    if (c.vip[0] != '\0') {
        double d = c.vip_clock_drift_pct / 100.0;
        if (c.vip_interface[0] == '\0' ||
            c.vip_lease_ms >= c.election_ms * (1.0 - d) / (1.0 + d)) {
            abort();
        }
    }
    return 0;
}
