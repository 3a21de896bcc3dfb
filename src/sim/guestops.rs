//! The host's side of vSphere's guest file operations, as the VMX carries them out for
//! `govc guest.*`: each operation a `Vix_1_Relayed_Command` with name/password credentials,
//! transfers an InitiateFileTransfer* request and then an HGFS session whose packets travel
//! as VIX op 84 (HgfsSendPacket), 61 440 bytes per read or write. Errors come back as the
//! messages govc prints.
//!
//! The carrier is a trait, so tests drive a [`Sim`] in process and `vmx-sim` a running
//! simulator through its control socket.

use super::{Client, Control, Sim};
use crate::vix::client::{self, ClientError, FileInfo};
use crate::vix::proto::{
    attribute_options as opt, CreateDirectoryRequest, CreateTempRequest, DeleteDirectoryRequest,
    DeleteFileRequest, HgfsPacketRequest, ListFilesRequest, MoveRequest, SetAttributesRequest,
    TransferToGuestRequest,
};
use crate::vix::{Command, Credentials, VixError};
use base64::Engine as _;
use std::future::Future;
use std::io::{Read, Write};
use std::time::Duration;
use toolbox_hgfs::archive::GO_TOOLBOX_TRAILER;
use toolbox_hgfs::client::{self as hgfs, TRANSFER_CHUNK};
use toolbox_hgfs::proto::{OpenFlags, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY};

/// How long one TCLO round trip may take: a login with a slow hash plus the file system call.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// The `timeout` field of the HgfsSendPacket requests, in seconds.
const HGFS_PACKET_TIMEOUT: i32 = 60;

/// At most this many ListFiles pages for one listing: each page returns at least one entry, so
/// a guest that answers with empty pages while claiming more cannot keep `guest.ls` looping.
const MAX_LIST_PAGES: usize = 1 << 20;

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum GuestOpsError {
    /// The guest answered with a VIX error; `message` is what govc prints for its fault.
    #[error("{message}")]
    Fault {
        /// The VIX error.
        error: VixError,
        /// The guest's errno.
        errno: u32,
        /// govc's message.
        message: String,
    },
    /// The request never got a VIX answer (no guest, timeout, closed channel).
    #[error("talking to the guest: {0}")]
    Carrier(String),
    /// The guest's TCLO reply is not a VIX reply (`ERROR ...`, say).
    #[error("the guest refused the request: {0}")]
    Refused(String),
    /// The VIX reply does not decode.
    #[error("{0}")]
    Reply(#[from] ClientError),
    /// An HGFS reply failed or does not decode.
    #[error("{0}")]
    Hgfs(#[from] toolbox_hgfs::client::ClientError),
    /// A local file.
    #[error("{what} {path}: {source}")]
    Local {
        /// What was being done.
        what: &'static str,
        /// The local path.
        path: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The local destination exists and `-f` was not given.
    #[error("{0}: file already exists")]
    LocalExists(String),
    /// A bad argument.
    #[error("{0}")]
    Usage(String),
}

impl GuestOpsError {
    /// The VIX error, when the guest sent one.
    pub fn vix(&self) -> Option<VixError> {
        match self {
            GuestOpsError::Fault { error, .. } => Some(*error),
            _ => None,
        }
    }

    fn hgfs_fault(e: toolbox_hgfs::client::ClientError, path: &str) -> GuestOpsError {
        use toolbox_hgfs::proto::Status;
        if let toolbox_hgfs::client::ClientError::Status { status, .. } = &e {
            // What the VMX makes of the HGFS statuses a transfer meets.
            let vix = match *status {
                Status::NO_SUCH_FILE_OR_DIR => Some(VixError::FILE_NOT_FOUND),
                Status::FILE_EXISTS => Some(VixError::FILE_ALREADY_EXISTS),
                Status::ACCESS_DENIED | Status::OPERATION_NOT_PERMITTED => {
                    Some(VixError::FILE_ACCESS_ERROR)
                }
                Status::NO_SPACE => Some(VixError::DISK_FULL),
                _ => None,
            };
            if let Some(vix) = vix {
                return GuestOpsError::Fault {
                    error: vix,
                    errno: 0,
                    message: client::fault_message(vix, path),
                };
            }
        }
        GuestOpsError::Hgfs(e)
    }
}

/// How a request reaches the guest: one TCLO request, its reply.
pub trait Carrier {
    /// Sends `request` and returns the guest's TCLO reply (`OK ...` or `ERROR ...`).
    fn tclo(&mut self, request: &[u8]) -> impl Future<Output = Result<Vec<u8>, String>>;
}

/// An in-process simulator.
#[derive(Clone)]
pub struct InProcess(pub Sim);

impl std::fmt::Debug for InProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess")
    }
}

impl Carrier for InProcess {
    async fn tclo(&mut self, request: &[u8]) -> Result<Vec<u8>, String> {
        self.0.tclo(request, REQUEST_TIMEOUT).await
    }
}

/// A running simulator's control socket (`vmx-sim -d DIR`).
#[derive(Debug)]
pub struct ControlSocket(pub Client);

impl Carrier for ControlSocket {
    async fn tclo(&mut self, request: &[u8]) -> Result<Vec<u8>, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let reply = self
            .0
            .call(&Control::TcloBinary {
                request: b64.encode(request),
                timeout_ms: REQUEST_TIMEOUT.as_millis() as u64,
            })
            .await
            .map_err(|e| format!("talking to the simulator: {e}"))?;
        if !reply.ok {
            return Err(reply.error.unwrap_or_else(|| "failed".into()));
        }
        b64.decode(reply.value.unwrap_or_default())
            .map_err(|_| "the simulator's reply is not base64".to_string())
    }
}

/// Watches a transfer: the CLI's progress bar, or nothing.
pub trait Progress {
    /// The transfer starts; `total` bytes when known.
    fn start(&mut self, total: Option<u64>);
    /// `n` more bytes moved.
    fn advance(&mut self, n: u64);
    /// The transfer is over.
    fn finish(&mut self);
}

/// No progress shown.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn start(&mut self, _: Option<u64>) {}
    fn advance(&mut self, _: u64) {}
    fn finish(&mut self) {}
}

/// The attributes an upload sets (govc's `-perm`, `-uid`, `-gid`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploadAttributes {
    /// Permission bits; 0 leaves the guest's default.
    pub permissions: u32,
    /// Owner.
    pub uid: Option<i32>,
    /// Group.
    pub gid: Option<i32>,
}

/// What to change with ChangeFileAttributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AttributeChange {
    /// Permission bits.
    pub permissions: Option<u32>,
    /// Owner.
    pub uid: Option<i32>,
    /// Group.
    pub gid: Option<i32>,
    /// Access time, seconds since the epoch.
    pub atime: Option<i64>,
    /// Modification time, seconds since the epoch.
    pub mtime: Option<i64>,
}

/// What a download fetched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Downloaded {
    /// Bytes written.
    pub bytes: u64,
    /// True when the source was a directory, fetched as a gzip'd tar.
    pub archive: bool,
}

/// The percent-encoding of a guest path inside the archive form's URL: everything but
/// unreserved characters and `/`.
fn url_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `/archive:/DIR?format=F`: the transfer name under which the guest streams or unpacks a
/// directory (govmomi's `toolbox/hgfs/archive.go` form).
pub fn archive_name(dir: &str, gzip: bool) -> String {
    let dir = dir.trim_end_matches('/');
    let dir = if dir.is_empty() { "/" } else { dir };
    format!(
        "/archive:{}?format={}",
        url_path(dir),
        if gzip { "tgz" } else { "tar" }
    )
}

/// The transfer name for `path` when it names a directory archive: `/archive:/...` as given
/// (with `format=` added when it has no query), `DIR/` as [`archive_name`] makes it.
pub fn archive_target(path: &str, gzip: bool) -> Option<String> {
    if path.starts_with("/archive:") {
        return Some(if path.contains('?') {
            path.to_string()
        } else {
            format!("{path}?format={}", if gzip { "tgz" } else { "tar" })
        });
    }
    (path.len() > 1 && path.ends_with('/')).then(|| archive_name(path, gzip))
}

/// The directory of an `/archive:/DIR?...` transfer name, percent escapes undone.
fn archive_dir(target: &str) -> Option<String> {
    let rest = target.strip_prefix("/archive:")?;
    let dir = rest.split_once('?').map_or(rest, |(d, _)| d);
    let b = dir.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| b.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match hex {
            Some(v) => {
                out.push(v);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// A guest file operations client over `carrier`, logged in with `credentials`.
#[derive(Debug)]
pub struct GuestOps<C> {
    carrier: C,
    credentials: Credentials,
    cookie: u64,
}

impl<C: Carrier> GuestOps<C> {
    /// A client; nothing is sent yet.
    pub fn new(carrier: C, credentials: Credentials) -> GuestOps<C> {
        GuestOps {
            carrier,
            credentials,
            cookie: 1,
        }
    }

    /// One VIX command; the result on success, the govc message for `path` on a VIX error.
    pub async fn call(&mut self, command: &Command, path: &str) -> Result<Vec<u8>, GuestOpsError> {
        let cookie = self.cookie;
        self.cookie += 1;
        let request = client::relayed_request(command, Some(&self.credentials), cookie);
        let reply = self
            .carrier
            .tclo(&request)
            .await
            .map_err(GuestOpsError::Carrier)?;
        let body = match reply.strip_prefix(b"OK ") {
            Some(b) => b,
            None => {
                return Err(GuestOpsError::Refused(
                    String::from_utf8_lossy(&reply[..reply.len().min(200)]).into_owned(),
                ))
            }
        };
        let reply = client::parse_reply(command, body)?;
        if !reply.error.is_ok() {
            return Err(GuestOpsError::Fault {
                error: reply.error,
                errno: reply.additional,
                message: client::fault_message(reply.error, path),
            });
        }
        Ok(reply.result)
    }

    /// ListFiles, every page: what `guest.ls` prints.
    pub async fn list(
        &mut self,
        path: &str,
        pattern: Option<&str>,
    ) -> Result<Vec<FileInfo>, GuestOpsError> {
        let mut files = Vec::new();
        for _ in 0..MAX_LIST_PAGES {
            let index = i32::try_from(files.len())
                .map_err(|_| GuestOpsError::Usage("listing too long".into()))?;
            let result = self
                .call(
                    &Command::ListFiles(ListFilesRequest {
                        options: 0,
                        path: path.to_string(),
                        pattern: pattern.map(str::to_string),
                        index,
                        max_results: i32::MAX,
                        offset: 0,
                    }),
                    path,
                )
                .await?;
            let page = client::parse_list_files(&result)?;
            let got = page.files.len();
            files.extend(page.files);
            if page.remaining == 0 && !page.truncated {
                return Ok(files);
            }
            if got == 0 {
                return Err(ClientError::FileInfo("an empty page that claims more").into());
            }
        }
        Err(ClientError::FileInfo("too many pages").into())
    }

    /// CreateDirectory; with `parents`, an existing directory is no error (as `mkdir -p`).
    pub async fn mkdir(&mut self, path: &str, parents: bool) -> Result<(), GuestOpsError> {
        let r = self
            .call(
                &Command::CreateDirectory(CreateDirectoryRequest {
                    options: 0,
                    path: path.to_string(),
                    properties: Vec::new(),
                    create_parents: parents,
                }),
                path,
            )
            .await;
        match r {
            Err(e) if parents && e.vix() == Some(VixError::FILE_ALREADY_EXISTS) => Ok(()),
            r => r.map(drop),
        }
    }

    /// DeleteFile.
    pub async fn rm(&mut self, path: &str) -> Result<(), GuestOpsError> {
        self.call(
            &Command::DeleteFile(DeleteFileRequest {
                options: 0,
                path: path.to_string(),
            }),
            path,
        )
        .await
        .map(drop)
    }

    /// DeleteDirectory.
    pub async fn rmdir(&mut self, path: &str, recursive: bool) -> Result<(), GuestOpsError> {
        self.call(
            &Command::DeleteDirectory(DeleteDirectoryRequest {
                options: 0,
                path: path.to_string(),
                properties: Vec::new(),
                recursive,
            }),
            path,
        )
        .await
        .map(drop)
    }

    /// MoveFile, and MoveDirectory when the source is not a file (as `guest.mv`).
    pub async fn mv(&mut self, src: &str, dst: &str, overwrite: bool) -> Result<(), GuestOpsError> {
        let request = |overwrite| MoveRequest {
            options: 0,
            old_path: src.to_string(),
            new_path: dst.to_string(),
            properties: Vec::new(),
            overwrite,
        };
        match self.call(&Command::MoveFile(request(overwrite)), src).await {
            Err(e) if e.vix() == Some(VixError::NOT_A_FILE) => self
                .call(&Command::MoveDirectory(request(false)), src)
                .await
                .map(drop),
            r => r.map(drop),
        }
    }

    /// CreateTemporaryFile or CreateTemporaryDirectory: the new name.
    pub async fn mktemp(
        &mut self,
        directory: bool,
        prefix: &str,
        suffix: &str,
        dir: &str,
    ) -> Result<String, GuestOpsError> {
        let request = CreateTempRequest {
            options: 0,
            prefix: prefix.to_string(),
            suffix: suffix.to_string(),
            directory: dir.to_string(),
            properties: Vec::new(),
        };
        let command = if directory {
            Command::CreateTemporaryDirectory(request)
        } else {
            Command::CreateTemporaryFile(request)
        };
        let name = self.call(&command, dir).await?;
        String::from_utf8(name).map_err(|_| ClientError::FileInfo("name is not UTF-8").into())
    }

    /// ChangeFileAttributes with the fields of `change`.
    pub async fn set_attributes(
        &mut self,
        path: &str,
        change: AttributeChange,
    ) -> Result<(), GuestOpsError> {
        let mut options = 0;
        let mut request = SetAttributesRequest {
            options: 0,
            access_time: 0,
            modification_time: 0,
            owner_id: 0,
            group_id: 0,
            permissions: 0,
            hidden: false,
            read_only: false,
            path: path.to_string(),
        };
        if let Some(p) = change.permissions {
            options |= opt::SET_UNIX_PERMISSIONS;
            request.permissions = p as i32;
        }
        if let Some(u) = change.uid {
            options |= opt::SET_UNIX_OWNERID;
            request.owner_id = u;
        }
        if let Some(g) = change.gid {
            options |= opt::SET_UNIX_GROUPID;
            request.group_id = g;
        }
        if let Some(t) = change.atime {
            options |= opt::SET_ACCESS_DATE;
            request.access_time = t;
        }
        if let Some(t) = change.mtime {
            options |= opt::SET_MODIFY_DATE;
            request.modification_time = t;
        }
        request.options = options;
        self.call(&Command::SetAttributes(request), path)
            .await
            .map(drop)
    }

    /// `guest.touch`: sets the modification time (or with `atime_only` the access time) to
    /// `time`; a missing file is created empty unless `no_create`.
    pub async fn touch(
        &mut self,
        path: &str,
        atime_only: bool,
        no_create: bool,
        time: i64,
    ) -> Result<(), GuestOpsError> {
        let change = if atime_only {
            AttributeChange {
                atime: Some(time),
                ..AttributeChange::default()
            }
        } else {
            AttributeChange {
                mtime: Some(time),
                ..AttributeChange::default()
            }
        };
        match self.set_attributes(path, change).await {
            Err(e) if !no_create && e.vix() == Some(VixError::FILE_NOT_FOUND) => {
                self.upload(
                    &mut std::io::empty(),
                    path,
                    UploadAttributes::default(),
                    false,
                    &mut Quiet,
                )
                .await?;
                self.set_attributes(path, change).await
            }
            r => r,
        }
    }

    async fn hgfs(
        &mut self,
        request: &hgfs::Request,
        path: &str,
    ) -> Result<Vec<u8>, GuestOpsError> {
        self.call(
            &Command::HgfsPacket(HgfsPacketRequest {
                timeout: HGFS_PACKET_TIMEOUT,
                packet: request.packet.clone(),
            }),
            path,
        )
        .await
    }

    async fn open_session(&mut self, path: &str) -> Result<hgfs::Client, GuestOpsError> {
        let mut session = hgfs::Client::new();
        let r = session.create_session(LARGE_PACKET_MAX);
        let reply = self.hgfs(&r, path).await?;
        session.accept_session(&r, &reply)?;
        Ok(session)
    }

    async fn close_session(
        &mut self,
        mut session: hgfs::Client,
        path: &str,
    ) -> Result<(), GuestOpsError> {
        let r = session.destroy_session();
        let reply = self.hgfs(&r, path).await?;
        Ok(session.done(&r, &reply)?)
    }

    /// `guest.upload`: InitiateFileTransferToGuest, then the bytes of `src` written over
    /// HGFS, then the attributes. A `dst` in archive form (`/archive:/DIR`, `DIR/`) takes a
    /// tar or gzip'd tar that the guest unpacks into DIR. Returns the bytes sent.
    pub async fn upload(
        &mut self,
        src: &mut dyn Read,
        dst: &str,
        attrs: UploadAttributes,
        overwrite: bool,
        progress: &mut dyn Progress,
    ) -> Result<u64, GuestOpsError> {
        let mut first = vec![0u8; TRANSFER_CHUNK as usize];
        let first_len = read_full(src, &mut first).map_err(|source| GuestOpsError::Local {
            what: "reading",
            path: "the source".into(),
            source,
        })?;
        first.truncate(first_len);
        // The unpacker is told which stream comes: gzip's magic or a plain tar.
        let archive = archive_target(dst, first.starts_with(&GO_TOOLBOX_TRAILER[..2]));
        let target = archive.clone().unwrap_or_else(|| dst.to_string());
        let mut options = 0;
        if archive.is_none() {
            if attrs.permissions != 0 {
                options |= opt::SET_UNIX_PERMISSIONS;
            }
            if attrs.uid.is_some() {
                options |= opt::SET_UNIX_OWNERID;
            }
            if attrs.gid.is_some() {
                options |= opt::SET_UNIX_GROUPID;
            }
        }
        self.call(
            &Command::TransferToGuest(TransferToGuestRequest {
                options,
                path: target.clone(),
                overwrite,
            }),
            dst,
        )
        .await?;

        if let Some(dir) = archive_dir(&target) {
            // The guest unpacks into an existing directory: make it (and its parents) first,
            // as `tar -C` wants it too.
            self.mkdir(&dir, true).await?;
        }
        let mut session = self.open_session(dst).await?;
        let flags = if overwrite || archive.is_some() {
            OpenFlags::OPEN_CREATE_EMPTY
        } else {
            OpenFlags::OPEN_CREATE_SAFE
        };
        let perms = (archive.is_none() && attrs.permissions != 0).then_some(attrs.permissions);
        let r = session.open(target.as_bytes(), OPEN_MODE_WRITE_ONLY, flags, perms);
        let reply = self.hgfs(&r, dst).await?;
        let handle = session
            .opened(&r, &reply)
            .map_err(|e| GuestOpsError::hgfs_fault(e, dst))?;
        progress.start(None);
        let mut offset = 0u64;
        let mut chunk = first;
        let result: Result<(), GuestOpsError> = async {
            loop {
                if chunk.is_empty() {
                    return Ok(());
                }
                let mut at = 0;
                while at < chunk.len() {
                    let r = session.write(handle, offset, &chunk[at..]);
                    let reply = self.hgfs(&r, dst).await?;
                    let n = session
                        .written(&r, &reply)
                        .map_err(|e| GuestOpsError::hgfs_fault(e, dst))?;
                    if n == 0 {
                        return Err(GuestOpsError::Fault {
                            error: VixError::DISK_FULL,
                            errno: 0,
                            message: client::fault_message(VixError::DISK_FULL, dst),
                        });
                    }
                    at += n as usize;
                    offset += u64::from(n);
                    progress.advance(u64::from(n));
                }
                chunk.resize(TRANSFER_CHUNK as usize, 0);
                let n = read_full(src, &mut chunk).map_err(|source| GuestOpsError::Local {
                    what: "reading",
                    path: "the source".into(),
                    source,
                })?;
                chunk.truncate(n);
            }
        }
        .await;
        progress.finish();
        if let Err(e) = result {
            // The session goes without the handle's close, so the guest drops its temporary:
            // an upload cut short leaves the old file as it was.
            let r = session.destroy_session();
            let _ = self.hgfs(&r, dst).await;
            return Err(e);
        }
        let r = session.close(handle);
        let reply = self.hgfs(&r, dst).await?;
        session
            .done(&r, &reply)
            .map_err(|e| GuestOpsError::hgfs_fault(e, dst))?;
        self.close_session(session, dst).await?;
        // The open's permissions only reach a new file (a replaced one keeps its mode), so
        // what was asked for is set once the file is in place.
        let wanted = AttributeChange {
            permissions: (attrs.permissions != 0).then_some(attrs.permissions),
            uid: attrs.uid,
            gid: attrs.gid,
            ..AttributeChange::default()
        };
        if archive.is_none() && wanted != AttributeChange::default() {
            self.set_attributes(dst, wanted).await?;
        }
        Ok(offset)
    }

    /// `guest.download`: InitiateFileTransferFromGuest, then the file read over HGFS into
    /// `out`. A directory (or a path in archive form) comes as a gzip'd tar.
    pub async fn download(
        &mut self,
        src: &str,
        out: &mut dyn Write,
        progress: &mut dyn Progress,
    ) -> Result<Downloaded, GuestOpsError> {
        let transfer = |path: &str| {
            Command::TransferFromGuest(ListFilesRequest {
                options: 0,
                path: path.to_string(),
                pattern: None,
                index: 0,
                max_results: 0,
                offset: 0,
            })
        };
        let (name, size, archive) = match archive_target(src, true) {
            Some(name) => {
                self.call(&transfer(&name), src).await?;
                (name, None, true)
            }
            None => match self.call(&transfer(src), src).await {
                Ok(info) => {
                    let info = client::parse_file_info(&info)?;
                    (src.to_string(), Some(info.size), false)
                }
                Err(e) if e.vix() == Some(VixError::NOT_A_FILE) => {
                    let name = archive_name(src, true);
                    self.call(&transfer(&name), src).await?;
                    (name, None, true)
                }
                Err(e) => return Err(e),
            },
        };

        let mut session = self.open_session(src).await?;
        let r = session.open(name.as_bytes(), OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None);
        let reply = self.hgfs(&r, src).await?;
        let handle = session
            .opened(&r, &reply)
            .map_err(|e| GuestOpsError::hgfs_fault(e, src))?;
        progress.start(size);
        let mut offset = 0u64;
        let mut sink = TrailerStrip {
            out,
            held: Vec::with_capacity(TRANSFER_CHUNK as usize + GO_TOOLBOX_TRAILER.len()),
            strip: archive,
        };
        let result: Result<(), GuestOpsError> = async {
            loop {
                if size.is_some_and(|s| offset >= s) {
                    return Ok(());
                }
                let r = session.read(handle, offset, TRANSFER_CHUNK);
                let reply = self.hgfs(&r, src).await?;
                let data = session
                    .read_data(&r, &reply, TRANSFER_CHUNK)
                    .map_err(|e| GuestOpsError::hgfs_fault(e, src))?;
                if data.is_empty() {
                    return Ok(());
                }
                offset += data.len() as u64;
                progress.advance(data.len() as u64);
                sink.write(data).map_err(local_write)?;
            }
        }
        .await;
        progress.finish();
        if let Err(e) = result {
            let r = session.destroy_session();
            let _ = self.hgfs(&r, src).await;
            return Err(e);
        }
        let r = session.close(handle);
        let close = self.hgfs(&r, src).await;
        session
            .done(&r, &close?)
            .map_err(|e| GuestOpsError::hgfs_fault(e, src))?;
        self.close_session(session, src).await?;
        let stripped = sink.finish().map_err(local_write)?;
        Ok(Downloaded {
            bytes: offset - stripped,
            archive,
        })
    }
}

fn local_write(source: std::io::Error) -> GuestOpsError {
    GuestOpsError::Local {
        what: "writing",
        path: "the destination".into(),
        source,
    }
}

/// Passes a download on, but for govmomi's toolbox's end-of-archive marker: the last three
/// bytes are held back until more data shows they were not the end.
struct TrailerStrip<'w> {
    out: &'w mut dyn Write,
    held: Vec<u8>,
    strip: bool,
}

impl TrailerStrip<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if !self.strip {
            return self.out.write_all(data);
        }
        self.held.extend_from_slice(data);
        let cut = self.held.len().saturating_sub(GO_TOOLBOX_TRAILER.len());
        self.out.write_all(&self.held[..cut])?;
        self.held.drain(..cut);
        Ok(())
    }

    /// Writes what is held unless it is the marker; returns the bytes dropped.
    fn finish(self) -> std::io::Result<u64> {
        let dropped = if self.held[..] == GO_TOOLBOX_TRAILER[..] {
            self.held.len() as u64
        } else {
            self.out.write_all(&self.held)?;
            0
        };
        self.out.flush()?;
        Ok(dropped)
    }
}

/// Reads until `buf` is full or the source ends.
fn read_full(src: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match src.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Parses govc's `-d` time, Go's `time.UnixDate` (`Mon Jan _2 15:04:05 MST 2006`), to seconds
/// since the epoch. As Go's parser does for an abbreviation it does not know, the zone is
/// taken as UTC.
pub fn parse_unix_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = s.split_whitespace().collect();
    let [_weekday, month, day, clock, _zone, year] = f[..] else {
        return None;
    };
    let month = MONTHS.iter().position(|m| *m == month)? as i64 + 1;
    let day: i64 = day.parse().ok().filter(|d| (1..=31).contains(d))?;
    let year: i64 = year.parse().ok()?;
    let mut hms = clock.split(':').map(|x| x.parse::<i64>().ok());
    let (h, m, sec) = (hms.next()??, hms.next()??, hms.next()??);
    if hms.next().is_some() || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    // Days from civil (H. Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + h * 3600 + m * 60 + sec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_dates_as_go_parses_them() {
        assert_eq!(parse_unix_date("Thu Jan  1 00:00:00 UTC 1970"), Some(0));
        assert_eq!(
            parse_unix_date("Tue Nov 14 22:13:20 UTC 2023"),
            Some(1_700_000_000)
        );
        assert_eq!(
            parse_unix_date("Tue Feb 29 00:00:00 UTC 2000"),
            Some(951_782_400)
        );
        assert_eq!(parse_unix_date("2023-11-14"), None);
        assert_eq!(parse_unix_date("Tue Nov 14 22:13 UTC 2023"), None);
        assert_eq!(parse_unix_date("Tue Nov 14 25:13:20 UTC 2023"), None);
    }

    #[test]
    fn the_archive_marker_is_dropped_however_the_reads_split_it() {
        let stream: Vec<u8> = b"gzip-data"
            .iter()
            .chain(&GO_TOOLBOX_TRAILER)
            .copied()
            .collect();
        for split in 0..=stream.len() {
            for second in split..=stream.len() {
                let mut out = Vec::new();
                let mut sink = TrailerStrip {
                    out: &mut out,
                    held: Vec::new(),
                    strip: true,
                };
                for part in [&stream[..split], &stream[split..second], &stream[second..]] {
                    sink.write(part).unwrap();
                }
                assert_eq!(sink.finish().unwrap(), 3);
                assert_eq!(out, b"gzip-data", "split at {split}, {second}");
            }
        }
        // Without the marker nothing is dropped; a plain file is never touched.
        for strip in [true, false] {
            let mut out = Vec::new();
            let mut sink = TrailerStrip {
                out: &mut out,
                held: Vec::new(),
                strip,
            };
            sink.write(b"ab").unwrap();
            sink.write(&GO_TOOLBOX_TRAILER[..2]).unwrap();
            assert_eq!(sink.finish().unwrap(), 0);
            assert_eq!(out.len(), 4);
        }
    }

    #[test]
    fn archive_names_escape_the_directory() {
        assert_eq!(
            archive_name("/tmp/a b/", true),
            "/archive:/tmp/a%20b?format=tgz"
        );
        assert_eq!(archive_name("/", false), "/archive:/?format=tar");
        assert_eq!(
            archive_target("/tmp/x/", true).as_deref(),
            Some("/archive:/tmp/x?format=tgz")
        );
        assert_eq!(
            archive_target("/archive:/tmp/x", false).as_deref(),
            Some("/archive:/tmp/x?format=tar")
        );
        assert_eq!(
            archive_target("/archive:/tmp/x?format=tgz", false).as_deref(),
            Some("/archive:/tmp/x?format=tgz")
        );
        assert_eq!(archive_target("/tmp/x", true), None);
        assert_eq!(
            archive_dir("/archive:/tmp/a%20b?format=tgz").as_deref(),
            Some("/tmp/a b")
        );
        assert_eq!(archive_target("/", true), None);
    }
}
