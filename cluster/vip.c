/*
 * vip.c - add, remove and announce the virtual IP; see vip.h.
 */
#include "vip.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/if_ether.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <net/if_arp.h>
#include <netpacket/packet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

struct vip
{
    uint32_t addr; /* network order */
    unsigned prefix;
    unsigned ifindex;
    unsigned char mac[ETH_ALEN];
    struct mnl_socket *nl;
    unsigned portid;
    unsigned seq;
    int arp_fd;
    char name[64];
};

int vip_parse(const char *spec, uint32_t *addr, unsigned *prefix)
{
    char ip[32];
    const char *slash = strchr(spec, '/');
    struct in_addr a;
    if (slash == NULL || (size_t)(slash - spec) >= sizeof ip) {
        return -EINVAL;
    }
    memcpy(ip, spec, (size_t)(slash - spec));
    ip[slash - spec] = '\0';
    char *end;
    errno = 0;
    unsigned long p = strtoul(slash + 1, &end, 10);
    if (slash[1] == '\0' || *end != '\0' || errno != 0 || p < 1 || p > 32 ||
        inet_pton(AF_INET, ip, &a) != 1) {
        return -EINVAL;
    }
    if (addr != NULL) {
        *addr = a.s_addr;
    }
    if (prefix != NULL) {
        *prefix = (unsigned)p;
    }
    return 0;
}

int vip_open(const char *spec, const char *ifname, struct vip **out)
{
    struct vip *v = calloc(1, sizeof *v);
    int rc;
    if (v == NULL) {
        return -ENOMEM;
    }
    v->arp_fd = -1;
    if ((rc = vip_parse(spec, &v->addr, &v->prefix)) != 0) {
        free(v);
        return rc;
    }
    v->ifindex = if_nametoindex(ifname);
    if (v->ifindex == 0) {
        free(v);
        return -ENODEV;
    }
    snprintf(v->name, sizeof v->name, "%s on %s", spec, ifname);

    v->nl = mnl_socket_open(NETLINK_ROUTE);
    if (v->nl == NULL || mnl_socket_bind(v->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = -errno;
        vip_close(v);
        return rc;
    }
    v->portid = mnl_socket_get_portid(v->nl);
    v->seq = (unsigned)time(NULL);

    v->arp_fd = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC, htons(ETH_P_ARP));
    if (v->arp_fd < 0) {
        rc = -errno;
        vip_close(v);
        return rc;
    }
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "%s", ifname);
    if (ioctl(v->arp_fd, SIOCGIFHWADDR, &ifr) != 0) {
        rc = -errno;
        vip_close(v);
        return rc;
    }
    memcpy(v->mac, ifr.ifr_hwaddr.sa_data, ETH_ALEN);
    *out = v;
    return 0;
}

void vip_close(struct vip *v)
{
    if (v == NULL) {
        return;
    }
    if (v->nl != NULL) {
        mnl_socket_close(v->nl);
    }
    if (v->arp_fd >= 0) {
        close(v->arp_fd);
    }
    free(v);
}

const char *vip_name(const struct vip *v)
{
    return v->name;
}

/* Send one RTM_NEWADDR / RTM_DELADDR and read the kernel's answer. */
static int addr_request(struct vip *v, int type, unsigned flags)
{
    char buf[8192]; /* MNL_SOCKET_BUFFER_SIZE is not a constant */
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = (unsigned short)type;
    nlh->nlmsg_flags = (unsigned short)(NLM_F_REQUEST | NLM_F_ACK | flags);
    nlh->nlmsg_seq = ++v->seq;
    struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof *ifa);
    ifa->ifa_family = AF_INET;
    ifa->ifa_prefixlen = (unsigned char)v->prefix;
    ifa->ifa_scope = RT_SCOPE_UNIVERSE;
    ifa->ifa_index = v->ifindex;
    mnl_attr_put_u32(nlh, IFA_LOCAL, v->addr);
    mnl_attr_put_u32(nlh, IFA_ADDRESS, v->addr);
    if (mnl_socket_sendto(v->nl, nlh, nlh->nlmsg_len) < 0) {
        return -errno;
    }
    ssize_t n = mnl_socket_recvfrom(v->nl, buf, sizeof buf);
    if (n < 0) {
        return -errno;
    }
    /* The ACK is an NLMSG_ERROR with error 0; mnl_cb_run turns a nonzero
     * one into -1 with errno set. */
    if (mnl_cb_run(buf, (size_t)n, v->seq, v->portid, NULL, NULL) < 0) {
        return -errno;
    }
    return 0;
}

int vip_add(struct vip *v)
{
    return addr_request(v, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE);
}

int vip_del(struct vip *v)
{
    int rc = addr_request(v, RTM_DELADDR, 0);
    return rc == -EADDRNOTAVAIL || rc == -ENOENT || rc == -ESRCH ? 0 : rc;
}

int vip_announce(struct vip *v)
{
    struct
    {
        struct arphdr h;
        unsigned char sha[ETH_ALEN];
        unsigned char spa[4];
        unsigned char tha[ETH_ALEN];
        unsigned char tpa[4];
    } __attribute__((packed)) arp;
    memset(&arp, 0, sizeof arp);
    arp.h.ar_hrd = htons(ARPHRD_ETHER);
    arp.h.ar_pro = htons(ETH_P_IP);
    arp.h.ar_hln = ETH_ALEN;
    arp.h.ar_pln = 4;
    arp.h.ar_op = htons(ARPOP_REQUEST);
    memcpy(arp.sha, v->mac, ETH_ALEN);
    memcpy(arp.spa, &v->addr, 4);
    memcpy(arp.tpa, &v->addr, 4); /* tha stays zero */

    struct sockaddr_ll to;
    memset(&to, 0, sizeof to);
    to.sll_family = AF_PACKET;
    to.sll_protocol = htons(ETH_P_ARP);
    to.sll_ifindex = (int)v->ifindex;
    to.sll_halen = ETH_ALEN;
    memset(to.sll_addr, 0xff, ETH_ALEN);
    if (sendto(v->arp_fd, &arp, sizeof arp, 0, (struct sockaddr *)&to,
               sizeof to) < 0) {
        return -errno;
    }
    return 0;
}
