/*
 * Writes NIC info XDR vectors with rpcgen's encoder (see gen.sh and README.md).
 *
 * Each case is a GuestNicProto built here field by field and encoded with the xdr_* routines
 * rpcgen generated from nicinfo.x, into memory (xdrmem). tests/nicinfo_vectors.rs builds the
 * same values with the crate's types. The v2 cases convert the v3 value the way
 * NicInfoV3ToV2 (services/plugins/guestInfo/guestInfoServer.c) does, after the 64-address cap
 * of GuestNicInfoV3ToV3_64.
 *
 * Usage: gen_nicinfo OUTDIR
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nicinfo.h"

/* INFO_IPADDRESS_V2_MAX_IPS, lib/include/guestInfo.h. */
#define V2_MAX_IPS 64

static void *
xcalloc(size_t n, size_t size)
{
   void *p = calloc(n ? n : 1, size);
   if (p == NULL) {
      perror("calloc");
      exit(1);
   }
   return p;
}

static char *
xstrdup(const char *s)
{
   char *p = strdup(s);
   if (p == NULL) {
      perror("strdup");
      exit(1);
   }
   return p;
}

static TypedIpAddress
typed_ip(const char *text)
{
   TypedIpAddress t;
   unsigned char buf[16];

   if (inet_pton(AF_INET, text, buf) == 1) {
      t.ipAddressAddrType = IAT_IPV4;
      t.ipAddressAddr.InetAddress_len = 4;
   } else if (inet_pton(AF_INET6, text, buf) == 1) {
      t.ipAddressAddrType = IAT_IPV6;
      t.ipAddressAddr.InetAddress_len = 16;
   } else {
      fprintf(stderr, "gen_nicinfo: bad address %s\n", text);
      exit(1);
   }
   t.ipAddressAddr.InetAddress_val = xcalloc(1, t.ipAddressAddr.InetAddress_len);
   memcpy(t.ipAddressAddr.InetAddress_val, buf, t.ipAddressAddr.InetAddress_len);
   return t;
}

/* An address of a type with no textual form: a type number and raw bytes. */
static TypedIpAddress
typed_raw(InetAddressType type, const unsigned char *bytes, unsigned len)
{
   TypedIpAddress t;

   t.ipAddressAddrType = type;
   t.ipAddressAddr.InetAddress_len = len;
   t.ipAddressAddr.InetAddress_val = xcalloc(1, len);
   memcpy(t.ipAddressAddr.InetAddress_val, bytes, len);
   return t;
}

/* origin or status < 0: the optional field is absent. */
static IpAddressEntry
ip_entry(const char *text, unsigned prefix, int origin, int status)
{
   IpAddressEntry e;

   e.ipAddressAddr = typed_ip(text);
   e.ipAddressPrefixLength = prefix;
   e.ipAddressOrigin = NULL;
   e.ipAddressStatus = NULL;
   if (origin >= 0) {
      e.ipAddressOrigin = xcalloc(1, sizeof *e.ipAddressOrigin);
      *e.ipAddressOrigin = origin;
   }
   if (status >= 0) {
      e.ipAddressStatus = xcalloc(1, sizeof *e.ipAddressStatus);
      *e.ipAddressStatus = status;
   }
   return e;
}

static DnsHostname *
hostname(const char *s)
{
   DnsHostname *h = xcalloc(1, sizeof *h);
   *h = xstrdup(s);
   return h;
}

static DhcpConfigInfo *
dhcp(bool_t enabled, const char *settings)
{
   DhcpConfigInfo *d = xcalloc(1, sizeof *d);
   d->enabled = enabled;
   d->dhcpSettings = xstrdup(settings);
   return d;
}

static WinsConfigInfo *
wins(const char *primary, const char *secondary)
{
   WinsConfigInfo *w = xcalloc(1, sizeof *w);
   w->primary = typed_ip(primary);
   w->secondary = typed_ip(secondary);
   return w;
}

static InetCidrRouteEntry
route(const char *dest, unsigned prefix, const char *next_hop, uint32 if_index,
      InetCidrRouteType type, uint32 metric)
{
   InetCidrRouteEntry r;

   r.inetCidrRouteDest = typed_ip(dest);
   r.inetCidrRoutePfxLen = prefix;
   r.inetCidrRouteNextHop = NULL;
   if (next_hop != NULL) {
      r.inetCidrRouteNextHop = xcalloc(1, sizeof *r.inetCidrRouteNextHop);
      *r.inetCidrRouteNextHop = typed_ip(next_hop);
   }
   r.inetCidrRouteIfIndex = if_index;
   r.inetCidrRouteType = type;
   r.inetCidrRouteMetric = metric;
   return r;
}

/* --------------------------------------------------------------------------------- cases */

static NicInfoV3 *
v3_full(void)
{
   NicInfoV3 *info = xcalloc(1, sizeof *info);
   GuestNicV3 *nic;
   DnsConfigInfo *dns;
   /* IAT_IPV4Z: an IPv4 address and a 4-byte zone index (RFC 4001). */
   static const unsigned char v4z[8] = { 169, 254, 1, 2, 0, 0, 0, 3 };

   info->nics.nics_len = 3;
   info->nics.nics_val = xcalloc(3, sizeof(GuestNicV3));

   nic = &info->nics.nics_val[0];
   nic->macAddress = xstrdup("00:50:56:aa:bb:cc");
   nic->ips.ips_len = 7;
   nic->ips.ips_val = xcalloc(7, sizeof(IpAddressEntry));
   nic->ips.ips_val[0] = ip_entry("10.0.0.5", 24, IAO_DHCP, IAS_PREFERRED);
   nic->ips.ips_val[1] = ip_entry("fe80::250:56ff:feaa:bbcc", 64, IAO_LINKLAYER, IAS_PREFERRED);
   nic->ips.ips_val[2] = ip_entry("2001:db8::1:0:0:1", 64, IAO_MANUAL, IAS_DEPRECATED);
   nic->ips.ips_val[3] = ip_entry("192.168.77.9", 32, -1, -1);
   nic->ips.ips_val[4] = ip_entry("2001:db8:aaaa::9", 128, IAO_RANDOM, IAS_TENTATIVE);
   nic->ips.ips_val[5] = ip_entry("::ffff:192.0.2.1", 96, IAO_OTHER, -1);
   nic->ips.ips_val[6] = ip_entry("172.16.0.1", 12, -1, IAS_DUPLICATE);
   dns = xcalloc(1, sizeof *dns);
   dns->hostName = hostname("vm-01");
   dns->domainName = hostname("example.com");
   dns->serverList.serverList_len = 2;
   dns->serverList.serverList_val = xcalloc(2, sizeof(TypedIpAddress));
   dns->serverList.serverList_val[0] = typed_ip("10.0.0.2");
   dns->serverList.serverList_val[1] = typed_ip("2001:db8::53");
   dns->searchSuffixes.searchSuffixes_len = 3;
   dns->searchSuffixes.searchSuffixes_val = xcalloc(3, sizeof(DnsHostname));
   dns->searchSuffixes.searchSuffixes_val[0] = xstrdup("example.com");
   dns->searchSuffixes.searchSuffixes_val[1] = xstrdup("lab");
   dns->searchSuffixes.searchSuffixes_val[2] = xstrdup("corp.example");
   nic->dnsConfigInfo = dns;
   nic->winsConfigInfo = wins("10.0.0.3", "10.0.0.4");
   nic->dhcpConfigInfov4 = dhcp(TRUE, "lease 86400");
   nic->dhcpConfigInfov6 = dhcp(FALSE, "ia-na");

   nic = &info->nics.nics_val[1];
   nic->macAddress = xstrdup("00:50:56:11:22:33");
   nic->ips.ips_len = 1;
   nic->ips.ips_val = xcalloc(1, sizeof(IpAddressEntry));
   nic->ips.ips_val[0] = ip_entry("192.168.1.10", 16, -1, -1);

   nic = &info->nics.nics_val[2];
   nic->macAddress = xstrdup("");

   info->routes.routes_len = 4;
   info->routes.routes_val = xcalloc(4, sizeof(InetCidrRouteEntry));
   info->routes.routes_val[0] = route("0.0.0.0", 0, "10.0.0.1", 0, ICRT_REMOTE, 100);
   info->routes.routes_val[1] = route("10.0.0.0", 24, NULL, 0, ICRT_LOCAL, 0);
   info->routes.routes_val[2] = route("::", 0, "fe80::1", 1, ICRT_REMOTE, 1024);
   info->routes.routes_val[3] = route("192.0.2.0", 24, NULL, 1, ICRT_REJECT, 0xffffffffu);

   dns = xcalloc(1, sizeof *dns);
   dns->hostName = hostname("vm-01.example.com");
   dns->domainName = NULL;
   dns->serverList.serverList_len = 3;
   dns->serverList.serverList_val = xcalloc(3, sizeof(TypedIpAddress));
   dns->serverList.serverList_val[0] = typed_ip("10.0.0.2");
   dns->serverList.serverList_val[1] = typed_ip("fd00::35");
   dns->serverList.serverList_val[2] = typed_raw(IAT_IPV4Z, v4z, sizeof v4z);
   dns->searchSuffixes.searchSuffixes_len = 1;
   dns->searchSuffixes.searchSuffixes_val = xcalloc(1, sizeof(DnsHostname));
   dns->searchSuffixes.searchSuffixes_val[0] = xstrdup("ab");
   info->dnsConfigInfo = dns;
   info->winsConfigInfo = wins("10.0.0.3", "0.0.0.0");
   info->dhcpConfigInfov4 = dhcp(TRUE, "");
   info->dhcpConfigInfov6 = dhcp(FALSE, "duid 00:01");
   return info;
}

static NicInfoV3 *
v3_bare_nic(void)
{
   NicInfoV3 *info = xcalloc(1, sizeof *info);

   info->nics.nics_len = 1;
   info->nics.nics_val = xcalloc(1, sizeof(GuestNicV3));
   info->nics.nics_val[0].macAddress = xstrdup("02:00:00:00:00:01");
   return info;
}

/* One NIC with 70 addresses, 10.1.N.1/24: more than type 9 carries. */
static NicInfoV3 *
v3_many_ips(void)
{
   NicInfoV3 *info = xcalloc(1, sizeof *info);
   GuestNicV3 *nic;
   unsigned i;
   char text[32];

   info->nics.nics_len = 1;
   info->nics.nics_val = xcalloc(1, sizeof(GuestNicV3));
   nic = &info->nics.nics_val[0];
   nic->macAddress = xstrdup("00:0c:29:00:00:46");
   nic->ips.ips_len = 70;
   nic->ips.ips_val = xcalloc(70, sizeof(IpAddressEntry));
   for (i = 0; i < 70; i++) {
      snprintf(text, sizeof text, "10.1.%u.1", i);
      nic->ips.ips_val[i] = ip_entry(text, 24, IAO_MANUAL, IAS_PREFERRED);
   }
   return info;
}

/* GuestNicInfoV3ToV3_64: the same value, at most 64 addresses per NIC. */
static NicInfoV3 *
cap_64(const NicInfoV3 *in)
{
   NicInfoV3 *out = xcalloc(1, sizeof *out);
   unsigned i;

   *out = *in;
   out->nics.nics_val = xcalloc(in->nics.nics_len, sizeof(GuestNicV3));
   for (i = 0; i < in->nics.nics_len; i++) {
      out->nics.nics_val[i] = in->nics.nics_val[i];
      if (out->nics.nics_val[i].ips.ips_len > V2_MAX_IPS) {
         out->nics.nics_val[i].ips.ips_len = V2_MAX_IPS;
      }
   }
   return out;
}

/*
 * What NicInfoV3ToV2 makes of a v3 value: the MAC copied into the fixed array, per address
 * the family (IPv4 for IAT_IPV4, IPv6 for anything else), inet_ntop's text and the prefix
 * length printed with "%u"; dhcpEnabled stays as calloc left it.
 */
static GuestNicList *
to_v2(const NicInfoV3 *in)
{
   GuestNicList *list = xcalloc(1, sizeof *list);
   unsigned i, j;

   list->nics.nics_len = in->nics.nics_len;
   list->nics.nics_val = xcalloc(in->nics.nics_len, sizeof(GuestNic));
   for (i = 0; i < in->nics.nics_len; i++) {
      const GuestNicV3 *nic = &in->nics.nics_val[i];
      GuestNic *old = &list->nics.nics_val[i];

      snprintf(old->macAddress, sizeof old->macAddress, "%s", nic->macAddress);
      old->ips.ips_len = nic->ips.ips_len;
      old->ips.ips_val = xcalloc(nic->ips.ips_len, sizeof(VmIpAddress));
      for (j = 0; j < nic->ips.ips_len; j++) {
         const IpAddressEntry *e = &nic->ips.ips_val[j];
         VmIpAddress *ip = &old->ips.ips_val[j];
         int v4 = e->ipAddressAddr.ipAddressAddrType == IAT_IPV4;

         ip->addressFamily = v4 ? NICINFO_ADDR_IPV4 : NICINFO_ADDR_IPV6;
         if (inet_ntop(v4 ? AF_INET : AF_INET6, e->ipAddressAddr.ipAddressAddr.InetAddress_val,
                       ip->ipAddress, sizeof ip->ipAddress) == NULL) {
            perror("inet_ntop");
            exit(1);
         }
         snprintf(ip->subnetMask, sizeof ip->subnetMask, "%u", e->ipAddressPrefixLength);
      }
   }
   return list;
}

/* ------------------------------------------------------------------------------- output */

/* Large enough for every case; xdrmem fails rather than overflow. */
#define BUF_SIZE (1 << 20)

static unsigned
encode(GuestNicProto *msg, char *buf)
{
   XDR xdrs;
   unsigned len;

   xdrmem_create(&xdrs, buf, BUF_SIZE, XDR_ENCODE);
   if (!xdr_GuestNicProto(&xdrs, msg)) {
      fprintf(stderr, "gen_nicinfo: xdr_GuestNicProto failed to encode\n");
      exit(1);
   }
   len = xdr_getpos(&xdrs);
   xdr_destroy(&xdrs);
   return len;
}

/* rpcgen's decoder must take the bytes back and give the same bytes again. */
static void
check_decodes(const char *name, char *buf, unsigned len)
{
   XDR xdrs;
   GuestNicProto back;
   static char again[BUF_SIZE];
   unsigned len2;

   memset(&back, 0, sizeof back);
   xdrmem_create(&xdrs, buf, len, XDR_DECODE);
   if (!xdr_GuestNicProto(&xdrs, &back) || xdr_getpos(&xdrs) != len) {
      fprintf(stderr, "gen_nicinfo: %s does not decode\n", name);
      exit(1);
   }
   xdr_destroy(&xdrs);
   len2 = encode(&back, again);
   if (len2 != len || memcmp(again, buf, len) != 0) {
      fprintf(stderr, "gen_nicinfo: %s re-encodes differently\n", name);
      exit(1);
   }
   xdr_free((xdrproc_t)xdr_GuestNicProto, (char *)&back);
}

/* Hex, one XDR word (4 bytes) per group, 8 groups a line. */
static void
write_hex(const char *dir, const char *name, GuestNicProto *msg)
{
   static char buf[BUF_SIZE];
   char path[4096];
   unsigned len, i;
   FILE *f;

   len = encode(msg, buf);
   check_decodes(name, buf, len);
   snprintf(path, sizeof path, "%s/%s.hex", dir, name);
   f = fopen(path, "w");
   if (f == NULL) {
      fprintf(stderr, "gen_nicinfo: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   for (i = 0; i < len; i++) {
      fprintf(f, "%02x", (unsigned char)buf[i]);
      if (i + 1 == len || (i + 1) % 32 == 0) {
         fputc('\n', f);
      } else if ((i + 1) % 4 == 0) {
         fputc(' ', f);
      }
   }
   if (fclose(f) != 0) {
      fprintf(stderr, "gen_nicinfo: %s: %s\n", path, strerror(errno));
      exit(1);
   }
   printf("%s.hex: %u bytes\n", name, len);
}

static void
write_v3(const char *dir, const char *name, NicInfoV3 *info)
{
   GuestNicProto msg;

   msg.ver = NIC_INFO_V3;
   msg.GuestNicProto_u.nicInfoV3 = info;
   write_hex(dir, name, &msg);
}

static void
write_v2(const char *dir, const char *name, GuestNicList *list)
{
   GuestNicProto msg;

   msg.ver = NIC_INFO_V2;
   msg.GuestNicProto_u.nicsV2 = list;
   write_hex(dir, name, &msg);
}

int
main(int argc, char **argv)
{
   const char *dir;
   NicInfoV3 *full, *many;

   if (argc != 2) {
      fprintf(stderr, "usage: gen_nicinfo OUTDIR\n");
      return 2;
   }
   dir = argv[1];
   full = v3_full();
   many = v3_many_ips();

   write_v3(dir, "v3-full", full);
   write_v3(dir, "v3-bare-nic", v3_bare_nic());
   write_v3(dir, "v3-no-nics", xcalloc(1, sizeof(NicInfoV3)));
   write_v3(dir, "v3-null", NULL);
   write_v3(dir, "v3-many-ips", many);
   write_v3(dir, "v3-many-ips-type9", cap_64(many));
   write_v2(dir, "v2-full", to_v2(cap_64(full)));
   write_v2(dir, "v2-many-ips", to_v2(cap_64(many)));
   write_v2(dir, "v2-bare-nic", to_v2(v3_bare_nic()));
   return 0;
}
