//! The host's side of vSphere's guest file operations, as the VMX carries them out for
//! `govc guest.*`: each operation a `Vix_1_Relayed_Command` with name/password credentials,
//! transfers an InitiateFileTransfer* request and then an HGFS session whose packets travel
//! as VIX op 84 (HgfsSendPacket), 61 440 bytes per read or write. Errors come back as the
//! messages govc prints.
//!
//! The carrier is a trait, so tests drive a [`Sim`] in process and `vmx-sim` a running
//! simulator through its control socket.

use super::{Client, Control, Sim};
use crate::vix::client::{self, ClientError, FileInfo, ProcessInfo};
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
    /// The HTTP response through the round trip does not parse.
    #[error("{0}")]
    Http(#[from] HttpParseError),
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

        // A missing archive directory is the guest's to create, as govc leaves it (the guest
        // builds it beside its name and renames it into place once the archive is complete).
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
        self.download_with(src, out, progress, None).await
    }

    /// [`GuestOps::download`]; with `patience`, a read the guest fails with a generic
    /// status (a process stream that has no output yet answers so after its wait) is asked
    /// again until that much time has passed without data.
    async fn download_with(
        &mut self,
        src: &str,
        out: &mut dyn Write,
        progress: &mut dyn Progress,
        patience: Option<Duration>,
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
        let mut last_data = std::time::Instant::now();
        let result: Result<(), GuestOpsError> = async {
            loop {
                if size.is_some_and(|s| offset >= s) {
                    return Ok(());
                }
                let r = session.read(handle, offset, TRANSFER_CHUNK);
                let reply = self.hgfs(&r, src).await?;
                let data = match session.read_data(&r, &reply, TRANSFER_CHUNK) {
                    Ok(data) => {
                        last_data = std::time::Instant::now();
                        data
                    }
                    Err(toolbox_hgfs::client::ClientError::Status { status, .. })
                        if status == toolbox_hgfs::proto::Status::GENERIC_ERROR
                            && patience.is_some_and(|p| last_data.elapsed() < p) =>
                    {
                        // The guest waits for output before it answers so; a guest that
                        // answers at once is still asked at a bounded rate.
                        tokio::time::sleep(POLL_FIRST).await;
                        continue;
                    }
                    Err(e) => return Err(GuestOpsError::hgfs_fault(e, src)),
                };
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

// ---------------------------------------------------------------------------------------------
// Processes: govc's guest.start, guest.ps, guest.kill, guest.getenv, guest.run, and the HTTP
// round trip through govmomi's toolbox function `http.RoundTrip`.

/// The largest process listing [`GuestOps::ps`] assembles from ListProcessesEx chunks. The
/// guest declares the size on the first chunk; 10 000 processes take about 2 MB, so this is
/// room for far more than any guest runs while bounding what a lying guest can make us hold.
pub const MAX_PROCESS_LISTING: u32 = 64 * 1024 * 1024;

/// The largest HTTP response [`GuestOps::http`] takes: the agent's default
/// `[process.http] max_response_bytes` (256 MiB) plus room for the head.
pub const MAX_HTTP_RESPONSE: usize = 256 * 1024 * 1024 + 64 * 1024;

/// The largest request body `vmx-sim http -d -` reads from its standard input (the agent
/// refuses bodies above its `[process.http] max_request_bytes`, 16 MiB by default, with 413).
pub const MAX_HTTP_REQUEST: u64 = 256 * 1024 * 1024;

/// How long an HTTP response may keep the host waiting between bytes: the agent's
/// `[process.http]` time limits (30 s for the head by default) answer well within it.
const HTTP_PATIENCE: Duration = Duration::from_secs(60);

/// First and longest pause between the ListProcessesEx polls of [`GuestOps::run`] and
/// `guest.ps -X` (govc waits 0.5 s and 1 s; a short program is done in milliseconds).
pub const POLL_FIRST: Duration = Duration::from_millis(20);
/// See [`POLL_FIRST`].
pub const POLL_MAX: Duration = Duration::from_millis(200);

/// The temporary-file prefix `guest.run` uses for its redirections (govmomi's
/// `guest/toolbox/client.go` names them the same way).
const RUN_TEMP_PREFIX: &str = "govmomi-";

/// A pause that doubles from [`POLL_FIRST`] up to [`POLL_MAX`].
#[derive(Debug)]
pub struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Backoff(POLL_FIRST)
    }
}

impl Backoff {
    /// Sleeps for the current pause, then doubles it (up to [`POLL_MAX`]).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(POLL_MAX);
    }
}

/// What `guest.run` runs: govc's `PATH ARGS...`, `-C`, `-e` and `-d`.
pub struct RunSpec<'a> {
    /// The program; one without a `/` runs under `/bin/bash -c`.
    pub path: &'a str,
    /// Its arguments, joined with spaces as govc joins them (the guest's shell parses them).
    pub args: &'a [String],
    /// The working directory ("" for the user's home).
    pub dir: &'a str,
    /// `NAME=value` entries.
    pub env: &'a [String],
    /// Standard input, uploaded to a temporary file first (govc's `-d`).
    pub stdin: Option<&'a mut dyn Read>,
}

impl std::fmt::Debug for RunSpec<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunSpec")
            .field("path", &self.path)
            .field("args", &self.args.len())
            .field("dir", &self.dir)
            .field("env", &self.env.len())
            .field("stdin", &self.stdin.is_some())
            .finish()
    }
}

/// The StartProgram path and arguments string `guest.run` sends for `path` and `args` with
/// the redirections `redirects` (`<`, `1>`, `2>` and their files) appended, as govmomi's
/// `Client.Run` builds them: a path without `/` becomes `/bin/bash -c '<path> <args...>'`.
pub fn run_command_line(path: &str, args: &[String], redirects: &[String]) -> (String, String) {
    let mut all: Vec<String> = args.to_vec();
    all.extend(redirects.iter().cloned());
    if path.contains('/') {
        return (path.to_string(), all.join(" "));
    }
    let mut words = vec![path.to_string()];
    words.extend(all);
    ("/bin/bash".to_string(), format!("-c '{}'", words.join(" ")))
}

/// An HTTP request for [`GuestOps::http`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Where the guest sends it: `host:port` or `unix:/path` (the function's argument).
    pub target: String,
    /// The `Host` header.
    pub host: String,
    /// Path and query, origin form (`/x?y`).
    pub path: String,
    /// Further header lines.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl HttpRequest {
    /// A request for `url`: `http://HOST[:PORT]/PATH` (a loopback or allowed `host:port`
    /// target in the guest) or `http+unix://SOCKET/PATH` with the socket's path
    /// percent-encoded (`http+unix://%2Frun%2Fdocker.sock/info`), the form Unix-socket HTTP
    /// clients take.
    pub fn new(method: &str, url: &str) -> Result<HttpRequest, GuestOpsError> {
        let bad = |why: &str| GuestOpsError::Usage(format!("URL {url:?}: {why}"));
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_alphabetic()) {
            return Err(GuestOpsError::Usage(format!("bad HTTP method {method:?}")));
        }
        let (unix, rest) = if let Some(r) = url.strip_prefix("http+unix://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad("not http:// or http+unix://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(bad("white space in the path"));
        }
        let (target, host) = if unix {
            let socket = archive_dir(&format!("/archive:{authority}"))
                .filter(|s| s.starts_with('/'))
                .ok_or_else(|| bad("the socket path is not an encoded absolute path"))?;
            (format!("unix:{socket}"), "localhost".to_string())
        } else {
            if authority.contains('@') {
                return Err(bad("user information is not supported"));
            }
            let has_port = match authority.rsplit_once(':') {
                // The colons of a bracketed IPv6 address are no port separator.
                Some((_, p)) => !p.is_empty() && !p.contains(']'),
                None => false,
            };
            let target = if has_port {
                authority.to_string()
            } else {
                format!("{authority}:80")
            };
            (target, authority.to_string())
        };
        Ok(HttpRequest {
            method: method.to_ascii_uppercase(),
            target,
            host,
            path,
            headers: Vec::new(),
            body: Vec::new(),
        })
    }

    /// The HTTP/1.1 bytes the host writes to the function's standard input: the request
    /// with `Connection: close`, the body with its length.
    pub fn encode(&self) -> Result<Vec<u8>, GuestOpsError> {
        self.encode_as(true)
    }

    /// [`HttpRequest::encode`]; without `close`, the connection is kept for a next request.
    pub fn encode_as(&self, close: bool) -> Result<Vec<u8>, GuestOpsError> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\n",
            self.method, self.path, self.host
        );
        let mut has_length = false;
        for (name, value) in &self.headers {
            let clean = |s: &str| !s.bytes().any(|b| b == b'\r' || b == b'\n');
            if name.is_empty() || !clean(name) || !clean(value) || name.contains(':') {
                return Err(GuestOpsError::Usage(format!("bad header {name:?}")));
            }
            if name.eq_ignore_ascii_case("host")
                || name.eq_ignore_ascii_case("connection")
                || name.eq_ignore_ascii_case("transfer-encoding")
            {
                return Err(GuestOpsError::Usage(format!(
                    "header {name} is set by the request itself"
                )));
            }
            has_length |= name.eq_ignore_ascii_case("content-length");
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let body_allowed = !matches!(self.method.as_str(), "GET" | "HEAD" | "DELETE" | "OPTIONS");
        if !has_length && (body_allowed || !self.body.is_empty()) {
            head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        }
        head.push_str(if close {
            "Connection: close\r\n\r\n"
        } else {
            "\r\n"
        });
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        Ok(out)
    }
}

/// What [`GuestOps::http`] got back.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header lines, in order.
    pub headers: Vec<(String, String)>,
    /// The body, chunked encoding undone.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// True for a 2xx status.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Why an HTTP response does not parse.
#[derive(Debug, thiserror::Error)]
#[error("the guest's HTTP response: {0}")]
pub struct HttpParseError(String);

/// At most this many header lines per response (what the host keeps room for).
pub const MAX_RESPONSE_HEADERS: usize = 128;

fn parse_error(why: impl std::fmt::Display) -> HttpParseError {
    HttpParseError(why.to_string())
}

/// How a response's body ends (RFC 9112 section 6.3).
enum Framing {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Parses one HTTP/1.1 response to a `method` request from the front of `bytes` (head with
/// `httparse`, chunk sizes with its chunk parser); the response and the bytes it took.
/// Interim 1xx responses are skipped. A body that runs to the end of the input (no length,
/// not chunked) takes all of it.
pub fn parse_http_response(
    method: &str,
    bytes: &[u8],
) -> Result<(HttpResponse, usize), HttpParseError> {
    let mut at = 0;
    loop {
        let mut slots = [httparse::EMPTY_HEADER; MAX_RESPONSE_HEADERS];
        let mut head = httparse::Response::new(&mut slots);
        let head_len = match head.parse(&bytes[at..]).map_err(parse_error)? {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => return Err(parse_error("the head is cut short")),
        };
        let status = head.code.ok_or_else(|| parse_error("no status"))?;
        let headers: Vec<(String, String)> = head
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).trim().to_string(),
                )
            })
            .collect();
        at += head_len;
        if (100..200).contains(&status) && status != 101 {
            continue;
        }
        fn values<'h>(
            headers: &'h [(String, String)],
            name: &'h str,
        ) -> impl Iterator<Item = &'h (String, String)> {
            headers.iter().filter(move |(k, _)| k == name)
        }
        let header = |name: &'static str| values(&headers, name);
        let framing = if method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            Framing::None
        } else if let Some((_, te)) = header("transfer-encoding").last() {
            let last = te.rsplit(',').next().unwrap_or("").trim();
            if last.eq_ignore_ascii_case("chunked") {
                Framing::Chunked
            } else {
                Framing::UntilClose
            }
        } else {
            let mut lengths = header("content-length").map(|(_, v)| v.as_str());
            match lengths.next() {
                None => Framing::UntilClose,
                Some(first) => {
                    if lengths.any(|v| v != first) {
                        return Err(parse_error("conflicting Content-Length headers"));
                    }
                    let n: u64 = first
                        .parse()
                        .map_err(|_| parse_error("a bad Content-Length"))?;
                    match usize::try_from(n) {
                        Ok(n) if n <= MAX_HTTP_RESPONSE => Framing::Length(n),
                        _ => return Err(parse_error("the body is larger than the host takes")),
                    }
                }
            }
        };
        let rest = &bytes[at..];
        let (body, used) = match framing {
            Framing::None => (Vec::new(), 0),
            Framing::Length(n) => {
                let body = rest
                    .get(..n)
                    .ok_or_else(|| parse_error("the body is shorter than its Content-Length"))?;
                (body.to_vec(), n)
            }
            Framing::UntilClose => (rest.to_vec(), rest.len()),
            Framing::Chunked => dechunk(rest)?,
        };
        at += used;
        return Ok((
            HttpResponse {
                status,
                headers,
                body,
            },
            at,
        ));
    }
}

/// Undoes chunked transfer coding at the front of `data`; the body and the bytes taken
/// (the trailer section included).
fn dechunk(data: &[u8]) -> Result<(Vec<u8>, usize), HttpParseError> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (size_len, size) = match httparse::parse_chunk_size(&data[at..])
            .map_err(|_| parse_error("a bad chunk size"))?
        {
            httparse::Status::Complete(c) => c,
            httparse::Status::Partial => return Err(parse_error("a chunk size cut short")),
        };
        at += size_len;
        if size == 0 {
            // Trailer fields, each a line, up to an empty line.
            loop {
                let line_end = data[at..]
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .ok_or_else(|| parse_error("the trailer section is cut short"))?;
                at += line_end + 2;
                if line_end == 0 {
                    return Ok((body, at));
                }
            }
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|n| body.len() + n <= MAX_HTTP_RESPONSE)
            .ok_or_else(|| parse_error("the body is larger than the host takes"))?;
        let chunk = data
            .get(at..at + size)
            .ok_or_else(|| parse_error("a chunk cut short"))?;
        body.extend_from_slice(chunk);
        at += size;
        if data.get(at..at + 2) != Some(b"\r\n") {
            return Err(parse_error("a chunk without its line end"));
        }
        at += 2;
    }
}

/// The responses to `methods` (in order) from one byte stream, as a server answers
/// pipelined requests; only the last may run to the end of the stream.
pub fn parse_http_responses(
    methods: &[&str],
    bytes: &[u8],
) -> Result<Vec<HttpResponse>, HttpParseError> {
    let mut out = Vec::with_capacity(methods.len());
    let mut at = 0;
    for method in methods {
        if at == bytes.len() {
            return Err(parse_error(format!(
                "{} responses for {} requests",
                out.len(),
                methods.len()
            )));
        }
        let (response, used) = parse_http_response(method, &bytes[at..])?;
        out.push(response);
        at += used;
    }
    Ok(out)
}

/// A writer that refuses to grow past `limit` bytes.
struct CappedVec {
    data: Vec<u8>,
    limit: usize,
}

impl Write for CappedVec {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.data.len() + buf.len() > self.limit {
            return Err(std::io::Error::other(format!(
                "the response is larger than {} bytes",
                self.limit
            )));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<C: Carrier> GuestOps<C> {
    /// A process command; a VIX error becomes govc's message about process `pid` (or about
    /// the program `subject` when starting one).
    async fn process_call(
        &mut self,
        command: &Command,
        subject: &str,
        pid: Option<i64>,
    ) -> Result<Vec<u8>, GuestOpsError> {
        self.call(command, subject)
            .await
            .map_err(|e| match (e, pid) {
                (GuestOpsError::Fault { error, errno, .. }, Some(pid)) => GuestOpsError::Fault {
                    error,
                    errno,
                    message: client::process_fault_message(error, pid),
                },
                (e, _) => e,
            })
    }

    /// StartProgram (`guest.start`): `path` run with the `args` string in `dir` ("" for the
    /// user's home) with the `NAME=value` entries of `env`; the pid.
    pub async fn start(
        &mut self,
        path: &str,
        args: &str,
        dir: &str,
        env: &[String],
    ) -> Result<i64, GuestOpsError> {
        let result = self
            .process_call(&client::start_program(path, args, dir, env), path, None)
            .await?;
        Ok(client::parse_pid(&result)?)
    }

    /// ListProcessesEx (`guest.ps`): every process, or those of `pids`. A listing larger
    /// than one reply comes in chunks under a key (vixTools.c `VixToolsListProcessesEx`):
    /// each further request names the key and the bytes received so far, until the guest
    /// says nothing is left.
    pub async fn ps(&mut self, pids: &[i64]) -> Result<Vec<ProcessInfo>, GuestOpsError> {
        let wanted: Vec<u64> = pids
            .iter()
            .map(|p| u64::try_from(*p).map_err(|_| GuestOpsError::Usage(format!("bad pid {p}"))))
            .collect::<Result<_, _>>()?;
        let broken = |why: &'static str| GuestOpsError::Reply(ClientError::Process(why));
        let first = self
            .process_call(&client::list_processes(0, 0, &wanted), "", None)
            .await?;
        let chunk = client::parse_process_chunk(&first)?;
        let Some(key) = chunk.key else {
            if chunk.left_to_send.is_some_and(|l| l > 0) {
                return Err(broken("a chunk with more to come but no key"));
            }
            return Ok(client::parse_process_list(&chunk.data)?);
        };
        let total = chunk.total_size.unwrap_or(0);
        if total > MAX_PROCESS_LISTING {
            return Err(broken("the listing is larger than the host takes"));
        }
        let mut listing = Vec::with_capacity(total as usize);
        listing.extend_from_slice(&chunk.data);
        let mut left = chunk.left_to_send.unwrap_or(0);
        loop {
            if listing.len() as u64 + u64::from(left) != u64::from(total) {
                return Err(broken("chunk sizes do not add up to the total"));
            }
            if left == 0 {
                break;
            }
            // `listing.len()` < `total` ≤ MAX_PROCESS_LISTING, so it fits the u32 offset.
            let offset = listing.len() as u32;
            let more = self
                .process_call(&client::list_processes(key, offset, &wanted), "", None)
                .await?;
            let chunk = client::parse_process_chunk(&more)?;
            if chunk.data.is_empty() {
                return Err(broken("an empty chunk"));
            }
            listing.extend_from_slice(&chunk.data);
            left = chunk
                .left_to_send
                .ok_or(broken("a later chunk without <leftToSend>"))?;
        }
        Ok(client::parse_process_list(&listing)?)
    }

    /// One process by pid, if the guest lists it.
    pub async fn process(&mut self, pid: i64) -> Result<Option<ProcessInfo>, GuestOpsError> {
        Ok(self.ps(&[pid]).await?.into_iter().find(|p| p.pid == pid))
    }

    /// TerminateProcess (`guest.kill -p PID`).
    pub async fn kill(&mut self, pid: i64) -> Result<(), GuestOpsError> {
        let wire =
            u64::try_from(pid).map_err(|_| GuestOpsError::Usage(format!("bad pid {pid}")))?;
        self.process_call(&client::terminate_process(wire), "", Some(pid))
            .await
            .map(drop)
    }

    /// ReadEnvironmentVariables (`guest.getenv`): `NAME=value` entries, all of them when
    /// `names` is empty.
    pub async fn getenv(&mut self, names: &[String]) -> Result<Vec<String>, GuestOpsError> {
        let result = self
            .process_call(&client::read_environment(names), "", None)
            .await?;
        Ok(client::parse_env(&result)?)
    }

    /// Polls until `pid` has ended; its exit code.
    pub async fn wait(&mut self, pid: i64) -> Result<i32, GuestOpsError> {
        let mut backoff = Backoff::default();
        loop {
            match self.process(pid).await? {
                Some(p) if p.end_time != 0 => return Ok(p.exit_code),
                Some(_) => backoff.wait().await,
                None => {
                    return Err(GuestOpsError::Fault {
                        error: VixError::NO_SUCH_PROCESS,
                        errno: 0,
                        message: client::process_fault_message(VixError::NO_SUCH_PROCESS, pid),
                    })
                }
            }
        }
    }

    /// `guest.run`, as govmomi's `Client.Run` does it: standard input (if any) uploaded to
    /// a temporary file, temporary files for standard output and error, the redirections
    /// appended to the arguments, StartProgram, ListProcessesEx until the program has an end
    /// time, both outputs downloaded into `stdout` and `stderr`, the temporary files removed
    /// whatever happened. The program's exit code.
    pub async fn run(
        &mut self,
        spec: RunSpec<'_>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
    ) -> Result<i32, GuestOpsError> {
        let mut temps: Vec<String> = Vec::new();
        let result = self.run_with_temps(spec, stdout, stderr, &mut temps).await;
        for t in &temps {
            if let Err(e) = self.rm(t).await {
                tracing::debug!(error = %e, "removing a guest.run temporary");
            }
        }
        result
    }

    async fn run_with_temps(
        &mut self,
        spec: RunSpec<'_>,
        stdout: &mut dyn Write,
        stderr: &mut dyn Write,
        temps: &mut Vec<String>,
    ) -> Result<i32, GuestOpsError> {
        let mut redirects = Vec::new();
        if let Some(input) = spec.stdin {
            let file = self.mktemp(false, RUN_TEMP_PREFIX, "", "").await?;
            temps.push(file.clone());
            self.upload(input, &file, UploadAttributes::default(), true, &mut Quiet)
                .await?;
            redirects.extend(["<".to_string(), file]);
        }
        let mut outputs = Vec::with_capacity(2);
        for fd in ["1>", "2>"] {
            let file = self.mktemp(false, RUN_TEMP_PREFIX, "", "").await?;
            temps.push(file.clone());
            redirects.extend([fd.to_string(), file.clone()]);
            outputs.push(file);
        }
        let (program, arguments) = run_command_line(spec.path, spec.args, &redirects);
        let pid = self.start(&program, &arguments, spec.dir, spec.env).await?;
        let code = self.wait(pid).await?;
        self.download(&outputs[0], stdout, &mut Quiet).await?;
        self.download(&outputs[1], stderr, &mut Quiet).await?;
        Ok(code)
    }

    /// The HTTP round trip (govmomi's toolbox convention): StartProgram of the in-agent
    /// function `http.RoundTrip` with the target as its argument, the request uploaded to
    /// `/proc/<pid>/stdin`, the response downloaded from `/proc/<pid>/stdout` and parsed.
    pub async fn http(&mut self, request: &HttpRequest) -> Result<HttpResponse, GuestOpsError> {
        let mut all = self.http_pipelined(std::slice::from_ref(request)).await?;
        all.pop()
            .ok_or_else(|| HttpParseError("no response".into()).into())
    }

    /// Several requests to one target through one `http.RoundTrip`, written at once
    /// (pipelined, the connection kept open between them, closed after the last); their
    /// responses in order. The function forwards them over one connection to the target.
    pub async fn http_pipelined(
        &mut self,
        requests: &[HttpRequest],
    ) -> Result<Vec<HttpResponse>, GuestOpsError> {
        let Some(first) = requests.first() else {
            return Ok(Vec::new());
        };
        if requests.iter().any(|r| r.target != first.target) {
            return Err(GuestOpsError::Usage(
                "pipelined requests go to one target".into(),
            ));
        }
        let span = tracing::debug_span!("http", requests = requests.len());
        let _enter = span.enter();
        let mut bytes = Vec::new();
        for (i, r) in requests.iter().enumerate() {
            bytes.extend_from_slice(&r.encode_as(i + 1 == requests.len())?);
        }
        let pid = self
            .start(ROUND_TRIP_FUNCTION, &first.target, "", &[])
            .await?;
        let result = async {
            let stdin = format!("/proc/{pid}/stdin");
            self.upload(
                &mut bytes.as_slice(),
                &stdin,
                UploadAttributes::default(),
                true,
                &mut Quiet,
            )
            .await?;
            let mut response = CappedVec {
                data: Vec::new(),
                limit: MAX_HTTP_RESPONSE,
            };
            let stdout = format!("/proc/{pid}/stdout");
            self.download_with(&stdout, &mut response, &mut Quiet, Some(HTTP_PATIENCE))
                .await?;
            Ok::<_, GuestOpsError>(response.data)
        }
        .await;
        let raw = match result {
            Ok(raw) => raw,
            Err(e) => {
                // The function may still wait for a request or a reader: end it.
                let _ = self.kill(pid).await;
                return Err(e);
            }
        };
        let methods: Vec<&str> = requests.iter().map(|r| r.method.as_str()).collect();
        Ok(parse_http_responses(&methods, &raw)?)
    }
}

/// The name StartProgram knows the HTTP round trip by (the agent's `src/process/http.rs`,
/// govmomi's `toolbox/process/process.go`).
pub const ROUND_TRIP_FUNCTION: &str = crate::process::http::ROUND_TRIP;

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

#[doc(hidden)]
pub mod fuzzing {
    /// The HTTP response parser over guest bytes: never panics, never takes more than it
    /// was given, never yields a body larger than the input.
    pub fn http_response(data: &[u8]) {
        for method in ["GET", "HEAD"] {
            if let Ok((r, used)) = super::parse_http_response(method, data) {
                assert!(used <= data.len());
                assert!(r.body.len() <= used);
            }
        }
        if let Ok(all) = super::parse_http_responses(&["GET", "GET"], data) {
            assert_eq!(all.len(), 2);
        }
    }
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

    #[test]
    fn run_builds_the_command_line_as_govmomi() {
        let args = vec!["-la".to_string(), "/tmp".to_string()];
        let redirects: Vec<String> = ["<", "/tmp/i", "1>", "/tmp/o", "2>", "/tmp/e"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            run_command_line("ls", &args, &redirects),
            (
                "/bin/bash".to_string(),
                "-c 'ls -la /tmp < /tmp/i 1> /tmp/o 2> /tmp/e'".to_string()
            )
        );
        assert_eq!(
            run_command_line("/bin/ls", &args, &redirects[2..]),
            (
                "/bin/ls".to_string(),
                "-la /tmp 1> /tmp/o 2> /tmp/e".to_string()
            )
        );
    }

    #[test]
    fn urls_name_the_target() {
        let r = HttpRequest::new("get", "http://127.0.0.1:8080/a/b?c=d").unwrap();
        assert_eq!(
            (
                r.method.as_str(),
                r.target.as_str(),
                r.host.as_str(),
                r.path.as_str()
            ),
            ("GET", "127.0.0.1:8080", "127.0.0.1:8080", "/a/b?c=d")
        );
        let r = HttpRequest::new("GET", "http://localhost").unwrap();
        assert_eq!((r.target.as_str(), r.path.as_str()), ("localhost:80", "/"));
        let r = HttpRequest::new("GET", "http://[::1]:81?x").unwrap();
        assert_eq!((r.target.as_str(), r.path.as_str()), ("[::1]:81", "/?x"));
        assert_eq!(
            HttpRequest::new("GET", "http://[::1]").unwrap().target,
            "[::1]:80"
        );
        let r = HttpRequest::new("POST", "http+unix://%2Frun%2Fdocker.sock/v1/info").unwrap();
        assert_eq!(
            (r.target.as_str(), r.host.as_str(), r.path.as_str()),
            ("unix:/run/docker.sock", "localhost", "/v1/info")
        );
        for bad in [
            "ftp://x/",
            "http:///x",
            "http+unix://run.sock/x",
            "http://u@h:1/",
            "http://h:1/a b",
        ] {
            assert!(HttpRequest::new("GET", bad).is_err(), "{bad}");
        }
        assert!(HttpRequest::new("G T", "http://h/").is_err());
    }

    #[test]
    fn requests_are_encoded_with_their_length() {
        let mut r = HttpRequest::new("POST", "http://127.0.0.1:1/p").unwrap();
        r.body = b"abc".to_vec();
        r.headers.push(("X-A".into(), "1".into()));
        assert_eq!(
            r.encode().unwrap(),
            b"POST /p HTTP/1.1\r\nHost: 127.0.0.1:1\r\nX-A: 1\r\nContent-Length: 3\r\n\
              Connection: close\r\n\r\nabc"
        );
        let g = HttpRequest::new("GET", "http://127.0.0.1:1/").unwrap();
        assert_eq!(
            g.encode().unwrap(),
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1:1\r\nConnection: close\r\n\r\n"
        );
        for (k, v) in [("Bad\r\nX", "1"), ("A", "1\n2"), ("Host", "x"), ("", "x")] {
            let mut r = g.clone();
            r.headers.push((k.into(), v.into()));
            assert!(r.encode().is_err(), "{k:?}: {v:?}");
        }
    }

    fn parse(method: &str, bytes: &[u8]) -> Result<HttpResponse, HttpParseError> {
        let (r, used) = parse_http_response(method, bytes)?;
        assert!(used <= bytes.len());
        Ok(r)
    }

    #[test]
    fn responses_parse_sized_chunked_and_close_delimited() {
        let r = parse("GET", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        assert!(r
            .headers
            .iter()
            .any(|(k, v)| k == "content-length" && v == "5"));
        let r = parse(
            "GET",
            b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (201, &b"abcde"[..]));
        let r = parse("GET", b"HTTP/1.1 502 Bad Gateway\r\n\r\nno route\n").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (502, &b"no route\n"[..]));
        assert!(!r.is_success());
        let r = parse("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        for bad in [
            &b""[..],
            b"garbage\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        ] {
            assert!(
                parse("GET", bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn pipelined_responses_split_where_each_ends() {
        let stream = b"HTTP/1.1 100 Continue\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nab\
            HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nc\r\n0\r\nX-T: 1\r\n\r\n\
            HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n\
            HTTP/1.1 404 Not Found\r\n\r\nrest of it";
        let all = parse_http_responses(&["GET", "GET", "HEAD", "GET"], stream).unwrap();
        let got: Vec<(u16, &[u8])> = all.iter().map(|r| (r.status, &r.body[..])).collect();
        assert_eq!(
            got,
            [
                (200, &b"ab"[..]),
                (200, b"c"),
                (200, b""),
                (404, b"rest of it")
            ]
        );
        assert!(parse_http_responses(&["GET", "GET"], b"HTTP/1.1 200 OK\r\n\r\nall").is_err());
        let conflicting = b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab";
        assert!(parse("GET", conflicting).is_err());
        let huge = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", u64::MAX);
        assert!(parse("GET", huge.as_bytes()).is_err());
        let huge_chunk = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffff\r\n";
        assert!(parse("GET", huge_chunk).is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_parse_or_fail_cleanly(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            fuzzing::http_response(&data);
        }

        #[test]
        fn generated_responses_round_trip(
            status in 200u16..600,
            body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4096),
            chunk in 1usize..700,
            chunked in proptest::prelude::any::<bool>(),
        ) {
            // 204 and 304 carry no body whatever the head says (RFC 9112 6.3).
            let status = if matches!(status, 204 | 304) { 200 } else { status };
            let mut bytes = format!("HTTP/1.1 {status} X\r\n").into_bytes();
            if chunked {
                bytes.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                for part in body.chunks(chunk) {
                    bytes.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                    bytes.extend_from_slice(part);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
            } else {
                bytes.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
                bytes.extend_from_slice(&body);
            }
            let r = parse("GET", &bytes).unwrap();
            proptest::prop_assert_eq!(r.status, status);
            proptest::prop_assert_eq!(r.body, body);
        }
    }

    /// A guest that answers ListProcessesEx with the agent's own listing code, its replies
    /// cut at `max_result` bytes, so the host's chunk assembly meets real chunk headers.
    struct ListingGuest {
        cache: crate::process::proclist::ListingCache,
        manager: std::sync::Arc<crate::process::ProcessManager>,
        max_result: usize,
        requests: usize,
        corrupt: Option<fn(Vec<u8>) -> Vec<u8>>,
    }

    impl Carrier for ListingGuest {
        async fn tclo(&mut self, request: &[u8]) -> Result<Vec<u8>, String> {
            use crate::vix::proto::{split_relayed, Reply, Request, RELAYED_COMMAND};
            self.requests += 1;
            let args = request
                .strip_prefix(format!("{RELAYED_COMMAND} ").as_bytes())
                .ok_or("not relayed")?;
            let relayed = split_relayed(args).map_err(|e| e.to_string())?;
            let req = Request::parse(relayed.message).map_err(|e| e.error.to_string())?;
            let command = Command::decode(req.header.op, req.body).map_err(|e| e.to_string())?;
            let Command::ListProcesses(list) = command else {
                return Err("only ListProcessesEx here".into());
            };
            let reply = match crate::process::proclist::list_processes(
                &mut self.cache,
                &self.manager,
                &list,
                self.max_result,
            ) {
                Ok(bytes) => Reply::ok(self.corrupt.map_or(bytes.clone(), |c| c(bytes))),
                Err(e) => Reply::error(e, 0),
            };
            let mut out = b"OK ".to_vec();
            out.extend_from_slice(&reply.encode(false));
            Ok(out)
        }
    }

    fn listing_guest(max_result: usize) -> GuestOps<ListingGuest> {
        GuestOps::new(
            ListingGuest {
                cache: crate::process::proclist::ListingCache::new(),
                manager: crate::process::ProcessManager::new(
                    crate::process::ManagerConfig::default(),
                    crate::process::FunctionRegistry::new(),
                ),
                max_result,
                requests: 0,
                corrupt: None,
            },
            client::login("root", "x"),
        )
    }

    #[tokio::test]
    async fn ps_follows_the_chunks_to_the_last() {
        let me = i64::from(std::process::id());
        let mut whole = listing_guest(crate::vix::proto::MAX_RESULT_SIZE);
        let one_reply = whole.ps(&[]).await.unwrap();
        assert_eq!(
            whole.carrier.requests, 1,
            "this machine's listing fits one reply"
        );
        assert!(one_reply.iter().any(|p| p.pid == me));

        let mut chunked = listing_guest(1024);
        let procs = chunked.ps(&[]).await.unwrap();
        assert!(
            chunked.carrier.requests > 3,
            "{} requests",
            chunked.carrier.requests
        );
        assert!(procs.iter().any(|p| p.pid == me));
        let mut pids: Vec<i64> = procs.iter().map(|p| p.pid).collect();
        let n = pids.len();
        pids.dedup();
        assert_eq!(pids.len(), n, "no process twice");
        assert!(
            chunked.carrier.cache.is_empty(),
            "the last chunk frees the listing"
        );

        let only = chunked.ps(&[me]).await.unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].pid, me);
    }

    #[tokio::test]
    async fn a_lying_guest_is_refused() {
        // Each later chunk claims more is left than the total allows.
        let mut g = listing_guest(1024);
        g.carrier.corrupt = Some(|b: Vec<u8>| {
            let s = String::from_utf8(b).unwrap();
            match s.strip_prefix("<leftToSend>") {
                Some(rest) => {
                    let (n, data) = rest.split_once("</leftToSend>").unwrap();
                    let n: u64 = n.parse().unwrap();
                    format!("<leftToSend>{}</leftToSend>{data}", n + 7).into_bytes()
                }
                None => s.into_bytes(),
            }
        });
        let e = g.ps(&[]).await.unwrap_err();
        assert!(e.to_string().contains("add up"), "{e}");
        // A first chunk announcing more than the host takes.
        let mut g = listing_guest(1024);
        g.carrier.corrupt = Some(|b: Vec<u8>| {
            let s = String::from_utf8(b).unwrap();
            let Some((head, rest)) = s.split_once("<totalSize>") else {
                return s.into_bytes();
            };
            let (_, rest) = rest.split_once("</totalSize>").unwrap();
            format!("{head}<totalSize>{}</totalSize>{rest}", u32::MAX).into_bytes()
        });
        let e = g.ps(&[]).await.unwrap_err();
        assert!(e.to_string().contains("larger than"), "{e}");
    }
}
