//! A minimal HGFS client over an in-process [`Server`], building packets the way the VMX
//! does, for the tests and the benchmark.
#![allow(dead_code)]

use std::path::Path;

use toolbox_hgfs::proto::{
    self, decode, encode, parse_reply, path_to_cp_name, FileNameV3, Header, Op, OpenFlags,
    ReplyCreateSessionV4, ReplyOpenV3, ReplyWriteV3, RequestCloseV3, RequestCreateSessionV4,
    RequestOpenV3, RequestReadV3, Status, Wire, OPEN_VALID_GROUP_PERMS, OPEN_VALID_OTHER_PERMS,
    OPEN_VALID_OWNER_PERMS,
};
use toolbox_hgfs::Server;

/// A decoded reply: header and payload (after the embedded HgfsReply for V1/V2 ops).
#[derive(Debug)]
pub struct Reply {
    pub header: Header,
    pub payload: Vec<u8>,
}

impl Reply {
    pub fn status(&self) -> Status {
        self.header.status
    }

    pub fn body<T: Wire>(&self) -> T {
        assert_eq!(self.header.status, Status::SUCCESS, "reply failed");
        decode(&self.payload).expect("reply body decodes")
    }
}

/// The guest name for a local path.
pub fn name_v3(path: &Path) -> FileNameV3 {
    use std::os::unix::ffi::OsStrExt;
    FileNameV3 {
        name: path_to_cp_name(path.as_os_str().as_bytes()),
        ..FileNameV3::default()
    }
}

pub fn name_v2(path: &Path) -> proto::FileName {
    use std::os::unix::ffi::OsStrExt;
    proto::FileName {
        name: path_to_cp_name(path.as_os_str().as_bytes()),
    }
}

pub struct Client<'s> {
    pub server: &'s mut Server,
    pub session: u64,
    pub max_packet_size: u32,
    next_id: u32,
    packet: Vec<u8>,
}

impl<'s> Client<'s> {
    /// Creates a session offering `max_packet_size`.
    pub fn connect(server: &'s mut Server, max_packet_size: u32) -> Self {
        let mut client = Client {
            server,
            session: 0,
            max_packet_size: 0,
            next_id: 1,
            packet: Vec::new(),
        };
        let reply = client.call(
            Op::CREATE_SESSION_V4,
            &encode(&RequestCreateSessionV4 {
                max_packet_size,
                ..Default::default()
            }),
        );
        let created: ReplyCreateSessionV4 = reply.body();
        assert_eq!(reply.header.session_id, created.session_id);
        client.session = created.session_id;
        client.max_packet_size = created.max_packet_size;
        client
    }

    /// Sends `body` (without the legacy prefix; added for V1/V2 ops) and decodes the reply.
    pub fn call(&mut self, op: Op, body: &[u8]) -> Reply {
        let mut args = Vec::with_capacity(8 + body.len());
        if op.has_legacy_prefix() {
            args.extend_from_slice(&[0; 8]);
        }
        args.extend_from_slice(body);
        let id = self.next_id;
        self.next_id += 1;
        let packet = proto::encode_request(id, op, self.session, &args);
        let raw = self.server.handle_packet(&packet).to_vec();
        let (header, payload) = parse_reply(&raw).expect("reply is well-formed");
        assert_eq!(header.request_id, id);
        assert_eq!(header.op, op);
        let payload = if op.has_legacy_prefix() && header.status == Status::SUCCESS {
            payload[8..].to_vec()
        } else {
            payload.to_vec()
        };
        Reply { header, payload }
    }

    pub fn open(
        &mut self,
        path: &Path,
        mode: u32,
        flags: OpenFlags,
        perms: Option<u32>,
    ) -> Result<u32, Status> {
        let mut req = RequestOpenV3 {
            mode,
            flags,
            file_name: name_v3(path),
            ..Default::default()
        };
        if let Some(p) = perms {
            req.mask |= OPEN_VALID_OWNER_PERMS | OPEN_VALID_GROUP_PERMS | OPEN_VALID_OTHER_PERMS;
            req.owner_perms = ((p >> 6) & 7) as u8;
            req.group_perms = ((p >> 3) & 7) as u8;
            req.other_perms = (p & 7) as u8;
        }
        let reply = self.call(Op::OPEN_V3, &encode(&req));
        match reply.status() {
            Status::SUCCESS => Ok(reply.body::<ReplyOpenV3>().handle),
            s => Err(s),
        }
    }

    pub fn read(&mut self, handle: u32, offset: u64, size: u32) -> Result<Vec<u8>, Status> {
        let reply = self.call(
            Op::READ_V3,
            &encode(&RequestReadV3 {
                handle,
                offset,
                required_size: size,
                reserved: 0,
            }),
        );
        if reply.status() != Status::SUCCESS {
            return Err(reply.status());
        }
        let (_, data) = proto::decode_read_v3_reply(&reply.payload).expect("read reply decodes");
        Ok(data.to_vec())
    }

    pub fn write(&mut self, handle: u32, offset: u64, data: &[u8]) -> Result<u32, Status> {
        let reply = self.call(
            Op::WRITE_V3,
            &proto::encode_write_v3(handle, 0, offset, data),
        );
        match reply.status() {
            Status::SUCCESS => Ok(reply.body::<ReplyWriteV3>().actual_size),
            s => Err(s),
        }
    }

    pub fn close(&mut self, handle: u32) -> Status {
        self.call(
            Op::CLOSE_V3,
            &encode(&RequestCloseV3 {
                handle,
                reserved: 0,
            }),
        )
        .status()
    }

    /// Sends a request packet framed by the caller and decodes the reply header.
    pub fn raw(&mut self, packet: &[u8]) -> Vec<u8> {
        self.server.handle_packet(packet).to_vec()
    }

    // Reusable-buffer variants for the benchmark: no per-call allocation on our side
    // beyond what the carrier would do anyway.

    /// Reads into `out`; returns the count.
    pub fn read_into(&mut self, handle: u32, offset: u64, out: &mut [u8]) -> usize {
        self.packet.clear();
        let body = encode(&RequestReadV3 {
            handle,
            offset,
            required_size: out.len() as u32,
            reserved: 0,
        });
        let packet = proto::encode_request(self.next_id, Op::READ_V3, self.session, &body);
        let raw = self.server.handle_packet(&packet);
        let (header, payload) = parse_reply(raw).expect("reply");
        assert_eq!(header.status, Status::SUCCESS);
        let (_, data) = proto::decode_read_v3_reply(payload).expect("read reply");
        out[..data.len()].copy_from_slice(data);
        data.len()
    }

    /// Writes `data` through a reused packet buffer.
    pub fn write_from(&mut self, handle: u32, offset: u64, data: &[u8]) {
        use toolbox_hgfs::proto::{
            Header, RequestWriteV3Head, HEADER_SIZE, HEADER_VERSION, PACKET_FLAG_REQUEST,
        };
        self.packet.clear();
        Header {
            version: HEADER_VERSION,
            dummy: Op::NEW_HEADER,
            packet_size: (HEADER_SIZE + 25 + data.len()) as u32,
            header_size: HEADER_SIZE as u32,
            request_id: self.next_id,
            op: Op::WRITE_V3,
            flags: PACKET_FLAG_REQUEST,
            session_id: self.session,
            ..Header::default()
        }
        .encode(&mut self.packet);
        RequestWriteV3Head {
            handle,
            flags: 0,
            offset,
            required_size: data.len() as u32,
            reserved: 0,
        }
        .encode(&mut self.packet);
        self.packet.extend_from_slice(data);
        let raw = self.server.handle_packet(&self.packet);
        let (header, _) = parse_reply(raw).expect("reply");
        assert_eq!(header.status, Status::SUCCESS);
    }
}
