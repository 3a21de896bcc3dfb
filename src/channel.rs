//! The agent's connections to the VMX, async: a TCLO channel (requests from the VMX) and an RPCI
//! channel (requests to it), each over a stream (vsock or `unix:DIR`, packets pushed by the
//! host) or the backdoor (polled).
//!
//! Stream packets are framed by [`toolbox_rpc::packet`]; [`PacketReader`] buffers so that a
//! packet usually arrives in one read and reading is cancel-safe inside `select!`. Backdoor
//! calls are made inline: each is a few microseconds of VMX time.

use std::io;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;
use toolbox_rpc::backdoor::Backdoor;
use toolbox_rpc::message::{MessageChannel, Protocol};
use toolbox_rpc::model::VmxModel;
use toolbox_rpc::packet::{body_len, Packet};
use toolbox_rpc::port::PortBackdoor;
use toolbox_rpc::rpci::{parse_reply, RpciError};
use toolbox_rpc::stream::StreamError;
use toolbox_rpc::transport::{connect_unix, TransportError, RPCI_SOCKET, TCLO_SOCKET};
use toolbox_rpc::{vsock, Transport};

/// A backdoor message channel over any backdoor (the real port or the model).
pub type BackdoorChannel = MessageChannel<Box<dyn Backdoor + Send>>;

/// Reads whole packets from a stream; cancel-safe.
#[derive(Debug)]
pub struct PacketReader<R> {
    inner: R,
    buf: Vec<u8>,
}

impl<R: tokio::io::AsyncRead + Unpin> PacketReader<R> {
    /// Wraps a read half.
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            buf: Vec::with_capacity(4096),
        }
    }

    /// The next packet; [`StreamError::Closed`] at a clean end of stream.
    pub async fn next(&mut self) -> Result<Packet, StreamError> {
        loop {
            if self.buf.len() >= 4 {
                let header = [self.buf[0], self.buf[1], self.buf[2], self.buf[3]];
                let total = 4 + body_len(header)?;
                if self.buf.len() >= total {
                    let packet = Packet::decode(&self.buf[..total]);
                    self.buf.drain(..total);
                    return Ok(packet?);
                }
                self.buf.reserve(total - self.buf.len());
            }
            let n = self
                .inner
                .read_buf(&mut self.buf)
                .await
                .map_err(|source| StreamError::Io {
                    what: "reading packet",
                    source,
                })?;
            if n == 0 {
                if self.buf.is_empty() {
                    return Err(StreamError::Closed);
                }
                return Err(StreamError::Io {
                    what: "reading packet",
                    source: io::ErrorKind::UnexpectedEof.into(),
                });
            }
            // Keep an idle connection's buffer small.
            if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
                self.buf.shrink_to(4096);
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

/// The TCLO side.
#[derive(Debug)]
pub enum TcloConn {
    /// Pushed packets.
    Stream(UnixStream),
    /// Polled backdoor channel.
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

    fn stream(
        &self,
        socket: &str,
        port: u32,
        protocol: Protocol,
    ) -> Result<Option<UnixStream>, TransportError> {
        match self {
            Connector::Model(_) => Ok(None),
            Connector::Transport {
                transport,
                assume_vmware,
            } => match transport {
                Transport::Unix(dir) => Ok(Some(into_tokio(connect_unix(dir, socket)?)?)),
                Transport::Vsock => {
                    if !assume_vmware {
                        toolbox_rpc::detect::require_vmware()?;
                    }
                    Ok(Some(into_tokio(vsock::connect_host(port)?)?))
                }
                Transport::Backdoor => Ok(None),
                Transport::Auto => {
                    if !assume_vmware {
                        toolbox_rpc::detect::require_vmware()?;
                    }
                    match vsock::connect_host(port) {
                        Ok(s) => Ok(Some(into_tokio(s)?)),
                        Err(e) => {
                            tracing::debug!(error = %e, protocol = protocol.name(), "vsock unavailable, using the backdoor");
                            Ok(None)
                        }
                    }
                }
            },
        }
    }

    /// Opens the TCLO channel.
    pub fn tclo(&self) -> Result<TcloConn, TransportError> {
        match self.stream(TCLO_SOCKET, vsock::TCLO_PORT, Protocol::Tclo)? {
            Some(s) => Ok(TcloConn::Stream(s)),
            None => Ok(TcloConn::Backdoor(self.backdoor(Protocol::Tclo)?)),
        }
    }

    /// Opens the RPCI channel.
    pub fn rpci(&self) -> Result<RpciConn, TransportError> {
        match self.stream(RPCI_SOCKET, vsock::RPCI_PORT, Protocol::Rpci)? {
            Some(s) => {
                let (r, w) = s.into_split();
                Ok(RpciConn::Stream {
                    reader: PacketReader::new(r),
                    writer: w,
                })
            }
            None => Ok(RpciConn::Backdoor(self.backdoor(Protocol::Rpci)?)),
        }
    }
}
