//! NICs, addresses and routes from rtnetlink: one dump each (plus the rule dump that names the
//! routing tables), read message by message from one reused receive buffer.
//!
//! Only what is reported is built: a link message gives its index, flags, name and hardware
//! address, and is kept only while its priority class has room; an address or route message is
//! looked at only when its interface is one of the (at most 16) chosen NICs. The link dump stops
//! as soon as no later link can be reported (the primary class is full, or there are no primary
//! patterns and the normal class is full), the route dump once both route caps are filled.
//!
//! # IP origin and status (vmtoolsd leaves both unset on Linux)
//!
//! | address | origin |
//! | --- | --- |
//! | IPv4, finite valid lifetime (what DHCP clients add) | DHCP |
//! | IPv4, permanent | MANUAL |
//! | IPv6 link-local (`fe80::/10`) | LINKLAYER |
//! | IPv6 with `IFA_F_TEMPORARY` (privacy extensions) | RANDOM |
//! | IPv6 the kernel made from a router advertisement (`IFA_PROTO` = kernel RA, or, on kernels without `IFA_PROTO`, a finite lifetime on a prefix shorter than /128) | LINKLAYER |
//! | IPv6, finite lifetime, /128 (what DHCPv6 clients add) | DHCP |
//! | IPv6, permanent | MANUAL |
//!
//! Status, first match: `IFA_F_DADFAILED` DUPLICATE, `IFA_F_TENTATIVE` TENTATIVE,
//! `IFA_F_OPTIMISTIC` OPTIMISTIC, `IFA_F_DEPRECATED` or a preferred lifetime of 0 DEPRECATED,
//! else PREFERRED.

use super::xdr::{self, IpEntry, Nic, NicInfo, Route, TypedIp};
use super::NicFilter;
use netlink_packet_core::{
    NlaBuffer, NlasIterator, NLMSG_DONE, NLMSG_ERROR, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::address::AddressHeader;
use netlink_packet_route::link::LinkHeader;
use netlink_packet_route::route::RouteHeader;
use netlink_packet_route::rule::RuleHeader;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// Message types (linux/rtnetlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWRULE: u16 = 32;
const RTM_GETRULE: u16 = 34;

// Fixed headers before the attributes: ifinfomsg, ifaddrmsg, rtmsg, fib_rule_hdr.
const IFINFOMSG_LEN: usize = 16;
const IFADDRMSG_LEN: usize = 8;
const RTMSG_LEN: usize = 12;
const FIB_RULE_HDR_LEN: usize = 12;

// Attributes (linux/if_link.h, if_addr.h, rtnetlink.h, fib_rules.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_EXT_MASK: u16 = 29;
const RTEXT_FILTER_SKIP_STATS: u32 = 1 << 3;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_CACHEINFO: u16 = 6;
const IFA_FLAGS: u16 = 8;
const IFA_PROTO: u16 = 11;
const IFAPROT_KERNEL_RA: u8 = 2;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_PRIORITY: u16 = 6;
const RTA_TABLE: u16 = 15;
const FRA_TABLE: u16 = 15;

// ifa_flags (linux/if_addr.h).
const IFA_F_TEMPORARY: u32 = 0x01;
const IFA_F_OPTIMISTIC: u32 = 0x04;
const IFA_F_DADFAILED: u32 = 0x08;
const IFA_F_DEPRECATED: u32 = 0x20;
const IFA_F_TENTATIVE: u32 = 0x40;
/// `INFINITY_LIFE_TIME`: a lifetime that never runs out.
const INFINITY_LIFE_TIME: u32 = u32::MAX;

const IFF_LOOPBACK: u32 = 0x8;
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
const RTN_UNICAST: u8 = 1;
const RTM_F_CLONED: u32 = 0x200;
const FR_ACT_TO_TBL: u8 = 1;
/// `RT_TABLE_MAIN`: the table of a route or rule without a table attribute, and the one used
/// when no rule can be read (a kernel without policy routing).
const RT_TABLE_MAIN: u32 = 254;
/// `RT_TABLE_LOCAL`.
const RT_TABLE_LOCAL: u32 = 255;
/// `RT_TABLE_COMPAT`: the header's table byte when the id needs `RTA_TABLE`.
const RT_TABLE_COMPAT: u8 = 252;
/// Tables kept from the rules, at most: a bound on the per-table route requests.
const MAX_RULE_TABLES: usize = 64;

/// One receive buffer, reused: the kernel fills a dump chunk up to the buffer's size (at most
/// 32 KiB per chunk), so this bounds the memory a gather touches whatever the interface count.
const RECV_BUFFER: usize = 32 * 1024;

/// Where a NIC goes in the order (`NicInfoPriority`, lib/nicInfo/nicInfo.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Priority {
    /// Matches `primary_nics`: first.
    Primary,
    /// Neither list.
    Normal,
    /// Matches `low_priority_nics`: last.
    Low,
}

/// One chosen interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChosenLink {
    /// Kernel index.
    pub index: u32,
    /// Name.
    pub name: String,
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
}

/// The links worth reporting, by class, each class capped at the NIC limit.
#[derive(Debug, Default)]
pub struct LinkChoice {
    classes: [Vec<ChosenLink>; 3],
    cap: usize,
    have_primary_patterns: bool,
    /// Every primary NIC was asked for by name already: the dump need not find more.
    primaries_resolved: bool,
}

impl LinkChoice {
    /// An empty choice for `filter`.
    pub fn new(filter: &NicFilter) -> LinkChoice {
        LinkChoice {
            classes: Default::default(),
            cap: filter.max_nics.min(xdr::MAX_NICS),
            have_primary_patterns: !filter.primary.is_empty(),
            primaries_resolved: false,
        }
    }

    /// The primary patterns are all names, and each was asked for directly.
    pub fn primaries_resolved(&mut self) {
        self.primaries_resolved = true;
    }

    /// True once no later link can make it into the report.
    pub fn full(&self) -> bool {
        let [primary, normal, _] = &self.classes;
        primary.len() >= self.cap
            || ((!self.have_primary_patterns || self.primaries_resolved)
                && normal.len() >= self.cap)
    }

    /// Looks at one `RTM_NEWLINK` payload; keeps the link when it is reportable and its class
    /// has room.
    pub fn offer(&mut self, payload: &[u8], filter: &NicFilter) {
        let Ok(header) = LinkHeader::parse(payload) else {
            return;
        };
        if header.flags.bits() & IFF_LOOPBACK != 0 {
            return;
        }
        let Some(attrs) = payload.get(IFINFOMSG_LEN..) else {
            return;
        };
        let (mut name, mut mac) = (None, None);
        for nla in NlasIterator::new(attrs) {
            let Ok(nla) = nla else { break };
            match nla.kind() {
                IFLA_IFNAME => name = Some(value_of(nla)),
                IFLA_ADDRESS => mac = Some(value_of(nla)),
                _ => {}
            }
        }
        let (Some(name), Some(mac)) = (name, mac) else {
            return;
        };
        // An Ethernet address, not all zero: what the VMX can match to a virtual NIC.
        if mac.len() != 6 || mac.iter().all(|&b| b == 0) {
            return;
        }
        let name = name.strip_suffix(b"\0").unwrap_or(name);
        let Ok(name) = std::str::from_utf8(name) else {
            return;
        };
        if filter.excludes(name) {
            return;
        }
        let class = match filter.priority(name) {
            Priority::Primary => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        };
        if self.classes[class].len() >= self.cap
            || (class == 0 && self.classes[0].iter().any(|l| l.index == header.index))
        {
            return;
        }
        self.classes[class].push(ChosenLink {
            index: header.index,
            name: name.to_string(),
            mac: format_mac(mac),
        });
    }

    /// Primary, normal, low, capped at the NIC limit.
    pub fn into_ordered(self) -> Vec<ChosenLink> {
        let cap = self.cap;
        let mut out: Vec<ChosenLink> = self.classes.into_iter().flatten().collect();
        out.truncate(cap);
        out
    }
}

/// An attribute's value, borrowed from the message rather than from the attribute view.
fn value_of(nla: NlaBuffer<&[u8]>) -> &[u8] {
    let len = nla.value_length();
    let inner = nla.into_inner();
    inner.get(4..4 + len).unwrap_or(&[])
}

fn format_mac(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(17);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        let _ = write!(s, "{x:02x}");
    }
    s
}

fn ip_from(family: u8, v: &[u8]) -> Option<IpAddr> {
    match family {
        AF_INET => <[u8; 4]>::try_from(v)
            .ok()
            .map(|b| IpAddr::V4(Ipv4Addr::from(b))),
        AF_INET6 => <[u8; 16]>::try_from(v)
            .ok()
            .map(|b| IpAddr::V6(Ipv6Addr::from(b))),
        _ => None,
    }
}

fn u32_of(v: &[u8]) -> Option<u32> {
    Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))
}

/// Origin and status from the kernel's view of an address (see the module's table).
pub fn origin_status(
    ip: IpAddr,
    prefix_len: u8,
    flags: u32,
    preferred_lft: u32,
    valid_lft: u32,
    proto: Option<u8>,
) -> (i32, i32) {
    let finite = valid_lft != INFINITY_LIFE_TIME;
    let origin = match ip {
        IpAddr::V4(_) if finite => xdr::origin::DHCP,
        IpAddr::V4(_) => xdr::origin::MANUAL,
        IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80 => xdr::origin::LINKLAYER,
        IpAddr::V6(_) if flags & IFA_F_TEMPORARY != 0 => xdr::origin::RANDOM,
        IpAddr::V6(_) if proto == Some(IFAPROT_KERNEL_RA) => xdr::origin::LINKLAYER,
        IpAddr::V6(_) if finite && proto.is_none() && prefix_len < 128 => xdr::origin::LINKLAYER,
        IpAddr::V6(_) if finite => xdr::origin::DHCP,
        IpAddr::V6(_) => xdr::origin::MANUAL,
    };
    let status = if flags & IFA_F_DADFAILED != 0 {
        xdr::status::DUPLICATE
    } else if flags & IFA_F_TENTATIVE != 0 {
        xdr::status::TENTATIVE
    } else if flags & IFA_F_OPTIMISTIC != 0 {
        xdr::status::OPTIMISTIC
    } else if flags & IFA_F_DEPRECATED != 0 || preferred_lft == 0 {
        xdr::status::DEPRECATED
    } else {
        xdr::status::PREFERRED
    };
    (origin, status)
}

/// Adds one `RTM_NEWADDR` payload to its NIC, when the NIC is one of `nics`.
pub fn offer_addr(payload: &[u8], links: &[ChosenLink], nics: &mut [Nic]) {
    let Ok(h) = AddressHeader::parse(payload) else {
        return;
    };
    let Some(i) = links.iter().position(|l| l.index == h.index) else {
        return;
    };
    let Some(nic) = nics.get_mut(i) else { return };
    if nic.ips.len() >= xdr::MAX_IPS {
        return;
    }
    let Some(attrs) = payload.get(IFADDRMSG_LEN..) else {
        return;
    };
    let family = u8::from(h.family);
    let mut flags = u32::from(h.flags.bits());
    let (mut local, mut address, mut proto) = (None, None, None);
    let (mut preferred, mut valid) = (INFINITY_LIFE_TIME, INFINITY_LIFE_TIME);
    for nla in NlasIterator::new(attrs) {
        let Ok(nla) = nla else { break };
        let v = nla.value();
        match nla.kind() {
            IFA_LOCAL => local = ip_from(family, v),
            IFA_ADDRESS => address = ip_from(family, v),
            IFA_FLAGS => flags = u32_of(v).unwrap_or(flags),
            IFA_PROTO => proto = v.first().copied(),
            IFA_CACHEINFO => {
                // struct ifa_cacheinfo: ifa_prefered, ifa_valid, cstamp, tstamp.
                if let (Some(p), Some(val)) = (u32_of(v), v.get(4..).and_then(u32_of)) {
                    preferred = p;
                    valid = val;
                }
            }
            _ => {}
        }
    }
    // IFA_ADDRESS is the peer on a point-to-point IPv4 link; IFA_LOCAL is ours.
    let Some(ip) = local.or(address) else { return };
    let (origin, status) = origin_status(ip, h.prefix_len, flags, preferred, valid, proto);
    nic.ips.push(IpEntry {
        addr: ip.into(),
        prefix_len: u32::from(h.prefix_len),
        origin: Some(origin),
        status: Some(status),
    });
}

/// Route caps and counts.
#[derive(Debug)]
pub struct RouteCaps {
    /// IPv4 routes still wanted.
    pub v4_left: usize,
    /// IPv6 routes still wanted.
    pub v6_left: usize,
}

impl RouteCaps {
    /// From the filter: IPv4 first, then IPv6, never more than `NICINFO_MAX_ROUTES` in all
    /// (RecordRoutingInfo, lib/nicInfo/nicInfoPosix.c).
    pub fn new(filter: &NicFilter) -> RouteCaps {
        RouteCaps {
            v4_left: filter.max_ipv4_routes.min(xdr::MAX_ROUTES),
            v6_left: filter.max_ipv6_routes.min(xdr::MAX_ROUTES),
        }
    }

    /// True when no more routes are wanted.
    pub fn full(&self, routes: &[Route]) -> bool {
        routes.len() >= xdr::MAX_ROUTES || (self.v4_left == 0 && self.v6_left == 0)
    }
}

/// Adds one `RTM_NEWROUTE` payload when it is a unicast route of a table the lookup uses
/// through one of the chosen NICs and its family still has room.
pub fn offer_route(
    payload: &[u8],
    tables: &[u32],
    links: &[ChosenLink],
    caps: &mut RouteCaps,
    routes: &mut Vec<Route>,
) {
    if caps.full(routes) {
        return;
    }
    // The family is the first byte: skip a full family without parsing further.
    let left = match payload.first() {
        Some(&AF_INET) => &mut caps.v4_left,
        Some(&AF_INET6) => &mut caps.v6_left,
        _ => return,
    };
    if *left == 0 {
        return;
    }
    let Ok(h) = RouteHeader::parse(payload) else {
        return;
    };
    if u8::from(h.kind) != RTN_UNICAST || h.flags.bits() & RTM_F_CLONED != 0 {
        return;
    }
    let Some(attrs) = payload.get(RTMSG_LEN..) else {
        return;
    };
    let family = u8::from(h.address_family);
    let mut table = u32::from(h.table);
    let (mut dest, mut gateway, mut oif, mut metric) = (None, None, None, 0);
    for nla in NlasIterator::new(attrs) {
        let Ok(nla) = nla else { break };
        let v = nla.value();
        match nla.kind() {
            RTA_DST => dest = ip_from(family, v),
            RTA_GATEWAY => gateway = ip_from(family, v),
            RTA_OIF => oif = u32_of(v),
            RTA_PRIORITY => metric = u32_of(v).unwrap_or(0),
            RTA_TABLE => table = u32_of(v).unwrap_or(table),
            _ => {}
        }
    }
    if !tables.contains(&table) {
        return;
    }
    let Some(nic) = oif.and_then(|o| links.iter().position(|l| l.index == o)) else {
        return;
    };
    let dest = dest.unwrap_or(match family {
        AF_INET => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        _ => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    });
    *left -= 1;
    routes.push(Route {
        dest: dest.into(),
        prefix_len: u32::from(h.destination_prefix_length),
        next_hop: gateway.map(TypedIp::from),
        if_index: nic as u32,
        kind: if gateway.is_some() {
            xdr::route_type::REMOTE
        } else {
            xdr::route_type::LOCAL
        },
        metric,
    });
}

/// Adds the table one `RTM_NEWRULE` payload sends lookups to.
pub fn offer_rule(payload: &[u8], tables: &mut Vec<u32>) {
    let Ok(h) = RuleHeader::parse(payload) else {
        return;
    };
    if u8::from(h.action) != FR_ACT_TO_TBL {
        return;
    }
    let mut table = u32::from(h.table);
    if let Some(attrs) = payload.get(FIB_RULE_HDR_LEN..) {
        for nla in NlasIterator::new(attrs) {
            let Ok(nla) = nla else { break };
            if nla.kind() == FRA_TABLE {
                table = u32_of(nla.value()).unwrap_or(table);
            }
        }
    }
    if !tables.contains(&table) && tables.len() < MAX_RULE_TABLES {
        tables.push(table);
    }
}

/// A failed rtnetlink dump.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Socket trouble.
    #[error("rtnetlink {what}: {source}")]
    Io {
        /// Which dump.
        what: &'static str,
        /// Cause.
        source: std::io::Error,
    },
    /// The kernel answered with an error.
    #[error("rtnetlink {what}: kernel error {errno}")]
    Kernel {
        /// Which dump.
        what: &'static str,
        /// Negative errno.
        errno: i32,
    },
}

/// One request: its name (for errors), message type, the fixed header's bytes, attributes
/// after it, the message type of the answers, and whether it is a dump (else one answer).
struct Request<'a> {
    what: &'static str,
    kind: u16,
    header: &'a [u8],
    attrs: &'a [u8],
    want: u16,
    dump: bool,
}

/// An rtnetlink socket with its one receive buffer.
struct Rtnl {
    socket: Socket,
    buf: Vec<u8>,
    seq: u32,
}

impl Rtnl {
    /// A socket; `strict` asks the kernel to filter dumps by the header's fields
    /// (`NETLINK_GET_STRICT_CHK`, Linux 4.20), and fails when it cannot.
    fn open(what: &'static str, strict: bool) -> Result<Rtnl, NetlinkError> {
        let io = |source| NetlinkError::Io { what, source };
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(io)?;
        socket.bind_auto().map_err(io)?;
        socket.connect(&SocketAddr::new(0, 0)).map_err(io)?;
        if strict {
            socket.set_netlink_get_strict_chk(true).map_err(io)?;
        }
        Ok(Rtnl {
            socket,
            buf: Vec::with_capacity(RECV_BUFFER),
            seq: 0,
        })
    }

    /// Sends `r` and hands each answer's payload to `each` until the dump ends or `each`
    /// returns false; then the rest of a dump is unread and the socket must not be reused.
    fn run(
        &mut self,
        r: Request<'_>,
        mut each: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), NetlinkError> {
        let what = r.what;
        let io = |source| NetlinkError::Io { what, source };
        self.seq = self.seq.wrapping_add(1);
        let len = 16 + r.header.len() + r.attrs.len();
        let flags = if r.dump {
            NLM_F_REQUEST | NLM_F_DUMP
        } else {
            NLM_F_REQUEST
        };
        let mut req = Vec::with_capacity(len);
        req.extend_from_slice(&(len as u32).to_ne_bytes());
        req.extend_from_slice(&r.kind.to_ne_bytes());
        req.extend_from_slice(&flags.to_ne_bytes());
        req.extend_from_slice(&self.seq.to_ne_bytes());
        req.extend_from_slice(&0u32.to_ne_bytes());
        req.extend_from_slice(r.header);
        req.extend_from_slice(r.attrs);
        self.socket.send(&req, 0).map_err(io)?;
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0).map_err(io)?;
            let mut off = 0;
            while off + 16 <= n {
                let msg = &self.buf[off..n];
                let mlen = u32::from_ne_bytes([msg[0], msg[1], msg[2], msg[3]]) as usize;
                if mlen < 16 || mlen > msg.len() {
                    return Ok(());
                }
                let kind = u16::from_ne_bytes([msg[4], msg[5]]);
                let payload = &msg[16..mlen];
                match kind {
                    NLMSG_DONE => return Ok(()),
                    NLMSG_ERROR => {
                        let errno = u32_of(payload).map(|e| e as i32).unwrap_or(-1);
                        if errno != 0 {
                            return Err(NetlinkError::Kernel { what, errno });
                        }
                        return Ok(());
                    }
                    k if k == r.want && !each(payload) => return Ok(()),
                    _ => {}
                }
                off += (mlen + 3) & !3;
            }
            if n == 0 || !r.dump {
                return Ok(());
            }
        }
    }
}

/// `len`, `kind`, value, padded: one attribute of a request.
fn attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    out.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(value);
    while out.len() % 4 != 0 {
        out.push(0);
    }
}

/// The tables the lookup consults, from the rule dump; the main table alone when there are
/// no rules to read. The local table (255) holds the host's own and broadcast addresses, never
/// a unicast route, and is left out.
fn lookup_tables(rtnl: &mut Rtnl) -> Vec<u32> {
    let mut tables = Vec::new();
    let rules = rtnl.run(
        Request {
            what: "rules",
            kind: RTM_GETRULE,
            header: &[0; FIB_RULE_HDR_LEN],
            attrs: &[],
            want: RTM_NEWRULE,
            dump: true,
        },
        |p| {
            offer_rule(p, &mut tables);
            true
        },
    );
    tables.retain(|&t| t != RT_TABLE_LOCAL);
    if rules.is_err() || tables.is_empty() {
        tables = vec![RT_TABLE_MAIN];
    }
    tables
}

/// A primary pattern without wildcards names one interface, which a direct request finds
/// without walking the others.
fn is_literal(pattern: &str) -> bool {
    !pattern.contains(['*', '?'])
}

/// NICs (ordered, capped), their addresses, and the routes through them.
///
/// With the kernel's dump filters (Linux 4.20 on): the link dump, stopped once no later link
/// can be reported (named primary NICs are asked for directly first, so only wildcard primary
/// patterns make it read every link); then per chosen NIC one address dump and one route dump
/// per table, each filtered in the kernel, so the cost follows the 16 reported NICs, not the
/// thousands present. Without them, one unfiltered dump each.
pub fn gather_nics(filter: &NicFilter) -> Result<NicInfo, NetlinkError> {
    let strict = Rtnl::open("addresses", true);
    let mut choice = LinkChoice::new(filter);
    let mut link_attrs = Vec::with_capacity(8);
    // Leave the link statistics out of the answers.
    attr(
        &mut link_attrs,
        IFLA_EXT_MASK,
        &RTEXT_FILTER_SKIP_STATS.to_ne_bytes(),
    );
    let literal_primaries = filter.primary.iter().all(|p| is_literal(p));
    if literal_primaries && !filter.primary.is_empty() {
        let mut get = Rtnl::open("links", false)?;
        for name in &filter.primary {
            let mut attrs = link_attrs.clone();
            let mut n = name.as_bytes().to_vec();
            n.push(0);
            attr(&mut attrs, IFLA_IFNAME, &n);
            // An absent name answers ENODEV: nothing to add.
            let _ = get.run(
                Request {
                    what: "links",
                    kind: RTM_GETLINK,
                    header: &[0; IFINFOMSG_LEN],
                    attrs: &attrs,
                    want: RTM_NEWLINK,
                    dump: false,
                },
                |p| {
                    choice.offer(p, filter);
                    true
                },
            );
        }
        choice.primaries_resolved();
    }
    Rtnl::open("links", false)?.run(
        Request {
            what: "links",
            kind: RTM_GETLINK,
            header: &[0; IFINFOMSG_LEN],
            attrs: &link_attrs,
            want: RTM_NEWLINK,
            dump: true,
        },
        |p| {
            choice.offer(p, filter);
            !choice.full()
        },
    )?;
    let links = choice.into_ordered();
    let mut nics: Vec<Nic> = links
        .iter()
        .map(|l| Nic {
            mac: l.mac.clone(),
            ..Nic::default()
        })
        .collect();
    let mut info = NicInfo::default();
    if links.is_empty() {
        return Ok(info);
    }
    let mut caps = RouteCaps::new(filter);
    match strict {
        Ok(mut rtnl) => {
            for l in &links {
                let mut header = [0u8; IFADDRMSG_LEN];
                header[4..8].copy_from_slice(&l.index.to_ne_bytes());
                rtnl.run(
                    Request {
                        what: "addresses",
                        kind: RTM_GETADDR,
                        header: &header,
                        attrs: &[],
                        want: RTM_NEWADDR,
                        dump: true,
                    },
                    |p| {
                        offer_addr(p, &links, &mut nics);
                        true
                    },
                )?;
            }
            if !caps.full(&info.routes) {
                let tables = lookup_tables(&mut rtnl);
                'nics: for l in &links {
                    for &table in &tables {
                        if caps.full(&info.routes) {
                            break 'nics;
                        }
                        let mut header = [0u8; RTMSG_LEN];
                        header[4] = table.min(u32::from(RT_TABLE_COMPAT)) as u8;
                        header[7] = RTN_UNICAST;
                        let mut attrs = Vec::with_capacity(16);
                        attr(&mut attrs, RTA_TABLE, &table.to_ne_bytes());
                        attr(&mut attrs, RTA_OIF, &l.index.to_ne_bytes());
                        let routes = &mut info.routes;
                        rtnl.run(
                            Request {
                                what: "routes",
                                kind: RTM_GETROUTE,
                                header: &header,
                                attrs: &attrs,
                                want: RTM_NEWROUTE,
                                dump: true,
                            },
                            |p| {
                                offer_route(p, &tables, &links, &mut caps, routes);
                                true
                            },
                        )?;
                    }
                }
            }
        }
        Err(e) => {
            tracing::debug!(error = %e, "no kernel dump filters; reading whole dumps");
            let mut rtnl = Rtnl::open("addresses", false)?;
            rtnl.run(
                Request {
                    what: "addresses",
                    kind: RTM_GETADDR,
                    header: &[0; IFADDRMSG_LEN],
                    attrs: &[],
                    want: RTM_NEWADDR,
                    dump: true,
                },
                |p| {
                    offer_addr(p, &links, &mut nics);
                    true
                },
            )?;
            if !caps.full(&info.routes) {
                let tables = lookup_tables(&mut rtnl);
                let routes = &mut info.routes;
                rtnl.run(
                    Request {
                        what: "routes",
                        kind: RTM_GETROUTE,
                        header: &[0; RTMSG_LEN],
                        attrs: &[],
                        want: RTM_NEWROUTE,
                        dump: true,
                    },
                    |p| {
                        offer_route(p, &tables, &links, &mut caps, routes);
                        !caps.full(routes)
                    },
                )?;
            }
        }
    }
    info.nics = nics;
    Ok(info)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn origins_and_statuses() {
        let v4: IpAddr = "192.0.2.1".parse().unwrap();
        let g6: IpAddr = "2001:db8::5".parse().unwrap();
        let ll: IpAddr = "fe80::1".parse().unwrap();
        let inf = INFINITY_LIFE_TIME;
        use xdr::{origin as o, status as s};
        assert_eq!(
            origin_status(v4, 24, 0x80, inf, inf, None),
            (o::MANUAL, s::PREFERRED)
        );
        assert_eq!(
            origin_status(v4, 24, 0, 300, 600, None),
            (o::DHCP, s::PREFERRED)
        );
        assert_eq!(
            origin_status(v4, 24, 0, 0, 600, None),
            (o::DHCP, s::DEPRECATED)
        );
        assert_eq!(
            origin_status(ll, 64, 0x80, inf, inf, None),
            (o::LINKLAYER, s::PREFERRED)
        );
        assert_eq!(
            origin_status(g6, 64, 0x01, 100, 200, None),
            (o::RANDOM, s::PREFERRED)
        );
        assert_eq!(
            origin_status(g6, 64, 0, 100, 200, Some(2)),
            (o::LINKLAYER, s::PREFERRED)
        );
        assert_eq!(
            origin_status(g6, 64, 0, 100, 200, None),
            (o::LINKLAYER, s::PREFERRED)
        );
        assert_eq!(
            origin_status(g6, 128, 0, 100, 200, None),
            (o::DHCP, s::PREFERRED)
        );
        assert_eq!(
            origin_status(g6, 64, 0x80, inf, inf, None),
            (o::MANUAL, s::PREFERRED)
        );
        assert_eq!(origin_status(g6, 64, 0x40, inf, inf, None).1, s::TENTATIVE);
        assert_eq!(origin_status(g6, 64, 0x48, inf, inf, None).1, s::DUPLICATE);
        assert_eq!(origin_status(g6, 64, 0x20, inf, inf, None).1, s::DEPRECATED);
        assert_eq!(origin_status(g6, 64, 0x04, inf, inf, None).1, s::OPTIMISTIC);
    }

    fn link_msg(index: u32, name: &str, mac: &[u8], flags: u32) -> Vec<u8> {
        let mut m = vec![0u8; IFINFOMSG_LEN];
        m[4..8].copy_from_slice(&index.to_ne_bytes());
        m[8..12].copy_from_slice(&flags.to_ne_bytes());
        let mut attr = |kind: u16, v: &[u8]| {
            m.extend_from_slice(&((4 + v.len()) as u16).to_ne_bytes());
            m.extend_from_slice(&kind.to_ne_bytes());
            m.extend_from_slice(v);
            while m.len() % 4 != 0 {
                m.push(0);
            }
        };
        let mut n = name.as_bytes().to_vec();
        n.push(0);
        attr(IFLA_IFNAME, &n);
        attr(IFLA_ADDRESS, mac);
        m
    }

    #[test]
    fn links_are_ordered_by_priority_and_capped_after_ordering() {
        let filter = NicFilter {
            primary: vec!["ens2*".into()],
            low_priority: vec!["eth*".into()],
            max_nics: 3,
            ..NicFilter::default()
        };
        let mut c = LinkChoice::new(&filter);
        let mac = |i: u8| [0, 0x50, 0x56, 0, 0, i];
        for (i, name) in ["eth0", "eth1", "lo", "ens1", "docker0", "ens9", "ens20"]
            .iter()
            .enumerate()
        {
            let flags = if *name == "lo" { IFF_LOOPBACK } else { 0 };
            c.offer(
                &link_msg(i as u32 + 1, name, &mac(i as u8 + 1), flags),
                &filter,
            );
        }
        let names: Vec<String> = c.into_ordered().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["ens20", "ens1", "ens9"]);
    }

    #[test]
    fn choice_is_full_early_only_when_order_allows() {
        let mut filter = NicFilter {
            max_nics: 1,
            ..NicFilter::default()
        };
        let mut c = LinkChoice::new(&filter);
        c.offer(&link_msg(2, "eth0", &[0, 1, 2, 3, 4, 5], 0), &filter);
        assert!(
            c.full(),
            "kernel order and one normal NIC: nothing later can come first"
        );
        filter.primary = vec!["ens*".into()];
        let mut c = LinkChoice::new(&filter);
        c.offer(&link_msg(2, "eth0", &[0, 1, 2, 3, 4, 5], 0), &filter);
        assert!(!c.full(), "a primary NIC may still follow");
        c.offer(&link_msg(3, "ens1", &[0, 1, 2, 3, 4, 6], 0), &filter);
        assert!(c.full());
    }

    proptest! {
        #[test]
        fn parsers_take_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let filter = NicFilter::default();
            let mut c = LinkChoice::new(&filter);
            c.offer(&bytes, &filter);
            let links = vec![ChosenLink { index: 0, name: "x".into(), mac: String::new() }];
            let mut nics = vec![Nic::default()];
            offer_addr(&bytes, &links, &mut nics);
            let mut caps = RouteCaps { v4_left: 5, v6_left: 5 };
            let mut routes = Vec::new();
            offer_route(&bytes, &[0, 254], &links, &mut caps, &mut routes);
            prop_assert!(routes.len() <= 1);
            let mut tables = Vec::new();
            offer_rule(&bytes, &mut tables);
            prop_assert!(tables.len() <= 1);
        }
    }
}
