//! The HGFS server: sessions, bounded handle tables and dispatch by opcode.
//!
//! One [`Server`] serves one carrier (VIX op 84 or the TCLO `f ` command) in one process;
//! it is blocking and keeps no threads. [`Server::handle_packet`] takes a request packet and
//! returns the reply, which is always a well-formed packet: requests that do not decode
//! get `HGFS_STATUS_PROTOCOL_ERROR` (hgfsServer drops those, but our carriers must answer
//! every request anyway).

use std::collections::hash_map::{Entry, RandomState};
use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::hash::{BuildHasher, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::HgfsError;
use crate::handler::{Access, AttrChange, FileAttr, FileHandler, OpenFile, OpenIntent};
use crate::plain::PlainFiles;
use crate::proto::{
    self, begin_reply, cp_name_to_path, decode, finish_reply, parse_request, Capability, DirEntry,
    FileName, FileNameV3, Framing, LegacyPrefix, Op, ProtoError, ReplyCreateSessionV4,
    ReplyGetattrV2, ReplyGetattrV3, ReplyOpen, ReplyOpenV3, ReplyQueryVolumeV3, ReplyReadV3Head,
    ReplySearchOpenV3, ReplyWriteV3, RequestClose, RequestCloseV3, RequestCreateDirV3,
    RequestCreateSessionV4, RequestDeleteV3, RequestGetattrV2, RequestGetattrV3, RequestInfo,
    RequestOpen, RequestOpenV3, RequestQueryVolumeV3, RequestReadV3, RequestRenameV3,
    RequestSearchCloseV3, RequestSearchOpenV3, RequestSearchReadV3, RequestSetattrV2,
    RequestSetattrV3, Reserved, Status, Wire, ATTR_HINT_USE_FILE_DESC, CAPFLAG_IS_SUPPORTED,
    CREATE_DIR_VALID_GROUP_PERMS, CREATE_DIR_VALID_OTHER_PERMS, CREATE_DIR_VALID_OWNER_PERMS,
    CREATE_DIR_VALID_SPECIAL_PERMS, HEADER_SIZE, INVALID_HANDLE, LARGE_PACKET_MAX,
    LEGACY_HEADER_SIZE, OPEN_MODE_ACCMODES, OPEN_MODE_READ_ONLY, OPEN_MODE_READ_WRITE,
    OPEN_MODE_WRITE_ONLY, OPEN_VALID_GROUP_PERMS, OPEN_VALID_OTHER_PERMS, OPEN_VALID_OWNER_PERMS,
    OPEN_VALID_SPECIAL_PERMS, RENAME_HINT_NO_REPLACE_EXISTING, REPLY_READ_V3_HEAD_SIZE,
    SESSION_MAX_PACKET_SIZE_VALID, WRITE_APPEND,
};

/// Sessions one server keeps at once. The VMX opens one per transfer and closes it after;
/// hgfsServer allows far more, govmomi's toolbox 24.
pub const MAX_SESSIONS: usize = 64;
/// Open files and searches per session: bounds the descriptors a host can make us hold.
pub const MAX_HANDLES_PER_SESSION: usize = 256;
/// `HGFS_LEGACY_LARGE_PACKET_MAX`: what requests without a session may read in one
/// packet (lib/include/hgfs.h).
pub const LEGACY_PACKET_MAX: u32 = 4096 * 15 + 2048;
/// Announced no-replace uploads remembered at once; each is a path the VIX layer
/// announced and the VMX has not opened yet, so a handful is plenty.
pub const MAX_PENDING_NO_REPLACE: usize = 32;

/// The operations this server implements, advertised in the create-session reply.
const SUPPORTED_OPS: &[Op] = &[
    Op::OPEN,
    Op::CLOSE,
    Op::GETATTR_V2,
    Op::SETATTR_V2,
    Op::OPEN_V3,
    Op::READ_V3,
    Op::WRITE_V3,
    Op::CLOSE_V3,
    Op::SEARCH_OPEN_V3,
    Op::SEARCH_READ_V3,
    Op::SEARCH_CLOSE_V3,
    Op::GETATTR_V3,
    Op::SETATTR_V3,
    Op::CREATE_DIR_V3,
    Op::DELETE_FILE_V3,
    Op::DELETE_DIR_V3,
    Op::RENAME_V3,
    Op::QUERY_VOLUME_INFO_V3,
    Op::CREATE_SESSION_V4,
    Op::DESTROY_SESSION_V4,
];

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// What the root share's `/` is. `/` in the agent; tests and fuzzing use a directory,
    /// and then names with `..` components are refused so nothing outside is reached.
    pub root: PathBuf,
    /// Sessions at once.
    pub max_sessions: usize,
    /// Open files and searches per session.
    pub max_handles: usize,
    /// The largest packet this server offers (the host may choose less).
    pub max_packet_size: u32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            max_sessions: MAX_SESSIONS,
            max_handles: MAX_HANDLES_PER_SESSION,
            max_packet_size: LARGE_PACKET_MAX,
        }
    }
}

enum Handle {
    File {
        file: Box<dyn OpenFile>,
        path: PathBuf,
    },
    Search {
        path: PathBuf,
        names: Vec<OsString>,
    },
}

struct Session {
    max_packet_size: u32,
    handles: HashMap<u32, Handle>,
    next_handle: u32,
}

impl Session {
    fn new(max_packet_size: u32) -> Self {
        Self {
            max_packet_size,
            handles: HashMap::new(),
            next_handle: 1,
        }
    }

    fn insert(&mut self, handle: Handle, bound: usize) -> Result<u32, HgfsError> {
        if self.handles.len() >= bound {
            return Err(HgfsError::refused(
                Status::GENERIC_ERROR,
                format!("handle table full ({bound} open)"),
            ));
        }
        loop {
            let id = self.next_handle;
            self.next_handle = self.next_handle.wrapping_add(1);
            if id == 0 || id == INVALID_HANDLE {
                continue;
            }
            if let Entry::Vacant(slot) = self.handles.entry(id) {
                slot.insert(handle);
                return Ok(id);
            }
        }
    }

    fn file(&mut self, id: u32) -> Result<&mut Box<dyn OpenFile>, HgfsError> {
        match self.handles.get_mut(&id) {
            Some(Handle::File { file, .. }) => Ok(file),
            _ => Err(invalid_handle(id)),
        }
    }

    fn path(&self, id: u32) -> Result<&Path, HgfsError> {
        match self.handles.get(&id) {
            Some(Handle::File { path, .. }) | Some(Handle::Search { path, .. }) => Ok(path),
            None => Err(invalid_handle(id)),
        }
    }
}

fn invalid_handle(id: u32) -> HgfsError {
    HgfsError::refused(Status::INVALID_HANDLE, format!("handle {id}"))
}

/// The HGFS server.
pub struct Server {
    config: ServerConfig,
    handlers: Vec<Box<dyn FileHandler>>,
    plain: PlainFiles,
    sessions: HashMap<u64, Session>,
    /// Requests framed without a session share this one, as hgfsServer's default session.
    legacy: Session,
    ids: RandomState,
    session_counter: u64,
    /// Reply buffer for everything but reads.
    out: Vec<u8>,
    /// Reply buffer for reads, kept at its largest length so read data lands in it without
    /// being zeroed first; never longer than the largest negotiated packet.
    read_buf: Vec<u8>,
    /// Paths whose next upload must not replace an existing file (see
    /// [`Server::upload_without_replace`]), oldest first.
    no_replace: VecDeque<PathBuf>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("handlers", &self.handlers.len())
            .field("sessions", &self.sessions.len())
            .finish()
    }
}

/// Where a request's reply is.
enum Reply {
    /// In `out`, framing still to be finished.
    Out,
    /// In `out`, complete.
    Finished,
    /// The first bytes of `read_buf`, complete.
    Read(usize),
}

impl Server {
    /// A server over plain files, with the given settings.
    pub fn new(config: ServerConfig) -> Self {
        Self {
            config,
            handlers: Vec::new(),
            plain: PlainFiles::new(),
            sessions: HashMap::new(),
            legacy: Session::new(LEGACY_PACKET_MAX),
            ids: RandomState::new(),
            session_counter: 0,
            out: Vec::new(),
            read_buf: Vec::new(),
            no_replace: VecDeque::new(),
        }
    }

    /// Adds a handler, asked (in registration order) before plain files whether it
    /// serves a path.
    pub fn register_handler(&mut self, handler: Box<dyn FileHandler>) {
        self.handlers.push(handler);
    }

    /// The settings.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Sessions open now.
    pub fn session_count(&self) -> usize {
        self.sessions.len()
    }

    /// Handles open now, over all sessions.
    pub fn open_handles(&self) -> usize {
        self.sessions
            .values()
            .map(|s| s.handles.len())
            .sum::<usize>()
            + self.legacy.handles.len()
    }

    /// Announces that the next upload to `guest_path` (an absolute guest path, as VIX's
    /// InitiateFileTransferToGuest names it) must not replace an existing file, whatever
    /// open flags the VMX then sends: the open fails if the file exists, and the final
    /// rename fails if one appeared meanwhile. This is how `overwrite=false` holds
    /// without a window between the VIX layer's check and the HGFS transfer.
    pub fn upload_without_replace(&mut self, guest_path: &[u8]) -> Result<(), HgfsError> {
        let path = self.resolve(&proto::path_to_cp_name(guest_path))?;
        if self.no_replace.len() >= MAX_PENDING_NO_REPLACE {
            self.no_replace.pop_front();
        }
        self.no_replace.push_back(path);
        Ok(())
    }

    /// The attributes of `guest_path` (an absolute guest path, as VIX names it) when a
    /// registered handler serves it, `None` when it is a plain file. VIX's transfer requests
    /// ask this first: a process stream or another virtual file has no inode to `lstat`.
    pub fn handler_stat(&self, guest_path: &[u8]) -> Option<Result<FileAttr, HgfsError>> {
        let path = self.resolve(&proto::path_to_cp_name(guest_path)).ok()?;
        let handler = self.handlers.iter().find(|h| h.claims(&path))?;
        Some(handler.stat(&path))
    }

    /// Handles one request packet and returns the reply packet.
    pub fn handle_packet(&mut self, packet: &[u8]) -> &[u8] {
        match parse_request(packet) {
            Ok((info, args)) => {
                let span = tracing::debug_span!("hgfs", op = %info.op, id = info.request_id);
                let _entered = span.enter();
                match self.dispatch(&info, args) {
                    Ok(Reply::Out) => {
                        finish_reply(&mut self.out, &info, Status::SUCCESS);
                        &self.out
                    }
                    Ok(Reply::Finished) => &self.out,
                    Ok(Reply::Read(len)) => &self.read_buf[..len],
                    Err(e) => {
                        let status = e.status();
                        tracing::debug!(error = %e, %status, "request failed");
                        begin_reply(&mut self.out, &info);
                        finish_reply(&mut self.out, &info, status);
                        &self.out
                    }
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "undecodable packet");
                let info = RequestInfo {
                    framing: Framing::Session { session_id: 0 },
                    request_id: 0,
                    op: Op::NEW_HEADER,
                };
                begin_reply(&mut self.out, &info);
                finish_reply(&mut self.out, &info, Status::PROTOCOL_ERROR);
                &self.out
            }
        }
    }

    fn session(&mut self, info: &RequestInfo) -> Result<&mut Session, HgfsError> {
        session_of(&mut self.sessions, &mut self.legacy, info)
    }

    fn handler_for(&self, path: &Path) -> &dyn FileHandler {
        self.handlers
            .iter()
            .find(|h| h.claims(path))
            .map(|h| h.as_ref())
            .unwrap_or(&self.plain)
    }

    /// The local path for a cross-platform name.
    fn resolve(&self, name: &[u8]) -> Result<PathBuf, HgfsError> {
        let guest = cp_name_to_path(name).map_err(|e| {
            HgfsError::refused(
                Status::NO_SUCH_FILE_OR_DIR,
                format!("{e}: {:?}", OsStr::from_bytes(name)),
            )
        })?;
        let guest = Path::new(OsStr::from_bytes(&guest));
        if self.config.root == Path::new("/") {
            return Ok(guest.to_path_buf());
        }
        let mut local = self.config.root.clone();
        for component in guest.components() {
            match component {
                Component::Normal(c) => local.push(c),
                Component::RootDir | Component::CurDir => {}
                Component::ParentDir | Component::Prefix(_) => {
                    return Err(HgfsError::refused(
                        Status::INVALID_NAME,
                        format!("{}: `..` outside the served root", guest.display()),
                    ))
                }
            }
        }
        Ok(local)
    }

    /// The path a V3 name stands for: the name, or an open handle's path.
    fn resolve_v3(&mut self, info: &RequestInfo, name: &FileNameV3) -> Result<PathBuf, HgfsError> {
        match name.handle() {
            Some(id) => Ok(self.session(info)?.path(id)?.to_path_buf()),
            None => self.resolve(&name.name),
        }
    }

    fn dispatch(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        // V1/V2 arguments start with their own `HgfsRequest`, which says nothing the
        // header did not.
        let args = if info.op.has_legacy_prefix() {
            let mut r = proto::Reader::new(args);
            LegacyPrefix::decode(&mut r).ok_or(ProtoError::Truncated {
                what: "HgfsRequest",
                have: args.len(),
            })?;
            r.rest()
        } else {
            args
        };
        if info.op == Op::CREATE_SESSION_V4 {
            return self.create_session(info, args);
        }
        // Everything else needs a live session (or the legacy one).
        self.session(info)?;
        match info.op {
            Op::DESTROY_SESSION_V4 => self.destroy_session(info),
            Op::OPEN => self.open_v1(info, args),
            Op::OPEN_V3 => self.open_v3(info, args),
            Op::READ_V3 => self.read_v3(info, args),
            Op::WRITE_V3 => self.write_v3(info, args),
            Op::CLOSE => {
                let req: RequestClose = decode(args)?;
                self.close(info, req.handle)?;
                begin_reply(&mut self.out, info);
                Ok(Reply::Out)
            }
            Op::CLOSE_V3 => {
                let req: RequestCloseV3 = decode(args)?;
                self.close(info, req.handle)?;
                self.reply(info, &Reserved::default())
            }
            Op::GETATTR_V2 => self.getattr_v2(info, args),
            Op::GETATTR_V3 => self.getattr_v3(info, args),
            Op::SETATTR_V2 => {
                let req: RequestSetattrV2 = decode(args)?;
                let path = if req.hints & ATTR_HINT_USE_FILE_DESC != 0 {
                    self.session(info)?.path(req.handle)?.to_path_buf()
                } else {
                    self.resolve(&req.file_name.name)?
                };
                self.handler_for(&path)
                    .set_attr(&path, &AttrChange::from_attr_v2(&req.attr))?;
                begin_reply(&mut self.out, info);
                Ok(Reply::Out)
            }
            Op::SETATTR_V3 => {
                let req: RequestSetattrV3 = decode(args)?;
                let path = self.resolve_v3(info, &req.file_name)?;
                self.handler_for(&path)
                    .set_attr(&path, &AttrChange::from_attr_v2(&req.attr))?;
                self.reply(info, &Reserved::default())
            }
            Op::SEARCH_OPEN_V3 => self.search_open_v3(info, args),
            Op::SEARCH_READ_V3 => self.search_read_v3(info, args),
            Op::SEARCH_CLOSE_V3 => {
                let req: RequestSearchCloseV3 = decode(args)?;
                let session = self.session(info)?;
                match session.handles.get(&req.search) {
                    Some(Handle::Search { .. }) => {
                        session.handles.remove(&req.search);
                    }
                    _ => return Err(invalid_handle(req.search)),
                }
                self.reply(info, &Reserved::default())
            }
            Op::CREATE_DIR_V3 => {
                let req: RequestCreateDirV3 = decode(args)?;
                let path = self.resolve_v3(info, &req.file_name)?;
                let mode = perms_from_mask(
                    req.mask,
                    [
                        CREATE_DIR_VALID_SPECIAL_PERMS,
                        CREATE_DIR_VALID_OWNER_PERMS,
                        CREATE_DIR_VALID_GROUP_PERMS,
                        CREATE_DIR_VALID_OTHER_PERMS,
                    ],
                    [
                        req.special_perms,
                        req.owner_perms,
                        req.group_perms,
                        req.other_perms,
                    ],
                );
                self.plain.create_dir(&path, mode)?;
                self.reply(info, &Reserved::default())
            }
            Op::DELETE_FILE_V3 | Op::DELETE_DIR_V3 => {
                let req: RequestDeleteV3 = decode(args)?;
                let path = self.resolve_v3(info, &req.file_name)?;
                if info.op == Op::DELETE_FILE_V3 {
                    self.plain.delete_file(&path)?;
                } else {
                    self.plain.delete_dir(&path)?;
                }
                self.reply(info, &Reserved::default())
            }
            Op::RENAME_V3 => {
                let req: RequestRenameV3 = decode(args)?;
                let from = self.resolve_v3(info, &req.old_name)?;
                let to = self.resolve_v3(info, &req.new_name)?;
                self.plain
                    .rename(&from, &to, req.hints & RENAME_HINT_NO_REPLACE_EXISTING != 0)?;
                self.reply(info, &Reserved::default())
            }
            Op::QUERY_VOLUME_INFO_V3 => {
                let req: RequestQueryVolumeV3 = decode(args)?;
                let path = self.resolve_v3(info, &req.file_name)?;
                let (free_bytes, total_bytes) = self.plain.volume_info(&path)?;
                self.reply(
                    info,
                    &ReplyQueryVolumeV3 {
                        free_bytes,
                        total_bytes,
                        reserved: 0,
                    },
                )
            }
            other => Err(HgfsError::refused(
                Status::OPERATION_NOT_SUPPORTED,
                format!("opcode {other}"),
            )),
        }
    }

    fn reply<T: Wire>(&mut self, info: &RequestInfo, body: &T) -> Result<Reply, HgfsError> {
        begin_reply(&mut self.out, info);
        body.encode(&mut self.out);
        Ok(Reply::Out)
    }

    fn create_session(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        if info.framing == Framing::Legacy {
            return Err(ProtoError::LegacyOpcode(info.op).into());
        }
        let req: RequestCreateSessionV4 = decode(args)?;
        if self.sessions.len() >= self.config.max_sessions {
            return Err(HgfsError::refused(
                Status::TOO_MANY_SESSIONS,
                format!("{} sessions open", self.sessions.len()),
            ));
        }
        // The smaller of what each side can take, as hgfsServer negotiates it, but never
        // below HGFS_PACKET_MAX, which every client takes: a smaller size would leave reads
        // no room and make every file look empty.
        let max_packet_size = req
            .max_packet_size
            .min(self.config.max_packet_size)
            .max(proto::PACKET_MAX);
        let session_id = loop {
            let mut hasher = self.ids.build_hasher();
            self.session_counter = self.session_counter.wrapping_add(1);
            hasher.write_u64(self.session_counter);
            let id = hasher.finish();
            if id != u64::MAX && !self.sessions.contains_key(&id) {
                break id;
            }
        };
        self.sessions
            .insert(session_id, Session::new(max_packet_size));
        tracing::debug!(
            session = format_args!("{session_id:#x}"),
            max_packet_size,
            "session created"
        );
        let capabilities = SUPPORTED_OPS
            .iter()
            .map(|&op| Capability {
                op,
                flags: CAPFLAG_IS_SUPPORTED,
            })
            .collect();
        let reply = ReplyCreateSessionV4 {
            session_id,
            max_packet_size,
            identity_offset: 0,
            flags: SESSION_MAX_PACKET_SIZE_VALID,
            reserved: 0,
            capabilities,
        };
        // The reply carries the new session's id in its header too.
        let info = RequestInfo {
            framing: Framing::Session { session_id },
            ..*info
        };
        begin_reply(&mut self.out, &info);
        reply.encode(&mut self.out);
        finish_reply(&mut self.out, &info, Status::SUCCESS);
        Ok(Reply::Finished)
    }

    fn destroy_session(&mut self, info: &RequestInfo) -> Result<Reply, HgfsError> {
        if let Framing::Session { session_id } = info.framing {
            if let Some(session) = self.sessions.remove(&session_id) {
                let open = session.handles.len();
                // Dropping the handles discards unfinished uploads.
                drop(session);
                tracing::debug!(
                    session = format_args!("{session_id:#x}"),
                    open,
                    "session destroyed"
                );
            }
        }
        self.reply(info, &Reserved::default())
    }

    fn open_file(
        &mut self,
        info: &RequestInfo,
        path: PathBuf,
        intent: OpenIntent,
    ) -> Result<u32, HgfsError> {
        let bound = self.config.max_handles;
        // Refuse before opening, so a full table never leaves a file half-made.
        if self.session(info)?.handles.len() >= bound {
            return Err(HgfsError::refused(
                Status::GENERIC_ERROR,
                format!("open {}: handle table full ({bound} open)", path.display()),
            ));
        }
        let mut intent = intent;
        if intent.access.writes() {
            if let Some(at) = self.no_replace.iter().position(|p| *p == path) {
                self.no_replace.remove(at);
                intent.flags = proto::OpenFlags::OPEN_CREATE_SAFE;
            }
        }
        let file = self.handler_for(&path).open(&path, &intent)?;
        tracing::debug!(path = %path.display(), ?intent, "opened");
        self.session(info)?
            .insert(Handle::File { file, path }, bound)
    }

    fn open_v1(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestOpen = decode(args)?;
        let path = self.resolve(&req.file_name.name)?;
        let intent = OpenIntent {
            access: access(req.mode)?,
            flags: req.flags,
            create_mode: Some(u32::from(req.permissions & 7) << 6),
        };
        let handle = self.open_file(info, path, intent)?;
        self.reply(info, &ReplyOpen { handle })
    }

    fn open_v3(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestOpenV3 = decode(args)?;
        if req.desired_lock != 0 {
            return Err(HgfsError::refused(
                Status::OPERATION_NOT_SUPPORTED,
                format!("open with lock type {}", req.desired_lock),
            ));
        }
        let path = self.resolve(&req.file_name.name)?;
        let intent = OpenIntent {
            access: access(req.mode)?,
            flags: req.flags,
            create_mode: perms_from_mask(
                req.mask,
                [
                    OPEN_VALID_SPECIAL_PERMS,
                    OPEN_VALID_OWNER_PERMS,
                    OPEN_VALID_GROUP_PERMS,
                    OPEN_VALID_OTHER_PERMS,
                ],
                [
                    req.special_perms,
                    req.owner_perms,
                    req.group_perms,
                    req.other_perms,
                ],
            ),
        };
        let handle = self.open_file(info, path, intent)?;
        self.reply(
            info,
            &ReplyOpenV3 {
                handle,
                ..ReplyOpenV3::default()
            },
        )
    }

    fn read_v3(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestReadV3 = decode(args)?;
        let session = session_of(&mut self.sessions, &mut self.legacy, info)?;
        let framing = match info.framing {
            Framing::Session { .. } => HEADER_SIZE,
            Framing::Legacy => LEGACY_HEADER_SIZE,
        };
        let head = framing + REPLY_READ_V3_HEAD_SIZE;
        // The reply must fit the negotiated packet: a larger request reads less.
        let room = (session.max_packet_size as usize).saturating_sub(head);
        let want = (req.required_size as usize).min(room);
        let file = session.file(req.handle)?;
        let needed = head + want;
        if self.read_buf.len() < needed {
            self.read_buf.resize(needed, 0);
        }
        let got = file
            .read_at(req.offset, &mut self.read_buf[head..needed])
            .map_err(|e| HgfsError::io(format!("read handle {}", req.handle), e))?;
        // The framing goes in front of the data, which is already in place.
        begin_reply(&mut self.out, info);
        ReplyReadV3Head {
            actual_size: got as u32,
            reserved: 0,
        }
        .encode(&mut self.out);
        proto::write_reply_header(&mut self.out, info, Status::SUCCESS, head + got);
        self.read_buf[..head].copy_from_slice(&self.out[..head]);
        Ok(Reply::Read(head + got))
    }

    fn write_v3(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let (req, data) = proto::decode_write_v3(args)?;
        let file = self.session(info)?.file(req.handle)?;
        let offset = (req.flags & WRITE_APPEND == 0).then_some(req.offset);
        let written = file
            .write_at(offset, data)
            .map_err(|e| HgfsError::io(format!("write handle {}", req.handle), e))?;
        self.reply(
            info,
            &ReplyWriteV3 {
                actual_size: written as u32,
                reserved: 0,
            },
        )
    }

    fn close(&mut self, info: &RequestInfo, id: u32) -> Result<(), HgfsError> {
        let session = self.session(info)?;
        match session.handles.remove(&id) {
            Some(Handle::File { file, path }) => file
                .close()
                .map_err(|e| HgfsError::io(format!("close {}", path.display()), e)),
            Some(search @ Handle::Search { .. }) => {
                // Searches close through their own op; put it back untouched.
                session.handles.insert(id, search);
                Err(invalid_handle(id))
            }
            None => Err(invalid_handle(id)),
        }
    }

    fn getattr_v2(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestGetattrV2 = decode(args)?;
        let attr = if req.hints & ATTR_HINT_USE_FILE_DESC != 0 {
            let file = self.session(info)?.file(req.handle)?;
            file.attr()
                .map_err(|e| HgfsError::io(format!("fstat handle {}", req.handle), e))?
        } else {
            let path = self.resolve(&req.file_name.name)?;
            self.handler_for(&path).stat(&path)?
        };
        self.reply(
            info,
            &ReplyGetattrV2 {
                attr: attr.to_attr_v2(),
                symlink_target: FileName::default(),
            },
        )
    }

    fn getattr_v3(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestGetattrV3 = decode(args)?;
        let attr = match req.file_name.handle() {
            Some(id) => match self.session(info)?.handles.get(&id) {
                Some(Handle::File { file, .. }) => file
                    .attr()
                    .map_err(|e| HgfsError::io(format!("fstat handle {id}"), e))?,
                Some(Handle::Search { path, .. }) => {
                    let path = path.clone();
                    self.plain.stat(&path)?
                }
                None => return Err(invalid_handle(id)),
            },
            None => {
                let path = self.resolve(&req.file_name.name)?;
                self.handler_for(&path).stat(&path)?
            }
        };
        self.reply(
            info,
            &ReplyGetattrV3 {
                attr: attr.to_attr_v2(),
                reserved: 0,
                symlink_target: FileNameV3::default(),
            },
        )
    }

    fn search_open_v3(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestSearchOpenV3 = decode(args)?;
        let path = self.resolve_v3(info, &req.dir_name)?;
        let bound = self.config.max_handles;
        if self.session(info)?.handles.len() >= bound {
            return Err(HgfsError::refused(
                Status::GENERIC_ERROR,
                format!(
                    "search {}: handle table full ({bound} open)",
                    path.display()
                ),
            ));
        }
        let names = self.plain.list_dir(&path)?;
        let search = self
            .session(info)?
            .insert(Handle::Search { path, names }, bound)?;
        self.reply(
            info,
            &ReplySearchOpenV3 {
                search,
                reserved: 0,
            },
        )
    }

    fn search_read_v3(&mut self, info: &RequestInfo, args: &[u8]) -> Result<Reply, HgfsError> {
        let req: RequestSearchReadV3 = decode(args)?;
        let (dir, name) = match self.session(info)?.handles.get(&req.search) {
            Some(Handle::Search { path, names }) => {
                (path.clone(), names.get(req.offset as usize).cloned())
            }
            _ => return Err(invalid_handle(req.search)),
        };
        let entry = name.map(|name| {
            // An entry that vanished since the listing is still named, without attributes.
            let attr = self
                .plain
                .entry_attr(&dir.join(&name))
                .map(|a| a.to_attr_v2())
                .unwrap_or_default();
            DirEntry {
                attr,
                name: name.as_bytes().to_vec(),
            }
        });
        begin_reply(&mut self.out, info);
        proto::encode_search_read_v3(entry.as_ref(), &mut self.out);
        Ok(Reply::Out)
    }
}

fn session_of<'a>(
    sessions: &'a mut HashMap<u64, Session>,
    legacy: &'a mut Session,
    info: &RequestInfo,
) -> Result<&'a mut Session, HgfsError> {
    match info.framing {
        Framing::Legacy => Ok(legacy),
        Framing::Session { session_id } => sessions.get_mut(&session_id).ok_or_else(|| {
            HgfsError::refused(Status::STALE_SESSION, format!("session {session_id:#x}"))
        }),
    }
}

fn access(mode: u32) -> Result<Access, HgfsError> {
    match mode & OPEN_MODE_ACCMODES {
        OPEN_MODE_READ_ONLY => Ok(Access::Read),
        OPEN_MODE_WRITE_ONLY => Ok(Access::Write),
        OPEN_MODE_READ_WRITE => Ok(Access::ReadWrite),
        other => Err(HgfsError::refused(
            Status::INVALID_PARAMETER,
            format!("open mode {other}"),
        )),
    }
}

/// Permission bits from the request's (special, owner, group, other) parts that its mask
/// marks valid; `None` if it marks none, so the default applies.
fn perms_from_mask(mask: u64, valid: [u64; 4], parts: [u8; 4]) -> Option<u32> {
    if valid.iter().all(|&bit| mask & bit == 0) {
        return None;
    }
    let mut mode = 0;
    for (i, (&bit, &part)) in valid.iter().zip(parts.iter()).enumerate() {
        if mask & bit != 0 {
            mode |= u32::from(part & 7) << (9 - 3 * i);
        }
    }
    Some(mode)
}
