/*
 * fuzz_command.c - libFuzzer target: a Raft entry's bytes, decoded as a
 * Command and applied to a real store.
 *
 * This is what a parent does with every committed entry, and what a bug or
 * a hostile peer could feed it.  Whatever the bytes: decoding fails cleanly
 * or yields a batch; applying the batch never fails as a whole (only its
 * ops may, each with a code from lib/err.h); and the store stays consistent
 * (store_check).  The store lives on tmpfs without syncing and is recreated
 * every few thousand inputs so that inputs stay cheap.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lib/err.h"
#include "proto/codec.h"
#include "storage/store.h"

static struct store *store;
static char path[128];
static unsigned long inputs;
static uint64_t raft_index;

static void reopen(void)
{
    struct store_config cfg;
    char lock[160];
    store_close(store);
    store = NULL;
    unlink(path);
    snprintf(lock, sizeof lock, "%s-lock", path);
    unlink(lock);
    store_config_init(&cfg, path);
    cfg.durability = STORE_DURABLE_NONE;
    cfg.map_size = (size_t)64 << 20;
    cfg.max_value = (size_t)64 << 10;
    if (store_open(&cfg, &store) != 0) {
        abort();
    }
    raft_index = 0;
}

static void check(void)
{
    char why[256];
    if (store_check(store, why, sizeof why) != 0) {
        fprintf(stderr, "store inconsistent: %s\n", why);
        abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len)
{
    struct codec_command cmd;
    if (store == NULL) {
        const char *dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
        snprintf(path, sizeof path, "%s/cd-fuzz-command-%d.mdb", dir,
                 (int)getpid());
        reopen();
    }
    if (++inputs % 4096 == 0) {
        check();
        reopen();
    }
    int rc = codec_command_decode(data, len, &cmd);
    if (rc != 0) {
        if (rc != CD_EMALFORMED && rc != CD_EBADOP && rc != CD_ETOOMANY &&
            rc != -ENOMEM) {
            fprintf(stderr, "unexpected decode error %s\n", cd_errname(rc));
            abort();
        }
        return 0;
    }
    struct cd_result *res =
        calloc(cmd.batch.n_ops ? cmd.batch.n_ops : 1, sizeof *res);
    if (res == NULL) {
        codec_command_free(&cmd);
        return 0;
    }
    rc = store_apply(store, &cmd.batch, ++raft_index, res);
    /* A decoded command must always apply as a whole; the map is large
     * enough for any input the fuzzer makes between reopens. */
    if (rc != 0 && rc != CD_EMAPFULL) {
        fprintf(stderr, "apply failed as a whole: %s\n", cd_errname(rc));
        abort();
    }
    for (size_t i = 0; rc == 0 && i < cmd.batch.n_ops; i++) {
        if (res[i].status > 0 ||
            (res[i].status < 0 && cd_errname(res[i].status)[0] == 'U')) {
            fprintf(stderr, "op %zu: unnamed status %d\n", i, res[i].status);
            abort();
        }
    }
    free(res);
    codec_command_free(&cmd);
    if (inputs % 256 == 0) {
        check();
    }
    return 0;
}
