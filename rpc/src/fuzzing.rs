//! Oracles for the fuzz targets in `fuzz/` (and the property tests): decode untrusted bytes,
//! and whatever decodes must survive a re-encode. Not part of the API.

use crate::datamap;
use crate::packet::{self, Packet, PacketFramer};

/// DataMap decoder.
pub fn datamap(data: &[u8]) {
    if let Ok(map) = datamap::decode(data) {
        let again = datamap::encode(&map).expect("a decoded map re-encodes");
        assert_eq!(
            datamap::decode(&again).expect("re-encoded map decodes"),
            map
        );
    }
}

/// How many chunk sizes the packet target's input may choose.
const MAX_CUTS: usize = 8;

/// The packet framer, as the agent's drivers use it. Input: one byte `k` (taken modulo
/// `MAX_CUTS` + 1), `k` chunk sizes of 1..=256 bytes (cycled; none means "as much as the
/// framer has room for"), then the stream. Checks: the packets and the error do not depend on
/// where reads cut the stream (the same bytes framed in one piece give the same); every
/// packet re-encodes to bytes that frame back to it and whose own re-encoding is identical;
/// a truncated end is told from a clean one; the buffer stays within
/// [`packet::MAX_BUFFER_SIZE`]; no panic.
pub fn packet(data: &[u8]) {
    let Some((&k, rest)) = data.split_first() else {
        return;
    };
    let cuts = (usize::from(k) % (MAX_CUTS + 1)).min(rest.len());
    let (sizes, stream) = rest.split_at(cuts);
    let sizes: Vec<usize> = sizes.iter().map(|&b| usize::from(b) + 1).collect();

    let chunked = frame_all(stream, &sizes);
    let whole = frame_all(stream, &[]);
    assert_eq!(chunked, whole, "framing depends on read boundaries");

    for p in &chunked.packets {
        let mut bytes = Vec::new();
        p.encode_into(&mut bytes)
            .expect("a decoded packet re-encodes");
        let again = frame_all(&bytes, &[]);
        assert_eq!(again.packets, vec![p.clone()]);
        assert!(again.error.is_none() && !again.truncated);
        assert_eq!(again.packets[0].encode(), bytes);
    }
}

/// What framing one stream gave.
#[derive(Debug, PartialEq)]
struct Framed {
    packets: Vec<Packet>,
    /// The first error; framing stops there, as the drivers close the stream.
    error: Option<packet::PacketError>,
    /// The stream ended inside a packet.
    truncated: bool,
}

fn frame_all(mut stream: &[u8], sizes: &[usize]) -> Framed {
    let mut framer = PacketFramer::new();
    let mut next_size = sizes.iter().copied().cycle();
    let mut packets = Vec::new();
    loop {
        loop {
            match framer.next_packet() {
                Ok(Some(p)) => packets.push(p),
                Ok(None) => break,
                Err(e) => {
                    return Framed {
                        packets,
                        error: Some(e),
                        truncated: false,
                    }
                }
            }
        }
        let limit = next_size.next().unwrap_or(usize::MAX);
        let n = framer
            .fill_with(|buf| {
                let n = buf.len().min(limit).min(stream.len());
                buf[..n].copy_from_slice(&stream[..n]);
                stream = &stream[n..];
                Ok(n)
            })
            .expect("reads from memory succeed");
        assert!(
            framer.capacity() <= packet::MAX_BUFFER_SIZE.max(packet::READ_BUFFER_SIZE),
            "framer buffer grew to {}",
            framer.capacity()
        );
        if n == 0 {
            return Framed {
                packets,
                error: None,
                truncated: framer.partial(),
            };
        }
    }
}

/// A VMX answering every backdoor call with registers taken from the input.
struct Hostile<'a> {
    data: &'a [u8],
}

impl Hostile<'_> {
    fn next(&mut self) -> u32 {
        let n = self.data.len().min(4);
        let mut w = [0u8; 4];
        w[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        u32::from_le_bytes(w)
    }
}

impl crate::backdoor::Backdoor for Hostile<'_> {
    fn in_out(&mut self, r: crate::backdoor::Regs) -> crate::backdoor::Regs {
        crate::backdoor::Regs {
            eax: self.next(),
            ebx: self.next(),
            ecx: self.next(),
            edx: self.next(),
            esi: self.next(),
            edi: self.next(),
            ebp: r.ebp,
        }
    }
    fn hb_out(&mut self, r: crate::backdoor::Regs, _: &[u8]) -> crate::backdoor::Regs {
        crate::backdoor::Regs {
            ebx: self.next(),
            ..r
        }
    }
    fn hb_in(&mut self, r: crate::backdoor::Regs, buf: &mut [u8]) -> crate::backdoor::Regs {
        let n = self.data.len().min(buf.len());
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        crate::backdoor::Regs {
            ebx: self.next(),
            ..r
        }
    }
}

/// The message channel against a VMX whose every answer comes from the input: errors, never a
/// panic, a hang or an allocation past `MAX_RECEIVE_SIZE`.
pub fn message_channel(data: &[u8]) {
    let Ok(mut chan) =
        crate::message::MessageChannel::open(Hostile { data }, crate::message::Protocol::Rpci)
    else {
        return;
    };
    let _ = chan.send(b"info-get guestinfo.ovfEnv");
    if let Ok(reply) = chan.receive() {
        assert!(reply.len() <= crate::message::MAX_RECEIVE_SIZE);
    }
}
