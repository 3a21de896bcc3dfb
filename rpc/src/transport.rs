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
