//! Oracles for the fuzz targets in `fuzz/` (and the property tests): decode untrusted bytes,
//! and whatever decodes must survive a re-encode. Not part of the API.

use crate::{datamap, packet::Packet};

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

/// Packet decoder, through the stream framing.
pub fn packet(data: &[u8]) {
    let mut cursor = data;
    if let Ok(p) = crate::stream::read_packet(&mut cursor) {
        let again = Packet::decode(&p.encode()).expect("a decoded packet re-encodes");
        assert_eq!(again, p);
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
