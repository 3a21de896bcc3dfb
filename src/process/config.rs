//! `[process]` and `[process.http]`: limits of guest processes and of the HTTP round trip.
//!
//! ```toml
//! [process]
//! stream_buffer_bytes = 1048576    # per stream of a program with I/O
//! no_new_privileges = false        # true: started programs cannot gain privileges (no sudo)
//!
//! [process.http]
//! allow_loopback = true            # host:port targets on 127.0.0.0/8, ::1, localhost
//! allow_hosts = []                 # further IP:port targets (addresses; names are not resolved)
//! unix_sockets = ["/run/docker.sock"]   # unix:/path targets allowed (none by default)
//! max_request_bytes = 16777216     # request body
//! max_response_bytes = 268435456   # response body
//! timeout_secs = 30                # until the target's response headers
//! connect_timeout_secs = 5
//! ```

use crate::codec::Reader;
use serde::Deserialize;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

/// Most list entries (allowed hosts, sockets) carried to a helper.
const MAX_LIST: usize = 1024;
/// Longest host or socket path carried to a helper (PATH_MAX).
const MAX_ENTRY: usize = 4096;

/// Settings that do not decode (the agent and its helper are the same binary, so this means
/// a corrupted setup).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[error("process settings: {0}")]
pub struct SettingsError(&'static str);

/// `[process]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Bytes buffered per stream of a program with I/O.
    pub stream_buffer_bytes: usize,
    /// Whether the user's helper, and so every program it starts, runs with
    /// `PR_SET_NO_NEW_PRIVS`: set-user-ID programs (`sudo`, `passwd`) and file capabilities
    /// (`ping`) then gain nothing. Off by default, so a program started in the guest behaves as
    /// it would from the user's shell, as under vmtoolsd. Helpers always have it when
    /// StartProgramInGuest is disabled: then nothing they run needs more.
    pub no_new_privileges: bool,
    /// The HTTP round trip.
    pub http: HttpConfig,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            stream_buffer_bytes: super::io::STREAM_BUFFER,
            no_new_privileges: false,
            http: HttpConfig::default(),
        }
    }
}

/// `[process.http]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether `host:port` targets on the loopback are allowed.
    pub allow_loopback: bool,
    /// Further `IP:port` targets allowed (addresses: names are not resolved).
    pub allow_hosts: Vec<String>,
    /// `unix:/path` sockets allowed.
    pub unix_sockets: Vec<PathBuf>,
    /// Largest request body forwarded.
    pub max_request_bytes: u64,
    /// Largest response body passed back.
    pub max_response_bytes: u64,
    /// Longest wait for the target's response headers.
    pub timeout_secs: u64,
    /// Longest wait for the connection.
    pub connect_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            allow_loopback: true,
            allow_hosts: Vec::new(),
            unix_sockets: Vec::new(),
            max_request_bytes: 16 * 1024 * 1024,
            max_response_bytes: 256 * 1024 * 1024,
            timeout_secs: 30,
            connect_timeout_secs: 5,
        }
    }
}

impl HttpConfig {
    /// The response-header time limit.
    pub fn timeout(&self) -> Duration {
        Duration::from_secs(self.timeout_secs)
    }

    /// The connect time limit.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_secs(self.connect_timeout_secs)
    }
}

impl ProcessConfig {
    /// The form the agent hands its helpers (`HelperSettings` of `PROCESS_SERVICE`): the
    /// helper runs as the user and cannot be relied on to read the configuration file.
    pub fn to_settings(&self) -> Vec<u8> {
        let h = &self.http;
        let mut out = Vec::new();
        for n in [
            self.stream_buffer_bytes as u64,
            h.max_request_bytes,
            h.max_response_bytes,
            h.timeout_secs,
            h.connect_timeout_secs,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(u8::from(h.allow_loopback));
        let mut list = |items: Vec<&[u8]>| {
            out.extend_from_slice(&(items.len() as u32).to_le_bytes());
            for i in items {
                out.extend_from_slice(&(i.len() as u32).to_le_bytes());
                out.extend_from_slice(i);
            }
        };
        list(h.allow_hosts.iter().map(|s| s.as_bytes()).collect());
        list(
            h.unix_sockets
                .iter()
                .map(|p| p.as_os_str().as_bytes())
                .collect(),
        );
        out
    }

    /// Decodes [`ProcessConfig::to_settings`]; empty settings are the defaults.
    pub fn from_settings(bytes: &[u8]) -> Result<ProcessConfig, SettingsError> {
        if bytes.is_empty() {
            return Ok(ProcessConfig::default());
        }
        let short = SettingsError("shorter than its fields");
        let mut r = Reader::new(bytes);
        let mut n = || r.u64_le().ok_or(short.clone());
        let (stream, max_req, max_resp, timeout, connect) = (n()?, n()?, n()?, n()?, n()?);
        let allow_loopback = match r.u8().ok_or(short.clone())? {
            0 => false,
            1 => true,
            _ => return Err(SettingsError("allow_loopback is neither 0 nor 1")),
        };
        let list = |r: &mut Reader<'_>| -> Result<Vec<Vec<u8>>, SettingsError> {
            let count = r.u32_le().ok_or(short.clone())? as usize;
            if count > MAX_LIST || !r.fits(count, 4) {
                return Err(SettingsError("list longer than its limit"));
            }
            (0..count)
                .map(|_| {
                    let len = r.u32_le().ok_or(short.clone())? as usize;
                    if len > MAX_ENTRY {
                        return Err(SettingsError("entry longer than PATH_MAX"));
                    }
                    Ok(r.take(len).ok_or(short.clone())?.to_vec())
                })
                .collect()
        };
        let hosts = list(&mut r)?
            .into_iter()
            .map(|h| String::from_utf8(h).map_err(|_| SettingsError("host is not UTF-8")))
            .collect::<Result<Vec<_>, _>>()?;
        let sockets = list(&mut r)?
            .into_iter()
            .map(|p| PathBuf::from(std::ffi::OsString::from_vec(p)))
            .collect();
        if !r.is_empty() {
            return Err(SettingsError("trailing bytes"));
        }
        Ok(ProcessConfig {
            stream_buffer_bytes: usize::try_from(stream)
                .map_err(|_| SettingsError("stream buffer beyond the address space"))?,
            // Applied by the helper's setup, not carried here.
            no_new_privileges: false,
            http: HttpConfig {
                allow_loopback,
                allow_hosts: hosts,
                unix_sockets: sockets,
                max_request_bytes: max_req,
                max_response_bytes: max_resp,
                timeout_secs: timeout,
                connect_timeout_secs: connect,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_refuses_unknown_keys() {
        let c: ProcessConfig = toml::from_str(
            "stream_buffer_bytes = 4096\n[http]\nunix_sockets = [\"/run/x.sock\"]\ntimeout_secs = 2\n",
        )
        .unwrap();
        assert_eq!(c.stream_buffer_bytes, 4096);
        assert_eq!(c.http.unix_sockets, vec![PathBuf::from("/run/x.sock")]);
        assert_eq!(c.http.timeout(), Duration::from_secs(2));
        assert!(c.http.allow_loopback);
        assert!(toml::from_str::<ProcessConfig>("bogus = 1").is_err());
    }

    #[test]
    fn settings_round_trip_and_refuse_damage() {
        let c = ProcessConfig {
            stream_buffer_bytes: 8192,
            no_new_privileges: false,
            http: HttpConfig {
                allow_loopback: false,
                allow_hosts: vec!["db:5432".into()],
                unix_sockets: vec![PathBuf::from("/run/docker.sock")],
                timeout_secs: 3,
                ..HttpConfig::default()
            },
        };
        let bytes = c.to_settings();
        assert_eq!(ProcessConfig::from_settings(&bytes), Ok(c));
        assert_eq!(
            ProcessConfig::from_settings(&[]),
            Ok(ProcessConfig::default())
        );
        for cut in 1..bytes.len() {
            assert!(
                ProcessConfig::from_settings(&bytes[..cut]).is_err(),
                "{cut}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(ProcessConfig::from_settings(&longer).is_err());
        let mut huge = ProcessConfig::default().to_settings();
        let at = huge.len() - 8;
        huge[at..at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(ProcessConfig::from_settings(&huge).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_settings_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            if let Ok(c) = ProcessConfig::from_settings(&data) {
                proptest::prop_assert_eq!(ProcessConfig::from_settings(&c.to_settings()), Ok(c));
            }
        }
    }
}
