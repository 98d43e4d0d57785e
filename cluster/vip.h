/*
 * vip.h - the virtual IP's mechanics: add and remove an IPv4 address on an
 * interface over rtnetlink, and announce it with gratuitous ARP.
 *
 * Policy (when to hold it: the leader's lease) lives in vipctl.c; this
 * module only does what it is told, synchronously (each call is a few
 * system calls on local sockets: safe on the event loop).
 *
 * The announcement is the request form of gratuitous ARP (a broadcast ARP
 * request whose sender and target address are the VIP, target MAC zero):
 * neighbours update an existing cache entry from it at once, where the
 * reply form is ignored within neigh.locktime (docs/operations.md).
 *
 * Needs CAP_NET_ADMIN (address) and CAP_NET_RAW (ARP).
 */
#ifndef CD_VIP_H
#define CD_VIP_H

#include <stdint.h>

/* Parse "a.b.c.d/prefix" (prefix 1..32).  addr (network order) and prefix
 * may be NULL.  0, or -EINVAL. */
int vip_parse(const char *spec, uint32_t *addr, unsigned *prefix);

struct vip;

/* Resolve the interface, open the sockets.  -ENODEV (no such interface),
 * -EINVAL (bad spec), -EPERM (no capability), other -errno. */
int vip_open(const char *spec, const char *ifname, struct vip **out);
/* Close the sockets; the address is left as it is (call vip_del first). */
void vip_close(struct vip *v);

/* Add the address (replacing an identical one: idempotent). */
int vip_add(struct vip *v);
/* Remove it; absent is not an error. */
int vip_del(struct vip *v);
/* Send one gratuitous ARP request for it. */
int vip_announce(struct vip *v);

/* "a.b.c.d/prefix on ifname", for logs. */
const char *vip_name(const struct vip *v);

#endif
