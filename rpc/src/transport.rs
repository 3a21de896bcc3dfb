//! Choosing and opening a transport: `backdoor`, `vsock`, `unix:DIR` or `auto`.
//!
//! `auto` does what vmtoolsd does: vsock first, the backdoor when vsock cannot be had. Every VMX
//! transport checks for VMware first, so on another hypervisor it fails at once without touching
//! vsock or ports (`unix:DIR` needs no hypervisor).

use crate::message::{MessageChannel, Protocol};
use crate::port::PortBackdoor;
use crate::rpci::{RpciClient, StreamRpci};
use crate::vsock;
use std::fmt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

// Defined apart so that the RPCI client can name it without importing the transport selection,
// which builds RPCI clients.
pub use crate::error::TransportError;

/// Socket file names under a `unix:DIR` transport.
pub const TCLO_SOCKET: &str = "tclo.sock";
/// See [`TCLO_SOCKET`].
pub const RPCI_SOCKET: &str = "rpci.sock";

/// Where the VMX is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// vsock, then the backdoor.
    #[default]
    Auto,
    /// x86 port I/O.
    Backdoor,
    /// AF_VSOCK to the hypervisor.
    Vsock,
    /// The vsock conversation over Unix sockets `DIR/tclo.sock` and `DIR/rpci.sock`.
    Unix(PathBuf),
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Transport::Auto),
            "backdoor" => Ok(Transport::Backdoor),
            "vsock" => Ok(Transport::Vsock),
            _ => match s.strip_prefix("unix:") {
                Some(dir) if !dir.is_empty() => Ok(Transport::Unix(PathBuf::from(dir))),
                _ => Err(format!(
                    "unknown transport {s:?}: expected backdoor, vsock, unix:DIR or auto"
                )),
            },
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Transport::Auto => f.write_str("auto"),
            Transport::Backdoor => f.write_str("backdoor"),
            Transport::Vsock => f.write_str("vsock"),
            Transport::Unix(dir) => write!(f, "unix:{}", dir.display()),
        }
    }
}

/// Connects to a Unix socket of a `unix:DIR` transport.
pub fn connect_unix(dir: &Path, name: &str) -> Result<UnixStream, TransportError> {
    let path = dir.join(name);
    UnixStream::connect(&path).map_err(|source| TransportError::Unix { path, source })
}

/// Opens a backdoor message channel for `protocol` (detection first unless `assume_vmware`).
pub fn open_backdoor(
    protocol: Protocol,
    assume_vmware: bool,
) -> Result<MessageChannel<PortBackdoor>, TransportError> {
    let port = PortBackdoor::open(assume_vmware)?;
    Ok(MessageChannel::open(port, protocol)?)
}

/// Where one of the VMX's channels is to be opened.
#[derive(Debug)]
pub enum Endpoint {
    /// A connected stream (vsock or `unix:DIR`) carrying packets.
    Stream(UnixStream),
    /// The backdoor; with `auto`, why vsock could not be had.
    Backdoor {
        /// The vsock failure `auto` fell back from.
        vsock_failed: Option<Box<TransportError>>,
    },
}

/// Resolves `transport` for `protocol`'s channel: connects the stream (`DIR/tclo.sock` or
/// `DIR/rpci.sock`; vsock port 975 or 976), or says to use the backdoor. VMware is checked for
/// before vsock, unless `assume_vmware`.
pub fn endpoint(
    transport: &Transport,
    protocol: Protocol,
    assume_vmware: bool,
) -> Result<Endpoint, TransportError> {
    let (socket, port) = match protocol {
        Protocol::Tclo => (TCLO_SOCKET, vsock::TCLO_PORT),
        Protocol::Rpci => (RPCI_SOCKET, vsock::RPCI_PORT),
    };
    match transport {
        Transport::Unix(dir) => Ok(Endpoint::Stream(connect_unix(dir, socket)?)),
        Transport::Backdoor => Ok(Endpoint::Backdoor { vsock_failed: None }),
        Transport::Vsock | Transport::Auto => {
            // Only VMware's VMX listens there; elsewhere CID 0 is another hypervisor's.
            if !assume_vmware {
                crate::detect::require_vmware()?;
            }
            match vsock::connect_host(port) {
                Ok(s) => Ok(Endpoint::Stream(s)),
                Err(e) if *transport == Transport::Auto => {
                    tracing::debug!(error = %e, protocol = protocol.name(), "vsock unavailable, using the backdoor");
                    Ok(Endpoint::Backdoor {
                        vsock_failed: Some(Box::new(e.into())),
                    })
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// First pause before RPCI that fell back to the backdoor tries vsock again
/// (`RPCCHANNEL_VSOCKET_RETRY_MIN_DELAY`, `lib/rpcChannel/rpcChannel.c`). Trying a vsock that
/// does not work can cost a connect timeout on every request, hence the pause.
pub const VSOCK_RETRY_MIN_DELAY: Duration = Duration::from_secs(2);
/// Cap of the doubling pause (`RPCCHANNEL_VSOCKET_RETRY_MAX_DELAY`).
pub const VSOCK_RETRY_MAX_DELAY: Duration = Duration::from_secs(5 * 60);

/// When RPCI under `auto`, having fallen back to the backdoor, tries vsock again: the rule of
/// `RpcChannel_Start` and `RpcChannel_Send` (`lib/rpcChannel/rpcChannel.c`). No I/O and no
/// clock of its own: the caller passes `now`, so tests drive it deterministically.
///
/// - Each fall-back doubles the pause (from [`VSOCK_RETRY_MIN_DELAY`], so the first is 4 s, up
///   to [`VSOCK_RETRY_MAX_DELAY`]) and starts it at that moment.
/// - Until the pause is over, a (re)connect goes straight to the backdoor
///   ([`RpciFallback::sticking`]).
/// - Once it is over, the next request leaves the backdoor channel and tries vsock first
///   ([`RpciFallback::retry_due`]); failing, it falls back again with twice the pause.
/// - vsock working again, or the channel being reset, clears the state
///   ([`RpciFallback::clear`]). The reference clears it when a vsock channel fails a send
///   rather than when one connects; as every way back to the backdoor passes through such a
///   failure or a reset, the two behave the same.
///
/// [`rpci_endpoint`] applies it; the agent's RPCI connector keeps one per channel and asks
/// [`RpciFallback::retry_due`] before each request on a backdoor connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RpciFallback {
    /// When the current fall-back happened; `None` while vsock is (to be) used.
    fell_back_at: Option<Instant>,
    /// Pause after which vsock is tried again.
    delay: Duration,
}

impl Default for RpciFallback {
    fn default() -> Self {
        RpciFallback::new()
    }
}

impl RpciFallback {
    /// No fall-back yet: vsock is tried first.
    pub const fn new() -> RpciFallback {
        RpciFallback {
            fell_back_at: None,
            delay: VSOCK_RETRY_MIN_DELAY,
        }
    }

    /// vsock could not be had at `now` and the backdoor is used instead: the pause doubles
    /// (capped) and starts now.
    pub fn fell_back(&mut self, now: Instant) {
        self.fell_back_at = Some(now);
        self.delay = (self.delay * 2).min(VSOCK_RETRY_MAX_DELAY);
        tracing::debug!(
            seconds = self.delay.as_secs(),
            "rpci: staying on the backdoor before trying vsock again"
        );
    }

    /// vsock works again, or the channel was reset: back to the first state.
    pub fn clear(&mut self) {
        *self = RpciFallback::new();
    }

    /// A fall-back is in force and its pause is not over: open the backdoor without trying
    /// vsock.
    pub fn sticking(&self, now: Instant) -> bool {
        self.fell_back_at
            .is_some_and(|at| now.saturating_duration_since(at) < self.delay)
    }

    /// A fall-back is in force and its pause is over: leave the backdoor channel and try vsock
    /// before the next request.
    pub fn retry_due(&self, now: Instant) -> bool {
        self.fell_back_at
            .is_some_and(|at| now.saturating_duration_since(at) >= self.delay)
    }

    /// When vsock will be tried again, while a fall-back is in force.
    pub fn retry_at(&self) -> Option<Instant> {
        self.fell_back_at.map(|at| at + self.delay)
    }

    /// The current pause.
    pub fn delay(&self) -> Duration {
        self.delay
    }
}

/// [`endpoint`] for the RPCI channel under the vsock fall-back rule of [`RpciFallback`]: with
/// `auto`, while `fallback` is [sticking](RpciFallback::sticking) the answer is the backdoor at
/// once, without a connect attempt; otherwise vsock is tried, a failure is recorded as a
/// fall-back at `now` and a success clears it. Other transports ignore `fallback`.
pub fn rpci_endpoint(
    transport: &Transport,
    assume_vmware: bool,
    fallback: &mut RpciFallback,
    now: Instant,
) -> Result<Endpoint, TransportError> {
    rpci_endpoint_with(transport, fallback, now, |t| {
        endpoint(t, Protocol::Rpci, assume_vmware)
    })
}

/// [`rpci_endpoint`] over any resolver, so the rule is tested without sockets.
fn rpci_endpoint_with(
    transport: &Transport,
    fallback: &mut RpciFallback,
    now: Instant,
    resolve: impl FnOnce(&Transport) -> Result<Endpoint, TransportError>,
) -> Result<Endpoint, TransportError> {
    if *transport != Transport::Auto {
        return resolve(transport);
    }
    if fallback.sticking(now) {
        return Ok(Endpoint::Backdoor { vsock_failed: None });
    }
    let resolved = resolve(transport)?;
    match &resolved {
        Endpoint::Backdoor { .. } => fallback.fell_back(now),
        Endpoint::Stream(_) => fallback.clear(),
    }
    Ok(resolved)
}

/// A backdoor failure, joined with the vsock failure `auto` fell back from.
pub fn backdoor_failed(
    vsock_failed: Option<Box<TransportError>>,
    backdoor: TransportError,
) -> TransportError {
    match vsock_failed {
        Some(vsock) => TransportError::Exhausted {
            vsock,
            backdoor: Box::new(backdoor),
        },
        None => backdoor,
    }
}

/// Opens an RPCI client. `one_shot` asks stream peers to close after the first reply.
pub fn connect_rpci(
    transport: &Transport,
    assume_vmware: bool,
    one_shot: bool,
) -> Result<RpciClient, TransportError> {
    match endpoint(transport, Protocol::Rpci, assume_vmware)? {
        Endpoint::Stream(s) => {
            let name = if matches!(transport, Transport::Unix(_)) {
                "unix"
            } else {
                "vsock"
            };
            Ok(RpciClient::new(StreamRpci::new(s, one_shot), name))
        }
        Endpoint::Backdoor { vsock_failed } => open_backdoor(Protocol::Rpci, assume_vmware)
            .map(|chan| RpciClient::new(chan, "backdoor"))
            .map_err(|e| backdoor_failed(vsock_failed, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vsock::VsockError;
    use nix::errno::Errno;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn the_pause_doubles_from_four_seconds_to_five_minutes() {
        let t0 = Instant::now();
        let mut f = RpciFallback::new();
        assert!(!f.sticking(t0) && !f.retry_due(t0));
        let mut pauses = Vec::new();
        let mut now = t0;
        for _ in 0..10 {
            f.fell_back(now);
            pauses.push(f.delay().as_secs());
            assert_eq!(f.retry_at(), Some(now + f.delay()));
            now += f.delay();
        }
        assert_eq!(pauses, [4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn vsock_is_retried_when_the_pause_is_over_not_before() {
        let t0 = Instant::now();
        let mut f = RpciFallback::new();
        f.fell_back(t0);
        for (at, sticking) in [(0, true), (1, true), (3, true), (4, false), (60, false)] {
            assert_eq!(f.sticking(t0 + secs(at)), sticking, "{at} s");
            assert_eq!(f.retry_due(t0 + secs(at)), !sticking, "{at} s");
        }
        // A clock read before the fall-back (callers' clocks are monotonic, but the state
        // must not wrap) counts as no time passed.
        assert!(f.sticking(t0.checked_sub(secs(1)).unwrap_or(t0)));
    }

    #[test]
    fn clearing_starts_over_at_the_first_pause() {
        let t0 = Instant::now();
        let mut f = RpciFallback::new();
        f.fell_back(t0);
        f.fell_back(t0 + secs(4));
        assert_eq!(f.delay(), secs(8));
        f.clear();
        assert_eq!(f, RpciFallback::new());
        assert!(!f.sticking(t0 + secs(5)) && !f.retry_due(t0 + secs(5)));
        f.fell_back(t0 + secs(5));
        assert_eq!(f.delay(), secs(4));
    }

    fn no_vsock(_: &Transport) -> Result<Endpoint, TransportError> {
        Ok(Endpoint::Backdoor {
            vsock_failed: Some(Box::new(
                VsockError::Connect {
                    cid: vsock::HOST_CID,
                    port: vsock::RPCI_PORT,
                    errno: Errno::ECONNREFUSED,
                }
                .into(),
            )),
        })
    }

    fn vsock_up(_: &Transport) -> Result<Endpoint, TransportError> {
        let (a, _b) = UnixStream::pair().map_err(|source| TransportError::Unix {
            path: PathBuf::from("pair"),
            source,
        })?;
        Ok(Endpoint::Stream(a))
    }

    #[test]
    fn auto_stays_on_the_backdoor_without_trying_vsock_until_the_pause_is_over() {
        let t0 = Instant::now();
        let mut f = RpciFallback::new();
        let e = rpci_endpoint_with(&Transport::Auto, &mut f, t0, no_vsock).unwrap();
        assert!(matches!(
            e,
            Endpoint::Backdoor {
                vsock_failed: Some(_)
            }
        ));
        assert_eq!(f.retry_at(), Some(t0 + secs(4)));

        // Reconnecting within the pause: no attempt at all.
        let mut tried = false;
        let e = rpci_endpoint_with(&Transport::Auto, &mut f, t0 + secs(3), |t| {
            tried = true;
            no_vsock(t)
        })
        .unwrap();
        assert!(!tried);
        assert!(matches!(e, Endpoint::Backdoor { vsock_failed: None }));

        // Due: vsock is tried, fails again, the pause doubles from then.
        assert!(f.retry_due(t0 + secs(4)));
        rpci_endpoint_with(&Transport::Auto, &mut f, t0 + secs(4), no_vsock).unwrap();
        assert_eq!(f.retry_at(), Some(t0 + secs(12)));

        // Due again, and vsock is back: the state clears.
        let e = rpci_endpoint_with(&Transport::Auto, &mut f, t0 + secs(12), vsock_up).unwrap();
        assert!(matches!(e, Endpoint::Stream(_)));
        assert_eq!(f, RpciFallback::new());
    }

    #[test]
    fn explicit_transports_ignore_the_rule() {
        let t0 = Instant::now();
        let mut f = RpciFallback::new();
        f.fell_back(t0);
        let before = f;
        for t in [
            Transport::Backdoor,
            Transport::Vsock,
            Transport::Unix("d".into()),
        ] {
            let mut tried = false;
            let _ = rpci_endpoint_with(&t, &mut f, t0, |t| {
                tried = true;
                no_vsock(t)
            });
            assert!(tried, "{t}");
            assert_eq!(f, before, "{t}");
        }
    }
}
