//! Opening the vsock ("VMCI socket") connections to the VMX.
//!
//! The VMX listens on the hypervisor's context id 0 (`VMCI_HYPERVISOR_CONTEXT_ID`), TCLO on port
//! 975 and RPCI on 976 (`GUESTRPC_*_VSOCK_LISTEN_PORT`, `lib/include/vmware/guestrpc/tclodefs.h`).
//! Like `Socket_ConnectVMCI` (`lib/rpcChannel/simpleSocket.c`), a root agent binds a privileged
//! source port first, walking down from 1023 past ports in use, which tells the VMX the peer is
//! privileged; when binding one is refused it connects from any port instead.
//!
//! Only socket creation and addressing live here; the bytes then flow through the same code as
//! `unix:DIR` (the connected socket is handed out as a [`UnixStream`], whose read, write and
//! shutdown are plain socket calls that work on any stream socket).

use nix::errno::Errno;
use nix::sys::socket::{bind, connect, socket, AddressFamily, SockFlag, SockType, VsockAddr};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;

/// `VMCI_HYPERVISOR_CONTEXT_ID`.
pub const HOST_CID: u32 = 0;
/// `GUESTRPC_TCLO_VSOCK_LISTEN_PORT`.
pub const TCLO_PORT: u32 = 975;
/// `GUESTRPC_RPCI_VSOCK_LISTEN_PORT`.
pub const RPCI_PORT: u32 = 976;
/// `PRIVILEGED_PORT_MAX` (`lib/rpcChannel/simpleSocket.h`).
pub const PRIVILEGED_PORT_MAX: u32 = 1023;
/// `PRIVILEGED_PORT_MIN`.
pub const PRIVILEGED_PORT_MIN: u32 = 1;
/// `VMADDR_PORT_ANY`.
pub const PORT_ANY: u32 = u32::MAX;

/// What failed while connecting.
#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum VsockError {
    /// socket(AF_VSOCK) failed: no vsock support in this kernel.
    #[error("creating a vsock socket: {0}")]
    Socket(Errno),
    /// bind() of the source port failed.
    #[error("binding vsock source port {port}: {errno}")]
    Bind {
        /// Source port.
        port: u32,
        /// Why.
        errno: Errno,
    },
    /// connect() failed.
    #[error("connecting to vsock {cid}:{port}: {errno}")]
    Connect {
        /// Destination context.
        cid: u32,
        /// Destination port.
        port: u32,
        /// Why.
        errno: Errno,
    },
}

/// The source ports to try, in order: privileged ones from the top when `privileged`, else any.
pub fn source_ports(privileged: bool) -> Box<dyn Iterator<Item = u32>> {
    if privileged {
        Box::new((PRIVILEGED_PORT_MIN..=PRIVILEGED_PORT_MAX).rev())
    } else {
        Box::new(std::iter::once(PORT_ANY))
    }
}

/// `MAX_ECONNRESET_RETRIES` (`Socket_ConnectVMCI`): a VMX refusing vsock resets connections.
pub const MAX_CONNRESET_RETRIES: u32 = 8;
/// `MAX_ENOBUFS_RETRIES`.
pub const MAX_NOBUFS_RETRIES: u32 = 5;

/// Walks the source ports with `attempt` as `Socket_ConnectVMCI` does: a port in use, or a
/// connection reset (up to [`MAX_CONNRESET_RETRIES`] times), moves on to the next port; EINTR
/// tries the same port again, ENOBUFS too after a millisecond (up to [`MAX_NOBUFS_RETRIES`]
/// times); anything else ends the walk. Split from the socket calls so it can be tested.
pub fn walk_ports<T>(
    privileged: bool,
    mut attempt: impl FnMut(u32) -> Result<T, VsockError>,
) -> Result<T, VsockError> {
    let mut last = VsockError::Bind {
        port: PRIVILEGED_PORT_MIN,
        errno: Errno::EADDRINUSE,
    };
    let (mut resets, mut nobufs) = (0, 0);
    let mut ports = source_ports(privileged);
    let mut port = ports.next();
    while let Some(p) = port {
        match attempt(p) {
            Ok(t) => return Ok(t),
            Err(
                e @ VsockError::Bind {
                    errno: Errno::EADDRINUSE,
                    ..
                },
            ) => {
                last = e;
                port = ports.next();
            }
            Err(
                e @ VsockError::Connect {
                    errno: Errno::ECONNRESET,
                    ..
                },
            ) if privileged => {
                resets += 1;
                if resets >= MAX_CONNRESET_RETRIES {
                    return Err(e);
                }
                last = e;
                port = ports.next();
            }
            Err(VsockError::Connect {
                errno: Errno::EINTR,
                ..
            }) => {}
            Err(
                e @ VsockError::Connect {
                    errno: Errno::ENOBUFS,
                    ..
                },
            ) => {
                nobufs += 1;
                if nobufs >= MAX_NOBUFS_RETRIES {
                    return Err(e);
                }
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

fn connect_from(cid: u32, port: u32, source_port: u32) -> Result<OwnedFd, VsockError> {
    let fd = socket(
        AddressFamily::Vsock,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(VsockError::Socket)?;
    if source_port != PORT_ANY {
        // VMADDR_CID_ANY: the local context id.
        let local = VsockAddr::new(u32::MAX, source_port);
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &local).map_err(|errno| VsockError::Bind {
            port: source_port,
            errno,
        })?;
    }
    let dest = VsockAddr::new(cid, port);
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &dest)
        .map(|()| fd)
        .map_err(|errno| VsockError::Connect { cid, port, errno })
}

/// Connects to the VMX's `port`: from a privileged source port when running as root (falling
/// back to any port when binding one is refused), from any port otherwise.
pub fn connect_host(port: u32) -> Result<UnixStream, VsockError> {
    let root = nix::unistd::geteuid().is_root();
    let fd = match walk_ports(root, |p| connect_from(HOST_CID, port, p)) {
        Ok(fd) => fd,
        Err(VsockError::Bind {
            errno: Errno::EACCES | Errno::EPERM,
            ..
        }) if root => connect_from(HOST_CID, port, PORT_ANY)?,
        Err(e) => return Err(e),
    };
    Ok(UnixStream::from(fd))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_the_vmx_listeners() {
        assert_eq!((HOST_CID, TCLO_PORT, RPCI_PORT), (0, 975, 976));
    }

    #[test]
    fn privileged_ports_walk_down_from_1023() {
        let ports: Vec<u32> = source_ports(true).collect();
        assert_eq!(ports.len(), 1023);
        assert_eq!((ports[0], ports[1], ports[1022]), (1023, 1022, 1));
        assert_eq!(source_ports(false).collect::<Vec<_>>(), vec![PORT_ANY]);
    }

    #[test]
    fn a_port_in_use_moves_on_to_the_next() {
        let mut tried = Vec::new();
        let got = walk_ports(true, |p| {
            tried.push(p);
            if p > 1020 {
                Err(VsockError::Bind {
                    port: p,
                    errno: Errno::EADDRINUSE,
                })
            } else {
                Ok(p)
            }
        });
        assert_eq!(got, Ok(1020));
        assert_eq!(tried, vec![1023, 1022, 1021, 1020]);
    }

    #[test]
    fn other_errors_end_the_walk() {
        let mut n = 0;
        let got: Result<(), _> = walk_ports(true, |p| {
            n += 1;
            Err(VsockError::Connect {
                cid: HOST_CID,
                port: p,
                errno: Errno::ECONNREFUSED,
            })
        });
        assert!(matches!(got, Err(VsockError::Connect { .. })));
        assert_eq!(n, 1);
    }

    #[test]
    fn resets_move_on_and_give_up_after_eight() {
        let mut tried = Vec::new();
        let got: Result<(), _> = walk_ports(true, |p| {
            tried.push(p);
            Err(VsockError::Connect {
                cid: HOST_CID,
                port: p,
                errno: Errno::ECONNRESET,
            })
        });
        assert!(matches!(
            got,
            Err(VsockError::Connect {
                errno: Errno::ECONNRESET,
                ..
            })
        ));
        assert_eq!(tried, (1016..=1023).rev().collect::<Vec<_>>());
    }

    #[test]
    fn eintr_retries_the_same_port_and_enobufs_gives_up() {
        let mut tried = Vec::new();
        let got = walk_ports(true, |p| {
            tried.push(p);
            if tried.len() < 3 {
                Err(VsockError::Connect {
                    cid: HOST_CID,
                    port: p,
                    errno: Errno::EINTR,
                })
            } else {
                Ok(p)
            }
        });
        assert_eq!(got, Ok(1023));
        assert_eq!(tried, vec![1023, 1023, 1023]);
        let mut n = 0;
        let got: Result<(), _> = walk_ports(false, |p| {
            n += 1;
            Err(VsockError::Connect {
                cid: HOST_CID,
                port: p,
                errno: Errno::ENOBUFS,
            })
        });
        assert!(got.is_err());
        assert_eq!(n, MAX_NOBUFS_RETRIES);
    }

    #[test]
    fn all_ports_in_use_is_an_error() {
        let got: Result<(), _> = walk_ports(true, |p| {
            Err(VsockError::Bind {
                port: p,
                errno: Errno::EADDRINUSE,
            })
        });
        assert!(matches!(
            got,
            Err(VsockError::Bind {
                errno: Errno::EADDRINUSE,
                ..
            })
        ));
    }
}
