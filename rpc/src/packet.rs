//! Guest RPC packets on vsock: a [`crate::datamap`] with a type, a payload and a fast-close flag.
//!
//! Fields and types are `GUESTRPCPKT_*` in `lib/include/vmware/guestrpc/tclodefs.h`; how they
//! are filled is `RpcInPackSendData` (`lib/rpcIn/rpcin.c`) and `Socket_PackSendData`
//! (`lib/rpcChannel/simpleSocket.c`). The map's own 4-byte big-endian length header is the
//! stream framing: a reader takes 4 bytes, learns the length, takes that many more.

use crate::datamap::{self, DataMap, DataMapError, Value};
use crate::message::MAX_RECEIVE_SIZE;

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
    pub fn encode(&self) -> Vec<u8> {
        let mut map = DataMap::new();
        map.insert(FIELD_TYPE, Value::Int64(self.kind.0));
        if !self.payload.is_empty() {
            map.insert(FIELD_PAYLOAD, Value::String(self.payload.clone()));
        }
        if self.fast_close {
            map.insert(FIELD_FAST_CLOSE, Value::Int64(1));
        }
        // Cannot fail: the only string is non-empty and a packet is far below 2 GiB.
        datamap::encode(&map).unwrap_or_default()
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
