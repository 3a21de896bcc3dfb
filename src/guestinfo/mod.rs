//! What the guest tells the VMX about itself: NICs (XDR NIC info v3), disks, host name, OS
//! names and details, uptime. NICs, addresses and routes come from rtnetlink ([`netlink`]),
//! disks from the mount table and statvfs ([`disk`]), the rest from `/proc` and `/etc`; never
//! by running a program.
//!
//! The parsers are pure functions (tested on literal input); [`gather`] reads the running
//! system; [`NicMethod`] and [`other_messages`] turn a [`Snapshot`] into the `SetGuestInfo`
//! requests vmtoolsd sends (`services/plugins/guestInfo/guestInfoServer.c`).

pub mod disk;
pub mod feature;
pub mod netlink;
pub mod xdr;

pub use feature::GuestInfo;

use std::collections::BTreeMap;
use std::net::IpAddr;
use xdr::{DnsConfig, NicInfo};

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

/// Which NICs and routes to report, in which order (vmtoolsd's `exclude-nics`,
/// `primary-nics`, `low-priority-nics`, `max-ipv4-routes`, `max-ipv6-routes`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NicFilter {
    /// Interface name patterns not reported (`*` any run, `?` any one character).
    pub exclude: Vec<String>,
    /// Patterns of NICs reported first, so that their address is the primary one.
    pub primary: Vec<String>,
    /// Patterns of NICs reported last.
    pub low_priority: Vec<String>,
    /// At most this many NICs (and never more than [`xdr::MAX_NICS`]), after ordering.
    pub max_nics: usize,
    /// At most this many IPv4 routes (`NICINFO_MAX_ROUTES` by default, as vmtoolsd).
    pub max_ipv4_routes: usize,
    /// At most this many IPv6 routes, within what the IPv4 ones leave of `NICINFO_MAX_ROUTES`.
    pub max_ipv6_routes: usize,
}

impl Default for NicFilter {
    fn default() -> Self {
        NicFilter {
            exclude: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            primary: Vec::new(),
            low_priority: Vec::new(),
            max_nics: xdr::MAX_NICS,
            max_ipv4_routes: xdr::MAX_ROUTES,
            max_ipv6_routes: xdr::MAX_ROUTES,
        }
    }
}

/// Glob match with `*` (any run) and `?` (any one character), as vmtoolsd's patterns.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    // Iterative with one backtrack point: linear in practice, no recursion on long names.
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some(b'*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == b'?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                Some((sp, sn)) => {
                    pi = sp + 1;
                    ni = sn + 1;
                    star = Some((sp, sn + 1));
                }
                None => return false,
            },
        }
    }
    p[pi.min(p.len())..].iter().all(|&c| c == b'*')
}

impl NicFilter {
    /// The filter `[guestinfo]` configures.
    pub fn from_config(c: &crate::config::GuestInfoConfig) -> NicFilter {
        NicFilter {
            exclude: c.exclude_nics.clone(),
            primary: c.primary_nics.clone(),
            low_priority: c.low_priority_nics.clone(),
            max_nics: c.max_nics,
            max_ipv4_routes: c.max_ipv4_routes,
            max_ipv6_routes: c.max_ipv6_routes,
        }
    }

    /// True when `name` is excluded.
    pub fn excludes(&self, name: &str) -> bool {
        self.exclude.iter().any(|p| glob_match(p, name))
    }

    /// Where `name` goes in the order (`GuestInfo_IfaceGetPriority`, lib/nicInfo/nicInfo.c:
    /// a primary pattern wins over a low-priority one).
    pub fn priority(&self, name: &str) -> netlink::Priority {
        if self.primary.iter().any(|p| glob_match(p, name)) {
            netlink::Priority::Primary
        } else if self.low_priority.iter().any(|p| glob_match(p, name)) {
            netlink::Priority::Low
        } else {
            netlink::Priority::Normal
        }
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
    /// Mounted filesystems, when disk info is on.
    pub disks: Option<disk::DiskInfo>,
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

/// NICs, addresses and routes, without DNS; empty (with a warning) when rtnetlink fails.
pub fn gather_nic_info(filter: &NicFilter) -> NicInfo {
    match netlink::gather_nics(filter) {
        Ok(info) => info,
        Err(e) => {
            tracing::warn!(error = %e, "reading interfaces");
            NicInfo::default()
        }
    }
}

/// What `info update network` sends: NICs, addresses, routes and DNS.
pub fn gather_network(filter: &NicFilter) -> NicInfo {
    let mut info = gather_nic_info(filter);
    let node = nix::sys::utsname::uname()
        .map(|u| u.nodename().to_string_lossy().into_owned())
        .unwrap_or_default();
    info.dns = Some(dns_info(&node));
    info
}

/// resolv.conf with the host and domain names filled in as vmtoolsd reports them.
fn dns_info(node: &str) -> DnsConfig {
    let mut dns = parse_resolv_conf(&read("/etc/resolv.conf"));
    dns.host_name = Some(node.to_string());
    if dns.domain_name.is_none() {
        dns.domain_name = node.split_once('.').map(|(_, d)| d.to_string());
    }
    dns
}

/// Reads the running system (disks too when `disk_info`).
pub fn gather(filter: &NicFilter, disk_info: bool) -> Snapshot {
    let mut nic_info = gather_nic_info(filter);
    let uts = nix::sys::utsname::uname().ok();
    let uts_field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
        uts.as_ref()
            .map(|u| f(u).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let node = uts_field(|u| u.nodename());
    let release = uts_field(|u| u.release());
    let machine = uts_field(|u| u.machine());
    let dns = dns_info(&node);
    // A dotted node name fills in the domain itself, so this only adds resolv.conf's.
    let host_name = match &dns.domain_name {
        Some(d) if !node.contains('.') => format!("{node}.{d}"),
        _ => node.clone(),
    };
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
    nic_info.dns = Some(dns);
    Snapshot {
        nic_info,
        host_name,
        os_full: format!("Linux {release} {pretty}").trim_end().to_string(),
        os_short: os_short_name(&pretty, &get("VERSION_ID"), &release, bits64),
        os_detailed,
        uptime_centis,
        disks: disk_info.then(|| disk::gather(true)),
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
        assert!(glob_match("eth?", "eth1"));
        assert!(!glob_match("eth?", "eth10"));
        assert!(glob_match("*0", "ens160"));
        assert!(!glob_match("", "x"));
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
}
