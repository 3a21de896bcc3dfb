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
    busy: Option<BusyPoll>,
}

/// How long a reader polls its socket for the next request after a reply, while the VMX
/// sends requests back to back (an HGFS transfer over `f`: 61 440 bytes, then the next).
/// Without it each request waits on the reactor, and on a virtual machine the CPU it went idle
/// on has to be woken by the hypervisor first: a fifth of an HGFS write's time and a third of a
/// read's. Short enough to cost nothing when no request follows.
pub const BUSY_POLL_WINDOW: Duration = Duration::from_micros(60);

/// Busy-polling of a TCLO stream: non-blocking reads on a duplicate of its descriptor, which
/// the reactor does not see, yielding the CPU between them (the VMX's side may need it).
/// Only while hot: the last request was small and came within half the window of the wait
/// before it, so the next is likely to come within the whole. A peer whose requests are large
/// (an HGFS write's 61 440 bytes, built and sent) takes about the window to send each: it is
/// waited for on the reactor, as a spin that often misses only takes the CPU the peer needs
/// (measured: writes over `f` went from a steady 700 MB/s to anywhere in 440–830). An idle
/// agent, whose requests come seconds apart, never spins.
#[derive(Debug)]
struct BusyPoll {
    socket: std::os::unix::net::UnixStream,
    hot: bool,
    last_small: bool,
}

/// A request this size or smaller (a ping, an HGFS read or attribute request) counts as small.
const SMALL_REQUEST: usize = 4096;

impl BusyPoll {
    /// Reads into `framer` within the window: what the read returned, or `WouldBlock` when
    /// nothing came.
    fn poll(&self, framer: &mut PacketFramer) -> io::Result<usize> {
        use std::io::Read;
        let started = std::time::Instant::now();
        loop {
            match framer.fill_with(|buf| (&self.socket).read(buf)) {
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                    ) =>
                {
                    if started.elapsed() >= BUSY_POLL_WINDOW {
                        return Err(io::ErrorKind::WouldBlock.into());
                    }
                    std::thread::yield_now();
                }
                other => return other,
            }
        }
    }
}

impl<R: ReadHalf> PacketReader<R> {
    /// Wraps a read half.
    pub fn new(inner: R) -> Self {
        PacketReader {
            inner,
            framer: PacketFramer::new(),
            busy: None,
        }
    }

    /// Polls `socket` (a duplicate of the stream's descriptor, non-blocking) for a while after
    /// each packet before waiting on the reactor, while packets come back to back.
    pub fn with_busy_poll(mut self, socket: std::os::unix::net::UnixStream) -> Self {
        self.busy = Some(BusyPoll {
            socket,
            hot: false,
            last_small: false,
        });
        self
    }

    /// The next packet; [`StreamError::Closed`] at a clean end of stream.
    pub async fn next(&mut self) -> Result<Packet, StreamError> {
        let io_err = |source| StreamError::Io {
            what: "reading packet",
            source,
        };
        loop {
            if let Some(p) = self.framer.next_packet()? {
                if let Some(busy) = &mut self.busy {
                    busy.last_small = p.payload.len() <= SMALL_REQUEST;
                }
                return Ok(p);
            }
            let read = match &mut self.busy {
                Some(busy) if busy.hot => match busy.poll(&mut self.framer) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        busy.hot = false;
                        None
                    }
                    other => Some(other),
                },
                _ => None,
            };
            let read = match read {
                Some(read) => read,
                None => {
                    let waiting = std::time::Instant::now();
                    self.inner.readable().await.map_err(io_err)?;
                    if let Some(busy) = &mut self.busy {
                        busy.hot = busy.last_small && waiting.elapsed() < BUSY_POLL_WINDOW / 2;
                    }
                    let inner = &self.inner;
                    self.framer.fill_with(|buf| inner.try_read(buf))
                }
            };
            match read {
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
/// are small and the VMX reads them at once. A large reply (an HGFS read) may find the socket
/// full: the writer then waits for room in `poll(2)` for a moment, as the VMX is reading, and
/// after that retries after growing pauses, then gives up.
#[derive(Debug)]
pub struct TcloWriter {
    s: std::os::unix::net::UnixStream,
    /// The packet's framing, reused for every packet; the payload is sent from where it is.
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// How long a full socket is waited for in `poll(2)` before the writer yields to the runtime.
const POLL_FOR_ROOM: Duration = Duration::from_millis(5);

impl TcloWriter {
    /// Writes one packet: its framing and payload in one `writev`, no payload copied.
    pub async fn write_packet(&mut self, p: &Packet) -> Result<(), StreamError> {
        self.head.clear();
        self.tail.clear();
        p.encode_framing(&mut self.head, &mut self.tail)?;
        let mut parts = [
            io::IoSlice::new(&self.head),
            io::IoSlice::new(&p.payload),
            io::IoSlice::new(&self.tail),
        ];
        let mut rest = &mut parts[..];
        let deadline = tokio::time::Instant::now() + WRITE_TIMEOUT;
        let mut pause = Duration::from_millis(1);
        let mut polled = false;
        while rest.iter().any(|p| !p.is_empty()) {
            match (&self.s).write_vectored(rest) {
                Ok(0) => {
                    return Err(StreamError::Io {
                        what: "sending packet",
                        source: io::ErrorKind::WriteZero.into(),
                    })
                }
                Ok(n) => io::IoSlice::advance_slices(&mut rest, n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && !polled => {
                    // The VMX drains the socket as it reads; waiting here beats a timer's
                    // millisecond for each piece of a large reply.
                    polled = !wait_for_room(&self.s, POLL_FOR_ROOM);
                }
                Err(e)
                    if e.kind() == io::ErrorKind::WouldBlock
                        && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    polled = false;
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

/// Waits up to `limit` for `s` to take more bytes; whether it can.
fn wait_for_room(s: &std::os::unix::net::UnixStream, limit: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
    let timeout = PollTimeout::try_from(limit).unwrap_or(PollTimeout::ZERO);
    matches!(poll(&mut fds, timeout), Ok(n) if n > 0)
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
            head: Vec::new(),
            tail: Vec::new(),
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
