//! XDR (RFC 4506) for guest NIC information: the `NicInfoV3` and `GuestNicList` (v2) records of
//! `lib/guestRpc/nicinfo.x`, wrapped in its `GuestNicProto` union.
//!
//! The encoder builds what `SetGuestInfo  10 ` (and its v2 fallbacks) carry; the decoder is the
//! VMX's side, used by the simulator and fuzzed: every array is bounded by the limit nicinfo.x
//! declares for it, every length is checked against the bytes left before anything is allocated.

use std::net::IpAddr;

/// `NICINFO_MAX_NICS`.
pub const MAX_NICS: usize = 16;
/// `NICINFO_MAX_IPS`.
pub const MAX_IPS: usize = 2048;
/// `INFO_IPADDRESS_V2_MAX_IPS` (`lib/include/guestInfo.h`): the cap when v3 travels as type 9.
pub const V2_MAX_IPS: usize = 64;
/// `NICINFO_MAX_ROUTES`.
pub const MAX_ROUTES: usize = 100;
/// `NICINFO_MAC_LEN`.
pub const MAC_LEN: usize = 18;
/// `INET_ADDRESS_MAX_LEN`.
pub const INET_ADDRESS_MAX_LEN: usize = 255;
/// `DNSINFO_MAX_ADDRLEN`.
pub const DNS_MAX_ADDRLEN: usize = 255;
/// `DNSINFO_MAX_SUFFIXES`.
pub const DNS_MAX_SUFFIXES: usize = 10;
/// `DNSINFO_MAX_SERVERS`.
pub const DNS_MAX_SERVERS: usize = 16;
/// `DHCP_MAX_CONFIG_SIZE`.
pub const DHCP_MAX_CONFIG_SIZE: usize = 16384;
/// `NICINFO_MAX_IP_LEN` (v2 fixed-size address strings).
pub const V2_IP_LEN: usize = 64;

/// `InetAddressType`.
#[allow(missing_docs)]
pub mod addr_type {
    pub const UNKNOWN: i32 = 0;
    pub const IPV4: i32 = 1;
    pub const IPV6: i32 = 2;
    pub const IPV4Z: i32 = 3;
    pub const IPV6Z: i32 = 4;
    pub const DNS: i32 = 16;
}

/// `IpAddressOrigin`.
#[allow(missing_docs)]
pub mod origin {
    pub const OTHER: i32 = 1;
    pub const MANUAL: i32 = 2;
    pub const DHCP: i32 = 4;
    pub const LINKLAYER: i32 = 5;
    pub const RANDOM: i32 = 6;
}

/// `IpAddressStatus`.
#[allow(missing_docs)]
pub mod status {
    pub const PREFERRED: i32 = 1;
    pub const DEPRECATED: i32 = 2;
    pub const INVALID: i32 = 3;
    pub const INACCESSIBLE: i32 = 4;
    pub const UNKNOWN: i32 = 5;
    pub const TENTATIVE: i32 = 6;
    pub const DUPLICATE: i32 = 7;
    pub const OPTIMISTIC: i32 = 8;
}

/// `InetCidrRouteType`.
#[allow(missing_docs)]
pub mod route_type {
    pub const OTHER: i32 = 1;
    pub const REJECT: i32 = 2;
    pub const LOCAL: i32 = 3;
    pub const REMOTE: i32 = 4;
}

/// `TypedIpAddress`: a type and the raw address bytes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct TypedIp {
    /// An [`addr_type`] value.
    pub kind: i32,
    /// 4 or 16 bytes for IPv4/IPv6.
    pub addr: Vec<u8>,
}

impl From<IpAddr> for TypedIp {
    fn from(ip: IpAddr) -> TypedIp {
        match ip {
            IpAddr::V4(a) => TypedIp {
                kind: addr_type::IPV4,
                addr: a.octets().to_vec(),
            },
            IpAddr::V6(a) => TypedIp {
                kind: addr_type::IPV6,
                addr: a.octets().to_vec(),
            },
        }
    }
}

impl TypedIp {
    /// The address, when it is a plain IPv4 or IPv6 one.
    pub fn ip(&self) -> Option<IpAddr> {
        match (self.kind, self.addr.len()) {
            (addr_type::IPV4, 4) => {
                let b: [u8; 4] = self.addr[..].try_into().ok()?;
                Some(IpAddr::from(b))
            }
            (addr_type::IPV6, 16) => {
                let b: [u8; 16] = self.addr[..].try_into().ok()?;
                Some(IpAddr::from(b))
            }
            _ => None,
        }
    }
}

/// `IpAddressEntry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpEntry {
    /// The address.
    pub addr: TypedIp,
    /// Prefix length.
    pub prefix_len: u32,
    /// An [`origin`] value, when known.
    pub origin: Option<i32>,
    /// A [`status`] value, when known.
    pub status: Option<i32>,
}

/// `DnsConfigInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DnsConfig {
    /// Host name.
    pub host_name: Option<String>,
    /// Domain name.
    pub domain_name: Option<String>,
    /// Name servers.
    pub servers: Vec<TypedIp>,
    /// Search suffixes.
    pub search: Vec<String>,
}

/// `WinsConfigInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct WinsConfig {
    /// Primary server.
    pub primary: TypedIp,
    /// Secondary server.
    pub secondary: TypedIp,
}

/// `DhcpConfigInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DhcpConfig {
    /// DHCP in use.
    pub enabled: bool,
    /// Settings text.
    pub settings: String,
}

/// `GuestNicV3`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Nic {
    /// `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Addresses.
    pub ips: Vec<IpEntry>,
    /// Per-NIC DNS.
    pub dns: Option<DnsConfig>,
    /// Per-NIC WINS.
    pub wins: Option<WinsConfig>,
    /// DHCPv4.
    pub dhcp4: Option<DhcpConfig>,
    /// DHCPv6.
    pub dhcp6: Option<DhcpConfig>,
}

/// `InetCidrRouteEntry`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Destination network.
    pub dest: TypedIp,
    /// Its prefix length.
    pub prefix_len: u32,
    /// Gateway, for routes through one.
    pub next_hop: Option<TypedIp>,
    /// Index into [`NicInfo::nics`].
    pub if_index: u32,
    /// A [`route_type`] value.
    pub kind: i32,
    /// Metric.
    pub metric: u32,
}

/// `NicInfoV3`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct NicInfo {
    /// NICs, at most [`MAX_NICS`].
    pub nics: Vec<Nic>,
    /// Routes, at most [`MAX_ROUTES`].
    pub routes: Vec<Route>,
    /// Global DNS.
    pub dns: Option<DnsConfig>,
    /// Global WINS.
    pub wins: Option<WinsConfig>,
    /// DHCPv4.
    pub dhcp4: Option<DhcpConfig>,
    /// DHCPv6.
    pub dhcp6: Option<DhcpConfig>,
}

/// `NicInfoVersion`.
pub const NIC_INFO_V2: i32 = 2;
/// `NicInfoVersion`.
pub const NIC_INFO_V3: i32 = 3;

// ---------------------------------------------------------------------------------------- writer

#[derive(Default)]
struct Writer {
    out: Vec<u8>,
}

impl Writer {
    fn u32(&mut self, v: u32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn i32(&mut self, v: i32) {
        self.out.extend_from_slice(&v.to_be_bytes());
    }
    fn opaque(&mut self, b: &[u8]) {
        self.u32(b.len() as u32);
        self.out.extend_from_slice(b);
        let pad = (4 - b.len() % 4) % 4;
        self.out.extend_from_slice(&[0u8; 3][..pad]);
    }
    fn string(&mut self, s: &str, max: usize) {
        self.opaque(&s.as_bytes()[..s.len().min(max)]);
    }
    fn optional<T>(&mut self, v: Option<&T>, f: impl FnOnce(&mut Self, &T)) {
        match v {
            Some(v) => {
                self.u32(1);
                f(self, v);
            }
            None => self.u32(0),
        }
    }
    fn typed_ip(&mut self, ip: &TypedIp) {
        self.i32(ip.kind);
        self.opaque(&ip.addr[..ip.addr.len().min(INET_ADDRESS_MAX_LEN)]);
    }
    fn dns(&mut self, d: &DnsConfig) {
        self.optional(d.host_name.as_ref(), |w, s| w.string(s, DNS_MAX_ADDRLEN));
        self.optional(d.domain_name.as_ref(), |w, s| w.string(s, DNS_MAX_ADDRLEN));
        let servers = &d.servers[..d.servers.len().min(DNS_MAX_SERVERS)];
        self.u32(servers.len() as u32);
        for s in servers {
            self.typed_ip(s);
        }
        let search = &d.search[..d.search.len().min(DNS_MAX_SUFFIXES)];
        self.u32(search.len() as u32);
        for s in search {
            self.string(s, DNS_MAX_ADDRLEN);
        }
    }
    fn wins(&mut self, w: &WinsConfig) {
        self.typed_ip(&w.primary);
        self.typed_ip(&w.secondary);
    }
    fn dhcp(&mut self, d: &DhcpConfig) {
        self.u32(u32::from(d.enabled));
        self.string(&d.settings, DHCP_MAX_CONFIG_SIZE);
    }
    fn tail(
        &mut self,
        dns: Option<&DnsConfig>,
        wins: Option<&WinsConfig>,
        d4: Option<&DhcpConfig>,
        d6: Option<&DhcpConfig>,
    ) {
        self.optional(dns, Self::dns);
        self.optional(wins, Self::wins);
        self.optional(d4, Self::dhcp);
        self.optional(d6, Self::dhcp);
    }
    fn nic(&mut self, n: &Nic, max_ips: usize) {
        self.string(&n.mac, MAC_LEN);
        let ips = &n.ips[..n.ips.len().min(max_ips)];
        self.u32(ips.len() as u32);
        for ip in ips {
            self.typed_ip(&ip.addr);
            self.u32(ip.prefix_len);
            self.optional(ip.origin.as_ref(), |w, v| w.i32(*v));
            self.optional(ip.status.as_ref(), |w, v| w.i32(*v));
        }
        self.tail(
            n.dns.as_ref(),
            n.wins.as_ref(),
            n.dhcp4.as_ref(),
            n.dhcp6.as_ref(),
        );
    }
    fn route(&mut self, r: &Route) {
        self.typed_ip(&r.dest);
        self.u32(r.prefix_len);
        self.optional(r.next_hop.as_ref(), Self::typed_ip);
        self.u32(r.if_index);
        self.i32(r.kind);
        self.u32(r.metric);
    }
    /// `char x[N]` in rpcgen: a fixed vector of N chars, each one a 4-byte XDR int.
    fn char_array(&mut self, s: &str, n: usize) {
        let b = s.as_bytes();
        for i in 0..n {
            // Always NUL-terminated within N, as the C structure is.
            let c = if i + 1 < n {
                b.get(i).copied().unwrap_or(0)
            } else {
                0
            };
            self.i32(i32::from(c as i8));
        }
    }
}

impl NicInfo {
    /// `GuestNicProto { NIC_INFO_V3, &NicInfoV3 }`, with at most `max_ips` addresses per NIC
    /// ([`MAX_IPS`] under type 10, [`V2_MAX_IPS`] under type 9).
    pub fn encode_v3(&self, max_ips: usize) -> Vec<u8> {
        let mut w = Writer::default();
        w.i32(NIC_INFO_V3);
        w.u32(1); // the pointer is set
        let nics = &self.nics[..self.nics.len().min(MAX_NICS)];
        w.u32(nics.len() as u32);
        for n in nics {
            w.nic(n, max_ips.min(MAX_IPS));
        }
        let routes = &self.routes[..self.routes.len().min(MAX_ROUTES)];
        w.u32(routes.len() as u32);
        for r in routes {
            w.route(r);
        }
        w.tail(
            self.dns.as_ref(),
            self.wins.as_ref(),
            self.dhcp4.as_ref(),
            self.dhcp6.as_ref(),
        );
        w.out
    }

    /// `GuestNicProto { NIC_INFO_V2, &GuestNicList }` as `NicInfoV3ToV2`
    /// (`services/plugins/guestInfo/guestInfoServer.c`) writes it from the 64-address form:
    /// per NIC the MAC and the first [`V2_MAX_IPS`] addresses, each as its `inet_ntop` text and
    /// its prefix length printed with `%u` in the mask field; `dhcpEnabled` is never set.
    pub fn encode_v2(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.i32(NIC_INFO_V2);
        w.u32(1);
        let nics = &self.nics[..self.nics.len().min(MAX_NICS)];
        w.u32(nics.len() as u32);
        for n in nics {
            w.char_array(&n.mac, MAC_LEN);
            let ips = &n.ips[..n.ips.len().min(V2_MAX_IPS)];
            w.u32(ips.len() as u32);
            for e in ips {
                let family = if e.addr.kind == addr_type::IPV4 {
                    V2_FAMILY_IPV4
                } else {
                    V2_FAMILY_IPV6
                };
                w.i32(family);
                w.i32(0);
                let text = e.addr.ip().map(|ip| ip.to_string()).unwrap_or_default();
                w.char_array(&text, V2_IP_LEN);
                w.char_array(&e.prefix_len.to_string(), V2_IP_LEN);
            }
        }
        w.out
    }
}

/// `NicInfoAddrType` (`lib/guestRpc/nicinfo.x`): v2's address families.
pub const V2_FAMILY_IPV4: i32 = 0;
/// See [`V2_FAMILY_IPV4`].
pub const V2_FAMILY_IPV6: i32 = 1;

/// A v2 mask field as a prefix length: `%u` as vmtoolsd writes it, or the hexadecimal
/// (`0xffffff00`) and dotted forms nicinfo.x allows for IPv4.
pub fn v2_prefix(mask: &str) -> Option<u32> {
    if let Ok(n) = mask.parse::<u32>() {
        return (n <= 128).then_some(n);
    }
    let bits = if let Some(hex) = mask.strip_prefix("0x") {
        u32::from_str_radix(hex, 16).ok()?
    } else {
        u32::from(mask.parse::<std::net::Ipv4Addr>().ok()?)
    };
    // Only contiguous masks are prefixes.
    (bits.leading_ones() + bits.trailing_zeros() == 32).then_some(bits.leading_ones())
}

// ---------------------------------------------------------------------------------------- reader

/// Why bytes are not NIC info.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum XdrError {
    /// More bytes were needed.
    #[error("nic info truncated reading {0}")]
    Truncated(&'static str),
    /// An array or string longer than nicinfo.x allows.
    #[error("nic info {what} of {len} exceeds the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: u32,
        /// The bound.
        max: usize,
    },
    /// A union discriminant or boolean out of range.
    #[error("nic info {what}: bad value {value}")]
    BadValue {
        /// Which field.
        what: &'static str,
        /// The value.
        value: i64,
    },
    /// Text that is not UTF-8.
    #[error("nic info {0} is not UTF-8")]
    NotUtf8(&'static str),
    /// Bytes after the record.
    #[error("nic info has {0} trailing bytes")]
    Trailing(usize),
}

/// XDR fields over the crate's one bounded reader, each failure naming its field.
struct Reader<'a> {
    inner: crate::codec::Reader<'a>,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader {
            inner: crate::codec::Reader::new(buf),
        }
    }
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], XdrError> {
        self.inner.take(n).ok_or(XdrError::Truncated(what))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, XdrError> {
        self.inner.u32_be().ok_or(XdrError::Truncated(what))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, XdrError> {
        self.inner.i32_be().ok_or(XdrError::Truncated(what))
    }
    fn bool(&mut self, what: &'static str) -> Result<bool, XdrError> {
        match self.u32(what)? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(XdrError::BadValue {
                what,
                value: v.into(),
            }),
        }
    }
    fn len(&mut self, what: &'static str, max: usize, item_min: usize) -> Result<usize, XdrError> {
        let n = self.u32(what)?;
        if n as usize > max {
            return Err(XdrError::TooLong { what, len: n, max });
        }
        // Each item takes at least `item_min` bytes: refuse counts the input cannot hold.
        if !self.inner.fits(n as usize, item_min) {
            return Err(XdrError::Truncated(what));
        }
        Ok(n as usize)
    }
    fn opaque(&mut self, what: &'static str, max: usize) -> Result<&'a [u8], XdrError> {
        let n = self.len(what, max, 1)?;
        let b = self.take(n, what)?;
        self.take((4 - n % 4) % 4, what)?;
        Ok(b)
    }
    fn string(&mut self, what: &'static str, max: usize) -> Result<String, XdrError> {
        let b = self.opaque(what, max)?;
        String::from_utf8(b.to_vec()).map_err(|_| XdrError::NotUtf8(what))
    }
    fn optional<T>(
        &mut self,
        what: &'static str,
        f: impl FnOnce(&mut Self) -> Result<T, XdrError>,
    ) -> Result<Option<T>, XdrError> {
        if self.bool(what)? {
            Ok(Some(f(self)?))
        } else {
            Ok(None)
        }
    }
    /// rpcgen's `char x[N]`: N 4-byte ints, the text ending at the first NUL.
    fn char_array(&mut self, what: &'static str, n: usize) -> Result<String, XdrError> {
        let raw = self.take(n * 4, what)?;
        let bytes: Vec<u8> = raw
            .chunks_exact(4)
            .map(|c| c[3])
            .take_while(|&b| b != 0)
            .collect();
        String::from_utf8(bytes).map_err(|_| XdrError::NotUtf8(what))
    }
    fn typed_ip(&mut self) -> Result<TypedIp, XdrError> {
        Ok(TypedIp {
            kind: self.i32("address type")?,
            addr: self.opaque("address", INET_ADDRESS_MAX_LEN)?.to_vec(),
        })
    }
    fn dns(&mut self) -> Result<DnsConfig, XdrError> {
        let host_name = self.optional("dns host name", |r| {
            r.string("dns host name", DNS_MAX_ADDRLEN)
        })?;
        let domain_name =
            self.optional("dns domain", |r| r.string("dns domain", DNS_MAX_ADDRLEN))?;
        let n = self.len("dns servers", DNS_MAX_SERVERS, 8)?;
        let servers = (0..n).map(|_| self.typed_ip()).collect::<Result<_, _>>()?;
        let n = self.len("dns search suffixes", DNS_MAX_SUFFIXES, 4)?;
        let search = (0..n)
            .map(|_| self.string("dns search suffix", DNS_MAX_ADDRLEN))
            .collect::<Result<_, _>>()?;
        Ok(DnsConfig {
            host_name,
            domain_name,
            servers,
            search,
        })
    }
    fn wins(&mut self) -> Result<WinsConfig, XdrError> {
        Ok(WinsConfig {
            primary: self.typed_ip()?,
            secondary: self.typed_ip()?,
        })
    }
    fn dhcp(&mut self) -> Result<DhcpConfig, XdrError> {
        Ok(DhcpConfig {
            enabled: self.bool("dhcp enabled")?,
            settings: self.string("dhcp settings", DHCP_MAX_CONFIG_SIZE)?,
        })
    }
    #[allow(clippy::type_complexity)]
    fn tail(
        &mut self,
    ) -> Result<
        (
            Option<DnsConfig>,
            Option<WinsConfig>,
            Option<DhcpConfig>,
            Option<DhcpConfig>,
        ),
        XdrError,
    > {
        Ok((
            self.optional("dns", Self::dns)?,
            self.optional("wins", Self::wins)?,
            self.optional("dhcp4", Self::dhcp)?,
            self.optional("dhcp6", Self::dhcp)?,
        ))
    }
    fn nic(&mut self) -> Result<Nic, XdrError> {
        let mac = self.string("mac", MAC_LEN)?;
        // An address entry is at least 20 bytes.
        let n = self.len("addresses", MAX_IPS, 20)?;
        let mut ips = Vec::with_capacity(n);
        for _ in 0..n {
            ips.push(IpEntry {
                addr: self.typed_ip()?,
                prefix_len: self.u32("prefix length")?,
                origin: self.optional("origin", |r| r.i32("origin"))?,
                status: self.optional("status", |r| r.i32("status"))?,
            });
        }
        let (dns, wins, dhcp4, dhcp6) = self.tail()?;
        Ok(Nic {
            mac,
            ips,
            dns,
            wins,
            dhcp4,
            dhcp6,
        })
    }
    fn route(&mut self) -> Result<Route, XdrError> {
        Ok(Route {
            dest: self.typed_ip()?,
            prefix_len: self.u32("route prefix")?,
            next_hop: self.optional("next hop", Self::typed_ip)?,
            if_index: self.u32("route interface")?,
            kind: self.i32("route type")?,
            metric: self.u32("route metric")?,
        })
    }
}

/// Decodes a `GuestNicProto` of either version, as the VMX does for type 9: v2 comes back as
/// v3 records (addresses parsed from their text, origin and status unknown).
pub fn decode(buf: &[u8]) -> Result<NicInfo, XdrError> {
    let mut r = Reader::new(buf);
    match r.i32("version")? {
        NIC_INFO_V2 => decode_v2_body(r),
        _ => decode_v3(buf),
    }
}

fn decode_v2_body(mut r: Reader<'_>) -> Result<NicInfo, XdrError> {
    if !r.bool("nic list pointer")? {
        return Ok(NicInfo::default());
    }
    // A v2 NIC is at least its MAC (18 × 4 bytes) and a count; an address 2 × 4 + 2 × 64 × 4.
    let n = r.len("nics", MAX_NICS, MAC_LEN * 4 + 4)?;
    let mut nics = Vec::with_capacity(n);
    for _ in 0..n {
        let mac = r.char_array("mac", MAC_LEN)?;
        let count = r.len("addresses", MAX_IPS, 8 + 2 * V2_IP_LEN * 4)?;
        let mut ips = Vec::with_capacity(count);
        for _ in 0..count {
            let family = r.i32("address family")?;
            r.bool("dhcp enabled")?;
            let text = r.char_array("address", V2_IP_LEN)?;
            let mask = r.char_array("mask", V2_IP_LEN)?;
            let ip: IpAddr = text.parse().map_err(|_| XdrError::BadValue {
                what: "v2 address",
                value: i64::from(family),
            })?;
            let prefix_len = v2_prefix(&mask).ok_or(XdrError::BadValue {
                what: "v2 mask",
                value: i64::from(family),
            })?;
            ips.push(IpEntry {
                addr: TypedIp::from(ip),
                prefix_len,
                origin: None,
                status: None,
            });
        }
        nics.push(Nic {
            mac,
            ips,
            dns: None,
            wins: None,
            dhcp4: None,
            dhcp6: None,
        });
    }
    if !r.inner.is_empty() {
        return Err(XdrError::Trailing(r.inner.remaining()));
    }
    Ok(NicInfo {
        nics,
        ..NicInfo::default()
    })
}

/// Decodes a `GuestNicProto` carrying `NicInfoV3`, as the VMX does for types 10 and 9.
pub fn decode_v3(buf: &[u8]) -> Result<NicInfo, XdrError> {
    let mut r = Reader::new(buf);
    let ver = r.i32("version")?;
    if ver != NIC_INFO_V3 {
        return Err(XdrError::BadValue {
            what: "version",
            value: ver.into(),
        });
    }
    if !r.bool("nic info pointer")? {
        return Ok(NicInfo::default());
    }
    // A NIC is at least 28 bytes, a route at least 36.
    let n = r.len("nics", MAX_NICS, 28)?;
    let nics = (0..n).map(|_| r.nic()).collect::<Result<_, _>>()?;
    let n = r.len("routes", MAX_ROUTES, 36)?;
    let routes = (0..n).map(|_| r.route()).collect::<Result<_, _>>()?;
    let (dns, wins, dhcp4, dhcp6) = r.tail()?;
    if !r.inner.is_empty() {
        return Err(XdrError::Trailing(r.inner.remaining()));
    }
    Ok(NicInfo {
        nics,
        routes,
        dns,
        wins,
        dhcp4,
        dhcp6,
    })
}
