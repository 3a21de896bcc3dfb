//! What the guest tells the VMX about itself: NICs (XDR NIC info v3), host name, OS names and
//! details, uptime. Read from `/sys`, `/proc`, `getifaddrs` and `/etc`, never by running `ip`.
//!
//! The parsers of those files are pure functions (tested on literal text); [`gather`] reads the
//! running system; [`NicMethod`] and [`other_messages`] turn a [`Snapshot`] into the
//! `SetGuestInfo` requests vmtoolsd sends (`services/plugins/guestInfo/guestInfoServer.c`).

pub mod feature;
pub mod xdr;

pub use feature::GuestInfo;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use xdr::{DnsConfig, IpEntry, Nic, NicInfo, Route, TypedIp};

/// `GuestInfoType` (`lib/include/guestInfo.h`).
#[allow(missing_docs)]
pub mod info_type {
    pub const DNS_NAME: u32 = 1;
    pub const OS_NAME_FULL: u32 = 5;
    pub const OS_NAME: u32 = 6;
    pub const UPTIME: u32 = 7;
    pub const IPADDRESS_V2: u32 = 9;
    pub const IPADDRESS_V3: u32 = 10;
    pub const OS_DETAILED: u32 = 11;
}

/// Interfaces left out by default: container and virtual plumbing the VI client cannot reach.
pub const DEFAULT_EXCLUDE: &[&str] = &["docker*", "veth*", "virbr*", "cali*", "antrea-*"];

/// Which NICs to report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicFilter {
    /// Interface name patterns (`*` matches any run of characters).
    pub exclude: Vec<String>,
    /// At most this many NICs (and never more than [`xdr::MAX_NICS`]).
    pub max_nics: usize,
}

impl Default for NicFilter {
    fn default() -> Self {
        NicFilter {
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            max_nics: xdr::MAX_NICS,
        }
    }
}

/// `*`-only glob match.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match p.split_first() {
            None => n.is_empty(),
            Some((b'*', rest)) => (0..=n.len()).any(|i| go(rest, &n[i..])),
            Some((c, rest)) => n.first() == Some(c) && go(rest, &n[1..]),
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

impl NicFilter {
    /// True when `name` is excluded.
    pub fn excludes(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| glob_match(p, name))
    }
}

/// Everything gathered in one pass.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// NICs, routes, DNS.
    pub nic_info: NicInfo,
    /// Host name (fully qualified when known).
    pub host_name: String,
    /// OS full name, e.g. `Linux 6.1.0-18-amd64 Debian GNU/Linux 12 (bookworm)`.
    pub os_full: String,
    /// Guest id, e.g. `debian12-64`.
    pub os_short: String,
    /// `key='value'` detailed data.
    pub os_detailed: String,
    /// Uptime in hundredths of a second.
    pub uptime_centis: u64,
}

impl Snapshot {
    /// The address `Set_Option broadcastIP` reports: the first IPv4 address of the reported
    /// NICs, else the first global IPv6 one.
    pub fn primary_ip(&self) -> Option<IpAddr> {
        let all = || {
            self.nic_info
                .nics
                .iter()
                .flat_map(|n| n.ips.iter())
                .filter_map(|e| e.addr.ip())
        };
        all()
            .find(|ip| ip.is_ipv4() && !ip.is_loopback())
            .or_else(|| all().find(|ip| matches!(ip, IpAddr::V6(a) if !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80)))
    }
}

// ---------------------------------------------------------------------------------------- parsers

/// One interface as `/sys/class/net` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    /// Name.
    pub name: String,
    /// Kernel index.
    pub index: u32,
    /// Hardware address, lower-case, colon separated.
    pub mac: String,
    /// IFF_LOOPBACK.
    pub loopback: bool,
}

/// An address with its interface.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Addr {
    /// Interface name.
    pub ifname: String,
    /// The entry as reported.
    pub entry: IpEntry,
}

/// `/proc/net/if_inet6` → IPv6 addresses with prefix, origin and status from the kernel flags.
pub fn parse_if_inet6(text: &str) -> Vec<Addr> {
    // IFA_F_* (linux/if_addr.h)
    const TEMPORARY: u32 = 0x01;
    const DADFAILED: u32 = 0x08;
    const DEPRECATED: u32 = 0x20;
    const TENTATIVE: u32 = 0x40;
    const PERMANENT: u32 = 0x80;
    const OPTIMISTIC: u32 = 0x04;
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[0].len() != 32 {
                return None;
            }
            let bits = u128::from_str_radix(f[0], 16).ok()?;
            let ip = Ipv6Addr::from(bits);
            let prefix = u32::from_str_radix(f[2], 16).ok()?;
            let flags = u32::from_str_radix(f[4], 16).ok()?;
            let origin = if (ip.segments()[0] & 0xffc0) == 0xfe80 {
                xdr::origin::LINKLAYER
            } else if flags & TEMPORARY != 0 {
                xdr::origin::RANDOM
            } else if flags & PERMANENT != 0 {
                xdr::origin::MANUAL
            } else {
                xdr::origin::OTHER
            };
            let status = if flags & DADFAILED != 0 {
                xdr::status::DUPLICATE
            } else if flags & TENTATIVE != 0 {
                xdr::status::TENTATIVE
            } else if flags & OPTIMISTIC != 0 {
                xdr::status::OPTIMISTIC
            } else if flags & DEPRECATED != 0 {
                xdr::status::DEPRECATED
            } else {
                xdr::status::PREFERRED
            };
            Some(Addr {
                ifname: f[5].to_string(),
                entry: IpEntry {
                    addr: IpAddr::V6(ip).into(),
                    prefix_len: prefix,
                    origin: Some(origin),
                    status: Some(status),
                },
            })
        })
        .collect()
}

/// A route read from `/proc/net/route` or `/proc/net/ipv6_route`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcRoute {
    /// Interface name.
    pub ifname: String,
    /// Destination.
    pub dest: IpAddr,
    /// Prefix length.
    pub prefix_len: u32,
    /// Gateway, when RTF_GATEWAY.
    pub gateway: Option<IpAddr>,
    /// Metric.
    pub metric: u32,
}

const RTF_UP: u32 = 0x1;
const RTF_GATEWAY: u32 = 0x2;

/// `/proc/net/route` (IPv4; addresses are little-endian hex).
pub fn parse_route(text: &str) -> Vec<ProcRoute> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            let hex = |s: &str| {
                u32::from_str_radix(s, 16)
                    .ok()
                    .map(|v| Ipv4Addr::from(v.swap_bytes()))
            };
            let flags = u32::from_str_radix(f[3], 16).ok()?;
            if flags & RTF_UP == 0 {
                return None;
            }
            let mask = hex(f[7])?;
            Some(ProcRoute {
                ifname: f[0].to_string(),
                dest: IpAddr::V4(hex(f[1])?),
                prefix_len: u32::from(mask).count_ones(),
                gateway: (flags & RTF_GATEWAY != 0).then_some(IpAddr::V4(hex(f[2])?)),
                metric: f[6].parse().ok()?,
            })
        })
        .collect()
}

/// `/proc/net/ipv6_route`.
pub fn parse_ipv6_route(text: &str) -> Vec<ProcRoute> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 10 {
                return None;
            }
            let addr = |s: &str| {
                u128::from_str_radix(s, 16)
                    .ok()
                    .map(|v| IpAddr::V6(Ipv6Addr::from(v)))
            };
            let flags = u32::from_str_radix(f[8], 16).ok()?;
            if flags & RTF_UP == 0 || f[9] == "lo" {
                return None;
            }
            Some(ProcRoute {
                ifname: f[9].to_string(),
                dest: addr(f[0])?,
                prefix_len: u32::from_str_radix(f[1], 16).ok()?,
                gateway: if flags & RTF_GATEWAY != 0 {
                    Some(addr(f[4])?)
                } else {
                    None
                },
                metric: u32::from_str_radix(f[5], 16).ok()?,
            })
        })
        .collect()
}

/// `/etc/resolv.conf` → servers, search list, domain.
pub fn parse_resolv_conf(text: &str) -> DnsConfig {
    let mut dns = DnsConfig::default();
    for line in text.lines() {
        let mut w = line.split_whitespace();
        match w.next() {
            Some("nameserver") => {
                if let Some(ip) = w
                    .next()
                    .and_then(|s| s.split('%').next()?.parse::<IpAddr>().ok())
                {
                    dns.servers.push(ip.into());
                }
            }
            // The last of `search` and `domain` wins, as in the resolver.
            Some("search") => dns.search = w.map(str::to_string).collect(),
            Some("domain") => {
                if let Some(d) = w.next() {
                    dns.domain_name = Some(d.to_string());
                    dns.search = vec![d.to_string()];
                }
            }
            _ => {}
        }
    }
    dns.servers.truncate(xdr::DNS_MAX_SERVERS);
    dns.search.truncate(xdr::DNS_MAX_SUFFIXES);
    dns
}

/// `/etc/os-release` → its variables (quotes removed).
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            if l.starts_with('#') {
                return None;
            }
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.to_string(), v.replace("\\\"", "\"").replace("\\\\", "\\")))
        })
        .collect()
}

/// The guest id the host knows, from the distribution name and version and the kernel
/// (`HostinfoLinux` and its short-name table, `lib/misc/hostinfoPosix.c`).
pub fn os_short_name(distro: &str, version_id: &str, kernel_release: &str, bits64: bool) -> String {
    let lower = distro.to_lowercase();
    let version: u32 = version_id
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let with = |s: &str| format!("{s}{version}");
    let table: &[(&str, &dyn Fn() -> String)] = &[
        ("almalinux", &|| "almaLinux".into()),
        ("amazon", &|| format!("amazonlinux{}", version.max(2))),
        ("arch", &|| "Arch".into()),
        ("centos", &|| {
            if version < 6 {
                "centos".into()
            } else {
                with("centos")
            }
        }),
        ("debian", &|| {
            if version <= 4 {
                "debian4".into()
            } else {
                with("debian")
            }
        }),
        ("red hat", &|| {
            if !lower.contains("enterprise") {
                "redhat".into()
            } else if version == 0 {
                "rhel".into()
            } else {
                with("rhel")
            }
        }),
        ("fedora", &|| "Fedora".into()),
        ("flatcar", &|| "flatcar".into()),
        ("gentoo", &|| "Gentoo".into()),
        ("opensuse", &|| "opensuse".into()),
        ("oracle", &|| {
            if version == 0 {
                "oraclelinux".into()
            } else {
                with("oraclelinux")
            }
        }),
        ("rocky linux", &|| "rockyLinux".into()),
        ("suse", &|| with("sles")),
        ("ubuntu", &|| "ubuntu".into()),
        ("vmware photon", &|| "vmware-photon".into()),
    ];
    let short = table
        .iter()
        .find(|(pat, _)| lower.contains(pat))
        .map(|(_, f)| f())
        .unwrap_or_else(|| {
            let mut k = kernel_release.split(|c: char| !c.is_ascii_digit());
            let major: u32 = k.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            let minor: u32 = k.next().and_then(|v| v.parse().ok()).unwrap_or(0);
            match (major, minor) {
                (0..=1, _) | (2, 0..=3) => "other",
                (2, 4..=5) => "other24xlinux",
                (2, _) => "other26xlinux",
                (3, _) => "other3xlinux",
                (4, _) => "other4xlinux",
                (6, _) => "other6xlinux",
                _ => "other5xlinux",
            }
            .to_string()
        });
    if bits64 {
        format!("{short}-64")
    } else {
        short
    }
}

/// `key='value'` pairs in vmtoolsd's fixed order, empty values left out, `'` and `\` escaped
/// (`HostinfoOSDetailedData`).
pub fn detailed_data(fields: &[(&str, &str)]) -> String {
    let mut out = Vec::new();
    for (k, v) in fields {
        let mut esc = String::new();
        for c in v.chars() {
            if c == '\'' || c == '\\' {
                esc.push('\\');
            }
            esc.push(c);
        }
        let esc = esc.trim_end();
        if !esc.is_empty() {
            out.push(format!("{k}='{esc}'"));
        }
    }
    out.join(" ")
}

// ---------------------------------------------------------------------------------------- gather

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn links() -> Vec<Link> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/sys/class/net") else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let p = Path::new("/sys/class/net").join(&name);
        let get = |f: &str| {
            std::fs::read_to_string(p.join(f))
                .unwrap_or_default()
                .trim()
                .to_string()
        };
        let flags = u32::from_str_radix(get("flags").trim_start_matches("0x"), 16).unwrap_or(0);
        out.push(Link {
            index: get("ifindex").parse().unwrap_or(u32::MAX),
            mac: get("address").to_lowercase(),
            loopback: flags & 0x8 != 0,
            name,
        });
    }
    out.sort_by_key(|l| l.index);
    out
}

fn ipv4_addrs() -> Vec<Addr> {
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    ifaddrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask.and_then(|m| m.as_sockaddr_in().map(|s| s.ip()));
            Some(Addr {
                ifname: a.interface_name,
                entry: IpEntry {
                    addr: IpAddr::V4(ip).into(),
                    prefix_len: mask.map(|m| u32::from(m).count_ones()).unwrap_or(32),
                    origin: None,
                    // vmtoolsd reports IPv4 addresses as preferred (lib/nicInfo/nicInfo.c).
                    status: Some(xdr::status::PREFERRED),
                },
            })
        })
        .collect()
}

/// Builds NIC info from the parts, as vmtoolsd does: NICs with a hardware address, in kernel
/// order, filtered; their addresses; routes through them (indexed into the NIC list); DNS.
pub fn build_nic_info(
    links: &[Link],
    addrs: &[Addr],
    routes: &[ProcRoute],
    dns: Option<DnsConfig>,
    filter: &NicFilter,
) -> NicInfo {
    let mut info = NicInfo::default();
    let mut names = Vec::new();
    for l in links {
        if info.nics.len() >= filter.max_nics.min(xdr::MAX_NICS) {
            break;
        }
        if l.loopback
            || l.mac.is_empty()
            || l.mac == "00:00:00:00:00:00"
            || filter.excludes(&l.name)
        {
            continue;
        }
        let ips: Vec<IpEntry> = addrs
            .iter()
            .filter(|a| a.ifname == l.name)
            .map(|a| a.entry.clone())
            .take(xdr::MAX_IPS)
            .collect();
        info.nics.push(Nic {
            mac: l.mac.clone(),
            ips,
            ..Nic::default()
        });
        names.push(l.name.clone());
    }
    for r in routes {
        if info.routes.len() >= xdr::MAX_ROUTES {
            break;
        }
        let Some(i) = names.iter().position(|n| *n == r.ifname) else {
            continue;
        };
        info.routes.push(Route {
            dest: r.dest.into(),
            prefix_len: r.prefix_len,
            next_hop: r.gateway.map(TypedIp::from),
            if_index: i as u32,
            kind: if r.gateway.is_some() {
                xdr::route_type::REMOTE
            } else {
                xdr::route_type::LOCAL
            },
            metric: r.metric,
        });
    }
    info.dns = dns;
    info
}

/// Reads the running system.
pub fn gather(filter: &NicFilter) -> Snapshot {
    let links = links();
    let mut addrs = ipv4_addrs();
    addrs.extend(parse_if_inet6(&read("/proc/net/if_inet6")));
    let mut routes = parse_route(&read("/proc/net/route"));
    routes.extend(parse_ipv6_route(&read("/proc/net/ipv6_route")));
    let uts = nix::sys::utsname::uname().ok();
    let uts_field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let node = uts_field(|u| u.nodename());
    let release = uts_field(|u| u.release());
    let machine = uts_field(|u| u.machine());
    let mut dns = parse_resolv_conf(&read("/etc/resolv.conf"));
    let host_name = if node.contains('.') {
        node.clone()
    } else {
        match &dns.domain_name {
            Some(d) => format!("{node}.{d}"),
            None => node.clone(),
        }
    };
    dns.host_name = Some(node.clone());
    if dns.domain_name.is_none() {
        dns.domain_name = node.split_once('.').map(|(_, d)| d.to_string());
    }
    let mut os = parse_os_release(&read("/etc/os-release"));
    if os.is_empty() {
        os = parse_os_release(&read("/usr/lib/os-release"));
    }
    let get = |k: &str| os.get(k).cloned().unwrap_or_default();
    let pretty = {
        let p = get("PRETTY_NAME");
        if p.is_empty() {
            get("NAME")
        } else {
            p
        }
    };
    let bits64 = matches!(
        machine.as_str(),
        "x86_64" | "aarch64" | "ppc64le" | "s390x" | "riscv64"
    );
    let arch = if machine.starts_with("aarch") || machine.starts_with("arm") {
        "Arm"
    } else {
        "X86"
    };
    let distro_name = if get("NAME").is_empty() {
        "Linux".to_string()
    } else {
        get("NAME")
    };
    let os_detailed = detailed_data(&[
        ("architecture", arch),
        ("bitness", if bits64 { "64" } else { "32" }),
        ("buildNumber", &get("BUILD_ID")),
        ("cpeString", &get("CPE_NAME")),
        ("distroAddlVersion", &get("VERSION")),
        ("distroName", &distro_name),
        ("distroVersion", &get("VERSION_ID")),
        ("familyName", "Linux"),
        ("kernelVersion", &release),
        ("prettyName", &pretty),
    ]);
    let uptime_centis = read("/proc/uptime")
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .map(|s| (s * 100.0) as u64)
        .unwrap_or(0);
    Snapshot {
        nic_info: build_nic_info(&links, &addrs, &routes, Some(dns), filter),
        host_name,
        os_full: format!("Linux {release} {pretty}").trim_end().to_string(),
        os_short: os_short_name(&pretty, &get("VERSION_ID"), &release, bits64),
        os_detailed,
        uptime_centis,
    }
}

// ---------------------------------------------------------------------------------------- messages

/// `SetGuestInfo  <type> <value>\0`: the key/value form (`SetGuestInfo` in guestInfoServer.c
/// sends the C string with its terminator).
pub fn set_guest_info(kind: u32, value: &str) -> Vec<u8> {
    let mut m = format!("SetGuestInfo  {kind} {value}").into_bytes();
    m.push(0);
    m
}

/// `SetGuestInfo  <type> ` followed by binary data (`GuestInfoSendData`, `...NicInfoXdr`).
pub fn set_guest_info_raw(kind: u32, data: &[u8]) -> Vec<u8> {
    let mut m = format!("SetGuestInfo  {kind} ").into_bytes();
    m.extend_from_slice(data);
    m
}

/// `HostinfoDetailedDataHeader` (`lib/include/hostinfo.h`): version 1, short name in 129 bytes,
/// full name in 513, padded to the struct's 4-byte alignment (648 bytes), then the detailed
/// string and its NUL.
pub fn os_detailed_payload(short: &str, full: &str, detailed: &str) -> Vec<u8> {
    const SHORT: usize = 128 + 1;
    const FULL: usize = 512 + 1;
    let mut b = Vec::with_capacity(648 + detailed.len() + 1);
    b.extend_from_slice(&1u32.to_le_bytes());
    for (s, n) in [(short, SHORT), (full, FULL)] {
        let bytes = &s.as_bytes()[..s.len().min(n - 1)];
        b.extend_from_slice(bytes);
        b.resize(b.len() + n - bytes.len(), 0);
    }
    b.resize(648, 0);
    b.extend_from_slice(detailed.as_bytes());
    b.push(0);
    b
}

/// The ways NIC info can travel, best first (`GuestInfoSendNicInfo`'s fallbacks). The V1
/// fixed structure of hosts older than ESX 4.0 is not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NicMethod {
    /// NIC info v3 as `INFO_IPADDRESS_V3`.
    V3AsType10,
    /// NIC info v3, 64 addresses per NIC, as `INFO_IPADDRESS_V2`.
    V3AsType9,
    /// NIC info v2 as `INFO_IPADDRESS_V2`.
    V2AsType9,
}

impl NicMethod {
    /// All, in fallback order.
    pub const ALL: [NicMethod; 3] = [
        NicMethod::V3AsType10,
        NicMethod::V3AsType9,
        NicMethod::V2AsType9,
    ];

    /// The request for `info`.
    pub fn request(self, info: &NicInfo) -> Vec<u8> {
        match self {
            NicMethod::V3AsType10 => {
                set_guest_info_raw(info_type::IPADDRESS_V3, &info.encode_v3(xdr::MAX_IPS))
            }
            NicMethod::V3AsType9 => {
                set_guest_info_raw(info_type::IPADDRESS_V2, &info.encode_v3(xdr::V2_MAX_IPS))
            }
            NicMethod::V2AsType9 => set_guest_info_raw(info_type::IPADDRESS_V2, &info.encode_v2()),
        }
    }
}

/// The key/value and binary messages other than NIC info, in sending order, each with a key
/// for change detection. Uptime comes last and changes every time.
pub fn other_messages(s: &Snapshot) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "hostname",
            set_guest_info(info_type::DNS_NAME, &s.host_name),
        ),
        (
            "os-detailed",
            set_guest_info_raw(
                info_type::OS_DETAILED,
                &os_detailed_payload(&s.os_short, &s.os_full, &s.os_detailed),
            ),
        ),
        (
            "os-full",
            set_guest_info(info_type::OS_NAME_FULL, &s.os_full),
        ),
        ("os-short", set_guest_info(info_type::OS_NAME, &s.os_short)),
        (
            "uptime",
            set_guest_info(info_type::UPTIME, &s.uptime_centis.to_string()),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("veth*", "veth1234"));
        assert!(glob_match("antrea-*", "antrea-gw0"));
        assert!(!glob_match("veth*", "eth0"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
    }

    #[test]
    fn parses_proc_route() {
        let t =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                 eth0\t00000000\t0100A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0\n\
                 eth0\t0000A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
                 eth1\t0000000A\t00000000\t0000\t0\t0\t0\t000000FF\t0\t0\t0\n";
        let r = parse_route(t);
        assert_eq!(r.len(), 2, "the route that is not up is skipped");
        assert_eq!(r[0].dest, "0.0.0.0".parse::<IpAddr>().unwrap());
        assert_eq!(r[0].gateway, Some("192.168.0.1".parse().unwrap()));
        assert_eq!((r[0].prefix_len, r[0].metric), (0, 100));
        assert_eq!(r[1].dest, "192.168.0.0".parse::<IpAddr>().unwrap());
        assert_eq!((r[1].prefix_len, r[1].gateway), (24, None));
    }

    #[test]
    fn parses_ipv6_route() {
        let t = "fd000000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0\n\
                 00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n\
                 00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000001 00000000 80200001       lo\n";
        let r = parse_ipv6_route(t);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].dest, "fd00::".parse::<IpAddr>().unwrap());
        assert_eq!(
            (r[0].prefix_len, r[0].metric, r[0].gateway),
            (64, 256, None)
        );
        assert_eq!(r[1].gateway, Some("fd00::1".parse().unwrap()));
        assert_eq!(r[1].metric, 1024);
    }

    #[test]
    fn parses_if_inet6_flags() {
        let t = "fe80000000000000021122fffe334455 02 40 20 80     eth0\n\
                 fd000000000000000000000000000010 02 40 00 80     eth0\n\
                 fd000000000000000000000000000011 02 40 00 41     eth0\n";
        let a = parse_if_inet6(t);
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].entry.origin, Some(xdr::origin::LINKLAYER));
        assert_eq!(
            (a[1].entry.origin, a[1].entry.status),
            (Some(xdr::origin::MANUAL), Some(xdr::status::PREFERRED))
        );
        assert_eq!(a[1].entry.prefix_len, 64);
        assert_eq!(
            (a[2].entry.origin, a[2].entry.status),
            (Some(xdr::origin::RANDOM), Some(xdr::status::TENTATIVE))
        );
    }

    #[test]
    fn parses_resolv_conf() {
        let d = parse_resolv_conf(
            "# x\nnameserver 10.0.0.2\nnameserver fe80::1%eth0\nsearch a.example b.example\n",
        );
        assert_eq!(d.servers.len(), 2);
        assert_eq!(d.servers[0].ip(), Some("10.0.0.2".parse().unwrap()));
        assert_eq!(d.servers[1].ip(), Some("fe80::1".parse().unwrap()));
        assert_eq!(d.search, vec!["a.example", "b.example"]);
    }

    #[test]
    fn short_names() {
        assert_eq!(
            os_short_name("Debian GNU/Linux 12 (bookworm)", "12", "6.1.0", true),
            "debian12-64"
        );
        assert_eq!(
            os_short_name("Ubuntu 22.04.4 LTS", "22.04", "5.15.0", true),
            "ubuntu-64"
        );
        assert_eq!(
            os_short_name("Red Hat Enterprise Linux 9.3 (Plow)", "9.3", "5.14", true),
            "rhel9-64"
        );
        assert_eq!(
            os_short_name("CentOS Linux 7 (Core)", "7", "3.10", true),
            "centos7-64"
        );
        assert_eq!(
            os_short_name("VMware Photon OS/Linux", "5.0", "6.1", true),
            "vmware-photon-64"
        );
        assert_eq!(
            os_short_name("LinuxKit/Linux", "", "6.6.13-linuxkit", true),
            "other6xlinux-64"
        );
        assert_eq!(os_short_name("", "", "5.10.0", false), "other5xlinux");
        assert_eq!(os_short_name("", "", "4.19.0", true), "other4xlinux-64");
    }

    #[test]
    fn detailed_data_escapes_and_skips_empty() {
        assert_eq!(
            detailed_data(&[("a", "x'y\\z"), ("b", ""), ("c", "v  ")]),
            "a='x\\'y\\\\z' c='v'"
        );
    }

    #[test]
    fn detailed_header_is_648_bytes() {
        let p = os_detailed_payload("debian12-64", "Linux 6.1 Debian", "k='v'");
        assert_eq!(p.len(), 648 + 5 + 1);
        assert_eq!(&p[..4], &[1, 0, 0, 0]);
        assert_eq!(&p[4..15], b"debian12-64");
        assert_eq!(p[15], 0);
        assert_eq!(&p[133..149], b"Linux 6.1 Debian");
        assert_eq!(&p[648..], b"k='v'\0");
    }

    #[test]
    fn key_value_messages_have_two_spaces_and_a_nul() {
        assert_eq!(set_guest_info(1, "host"), b"SetGuestInfo  1 host\0");
    }

    #[test]
    fn nics_are_filtered_and_routes_indexed() {
        let link = |name: &str, index, mac: &str| Link {
            name: name.into(),
            index,
            mac: mac.into(),
            loopback: name == "lo",
        };
        let links = vec![
            link("lo", 1, "00:00:00:00:00:00"),
            link("eth0", 2, "00:50:56:00:00:01"),
            link("docker0", 3, "02:42:00:00:00:01"),
            link("eth1", 4, "00:50:56:00:00:02"),
        ];
        let addr = |ifname: &str, ip: &str| Addr {
            ifname: ifname.into(),
            entry: IpEntry {
                addr: ip.parse::<IpAddr>().unwrap().into(),
                prefix_len: 24,
                origin: None,
                status: None,
            },
        };
        let addrs = vec![
            addr("eth1", "10.0.1.5"),
            addr("docker0", "172.17.0.1"),
            addr("eth0", "10.0.0.5"),
        ];
        let route = |ifname: &str| ProcRoute {
            ifname: ifname.into(),
            dest: "0.0.0.0".parse().unwrap(),
            prefix_len: 0,
            gateway: None,
            metric: 0,
        };
        let info = build_nic_info(
            &links,
            &addrs,
            &[route("eth1"), route("docker0")],
            None,
            &NicFilter::default(),
        );
        assert_eq!(info.nics.len(), 2);
        assert_eq!(info.nics[0].mac, "00:50:56:00:00:01");
        assert_eq!(
            info.nics[1].ips[0].addr.ip(),
            Some("10.0.1.5".parse().unwrap())
        );
        assert_eq!(info.routes.len(), 1);
        assert_eq!(info.routes[0].if_index, 1);
        let snap = Snapshot {
            nic_info: info,
            ..Snapshot::default()
        };
        assert_eq!(snap.primary_ip(), Some("10.0.0.5".parse().unwrap()));
    }
}
