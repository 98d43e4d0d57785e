/*
 * childid.c - a child's identity and its registration (see client.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netpacket/packet.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "../lib/err.h"
#include "../lib/fdio.h"
#include "client.h"

#define ID_FILE "child"
#define MAX_ADDRS 16

static int parse_u64(const char *v, int base, uint64_t *out)
{
    char *end;
    errno = 0;
    if (v[0] == '\0' || v[0] == '-') {
        return -1;
    }
    unsigned long long x = strtoull(v, &end, base);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = x;
    return 0;
}

int cd_child_identity_parse(const char *text,
                            size_t len,
                            struct cd_child_identity *out)
{
    char line[640];
    size_t pos = 0;
    memset(out, 0, sizeof *out);
    while (pos < len) {
        size_t end = pos;
        while (end < len && text[end] != '\n') {
            end++;
        }
        size_t n = end - pos;
        if (n >= sizeof line) {
            return CD_ECORRUPT;
        }
        memcpy(line, text + pos, n);
        line[n] = '\0';
        pos = end + 1;
        if (n == 0 || line[0] == '#') {
            continue;
        }
        if (memchr(line, '\0', n) != NULL) {
            return CD_ECORRUPT;
        }
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            return CD_ECORRUPT;
        }
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        int bad = 0;
        if (strcmp(k, "cluster_id") == 0) {
            bad = parse_u64(v, 16, &out->cluster_id);
        } else if (strcmp(k, "child_id") == 0) {
            bad = parse_u64(v, 10, &out->child_id);
        } else if (strcmp(k, "registered_rev") == 0) {
            bad = parse_u64(v, 10, &out->registered_rev);
        } else if (strcmp(k, "endpoints") == 0) {
            bad = strlen(v) >= sizeof out->endpoints;
            if (!bad) {
                memset(out->endpoints, 0, sizeof out->endpoints);
                snprintf(out->endpoints, sizeof out->endpoints, "%s", v);
            }
        } else {
            bad = 1; /* written by a newer clusterd, or damaged */
        }
        if (bad) {
            return CD_ECORRUPT;
        }
    }
    return out->cluster_id != 0 && out->child_id != 0 ? 0 : CD_ECORRUPT;
}

int cd_child_identity_load(const char *data_dir, struct cd_child_identity *out)
{
    char path[512];
    char buf[2048];
    snprintf(path, sizeof path, "%s/%s", data_dir, ID_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    ssize_t n = read(fd, buf, sizeof buf);
    int err = errno;
    close(fd);
    if (n < 0) {
        return -err;
    }
    if ((size_t)n == sizeof buf) {
        return CD_ECORRUPT;
    }
    return cd_child_identity_parse(buf, (size_t)n, out);
}

int cd_child_identity_save(const char *data_dir,
                           const struct cd_child_identity *id)
{
    char path[512], text[768];
    snprintf(path, sizeof path, "%s/%s", data_dir, ID_FILE);
    int len = snprintf(text, sizeof text,
                       "# clusterd child identity: assigned by the cluster; "
                       "do not edit\n"
                       "cluster_id=%016" PRIx64 "\nchild_id=%" PRIu64
                       "\nregistered_rev=%" PRIu64 "\nendpoints=%s\n",
                       id->cluster_id, id->child_id, id->registered_rev,
                       id->endpoints);
    if (len < 0 || (size_t)len >= sizeof text) {
        return -EINVAL;
    }
    return fd_write_file_durable(path, text, (size_t)len, 0600);
}

/* --- what a child says about itself --------------------------------------- */

struct host_facts
{
    char hostname[256];
    char addr_buf[MAX_ADDRS][INET6_ADDRSTRLEN];
    const char *addrs[MAX_ADDRS];
    size_t n_addrs;
    char mac[18];
    char os[600];
};

static void os_name(char *out, size_t len)
{
    struct utsname u;
    char pretty[256] = "";
    FILE *f = fopen("/etc/os-release", "r");
    if (f != NULL) {
        char line[256];
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "PRETTY_NAME=", 12) == 0) {
                char *v = line + 12;
                v[strcspn(v, "\n")] = '\0';
                if (v[0] == '"') {
                    v++;
                    v[strcspn(v, "\"")] = '\0';
                }
                snprintf(pretty, sizeof pretty, "%s", v);
            }
        }
        fclose(f);
    }
    if (uname(&u) != 0) {
        snprintf(out, len, "%s", pretty);
        return;
    }
    snprintf(out, len, "%s%s%s %s %s", pretty, pretty[0] ? "; " : "", u.sysname,
             u.release, u.machine);
}

static void gather(struct host_facts *h)
{
    struct ifaddrs *ifs = NULL, *i;
    memset(h, 0, sizeof *h);
    if (gethostname(h->hostname, sizeof h->hostname - 1) != 0) {
        snprintf(h->hostname, sizeof h->hostname, "unknown");
    }
    os_name(h->os, sizeof h->os);
    if (getifaddrs(&ifs) != 0) {
        return;
    }
    for (i = ifs; i != NULL; i = i->ifa_next) {
        if (i->ifa_addr == NULL || (i->ifa_flags & IFF_LOOPBACK) != 0) {
            continue;
        }
        int fam = i->ifa_addr->sa_family;
        if (fam == AF_PACKET && h->mac[0] == '\0') {
            const struct sockaddr_ll *ll = (const void *)i->ifa_addr;
            if (ll->sll_halen == 6) {
                snprintf(h->mac, sizeof h->mac, "%02x:%02x:%02x:%02x:%02x:%02x",
                         ll->sll_addr[0], ll->sll_addr[1], ll->sll_addr[2],
                         ll->sll_addr[3], ll->sll_addr[4], ll->sll_addr[5]);
            }
        } else if ((fam == AF_INET || fam == AF_INET6) &&
                   h->n_addrs < MAX_ADDRS) {
            const void *a =
                fam == AF_INET
                    ? (const void *)&(
                          (const struct sockaddr_in *)(const void *)i->ifa_addr)
                          ->sin_addr
                    : (const void *)&(
                          (const struct sockaddr_in6 *)(const void *)
                              i->ifa_addr)
                          ->sin6_addr;
            if (inet_ntop(fam, a, h->addr_buf[h->n_addrs],
                          sizeof h->addr_buf[0]) != NULL) {
                h->addrs[h->n_addrs] = h->addr_buf[h->n_addrs];
                h->n_addrs++;
            }
        }
    }
    freeifaddrs(ifs);
}

int cd_client_child_join(struct cd_client *c,
                         const char *token,
                         const char *app_version,
                         struct cd_child_identity *out)
{
    struct host_facts h;
    struct cd_msg req, resp;
    gather(&h);
    memset(&req, 0, sizeof req);
    req.type = CD_MSG_CHILD_JOIN;
    req.u.child_join.token = token != NULL ? token : "";
    req.u.child_join.info = (struct cd_child_info){
        .hostname = h.hostname,
        .addresses = h.addrs,
        .n_addresses = h.n_addrs,
        .mac = h.mac[0] != '\0' ? h.mac : NULL,
        .os = h.os[0] != '\0' ? h.os : NULL,
        .app_version = app_version,
    };
    int rc = cd_client_call(c, &req, &resp);
    if (rc != 0) {
        return rc;
    }
    out->child_id = resp.u.child_join_resp.child_id;
    out->cluster_id = resp.u.child_join_resp.cluster_id;
    out->registered_rev = resp.u.child_join_resp.registered_rev;
    codec_msg_free(&resp);
    return 0;
}
