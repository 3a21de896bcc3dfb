//! The host's side of HGFS, free of I/O: request packets built as the VMX builds them for a
//! guest file transfer (session create/destroy v4, open/read/write/close v3) and the replies
//! checked and decoded. The carrier (VIX op 84, the TCLO `f ` command, an in-process
//! [`Server`](crate::Server)) is the caller's.

use crate::proto::{
    self, decode, encode, path_to_cp_name, FileNameV3, Header, Op, OpenFlags, ProtoError,
    ReplyCreateSessionV4, ReplyOpenV3, ReplyWriteV3, RequestCloseV3, RequestCreateSessionV4,
    RequestOpenV3, RequestReadV3, Status, LEGACY_HEADER_SIZE, OPEN_VALID_GROUP_PERMS,
    OPEN_VALID_OTHER_PERMS, OPEN_VALID_OWNER_PERMS, OPEN_VALID_SPECIAL_PERMS,
};

/// The bytes a guest file transfer moves per read or write request: what the VMX asks for,
/// small enough that the request or reply and its VIX framing stay under the 64 KiB guest
/// message limit.
pub const TRANSFER_CHUNK: u32 = 61_440;

/// What a reply did not hold up to.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The packet does not decode.
    #[error("HGFS reply to {op}: {source}")]
    Malformed {
        /// The request's operation.
        op: Op,
        /// What failed.
        #[source]
        source: ProtoError,
    },
    /// The reply answers another request.
    #[error("HGFS reply to {op} answers request {got_id} ({got_op}), not {want_id}")]
    Mismatch {
        /// The request's operation.
        op: Op,
        /// The request's id.
        want_id: u32,
        /// The reply's id.
        got_id: u32,
        /// The reply's operation.
        got_op: Op,
    },
    /// The server refused the request.
    #[error("HGFS {op} failed: {status}")]
    Status {
        /// The request's operation.
        op: Op,
        /// The status the server sent.
        status: Status,
    },
    /// A read reply carries more than was asked for.
    #[error("HGFS read reply carries {got} bytes, {asked} were asked for")]
    Overlong {
        /// Bytes requested.
        asked: u32,
        /// Bytes in the reply.
        got: usize,
    },
}

/// One request: its packet and what its reply must echo.
#[derive(Debug, Clone)]
pub struct Request {
    /// The request id.
    pub id: u32,
    /// The operation.
    pub op: Op,
    /// The packet to send.
    pub packet: Vec<u8>,
}

/// A host's session state: the session id and packet size the guest granted, and the next
/// request id.
#[derive(Debug, Clone)]
pub struct Client {
    session_id: u64,
    max_packet_size: u32,
    next_id: u32,
}

impl Default for Client {
    fn default() -> Self {
        Client::new()
    }
}

/// A guest file name as HGFS carries it (components separated by NULs, no leading `/`).
pub fn file_name(path: &[u8]) -> FileNameV3 {
    FileNameV3 {
        name: path_to_cp_name(path),
        ..FileNameV3::default()
    }
}

impl Client {
    /// No session yet.
    pub fn new() -> Client {
        Client {
            session_id: 0,
            max_packet_size: proto::PACKET_MAX,
            next_id: 1,
        }
    }

    /// The session id the guest granted (0 before).
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The packet size the guest granted.
    pub fn max_packet_size(&self) -> u32 {
        self.max_packet_size
    }

    fn request(&mut self, op: Op, body: &[u8]) -> Request {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut args = Vec::with_capacity(LEGACY_HEADER_SIZE + body.len());
        if op.has_legacy_prefix() {
            args.extend_from_slice(&[0; LEGACY_HEADER_SIZE]);
        }
        args.extend_from_slice(body);
        Request {
            id,
            op,
            packet: proto::encode_request(id, op, self.session_id, &args),
        }
    }

    /// Checks that `reply` answers `request` with success and returns its payload (past the
    /// legacy prefix of V1/V2 operations).
    pub fn check<'r>(&self, request: &Request, reply: &'r [u8]) -> Result<&'r [u8], ClientError> {
        let op = request.op;
        let (header, payload): (Header, &[u8]) =
            proto::parse_reply(reply).map_err(|source| ClientError::Malformed { op, source })?;
        if header.request_id != request.id || header.op != op {
            return Err(ClientError::Mismatch {
                op,
                want_id: request.id,
                got_id: header.request_id,
                got_op: header.op,
            });
        }
        if header.status != Status::SUCCESS {
            return Err(ClientError::Status {
                op,
                status: header.status,
            });
        }
        if op.has_legacy_prefix() {
            return payload
                .get(LEGACY_HEADER_SIZE..)
                .ok_or(ClientError::Malformed {
                    op,
                    source: ProtoError::Truncated {
                        what: "HgfsReply",
                        have: payload.len(),
                    },
                });
        }
        Ok(payload)
    }

    fn body<T: proto::Wire>(op: Op, payload: &[u8]) -> Result<T, ClientError> {
        decode(payload).map_err(|source| ClientError::Malformed { op, source })
    }

    /// Create session v4, offering `max_packet_size`.
    pub fn create_session(&mut self, max_packet_size: u32) -> Request {
        self.request(
            Op::CREATE_SESSION_V4,
            &encode(&RequestCreateSessionV4 {
                max_packet_size,
                ..RequestCreateSessionV4::default()
            }),
        )
    }

    /// Takes the session the guest granted.
    pub fn accept_session(&mut self, request: &Request, reply: &[u8]) -> Result<(), ClientError> {
        let payload = self.check(request, reply)?;
        let created: ReplyCreateSessionV4 = Self::body(request.op, payload)?;
        self.session_id = created.session_id;
        self.max_packet_size = created.max_packet_size;
        Ok(())
    }

    /// Destroy session v4.
    pub fn destroy_session(&mut self) -> Request {
        self.request(Op::DESTROY_SESSION_V4, &[0; 8])
    }

    /// Open v3 of `path` with `mode` (`OPEN_MODE_*`) and `flags`; `perms` (the low 12 mode
    /// bits) for a file it creates.
    pub fn open(
        &mut self,
        path: &[u8],
        mode: u32,
        flags: OpenFlags,
        perms: Option<u32>,
    ) -> Request {
        let mut req = RequestOpenV3 {
            // What the VMX marks valid; vmtoolsd's server wants the name bit at least.
            mask: proto::OPEN_VALID_MODE | proto::OPEN_VALID_FLAGS | proto::OPEN_VALID_FILE_NAME,
            mode,
            flags,
            file_name: file_name(path),
            ..RequestOpenV3::default()
        };
        if let Some(p) = perms {
            req.mask |= OPEN_VALID_SPECIAL_PERMS
                | OPEN_VALID_OWNER_PERMS
                | OPEN_VALID_GROUP_PERMS
                | OPEN_VALID_OTHER_PERMS;
            req.special_perms = ((p >> 9) & 7) as u8;
            req.owner_perms = ((p >> 6) & 7) as u8;
            req.group_perms = ((p >> 3) & 7) as u8;
            req.other_perms = (p & 7) as u8;
        }
        // The name is followed by its NUL, as the VMX sends it: `HgfsRequestOpenV3`'s size
        // counts one name byte (`name[1]`), and vmtoolsd's server checks the name's length
        // against what follows that size (lib/hgfsServer/hgfsServerParameters.c).
        let mut payload = encode(&req);
        payload.push(0);
        self.request(Op::OPEN_V3, &payload)
    }

    /// The handle an open reply grants.
    pub fn opened(&self, request: &Request, reply: &[u8]) -> Result<u32, ClientError> {
        let payload = self.check(request, reply)?;
        Ok(Self::body::<ReplyOpenV3>(request.op, payload)?.handle)
    }

    /// Read v3 of `size` bytes at `offset`.
    pub fn read(&mut self, handle: u32, offset: u64, size: u32) -> Request {
        self.request(
            Op::READ_V3,
            &encode(&RequestReadV3 {
                handle,
                offset,
                required_size: size,
                reserved: 0,
            }),
        )
    }

    /// The data of a read reply (empty at the end of the file); never more than `asked`.
    pub fn read_data<'r>(
        &self,
        request: &Request,
        reply: &'r [u8],
        asked: u32,
    ) -> Result<&'r [u8], ClientError> {
        let payload = self.check(request, reply)?;
        let (_, data) =
            proto::decode_read_v3_reply(payload).map_err(|source| ClientError::Malformed {
                op: request.op,
                source,
            })?;
        if data.len() > asked as usize {
            return Err(ClientError::Overlong {
                asked,
                got: data.len(),
            });
        }
        Ok(data)
    }

    /// Write v3 of `data` at `offset`.
    pub fn write(&mut self, handle: u32, offset: u64, data: &[u8]) -> Request {
        self.request(
            Op::WRITE_V3,
            &proto::encode_write_v3(handle, 0, offset, data),
        )
    }

    /// The byte count a write reply reports.
    pub fn written(&self, request: &Request, reply: &[u8]) -> Result<u32, ClientError> {
        let payload = self.check(request, reply)?;
        Ok(Self::body::<ReplyWriteV3>(request.op, payload)?.actual_size)
    }

    /// Close v3.
    pub fn close(&mut self, handle: u32) -> Request {
        self.request(
            Op::CLOSE_V3,
            &encode(&RequestCloseV3 {
                handle,
                reserved: 0,
            }),
        )
    }

    /// Checks a reply that carries nothing but its status (close, destroy session).
    pub fn done(&self, request: &Request, reply: &[u8]) -> Result<(), ClientError> {
        self.check(request, reply).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY};
    use crate::{Server, ServerConfig};

    #[test]
    fn a_whole_transfer_against_the_server() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let name = path.to_str().unwrap().as_bytes().to_vec();
        let mut server = Server::new(ServerConfig::default());
        let mut c = Client::new();
        let r = c.create_session(proto::LARGE_PACKET_MAX);
        let reply = server.handle_packet(&r.packet).to_vec();
        c.accept_session(&r, &reply).unwrap();
        assert_ne!(c.session_id(), 0);

        let r = c.open(
            &name,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            Some(0o640),
        );
        let h = c.opened(&r, server.handle_packet(&r.packet)).unwrap();
        let r = c.write(h, 0, b"hello");
        assert_eq!(c.written(&r, server.handle_packet(&r.packet)).unwrap(), 5);
        let r = c.close(h);
        c.done(&r, server.handle_packet(&r.packet)).unwrap();

        let r = c.open(&name, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None);
        let h = c.opened(&r, server.handle_packet(&r.packet)).unwrap();
        let r = c.read(h, 1, 100);
        let reply = server.handle_packet(&r.packet).to_vec();
        assert_eq!(c.read_data(&r, &reply, 100).unwrap(), b"ello");
        // A reply to another request is refused.
        let other = c.read(h, 0, 100);
        assert!(matches!(
            c.read_data(&other, &reply, 100),
            Err(ClientError::Mismatch { .. })
        ));
        let r = c.open(
            b"/nonexistent/x",
            OPEN_MODE_READ_ONLY,
            OpenFlags::OPEN,
            None,
        );
        let reply = server.handle_packet(&r.packet).to_vec();
        assert!(matches!(
            c.opened(&r, &reply),
            Err(ClientError::Status { .. })
        ));
        let r = c.destroy_session();
        c.done(&r, server.handle_packet(&r.packet)).unwrap();
    }
}
