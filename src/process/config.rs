//! `[process]` and `[process.http]`: limits of guest processes and of the HTTP round trip.
//!
//! ```toml
//! [process]
//! stream_buffer_bytes = 1048576    # per stream of a program with I/O
//!
//! [process.http]
//! allow_loopback = true            # host:port targets on 127.0.0.0/8, ::1, localhost
//! allow_hosts = []                 # further host:port targets, exactly as written
//! unix_sockets = ["/run/docker.sock"]   # unix:/path targets allowed (none by default)
//! max_request_bytes = 16777216     # request body
//! max_response_bytes = 268435456   # response body
//! timeout_secs = 30                # until the target's response headers
//! connect_timeout_secs = 5
//! ```

use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;

/// `[process]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProcessConfig {
    /// Bytes buffered per stream of a program with I/O.
    pub stream_buffer_bytes: usize,
    /// The HTTP round trip.
    pub http: HttpConfig,
}

impl Default for ProcessConfig {
    fn default() -> Self {
        ProcessConfig {
            stream_buffer_bytes: super::io::STREAM_BUFFER,
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
    /// Further `host:port` targets allowed, compared as written.
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
}
