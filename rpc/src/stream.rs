//! Packets over a byte stream (vsock or Unix socket), blocking.
//!
//! The async service loop frames the same way with [`crate::packet::body_len`] and
//! [`crate::packet::Packet::decode`]; this module is the blocking driver used by one-shot RPCI.

use crate::packet::{body_len, Packet, PacketError};
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

/// Writes one packet.
pub fn write_packet(w: &mut impl Write, packet: &Packet) -> Result<(), StreamError> {
    w.write_all(&packet.encode())
        .map_err(|source| StreamError::Io {
            what: "sending packet",
            source,
        })
}

/// Reads one packet. A clean end of stream before the header is [`StreamError::Closed`].
pub fn read_packet(r: &mut impl Read) -> Result<Packet, StreamError> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(StreamError::Closed),
            Ok(0) => {
                return Err(StreamError::Io {
                    what: "reading packet header",
                    source: io::ErrorKind::UnexpectedEof.into(),
                })
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(StreamError::Io {
                    what: "reading packet header",
                    source,
                })
            }
        }
    }
    let len = body_len(header)?;
    let mut buf = vec![0u8; 4 + len];
    buf[..4].copy_from_slice(&header);
    r.read_exact(&mut buf[4..])
        .map_err(|source| StreamError::Io {
            what: "reading packet body",
            source,
        })?;
    Ok(Packet::decode(&buf)?)
}
