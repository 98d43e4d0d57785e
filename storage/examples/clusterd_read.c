/*
 * clusterd_read.c - an example of a local program reading configuration
 * through libclusterd, the way an appliance daemon would.
 *
 *   clusterd-read [-d FILE] KEY            print a value
 *   clusterd-read [-d FILE] --prefix P     print every key under P
 *   clusterd-read [-d FILE] --status       revision and staleness
 *
 * Built against the shared library and its public header only:
 *   cc clusterd_read.c -lclusterd
 */
#include <clusterd.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int print_one(void *arg,
                     const char *key,
                     size_t key_len,
                     const char *value,
                     size_t value_len)
{
    (void)arg;
    printf("%.*s = %.*s\n", (int)key_len, key, (int)value_len, value);
    return 0;
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    clusterd_db *db;
    int i = 1, rc;

    if (argc > 2 && strcmp(argv[1], "-d") == 0) {
        path = argv[2];
        i = 3;
    }
    if (i >= argc) {
        fprintf(stderr,
                "usage: clusterd-read [-d FILE] KEY | --prefix P | "
                "--status\n");
        return 2;
    }
    if ((rc = clusterd_open(path, &db)) != 0) {
        fprintf(stderr, "clusterd-read: %s\n", clusterd_strerror(rc));
        return 1;
    }
    if (strcmp(argv[i], "--status") == 0) {
        struct clusterd_staleness st;
        rc = clusterd_staleness(db, &st);
        if (rc == 0) {
            printf("revision %" PRIu64 ", last change %" PRIu64 " ms ago\n",
                   st.revision, st.age_ms);
        }
    } else if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) {
        rc = clusterd_range(db, argv[i + 1], strlen(argv[i + 1]), 0, print_one,
                            NULL);
    } else {
        char *value;
        size_t len;
        rc = clusterd_get(db, argv[i], strlen(argv[i]), &value, &len);
        if (rc == 0) {
            printf("%s\n", value);
            free(value);
        }
    }
    if (rc != 0) {
        fprintf(stderr, "clusterd-read: %s\n", clusterd_strerror(rc));
    }
    clusterd_close(db);
    return rc == 0 ? 0 : rc == CLUSTERD_ENOTFOUND ? 3 : 1;
}
