//! The guest file service a helper runs as its user: VIX file operations and the HGFS server.
//!
//! One service for both because they share state: InitiateFileTransferToGuest with
//! overwrite=false marks its path so that the HGFS open of the upload that follows cannot
//! replace a file created meanwhile, and the HGFS sessions and handles of one user live for as
//! long as the helper does.
//!
//! Request: a tag byte, then for [`TAG_VIX`] the op code (u32 LE) and the command body as
//! [`Command::encode_body`] writes it, for [`TAG_HGFS`] an HGFS packet. Reply: for VIX the VIX
//! error (u64 LE), errno (u32 LE) and the result bytes; for HGFS the reply packet.

use super::HelperService;
use crate::codec::Reader;
use crate::vix::proto::{attribute_options as opt, Command, DecodeError, OpCode, VixError};
use crate::vix::{files, OpResult};
use toolbox_hgfs::archive::ArchiveFiles;
use toolbox_hgfs::proto::Status;
use toolbox_hgfs::FileHandler;
use toolbox_hgfs::{Server, ServerConfig};

/// A VIX command follows.
pub const TAG_VIX: u8 = 0;
/// An HGFS packet follows.
pub const TAG_HGFS: u8 = 1;

/// The service state of one helper.
pub struct GuestFiles {
    hgfs: Server,
}

impl std::fmt::Debug for GuestFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestFiles").finish_non_exhaustive()
    }
}

impl GuestFiles {
    /// A fresh service: the HGFS server on `/` with directory archives.
    pub fn new() -> GuestFiles {
        let mut hgfs = Server::new(ServerConfig::default());
        hgfs.register_handler(Box::new(ArchiveFiles));
        GuestFiles { hgfs }
    }

    /// Adds an HGFS handler (process streams, a library user's virtual files), asked after
    /// the ones before it and before plain files. VIX transfers of the paths it claims are
    /// answered from its attributes.
    pub fn with_handler(mut self, handler: Box<dyn FileHandler>) -> GuestFiles {
        self.hgfs.register_handler(handler);
        self
    }

    /// InitiateFileTransferFromGuest / ToGuest of a path a registered handler serves (not a
    /// directory archive, which `files` knows): such a file has no inode to `lstat`, and
    /// its handler says what may be done with it. `None` for everything else.
    fn virtual_transfer(&self, command: &Command) -> Option<OpResult> {
        let (path, upload) = match command {
            Command::TransferFromGuest(r) => (r.path.as_str(), None),
            Command::TransferToGuest(r) => (r.path.as_str(), Some(r)),
            _ => return None,
        };
        if files::archive_path(path).is_some() {
            return None;
        }
        let attr = match self.hgfs.handler_stat(path.as_bytes())? {
            Ok(a) => a,
            Err(e) => {
                tracing::debug!(error = %e, "virtual file refused");
                let vix = if e.status() == Status::NO_SUCH_FILE_OR_DIR {
                    VixError::FILE_NOT_FOUND
                } else {
                    VixError::FILE_ACCESS_ERROR
                };
                return Some(OpResult::error(vix, 0));
            }
        };
        Some(match upload {
            None if attr.mode & 0o444 == 0 => OpResult::error(VixError::FILE_ACCESS_ERROR, 0),
            None => OpResult::ok(files::virtual_file_entry(path, attr.size, attr.mode)),
            Some(r) if r.options & (opt::SET_HIDDEN | opt::SET_READONLY) != 0 => {
                OpResult::error(VixError::INVALID_ARG, 0)
            }
            Some(_) if attr.mode & 0o222 == 0 => OpResult::error(VixError::FILE_ACCESS_ERROR, 0),
            Some(_) => OpResult::ok(Vec::new()),
        })
    }

    fn vix(&mut self, body: &[u8]) -> OpResult {
        let mut r = Reader::new(body);
        let Some(op) = r.u32_le() else {
            return OpResult::error(VixError::INVALID_MESSAGE_BODY, 0);
        };
        let command = match Command::decode(OpCode(op), r.rest()) {
            Ok(c) => c,
            Err(e) => return OpResult::error(e.vix_error(), 0),
        };
        if let Command::HgfsPacket(p) = &command {
            return OpResult::ok(self.hgfs.handle_packet(&p.packet).to_vec());
        }
        if let Some(result) = self.virtual_transfer(&command) {
            return result;
        }
        let result = files::execute(&command);
        if let Command::TransferToGuest(t) = &command {
            if result.error.is_ok() && !t.overwrite {
                if let Err(e) = self.hgfs.upload_without_replace(t.path.as_bytes()) {
                    tracing::debug!(error = %e, "marking the upload no-replace");
                    return OpResult::error(VixError::FAIL, 0);
                }
            }
        }
        result
    }
}

impl Default for GuestFiles {
    fn default() -> Self {
        GuestFiles::new()
    }
}

impl HelperService for GuestFiles {
    fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        match request.split_first() {
            Some((&TAG_HGFS, packet)) => self.hgfs.handle_packet(packet).to_vec(),
            Some((&TAG_VIX, body)) => encode_result(&self.vix(body)),
            _ => encode_result(&OpResult::error(VixError::INVALID_MESSAGE_BODY, 0)),
        }
    }
}

/// A VIX command as the service takes it.
pub fn encode_vix_request(command: &Command) -> Vec<u8> {
    let body = command.encode_body();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(TAG_VIX);
    out.extend_from_slice(&command.op().0.to_le_bytes());
    out.extend_from_slice(&body);
    out
}

/// A VIX result as the service answers it.
pub fn encode_result(r: &OpResult) -> Vec<u8> {
    let mut out = Vec::with_capacity(12 + r.result.len());
    out.extend_from_slice(&r.error.0.to_le_bytes());
    out.extend_from_slice(&r.errno.to_le_bytes());
    out.extend_from_slice(&r.result);
    out
}

/// The service's VIX answer; a reply too short to be one is `VIX_E_FAIL`.
pub fn decode_result(reply: &[u8]) -> OpResult {
    try_decode_result(reply).unwrap_or_else(|_| OpResult::error(VixError::FAIL, 0))
}

/// Decodes what [`encode_result`] made (the process service answers in the same form).
pub fn try_decode_result(reply: &[u8]) -> Result<OpResult, DecodeError> {
    let mut r = Reader::new(reply);
    let error = r
        .u64_le()
        .ok_or(DecodeError::Body("helper reply: no error"))?;
    let errno = r
        .u32_le()
        .ok_or(DecodeError::Body("helper reply: no errno"))?;
    Ok(OpResult {
        error: VixError(error),
        errno,
        result: r.rest().to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_round_trip() {
        let r = OpResult {
            error: VixError::FILE_NOT_FOUND,
            errno: 2,
            result: b"x\0y".to_vec(),
        };
        assert_eq!(decode_result(&encode_result(&r)), r);
        assert_eq!(decode_result(b"short").error, VixError::FAIL);
    }

    #[test]
    fn rejects_requests_without_a_known_tag() {
        let mut s = GuestFiles::new();
        for bad in [&b""[..], b"\x07abc", b"\x00\x01"] {
            let r = decode_result(&s.handle(bad));
            assert!(!r.error.is_ok(), "{bad:?}");
        }
    }

    #[test]
    fn a_vix_file_operation_runs() {
        let dir = std::env::temp_dir().join(format!("guestfiles-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut s = GuestFiles::new();
        let cmd = Command::CreateDirectory(crate::vix::proto::CreateDirectoryRequest {
            options: 0,
            path: dir.join("a/b").to_str().unwrap().to_string(),
            properties: Vec::new(),
            create_parents: true,
        });
        let r = decode_result(&s.handle(&encode_vix_request(&cmd)));
        assert!(r.error.is_ok(), "{r:?}");
        assert!(dir.join("a/b").is_dir());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
