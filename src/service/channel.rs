//! The agent's connections to the VMX, async: a TCLO channel (requests from the VMX) and an RPCI
//! channel (requests to it), each over a stream (vsock or `unix:DIR`, packets pushed by the
//! host) or the backdoor (polled).
//!
//! Stream packets are framed by [`toolbox_rpc::packet`]; [`PacketReader`] buffers so that a
//! packet usually arrives in one read and reading is cancel-safe inside `select!`. Backdoor
//! calls are made inline: each is a few microseconds of VMX time.

use std::io::{self, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use std::time::Instant;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use toolbox_rpc::backdoor::Backdoor;
use toolbox_rpc::message::{MessageChannel, Protocol};
use toolbox_rpc::model::VmxModel;
use toolbox_rpc::packet::{Packet, PacketFramer};
use toolbox_rpc::port::PortBackdoor;
use toolbox_rpc::rpci::{parse_reply, RpciError};
use toolbox_rpc::stream::StreamError;
use toolbox_rpc::transport::{
    backdoor_failed, endpoint, rpci_endpoint, Endpoint, RpciFallback, TransportError,
};
use toolbox_rpc::Transport;

/// A backdoor message channel over any backdoor (the real port or the model).
pub type BackdoorChannel = MessageChannel<Box<dyn Backdoor + Send>>;

/// A non-blocking read half the reactor watches for readability.
pub trait ReadHalf {
    /// Waits until a read may make progress.
    fn readable(&self) -> impl std::future::Future<Output = io::Result<()>> + Send;
    /// Reads what is there without waiting.
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize>;
}

impl ReadHalf for OwnedReadHalf {
    async fn readable(&self) -> io::Result<()> {
        OwnedReadHalf::readable(self).await
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        OwnedReadHalf::try_read(self, buf)
    }
}

impl ReadHalf for TcloReader {
    async fn readable(&self) -> io::Result<()> {
        TcloReader::readable(self).await
    }
    fn try_read(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcloReader::try_read(self, buf)
    }
}

/// Reads whole packets from a stream through the transport's one framer
/// ([`PacketFramer`]); cancel-safe, as the framer keeps what a cancelled read had taken.
#[derive(Debug)]
pub struct PacketReader<R> {
    inner: R,
    framer: PacketFramer,
}

impl<R: ReadHalf> PacketReader<R> {
    /// Wraps a read half.
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            framer: PacketFramer::new(),
        }
    }

    /// The next packet; [`StreamError::Closed`] at a clean end of stream.
    pub async fn next(&mut self) -> Result<Packet, StreamError> {
        let io_err = |source| StreamError::Io {
            what: "reading packet",
            source,
        };
        loop {
            if let Some(p) = self.framer.next_packet()? {
                return Ok(p);
            }
            self.inner.readable().await.map_err(io_err)?;
            let inner = &self.inner;
            match self.framer.fill_with(|buf| inner.try_read(buf)) {
                Ok(0) if self.framer.partial() => {
                    return Err(io_err(io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => return Err(StreamError::Closed),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(e)),
            }
        }
    }
}

/// Writes one packet.
pub async fn write_packet(w: &mut OwnedWriteHalf, p: &Packet) -> Result<(), StreamError> {
    w.write_all(&p.encode())
        .await
        .map_err(|source| StreamError::Io {
            what: "sending packet",
            source,
        })
}

/// The read side of the TCLO stream, registered with the reactor for readability only.
///
/// A socket registered for writability too gets an EPOLLOUT edge each time the peer drains
/// what we sent, waking an idle agent a second time per heartbeat. tokio's pipe receiver takes
/// any owned descriptor and registers it for reading alone; read(2) on a socket is what it does.
/// Writes go through [`TcloWriter`].
pub type TcloReader = tokio::net::unix::pipe::Receiver;

/// How long a TCLO reply may wait for room in the socket before the channel counts as broken.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The write side of the TCLO stream: not registered with the reactor. Replies and heartbeats
/// are small and the VMX reads them at once; should the socket be full, the writer retries
/// after growing pauses, then gives up.
#[derive(Debug)]
pub struct TcloWriter {
    s: std::os::unix::net::UnixStream,
    /// Reused for every packet.
    out: Vec<u8>,
}

impl TcloWriter {
    /// Writes one packet.
    pub async fn write_packet(&mut self, p: &Packet) -> Result<(), StreamError> {
        self.out.clear();
        p.encode_into(&mut self.out)?;
        let mut rest = &self.out[..];
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        while !rest.is_empty() {
            match (&self.s).write(rest) {
                Ok(0) => {
                    return Err(StreamError::Io {
                        what: "sending packet",
                        source: io::ErrorKind::WriteZero.into(),
                    })
                }
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                Err(source) => {
                    return Err(StreamError::Io {
                        what: "sending packet",
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    /// Shuts the connection down, so the VMX sees the agent go at once.
    pub fn shutdown(&self) {
        let _ = self.s.shutdown(std::net::Shutdown::Both);
    }
}

/// Splits a connected TCLO stream into its reader and writer.
pub fn split_tclo(s: std::os::unix::net::UnixStream) -> io::Result<(TcloReader, TcloWriter)> {
    s.set_nonblocking(true)?;
    let w = s.try_clone()?;
    let r = TcloReader::from_owned_fd_unchecked(std::os::fd::OwnedFd::from(s))?;
    Ok((
        r,
        TcloWriter {
            s: w,
            out: Vec::new(),
        },
    ))
}

/// The TCLO side.
#[derive(Debug)]
pub enum TcloConn {
    /// Pushed packets.
    Stream(std::os::unix::net::UnixStream),
    /// Polled backdoor channel.
    Backdoor(BackdoorChannel),
}

/// An opened RPCI channel, not yet registered with a runtime.
#[derive(Debug)]
pub enum RpciLink {
    /// A connected stream.
    Stream(std::os::unix::net::UnixStream),
    /// A backdoor channel.
    Backdoor(BackdoorChannel),
}

/// The RPCI side.
#[derive(Debug)]
pub enum RpciConn {
    /// Request and reply packets.
    Stream {
        /// Reader.
        reader: PacketReader<OwnedReadHalf>,
        /// Writer.
        writer: OwnedWriteHalf,
    },
    /// Backdoor channel.
    Backdoor(BackdoorChannel),
}

impl RpciConn {
    /// Registers an opened channel with the current runtime.
    pub fn register(link: RpciLink) -> Result<RpciConn, TransportError> {
        match link {
            RpciLink::Stream(s) => {
                let (r, w) = into_tokio(s)?.into_split();
                Ok(RpciConn::Stream {
                    reader: PacketReader::new(r),
                    writer: w,
                })
            }
            RpciLink::Backdoor(chan) => Ok(RpciConn::Backdoor(chan)),
        }
    }

    /// One request; the reply after `"1 "`.
    pub async fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, RpciError> {
        let raw = match self {
            RpciConn::Stream { reader, writer } => {
                write_packet(writer, &Packet::data(request))
                    .await
                    .map_err(TransportError::from)?;
                reader.next().await.map_err(TransportError::from)?.payload
            }
            RpciConn::Backdoor(chan) => chan.call(request).map_err(TransportError::from)?,
        };
        parse_reply(request, raw)
    }
}

/// How the agent reaches the VMX.
#[derive(Clone, Debug)]
pub enum Connector {
    /// A real transport.
    Transport {
        /// Which.
        transport: Transport,
        /// Skip the CPUID vendor check (QEMU test guests).
        assume_vmware: bool,
        /// `auto`'s RPCI fall-back state (`lib/rpcChannel/rpcChannel.c`): after vsock failed,
        /// the backdoor for a growing pause, then vsock again.
        fallback: Arc<Mutex<RpciFallback>>,
    },
    /// The in-process backdoor model (tests and benchmarks).
    Model(VmxModel),
}

fn into_tokio(s: std::os::unix::net::UnixStream) -> Result<UnixStream, TransportError> {
    s.set_nonblocking(true)
        .and_then(|()| UnixStream::from_std(s))
        .map_err(|source| {
            TransportError::Stream(StreamError::Io {
                what: "registering socket",
                source,
            })
        })
}

impl Connector {
    fn backdoor(&self, protocol: Protocol) -> Result<BackdoorChannel, TransportError> {
        let bd: Box<dyn Backdoor + Send> = match self {
            Connector::Model(m) => Box::new(m.port()),
            Connector::Transport { assume_vmware, .. } => {
                Box::new(PortBackdoor::open(*assume_vmware)?)
            }
        };
        Ok(MessageChannel::open(bd, protocol)?)
    }

    /// A connector for a configured transport.
    pub fn transport(transport: Transport, assume_vmware: bool) -> Connector {
        Connector::Transport {
            transport,
            assume_vmware,
            fallback: Arc::default(),
        }
    }

    fn endpoint(&self, protocol: Protocol) -> Result<Endpoint, TransportError> {
        match self {
            Connector::Model(_) => Ok(Endpoint::Backdoor { vsock_failed: None }),
            Connector::Transport {
                transport,
                assume_vmware,
                fallback,
            } => match protocol {
                Protocol::Rpci => {
                    let mut f = fallback.lock().unwrap_or_else(|e| e.into_inner());
                    rpci_endpoint(transport, *assume_vmware, &mut f, Instant::now())
                }
                Protocol::Tclo => endpoint(transport, protocol, *assume_vmware),
            },
        }
    }

    /// True when opening a channel may wait: a vsock connect walks source ports and pauses
    /// between retries. Unix sockets and the backdoor answer at once.
    pub fn may_block(&self) -> bool {
        matches!(
            self,
            Connector::Transport {
                transport: Transport::Auto | Transport::Vsock,
                ..
            }
        )
    }

    /// True when an RPCI channel that fell back to the backdoor should be left for vsock
    /// before the next request.
    pub fn rpci_vsock_retry_due(&self) -> bool {
        match self {
            Connector::Model(_) => false,
            Connector::Transport { fallback, .. } => fallback
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retry_due(Instant::now()),
        }
    }

    /// Opens the TCLO channel. Blocking, as [`Connector::rpci`].
    pub fn tclo(&self) -> Result<TcloConn, TransportError> {
        match self.endpoint(Protocol::Tclo)? {
            Endpoint::Stream(s) => Ok(TcloConn::Stream(s)),
            Endpoint::Backdoor { vsock_failed } => self
                .backdoor(Protocol::Tclo)
                .map(TcloConn::Backdoor)
                .map_err(|e| backdoor_failed(vsock_failed, e)),
        }
    }

    /// Opens the RPCI channel. Blocking (a vsock connect walks source ports and may pause
    /// between retries): run it on the blocking pool, then [`RpciConn::register`] the result.
    pub fn rpci(&self) -> Result<RpciLink, TransportError> {
        match self.endpoint(Protocol::Rpci)? {
            Endpoint::Stream(s) => Ok(RpciLink::Stream(s)),
            Endpoint::Backdoor { vsock_failed } => self
                .backdoor(Protocol::Rpci)
                .map(RpciLink::Backdoor)
                .map_err(|e| backdoor_failed(vsock_failed, e)),
        }
    }
}
