//! Guest RPC packets on vsock: a [`crate::datamap`] with a type, a payload and a fast-close flag.
//!
//! Fields and types are `GUESTRPCPKT_*` in `lib/include/vmware/guestrpc/tclodefs.h`; how they
//! are filled is `RpcInPackSendData` (`lib/rpcIn/rpcin.c`) and `Socket_PackSendData`
//! (`lib/rpcChannel/simpleSocket.c`). The map's own 4-byte big-endian length header is the
//! stream framing: a reader takes 4 bytes, learns the length, takes that many more.

use crate::datamap::{self, DataMapError, Value};
use crate::message::MAX_RECEIVE_SIZE;
use std::io;

/// `GUESTRPCPKT_FIELD_TYPE`.
pub const FIELD_TYPE: i32 = 1;
/// `GUESTRPCPKT_FIELD_PAYLOAD`.
pub const FIELD_PAYLOAD: i32 = 2;
/// `GUESTRPCPKT_FIELD_FAST_CLOSE`.
pub const FIELD_FAST_CLOSE: i32 = 3;

/// Largest packet body accepted from a peer: the largest message plus room for the fields
/// around it. The length arrives before the body, so it is checked before any allocation.
pub const MAX_PACKET_SIZE: usize = MAX_RECEIVE_SIZE + 64;

/// A packet type, kept as read so that unknown values survive and print.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PacketType(pub i64);

impl PacketType {
    /// `GUESTRPCPKT_TYPE_DATA`: a request or a reply.
    pub const DATA: PacketType = PacketType(1);
    /// `GUESTRPCPKT_TYPE_PING`: the guest's TCLO heartbeat, no payload.
    pub const PING: PacketType = PacketType(2);
}

impl std::fmt::Debug for PacketType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            PacketType::DATA => f.write_str("DATA"),
            PacketType::PING => f.write_str("PING"),
            PacketType(other) => write!(f, "PacketType({other:#x})"),
        }
    }
}

/// One packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    /// DATA or PING.
    pub kind: PacketType,
    /// The message; empty means the field is absent (the format cannot carry an empty string).
    pub payload: Vec<u8>,
    /// Asks the peer to close the connection after its reply (one-shot RPCI).
    pub fast_close: bool,
}

impl Packet {
    /// A DATA packet.
    pub fn data(payload: impl Into<Vec<u8>>) -> Packet {
        Packet {
            kind: PacketType::DATA,
            payload: payload.into(),
            fast_close: false,
        }
    }

    /// The heartbeat.
    pub fn ping() -> Packet {
        Packet {
            kind: PacketType::PING,
            payload: Vec::new(),
            fast_close: false,
        }
    }

    /// Serializes, length header included.
    ///
    /// A payload beyond the format's 2 GiB string limit cannot be written; this convenience
    /// then returns an empty vector. [`Packet::encode_into`] reports it.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.encode_into(&mut out) {
            Ok(()) => out,
            Err(_) => Vec::new(),
        }
    }

    /// Appends the serialized packet, length header included, to `out`, so that a writer can
    /// reuse one buffer for every packet. Fields go out in ascending id order, as
    /// [`datamap::encode`] writes them (the byte layout is documented there).
    ///
    /// On error `out` is left as it was.
    pub fn encode_into(&self, out: &mut Vec<u8>) -> Result<(), PacketError> {
        let mut tail = Vec::new();
        self.encode_framing(out, &mut tail)?;
        out.reserve(self.payload.len() + tail.len());
        out.extend_from_slice(&self.payload);
        out.extend_from_slice(&tail);
        Ok(())
    }

    /// The bytes around the payload: the packet on the wire is what this appends to `head`,
    /// then the payload, then what it appends to `tail`. A writer sends the three with one
    /// `writev` and copies no payload.
    ///
    /// On error both are left as they were.
    pub fn encode_framing(
        &self,
        head: &mut Vec<u8>,
        tail: &mut Vec<u8>,
    ) -> Result<(), PacketError> {
        const INT64_ENTRY: usize = 16;
        let payload_len = match self.payload.len() {
            0 => None,
            n => Some(i32::try_from(n).map_err(|_| DataMapError::Unencodable {
                field: FIELD_PAYLOAD,
                why: "string longer than the format's 32-bit length",
            })?),
        };
        let body = INT64_ENTRY
            + payload_len.map_or(0, |_| 12 + self.payload.len())
            + if self.fast_close { INT64_ENTRY } else { 0 };
        let body_u32 = u32::try_from(body).map_err(|_| PacketError::TooLarge(body))?;
        head.reserve(4 + INT64_ENTRY + 12);
        head.extend_from_slice(&body_u32.to_be_bytes());
        put_int64(head, FIELD_TYPE, self.kind.0);
        if let Some(len) = payload_len {
            head.extend_from_slice(&datamap::field_type::STRING.to_be_bytes());
            head.extend_from_slice(&FIELD_PAYLOAD.to_be_bytes());
            head.extend_from_slice(&len.to_be_bytes());
        }
        if self.fast_close {
            put_int64(tail, FIELD_FAST_CLOSE, 1);
        }
        Ok(())
    }

    /// Parses a whole packet, length header included.
    pub fn decode(buf: &[u8]) -> Result<Packet, PacketError> {
        if buf.len() > MAX_PACKET_SIZE + 4 {
            return Err(PacketError::TooLarge(buf.len().saturating_sub(4)));
        }
        let mut map = datamap::decode(buf)?;
        let kind = match map.remove(&FIELD_TYPE) {
            Some(Value::Int64(t)) => PacketType(t),
            // The guest side of the reference never looks at the type; a packet without one is
            // taken as DATA.
            None => PacketType::DATA,
            Some(_) => return Err(PacketError::FieldType("type")),
        };
        let payload = match map.remove(&FIELD_PAYLOAD) {
            Some(Value::String(s)) => s,
            None => Vec::new(),
            Some(_) => return Err(PacketError::FieldType("payload")),
        };
        let fast_close = match map.remove(&FIELD_FAST_CLOSE) {
            Some(Value::Int64(v)) => v != 0,
            None => false,
            Some(_) => return Err(PacketError::FieldType("fast close")),
        };
        Ok(Packet {
            kind,
            payload,
            fast_close,
        })
    }
}

/// One DataMap INT64 entry: type, field id, low word, high word (`lib/dataMap/dataMap.c`).
fn put_int64(out: &mut Vec<u8>, field: i32, value: i64) {
    out.extend_from_slice(&datamap::field_type::INT64.to_be_bytes());
    out.extend_from_slice(&field.to_be_bytes());
    out.extend_from_slice(&(value as u32).to_be_bytes());
    out.extend_from_slice(&((value >> 32) as u32).to_be_bytes());
}

/// The body length announced by a 4-byte packet header, checked against [`MAX_PACKET_SIZE`].
pub fn body_len(header: [u8; 4]) -> Result<usize, PacketError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > MAX_PACKET_SIZE {
        return Err(PacketError::TooLarge(len));
    }
    Ok(len)
}

/// Why bytes are not a packet.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PacketError {
    /// Announced or actual body beyond [`MAX_PACKET_SIZE`].
    #[error("packet of {0} bytes exceeds the {MAX_PACKET_SIZE} byte limit")]
    TooLarge(usize),
    /// The map did not decode.
    #[error(transparent)]
    DataMap(#[from] DataMapError),
    /// A known field with the wrong value type.
    #[error("packet {0} field has the wrong type")]
    FieldType(&'static str),
}

/// Room the framer keeps for reads while no large packet is pending: a TCLO request, an RPCI
/// reply or a heartbeat, header and body, usually in one read.
pub const READ_BUFFER_SIZE: usize = 4096;

/// Once empty, a buffer grown past this for a large packet goes back to [`READ_BUFFER_SIZE`], so
/// an idle connection does not keep a multi-megabyte reply's memory.
pub const SHRINK_ABOVE: usize = 64 * 1024;

/// The framer's buffer never grows beyond this: one whole packet of [`MAX_PACKET_SIZE`] and its
/// header. A bigger length header is refused before anything is reserved.
pub const MAX_BUFFER_SIZE: usize = 4 + MAX_PACKET_SIZE;

/// Cuts a byte stream into packets, without doing I/O (sans-I/O), for the blocking and the
/// async drivers alike.
///
/// The driver lends the framer's spare room to its read call with [`PacketFramer::fill_with`]
/// and then takes whole packets with [`PacketFramer::next_packet`] until it returns `None`.
/// All state lives here, so an async driver stays cancel-safe: a read that is dropped
/// half-way loses nothing.
///
/// ```
/// # use toolbox_rpc::packet::{Packet, PacketFramer};
/// let wire = Packet::data("ping").encode();
/// let mut input = &wire[..];
/// let mut framer = PacketFramer::new();
/// let packet = loop {
///     if let Some(p) = framer.next_packet()? {
///         break p;
///     }
///     // An async driver passes `|buf| socket.try_read(buf)` instead.
///     let n = framer.fill_with(|buf| std::io::Read::read(&mut input, buf))?;
///     assert!(n > 0 || !framer.partial(), "end of stream in the middle of a packet");
/// };
/// assert_eq!(packet, Packet::data("ping"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Default)]
pub struct PacketFramer {
    /// Bytes read and not yet taken are `buf[start..end]`; `buf[end..]` is room for the next
    /// read. The whole vector is initialised, so reads need no `unsafe`.
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl PacketFramer {
    /// An empty framer; its buffer is allocated by the first read.
    pub fn new() -> PacketFramer {
        PacketFramer::default()
    }

    /// The total size, header included, of the packet at the front, once its header is in and
    /// valid.
    fn pending_total(&self) -> Option<usize> {
        let header = self.buf.get(self.start..self.start + 4)?;
        let header = [header[0], header[1], header[2], header[3]];
        body_len(header).ok().map(|len| 4 + len)
    }

    /// Bytes still missing for the packet at the front: the rest of the header, or, once the
    /// header is in, the rest of the body. 0 when a whole packet (or a refused header) is
    /// buffered. A reader without state of its own reads at most this much, so that it never
    /// takes bytes of the next packet.
    pub fn missing(&self) -> usize {
        let buffered = self.buffered();
        if buffered < 4 {
            return 4 - buffered;
        }
        self.pending_total()
            .map_or(0, |total| total.saturating_sub(buffered))
    }

    /// Bytes read but not yet taken as a packet.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// True while part of a packet is buffered: an end of stream now is a truncated packet,
    /// not a clean close.
    pub fn partial(&self) -> bool {
        self.end > self.start
    }

    /// The buffer's current size, for tests and memory accounting; at most
    /// [`MAX_BUFFER_SIZE`] (or [`READ_BUFFER_SIZE`], when larger).
    pub fn capacity(&self) -> usize {
        self.buf.len()
    }

    /// Makes room for a read and passes it to `read`, which returns how many bytes it put at
    /// the start of the slice (`Ok(0)` is the end of the stream). The room is
    /// [`READ_BUFFER_SIZE`] or, while a larger packet is pending, what that packet still
    /// needs, so one read can take a whole reply. Errors of `read` (`WouldBlock` included)
    /// come back unchanged and leave the framer as it was.
    ///
    /// Call [`PacketFramer::next_packet`] until it returns `None` before filling again; with
    /// whole packets left in the buffer it still grows, by one byte per call.
    pub fn fill_with(
        &mut self,
        read: impl FnOnce(&mut [u8]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        self.reserve_for_read();
        let room = &mut self.buf[self.end..];
        let room_len = room.len();
        let n = read(room)?;
        if n > room_len {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("reader claims {n} bytes read into {room_len} bytes of room"),
            ));
        }
        self.end += n;
        Ok(n)
    }

    fn reserve_for_read(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        let buffered = self.buffered();
        let needed = match self.pending_total() {
            Some(total) if total > buffered => total - buffered,
            _ => 1,
        };
        if self.buf.len() - self.end >= needed {
            return;
        }
        // Move the partial packet to the front before growing: usually a few bytes.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.start = 0;
            self.end = buffered;
        }
        // `needed` is bounded by MAX_PACKET_SIZE through `body_len`, so this is too.
        let want = (buffered + needed).max(READ_BUFFER_SIZE);
        if self.buf.len() < want {
            self.buf.reserve_exact(want - self.buf.len());
            self.buf.resize(want, 0);
        }
    }

    /// Takes the next whole packet, or `None` until more bytes arrive.
    ///
    /// A length header beyond [`MAX_PACKET_SIZE`] is [`PacketError::TooLarge`] before anything
    /// is reserved for it, and stays so: the stream cannot be resynchronised, the caller closes
    /// it. A whole packet that does not decode is consumed, then reported.
    pub fn next_packet(&mut self) -> Result<Option<Packet>, PacketError> {
        let buffered = self.buffered();
        if buffered < 4 {
            return Ok(None);
        }
        let h = &self.buf[self.start..self.start + 4];
        let total = 4 + body_len([h[0], h[1], h[2], h[3]])?;
        if buffered < total {
            return Ok(None);
        }
        let packet = Packet::decode(&self.buf[self.start..self.start + total]);
        self.start += total;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
            if self.buf.len() > SHRINK_ABOVE {
                self.buf.truncate(READ_BUFFER_SIZE);
                self.buf.shrink_to_fit();
            }
        }
        packet.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Feeds `wire` to a framer in chunks of the given sizes (cycled), collecting packets.
    fn frame(wire: &[u8], chunks: &[usize]) -> (Vec<Packet>, PacketFramer) {
        let mut framer = PacketFramer::new();
        let mut rest = wire;
        let mut got = Vec::new();
        let mut sizes = chunks.iter().copied().cycle();
        loop {
            while let Some(p) = framer.next_packet().expect("valid packets") {
                got.push(p);
            }
            let chunk = sizes.next().unwrap_or(usize::MAX).max(1);
            let n = framer
                .fill_with(|buf| {
                    let n = chunk.min(buf.len()).min(rest.len());
                    buf[..n].copy_from_slice(&rest[..n]);
                    rest = &rest[n..];
                    Ok(n)
                })
                .expect("in-memory read");
            if n == 0 {
                return (got, framer);
            }
        }
    }

    fn wire(packets: &[Packet]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in packets {
            p.encode_into(&mut out).expect("encodable");
        }
        out
    }

    #[test]
    fn encode_into_appends_the_same_bytes_as_the_datamap_encoder() {
        let packets = [
            Packet::data("ping"),
            Packet::ping(),
            Packet {
                fast_close: true,
                ..Packet::data(vec![0u8, 1, 2])
            },
            Packet {
                kind: PacketType(-5),
                ..Packet::data("x")
            },
        ];
        let mut out = b"kept".to_vec();
        for p in &packets {
            let mut map = datamap::DataMap::new();
            map.insert(FIELD_TYPE, Value::Int64(p.kind.0));
            if !p.payload.is_empty() {
                map.insert(FIELD_PAYLOAD, Value::String(p.payload.clone()));
            }
            if p.fast_close {
                map.insert(FIELD_FAST_CLOSE, Value::Int64(1));
            }
            let before = out.len();
            p.encode_into(&mut out).unwrap();
            assert_eq!(out[before..], datamap::encode(&map).unwrap()[..], "{p:?}");
        }
        assert_eq!(&out[..4], b"kept");
    }

    #[test]
    fn a_packet_split_at_every_byte_comes_out_whole() {
        let p = Packet::data("info-get guestinfo.ovfEnv");
        let (got, framer) = frame(&p.encode(), &[1]);
        assert_eq!(got, vec![p]);
        assert!(!framer.partial());
    }

    #[test]
    fn merged_packets_come_out_one_by_one() {
        let packets = vec![Packet::data("a"), Packet::ping(), Packet::data("reset")];
        let (got, _) = frame(&wire(&packets), &[usize::MAX]);
        assert_eq!(got, packets);
    }

    #[test]
    fn header_and_body_arrive_in_one_read() {
        let p = Packet::data(vec![b'x'; 3000]);
        let mut framer = PacketFramer::new();
        let bytes = p.encode();
        let mut reads = 0;
        framer
            .fill_with(|buf| {
                reads += 1;
                buf[..bytes.len()].copy_from_slice(&bytes);
                Ok(bytes.len())
            })
            .unwrap();
        assert_eq!(reads, 1);
        assert_eq!(framer.next_packet().unwrap(), Some(p));
    }

    #[test]
    fn a_large_packet_gets_room_for_itself_and_the_buffer_shrinks_after() {
        let p = Packet::data(vec![7u8; 200_000]);
        let bytes = p.encode();
        let mut framer = PacketFramer::new();
        let mut at = 0;
        let mut reads = 0;
        while framer.next_packet().unwrap().is_none() {
            // Header first, then everything else in one read: the room must be there for it.
            let n = framer
                .fill_with(|buf| {
                    let n = if at == 0 { 4 } else { buf.len() };
                    buf[..n].copy_from_slice(&bytes[at..at + n]);
                    Ok(n)
                })
                .unwrap();
            at += n;
            reads += 1;
            assert!(framer.capacity() <= bytes.len().max(READ_BUFFER_SIZE));
        }
        assert_eq!(reads, 2);
        assert_eq!(at, bytes.len());
        assert!(!framer.partial());
        assert_eq!(framer.capacity(), READ_BUFFER_SIZE);
    }

    #[test]
    fn an_oversized_header_is_refused_before_reserving() {
        let mut framer = PacketFramer::new();
        let header = (MAX_PACKET_SIZE as u32 + 1).to_be_bytes();
        framer
            .fill_with(|buf| {
                buf[..4].copy_from_slice(&header);
                Ok(4)
            })
            .unwrap();
        assert_eq!(
            framer.next_packet(),
            Err(PacketError::TooLarge(MAX_PACKET_SIZE + 1))
        );
        // Asking again gives the same answer; a further read gets only the usual room.
        assert!(framer.next_packet().is_err());
        framer.fill_with(|_| Ok(0)).unwrap();
        assert_eq!(framer.capacity(), READ_BUFFER_SIZE);
        assert_eq!(framer.missing(), 0);
    }

    #[test]
    fn partial_tells_a_truncated_packet_from_a_clean_end() {
        let bytes = Packet::data("hello").encode();
        for cut in 0..bytes.len() {
            let (got, framer) = frame(&bytes[..cut], &[3]);
            assert!(got.is_empty());
            assert_eq!(framer.partial(), cut > 0, "cut at {cut}");
            assert_eq!(framer.buffered(), cut);
        }
        let (got, framer) = frame(&bytes, &[3]);
        assert_eq!(got.len(), 1);
        assert!(!framer.partial());
    }

    #[test]
    fn missing_counts_header_then_body() {
        let bytes = Packet::data("hello").encode();
        let body = bytes.len() - 4;
        let mut framer = PacketFramer::new();
        let mut fed = 0;
        for (take, missing_after) in [(2, 2), (2, body), (body - 1, 1), (1, 0)] {
            framer
                .fill_with(|buf| {
                    buf[..take].copy_from_slice(&bytes[fed..fed + take]);
                    Ok(take)
                })
                .unwrap();
            fed += take;
            assert_eq!(framer.missing(), missing_after, "after {fed} bytes");
        }
        assert_eq!(framer.next_packet().unwrap(), Some(Packet::data("hello")));
        assert_eq!(framer.missing(), 4);
    }

    #[test]
    fn a_bad_body_is_consumed_and_reported_and_the_next_packet_follows() {
        // A payload field of type INT64: decodes as a map, not as a packet.
        let mut bytes = vec![0, 0, 0, 16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        bytes.extend(Packet::ping().encode());
        let mut framer = PacketFramer::new();
        let mut rest = &bytes[..];
        framer
            .fill_with(|buf| io::Read::read(&mut rest, buf))
            .unwrap();
        assert_eq!(framer.next_packet(), Err(PacketError::FieldType("payload")));
        assert_eq!(framer.next_packet(), Ok(Some(Packet::ping())));
    }

    #[test]
    fn read_errors_pass_through_and_change_nothing() {
        let mut framer = PacketFramer::new();
        let e = framer
            .fill_with(|_| Err(io::ErrorKind::WouldBlock.into()))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        assert!(!framer.partial());
        let e = framer.fill_with(|buf| Ok(buf.len() + 1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(framer.buffered(), 0);
    }

    fn packet() -> impl Strategy<Value = Packet> {
        (
            any::<i64>(),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<bool>(),
        )
            .prop_map(|(kind, payload, fast_close)| Packet {
                kind: PacketType(kind),
                payload,
                fast_close,
            })
    }

    proptest! {
        #[test]
        fn framing_around_the_payload_is_the_encoding(p in packet()) {
            let (mut head, mut tail) = (vec![0xaa], vec![0xbb]);
            p.encode_framing(&mut head, &mut tail).unwrap();
            let wire = [&head[1..], &p.payload[..], &tail[1..]].concat();
            prop_assert_eq!(&wire, &p.encode());
            prop_assert_eq!(Packet::decode(&wire).unwrap(), p);
        }

        #[test]
        fn any_split_yields_the_packets_sent(
            packets in proptest::collection::vec(packet(), 0..8),
            chunks in proptest::collection::vec(1usize..700, 1..6),
        ) {
            let bytes = wire(&packets);
            let (got, framer) = frame(&bytes, &chunks);
            prop_assert_eq!(got, packets);
            prop_assert!(!framer.partial());
            prop_assert!(framer.capacity() <= READ_BUFFER_SIZE.max(MAX_BUFFER_SIZE));
        }
    }
}
