//! Packets over a byte stream (vsock or Unix socket), blocking.
//!
//! Framing is [`crate::packet::PacketFramer`]'s, the same as the async service loop's; this
//! module is the blocking driver used by one-shot RPCI, the CLI and tests.

use crate::packet::{Packet, PacketError, PacketFramer};
use std::io::{self, Read, Write};

/// A stream failure.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// Reading or writing failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The OS error.
        source: io::Error,
    },
    /// The peer closed the connection between packets.
    #[error("peer closed the connection")]
    Closed,
    /// The peer sent something that is not a packet.
    #[error("bad packet from peer: {0}")]
    Packet(#[from] PacketError),
}

fn write_all(w: &mut impl Write, bytes: &[u8]) -> Result<(), StreamError> {
    w.write_all(bytes).map_err(|source| StreamError::Io {
        what: "sending packet",
        source,
    })
}

/// Writes one packet. [`PacketStream::write_packet`] reuses its buffer instead.
pub fn write_packet(w: &mut impl Write, packet: &Packet) -> Result<(), StreamError> {
    let mut out = Vec::new();
    packet.encode_into(&mut out)?;
    write_all(w, &out)
}

/// Fills `framer` from `r` until it yields a packet. `limit` caps each read at what the
/// framer still misses, for callers that keep no framer between packets.
fn read_with(
    framer: &mut PacketFramer,
    r: &mut impl Read,
    limit: bool,
) -> Result<Packet, StreamError> {
    loop {
        if let Some(p) = framer.next_packet()? {
            return Ok(p);
        }
        let missing = framer.missing();
        let read = framer.fill_with(|buf| {
            let room = if limit {
                missing.min(buf.len())
            } else {
                buf.len()
            };
            loop {
                match r.read(&mut buf[..room]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    other => return other,
                }
            }
        });
        match read {
            Ok(0) if framer.partial() => {
                return Err(StreamError::Io {
                    what: "reading packet",
                    source: io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(0) => return Err(StreamError::Closed),
            Ok(_) => {}
            Err(source) => {
                return Err(StreamError::Io {
                    what: "reading packet",
                    source,
                })
            }
        }
    }
}

/// Reads one packet, never a byte past its end, so that a caller without state of its own
/// can read packet after packet from the same stream (two reads per packet at least: header,
/// then body). [`PacketStream`] buffers instead. A clean end of stream before the header is
/// [`StreamError::Closed`].
pub fn read_packet(r: &mut impl Read) -> Result<Packet, StreamError> {
    read_with(&mut PacketFramer::new(), r, true)
}

/// A stream with a packet framer and a write buffer: reads are buffered, so a reply's header
/// and body normally arrive in one read, and writes reuse one buffer.
#[derive(Debug)]
pub struct PacketStream<S> {
    inner: S,
    framer: PacketFramer,
    out: Vec<u8>,
}

impl<S> PacketStream<S> {
    /// Wraps a connected stream.
    pub fn new(inner: S) -> PacketStream<S> {
        PacketStream {
            inner,
            framer: PacketFramer::new(),
            out: Vec::new(),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The stream, mutably; reading from it directly would skip buffered bytes.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// True while part of a packet is buffered.
    pub fn partial(&self) -> bool {
        self.framer.partial()
    }
}

impl<S: Read> PacketStream<S> {
    /// Reads one packet. A clean end of stream between packets is [`StreamError::Closed`]; in
    /// the middle of one it is an `UnexpectedEof` I/O error.
    pub fn read_packet(&mut self) -> Result<Packet, StreamError> {
        read_with(&mut self.framer, &mut self.inner, false)
    }
}

impl<S: Write> PacketStream<S> {
    /// Writes one packet.
    pub fn write_packet(&mut self, packet: &Packet) -> Result<(), StreamError> {
        self.out.clear();
        packet.encode_into(&mut self.out)?;
        let result = write_all(&mut self.inner, &self.out);
        // A large request's buffer is not kept for the connection's life.
        if self.out.capacity() > crate::packet::SHRINK_ABOVE {
            self.out = Vec::new();
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    /// A reader that counts its read calls.
    struct Counting<'a> {
        data: &'a [u8],
        reads: usize,
    }

    impl Read for Counting<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            self.data.read(buf)
        }
    }

    #[test]
    fn buffered_reads_take_header_and_body_at_once() {
        let mut bytes = Packet::data("1 value").encode();
        bytes.extend(Packet::ping().encode());
        let mut s = PacketStream::new(Counting {
            data: &bytes,
            reads: 0,
        });
        assert_eq!(s.read_packet().unwrap(), Packet::data("1 value"));
        assert_eq!(s.read_packet().unwrap(), Packet::ping());
        assert_eq!(s.get_ref().reads, 1);
        assert!(matches!(s.read_packet(), Err(StreamError::Closed)));
    }

    #[test]
    fn unbuffered_reads_never_take_the_next_packet() {
        let mut bytes = Packet::data("first").encode();
        bytes.extend(Packet::data("second").encode());
        let mut r = &bytes[..];
        assert_eq!(read_packet(&mut r).unwrap(), Packet::data("first"));
        assert_eq!(r, &Packet::data("second").encode()[..]);
        assert_eq!(read_packet(&mut r).unwrap(), Packet::data("second"));
        assert!(matches!(read_packet(&mut r), Err(StreamError::Closed)));
    }

    #[test]
    fn end_of_stream_mid_packet_is_not_a_clean_close() {
        let bytes = Packet::data("truncated").encode();
        for cut in 1..bytes.len() {
            let mut s = PacketStream::new(&bytes[..cut]);
            match s.read_packet() {
                Err(StreamError::Io { source, .. }) => {
                    assert_eq!(source.kind(), io::ErrorKind::UnexpectedEof)
                }
                other => panic!("cut at {cut}: {other:?}"),
            }
            let mut r = &bytes[..cut];
            assert!(matches!(read_packet(&mut r), Err(StreamError::Io { .. })));
        }
    }

    #[test]
    fn packets_cross_a_socket_pair_both_ways() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut a = PacketStream::new(a);
        let mut b = PacketStream::new(b);
        let big = Packet::data(vec![b'z'; 100_000]);
        let writer = std::thread::spawn(move || {
            a.write_packet(&Packet::data("req")).unwrap();
            a.write_packet(&big).unwrap();
            a.read_packet().unwrap()
        });
        assert_eq!(b.read_packet().unwrap(), Packet::data("req"));
        assert_eq!(b.read_packet().unwrap().payload.len(), 100_000);
        b.write_packet(&Packet::data("1 ")).unwrap();
        assert_eq!(writer.join().unwrap(), Packet::data("1 "));
    }

    #[test]
    fn a_non_blocking_socket_is_framed_as_the_async_driver_does() {
        // The async driver's shape: fill_with(try_read) until WouldBlock, then wait.
        let (a, b) = UnixStream::pair().unwrap();
        b.set_nonblocking(true).unwrap();
        let mut framer = PacketFramer::new();
        let would_block = framer.fill_with(|buf| (&b).read(buf)).unwrap_err();
        assert_eq!(would_block.kind(), io::ErrorKind::WouldBlock);
        assert!(!framer.partial());

        let bytes = Packet::data("Capabilities_Register").encode();
        let (head, tail) = bytes.split_at(7);
        (&a).write_all(head).unwrap();
        assert_eq!(framer.fill_with(|buf| (&b).read(buf)).unwrap(), 7);
        assert_eq!(framer.next_packet().unwrap(), None);
        assert!(framer.partial());
        assert!(framer.fill_with(|buf| (&b).read(buf)).is_err());
        (&a).write_all(tail).unwrap();
        (&a).write_all(&Packet::ping().encode()).unwrap();
        framer.fill_with(|buf| (&b).read(buf)).unwrap();
        assert_eq!(
            framer.next_packet().unwrap(),
            Some(Packet::data("Capabilities_Register"))
        );
        assert_eq!(framer.next_packet().unwrap(), Some(Packet::ping()));
        drop(a);
        assert_eq!(framer.fill_with(|buf| (&b).read(buf)).unwrap(), 0);
        assert!(!framer.partial(), "a clean close");
    }

    #[test]
    fn an_oversized_header_is_a_packet_error() {
        let mut r = &[0xffu8; 8][..];
        assert!(matches!(
            read_packet(&mut r),
            Err(StreamError::Packet(PacketError::TooLarge(_)))
        ));
    }
}
