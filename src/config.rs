//! The agent's configuration: a TOML file, every key optional, unknown keys refused.
//!
//! ```toml
//! transport = "auto"            # auto | backdoor | vsock | unix:DIR
//! log_level = "info"            # error | warn | info | debug | trace
//! log_output = "stderr"         # stderr (journald) | stdout (LinuxKit's service logs)
//!
//! [power]
//! method = "systemd"            # systemd | pid1-signal | syscall | command | none
//! halt_command = ["/sbin/poweroff"]    # method = "command"
//! reboot_command = ["/sbin/reboot"]
//! pid1 = 1                      # method = "pid1-signal": the init to signal
//! scripts_dir = "/etc/vmware-tools"    # poweroff-vm-default, poweron-vm-default, ...
//! # poweroff_script = "/path"   # per state change; "" runs nothing
//!
//! [guestinfo]
//! exclude_nics = ["docker*", "veth*", "virbr*", "cali*", "antrea-*"]
//! primary_nics = []            # e.g. ["ens192"]: reported first, its address is the VM's IP
//! low_priority_nics = []        # reported last
//! max_nics = 16                 # after ordering
//! max_ipv4_routes = 100         # 0..100
//! max_ipv6_routes = 100         # 0..100, within what IPv4 leaves of 100
//! disk_info = true              # mounted filesystems and their virtual disks
//! interval_secs = 30
//!
//! [guestoperations]             # vmtoolsd's switches, same names
//! disabled = false              # true: every guest operation answers VIX_E_OPERATION_DISABLED
//! ListFilesInGuest.disabled = true     # one operation, by its vSphere API name
//! [auth]
//! backend = "pam"               # pam | shadow | none (default pam with the pam feature, else shadow)
//! pam_service = "toolbox"       # /etc/pam.d/<service>
//! cache_secs = 60               # how long a successful login is remembered; 0: never
//! passwd_file = "/etc/passwd"   # shadow and none backends; every backend watches them
//! group_file = "/etc/group"
//! shadow_file = "/etc/shadow"
//! shells_file = "/etc/shells"
//! ```

use crate::guestinfo::DEFAULT_EXCLUDE;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use toolbox_rpc::Transport;

/// Where the configuration is read from when no path is given, if it exists.
pub const DEFAULT_PATH: &str = "/etc/toolbox/toolbox.toml";

/// Where the agent's log lines go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogOutput {
    /// Standard error (systemd hands it to journald).
    #[default]
    Stderr,
    /// Standard output (LinuxKit collects a service's stdout as its log).
    Stdout,
}

/// How halt and reboot are carried out once the scripts ran.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PowerMethod {
    /// `systemctl poweroff|reboot` (systemd asks logind's policy).
    Systemd,
    /// Signal PID 1 the way busybox init (LinuxKit) wants: SIGUSR2 powers off, SIGTERM reboots.
    Pid1Signal,
    /// `sync(2)` then `reboot(2)`: no init involved (appliances where the agent is in charge).
    Syscall,
    /// Run `halt_command` / `reboot_command`.
    Command,
    /// Report success and do nothing (tests, or an init that watches guestinfo itself).
    None,
}

/// `[power]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PowerConfig {
    /// How to halt and reboot.
    pub method: PowerMethod,
    /// argv for halt with `method = "command"`.
    pub halt_command: Vec<String>,
    /// argv for reboot with `method = "command"`.
    pub reboot_command: Vec<String>,
    /// The process `pid1-signal` signals (1 but in tests).
    pub pid1: i32,
    /// Where the default scripts live (vmtoolsd's `/etc/vmware-tools`).
    pub scripts_dir: PathBuf,
    /// Script for halt and reboot; `Some("")` runs none; `None` uses `poweroff-vm-default`.
    pub poweroff_script: Option<String>,
    /// Script for power on (`poweron-vm-default`).
    pub poweron_script: Option<String>,
    /// Script for resume (`resume-vm-default`).
    pub resume_script: Option<String>,
    /// Script for suspend (`suspend-vm-default`).
    pub suspend_script: Option<String>,
}

impl Default for PowerConfig {
    fn default() -> Self {
        PowerConfig {
            method: PowerMethod::Systemd,
            halt_command: vec!["/sbin/poweroff".into()],
            reboot_command: vec!["/sbin/reboot".into()],
            pid1: 1,
            scripts_dir: PathBuf::from("/etc/vmware-tools"),
            poweroff_script: None,
            poweron_script: None,
            resume_script: None,
            suspend_script: None,
        }
    }
}

/// `[guestinfo]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestInfoConfig {
    /// Interface name patterns not reported (`*` and `?` wildcards).
    pub exclude_nics: Vec<String>,
    /// Interface name patterns reported first: their address is `guest.ipAddress` and the
    /// `broadcastIP` reply (vmtoolsd's `primary-nics`).
    pub primary_nics: Vec<String>,
    /// Interface name patterns reported last (vmtoolsd's `low-priority-nics`).
    pub low_priority_nics: Vec<String>,
    /// At most this many NICs (16 is the protocol's limit), counted after ordering.
    pub max_nics: usize,
    /// At most this many IPv4 routes, 0 to 100 (vmtoolsd's `max-ipv4-routes`).
    pub max_ipv4_routes: usize,
    /// At most this many IPv6 routes, 0 to 100, within what IPv4 leaves of 100.
    pub max_ipv6_routes: usize,
    /// Report mounted filesystems and their disks (vmtoolsd's `disable-query-diskinfo`, negated).
    pub disk_info: bool,
    /// Seconds between checks for changes.
    pub interval_secs: u64,
}

impl Default for GuestInfoConfig {
    fn default() -> Self {
        GuestInfoConfig {
            exclude_nics: DEFAULT_EXCLUDE.iter().map(|s| s.to_string()).collect(),
            primary_nics: Vec::new(),
            low_priority_nics: Vec::new(),
            max_nics: crate::guestinfo::xdr::MAX_NICS,
            max_ipv4_routes: crate::guestinfo::xdr::MAX_ROUTES,
            max_ipv6_routes: crate::guestinfo::xdr::MAX_ROUTES,
            disk_info: true,
            interval_secs: 30,
        }
    }
}

/// `[guestoperations]`, as vmtoolsd reads it (`VixToolsGetAPIDisabledFromConf`): `disabled`
/// turns every guest operation off; `<API name>.disabled` one of them (names in
/// [`crate::vix::server::CONFIG_API_NAMES`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct GuestOperationsConfig {
    /// Every operation off.
    pub disabled: bool,
    /// Per operation, by vSphere API name (`ListFilesInGuest`, ...).
    #[serde(flatten)]
    pub operations: BTreeMap<String, OperationSwitch>,
}

/// One operation's switch: `<API name>.disabled = true`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OperationSwitch {
    /// This operation off.
    pub disabled: bool,
}

impl GuestOperationsConfig {
    /// True when the global switch is on, or `api` (when given) is switched off.
    pub fn is_disabled(&self, api: Option<&str>) -> bool {
        self.disabled
            || api
                .and_then(|a| self.operations.get(a))
                .is_some_and(|s| s.disabled)
    }
}

/// `[auth]`: how guest-operation requests are authenticated (see [`crate::auth`]).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Which backend checks passwords.
    pub backend: crate::auth::BackendKind,
    /// PAM service name (`pam` backend).
    pub pam_service: String,
    /// Seconds a successful login is remembered; 0 checks every request.
    pub cache_secs: u64,
    /// passwd(5).
    pub passwd_file: PathBuf,
    /// group(5).
    pub group_file: PathBuf,
    /// shadow(5).
    pub shadow_file: PathBuf,
    /// shells(5).
    pub shells_file: PathBuf,
}

/// Longest login cache lifetime accepted: the cache is meant to span one burst of requests,
/// not to stand in for a session.
pub const MAX_AUTH_CACHE_SECS: u64 = 600;

impl Default for AuthConfig {
    fn default() -> Self {
        let files = crate::auth::AccountFiles::default();
        AuthConfig {
            backend: crate::auth::BackendKind::build_default(),
            pam_service: crate::auth::DEFAULT_PAM_SERVICE.into(),
            cache_secs: crate::auth::DEFAULT_CACHE_TTL.as_secs(),
            passwd_file: files.passwd,
            group_file: files.group,
            shadow_file: files.shadow,
            shells_file: files.shells,
        }
    }
}

/// The whole file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Transport, as `--transport` takes it.
    #[serde(deserialize_with = "de_transport")]
    pub transport: Transport,
    /// Log level.
    pub log_level: String,
    /// Where log lines go.
    pub log_output: LogOutput,
    /// Power operations.
    pub power: PowerConfig,
    /// Guest info.
    pub guestinfo: GuestInfoConfig,
    /// Guest operations switches.
    pub guestoperations: GuestOperationsConfig,
    /// Authentication of guest operations.
    pub auth: AuthConfig,
    /// Guest processes and the HTTP round trip.
    pub process: crate::process::config::ProcessConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            transport: Transport::Auto,
            log_level: "info".into(),
            log_output: LogOutput::Stderr,
            power: PowerConfig::default(),
            guestinfo: GuestInfoConfig::default(),
            guestoperations: GuestOperationsConfig::default(),
            auth: AuthConfig::default(),
            process: Default::default(),
        }
    }
}

fn de_transport<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Transport, D::Error> {
    let s = String::deserialize(d)?;
    s.parse().map_err(serde::de::Error::custom)
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Unreadable.
    #[error("reading config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Not TOML, or not ours.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// Parsed but inconsistent.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl Config {
    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let c: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.message().to_string(),
        })?;
        let invalid = |m: &str| ConfigError::Invalid {
            path: path.to_owned(),
            message: m.to_string(),
        };
        if c.log_level.parse::<tracing::Level>().is_err() {
            return Err(invalid(&format!(
                "log_level {:?} is not one of error, warn, info, debug, trace",
                c.log_level
            )));
        }
        if c.power.method == PowerMethod::Command
            && (c.power.halt_command.is_empty() || c.power.reboot_command.is_empty())
        {
            return Err(invalid(
                "power.method = \"command\" needs halt_command and reboot_command",
            ));
        }
        if c.guestinfo.interval_secs == 0 {
            return Err(invalid("guestinfo.interval_secs must be at least 1"));
        }
        let max_routes = crate::guestinfo::xdr::MAX_ROUTES;
        if c.guestinfo.max_ipv4_routes > max_routes || c.guestinfo.max_ipv6_routes > max_routes {
            return Err(invalid(
                "guestinfo.max_ipv4_routes and max_ipv6_routes must be 0 to 100 (NICINFO_MAX_ROUTES)",
            ));
        }
        if let Some(name) = c
            .guestoperations
            .operations
            .keys()
            .find(|k| !crate::vix::server::CONFIG_API_NAMES.contains(&k.as_str()))
        {
            return Err(invalid(&format!(
                "guestoperations.{name} is not a guest operation vmtoolsd knows"
            )));
        }
        if c.auth.cache_secs > MAX_AUTH_CACHE_SECS {
            return Err(invalid(&format!(
                "auth.cache_secs must be at most {MAX_AUTH_CACHE_SECS}"
            )));
        }
        if c.auth.backend == crate::auth::BackendKind::Pam && !cfg!(feature = "pam") {
            return Err(invalid(
                "auth.backend = \"pam\" needs a build with the pam feature; use \"shadow\"",
            ));
        }
        if let Some(h) = c
            .process
            .http
            .allow_hosts
            .iter()
            .find(|h| h.parse::<std::net::SocketAddr>().is_err())
        {
            return Err(invalid(&format!(
                "process.http.allow_hosts entry {h:?} is not IP:port (host names are not resolved)"
            )));
        }
        if let Some(p) = c
            .process
            .http
            .unix_sockets
            .iter()
            .find(|p| !p.is_absolute())
        {
            return Err(invalid(&format!(
                "process.http.unix_sockets entry {} is not an absolute path",
                p.display()
            )));
        }
        if c.auth.pam_service.is_empty() || c.auth.pam_service.contains(['/', '\0']) {
            return Err(invalid(
                "auth.pam_service must be a file name in /etc/pam.d",
            ));
        }
        Ok(c)
    }

    /// Loads `path`, or [`DEFAULT_PATH`] when it exists, or the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_owned(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::parse(&text, &path),
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, ConfigError> {
        Config::parse(s, Path::new("t.toml"))
    }

    #[test]
    fn empty_is_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_file() {
        let c = parse(
            "transport = \"unix:/run/x\"\nlog_level = \"debug\"\n[power]\nmethod = \"pid1-signal\"\npid1 = 42\n\
             [guestinfo]\nexclude_nics = [\"eth9\"]\ninterval_secs = 5\n",
        )
        .unwrap();
        assert_eq!(c.transport, Transport::Unix("/run/x".into()));
        assert_eq!(
            (c.power.method, c.power.pid1),
            (PowerMethod::Pid1Signal, 42)
        );
        assert_eq!(c.guestinfo.exclude_nics, vec!["eth9"]);
        let a =
            parse("[auth]\nbackend = \"shadow\"\ncache_secs = 0\nshadow_file = \"/t/shadow\"\n")
                .unwrap()
                .auth;
        assert_eq!(
            (a.backend, a.cache_secs, a.shadow_file),
            (
                crate::auth::BackendKind::Shadow,
                0,
                PathBuf::from("/t/shadow")
            )
        );
        assert_eq!(a.passwd_file, PathBuf::from("/etc/passwd"));
    }

    #[test]
    fn guestoperations_switches_as_vmtoolsd_names_them() {
        let c = parse("[guestoperations]\nListFilesInGuest.disabled = true\nMoveFileInGuest.disabled = false\n")
            .unwrap()
            .guestoperations;
        assert!(c.is_disabled(Some("ListFilesInGuest")));
        assert!(!c.is_disabled(Some("MoveFileInGuest")));
        assert!(!c.is_disabled(None));
        let all = parse("[guestoperations]\ndisabled = true\n")
            .unwrap()
            .guestoperations;
        assert!(all.is_disabled(None) && all.is_disabled(Some("MoveFileInGuest")));
    }

    #[test]
    fn rejects_unknown_keys_bad_values_and_inconsistencies() {
        for bad in [
            "trasnport = \"auto\"",
            "transport = \"tcp\"",
            "log_level = \"loud\"",
            "[power]\nmethod = \"magic\"",
            "[power]\nmethod = \"command\"\nhalt_command = []",
            "[guestinfo]\ninterval_secs = 0",
            "[guestoperations]\nListFilezInGuest.disabled = true",
            "[guestoperations]\nListFilesInGuest.enabled = true",
            "[guestoperations]\ndisabled = 1",
            "[auth]\nbackend = \"ldap\"",
            "[auth]\ncache_secs = 601",
            "[auth]\npam_service = \"../x\"",
            "[auth]\nshadow = \"/x\"",
            "[process.http]\nallow_hosts = [\"db.internal:5432\"]",
            "[process.http]\nunix_sockets = [\"run/x.sock\"]",
            "[process]\nno_new_privileges = \"yes\"",
            "[guestinfo\n",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("config t.toml: "), "{bad}: {e}");
        }
    }
}
