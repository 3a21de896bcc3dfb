//! The file operations of guest operations, on the real file system, as this process's user.
//!
//! Semantics and error codes follow `services/plugins/vix/vixTools.c` (`VixToolsListFiles`,
//! `VixToolsCreateDirectory`, `VixToolsDeleteObject`, `VixToolsDeleteDirectory`,
//! `VixToolsMoveObject`, `VixToolsGetTempFile`, `VixToolsSetFileAttributes`,
//! `VixToolsInitiateFileTransferFromGuest` / `ToGuest`), errno mapped by
//! [`translate_errno`] (`Vix_TranslateErrno`, `lib/foundryMsg/vixTranslateErrOpenSource.c`).
//!
//! Where vmtoolsd checks and then acts, these act and map the error (`mkdir` → `EEXIST`,
//! `renameat2(RENAME_NOREPLACE)`, `O_EXCL`), so nothing can change between the two. Where a
//! check only narrows what is allowed (moving a directory with MoveFile, deleting a device with
//! DeleteFile), the check stays: losing that race only does what the user could have done from
//! a shell, since the act itself is by name on the object found there and never follows a
//! symlink. Delete, move and attribute changes act on a symlink itself, never on its target;
//! a mode cannot be set on a Linux symlink, so ChangeFileAttributes refuses that with
//! `VIX_E_INVALID_ARG` where vmtoolsd would change the target.

use super::proto::{
    attribute_options as opt, file_type, Command, CreateTempRequest, ListFilesRequest,
    SetAttributesRequest, TransferToGuestRequest, VixError, MAX_RESULT_SIZE,
};
use super::OpResult;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat2, OFlag, RenameFlags, AT_FDCWD};
use nix::sys::stat::{
    fchmodat, fstatat, mkdirat, utimensat, FchmodatFlags, FileStat, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{faccessat, fchownat, unlinkat, AccessFlags, Gid, Uid, UnlinkatFlags};
use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Compiled-program size limit for ListFiles patterns: a pattern is at most a request long,
/// but a short one can still compile huge (`a{1000}{1000}`); past this it is refused.
pub const PATTERN_SIZE_LIMIT: usize = 1 << 20;
/// Nesting limit for the same reason (the parser recurses).
pub const PATTERN_NEST_LIMIT: u32 = 64;
/// The room vmtoolsd keeps before the entries: `"0 "`, `<rem>%d</rem>` with ten digits, NUL.
const LIST_PREFIX_RESERVE: usize = 3 + "<rem>%d</rem>".len() + 10;
/// How many names a temporary file or directory tries before giving up (`EAGAIN`).
pub const TEMP_NAME_ATTEMPTS: u32 = 1024;
/// The size a directory archive reports: unknown ahead of time, so the largest (as govmomi's
/// toolbox reports it).
pub const ARCHIVE_SIZE: u64 = i64::MAX as u64;
/// Permission bits ChangeFileAttributes may set.
const MODE_BITS: u32 = 0o7777;

/// A failed operation: the VIX error and the errno behind it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{vix} (errno {errno})")]
pub struct OpError {
    /// The VIX error.
    pub vix: VixError,
    /// The system error, 0 if none.
    pub errno: u32,
}

impl OpError {
    /// An error with no system error behind it.
    pub fn vix(vix: VixError) -> OpError {
        OpError { vix, errno: 0 }
    }
}

impl From<Errno> for OpError {
    fn from(e: Errno) -> OpError {
        OpError {
            vix: translate_errno(e),
            errno: e as i32 as u32,
        }
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> OpError {
        match e.raw_os_error() {
            Some(n) => Errno::from_raw(n).into(),
            None => OpError::vix(VixError::FAIL),
        }
    }
}

impl From<OpError> for OpResult {
    fn from(e: OpError) -> OpResult {
        OpResult::error(e.vix, e.errno)
    }
}

/// `Vix_TranslateErrno`: errno to the VIX error vSphere turns into a fault.
pub fn translate_errno(e: Errno) -> VixError {
    use Errno::*;
    match e {
        EPERM | EACCES => VixError::FILE_ACCESS_ERROR,
        EAGAIN | EBUSY => VixError::OBJECT_IS_BUSY,
        EEXIST => VixError::FILE_ALREADY_EXISTS,
        EFBIG => VixError::FILE_TOO_BIG,
        ENOTEMPTY => VixError::DIRECTORY_NOT_EMPTY,
        ENOTDIR => VixError::NOT_A_DIRECTORY,
        ETIMEDOUT | ENOBUFS | EIO | EMFILE | ENFILE | EMLINK | EROFS => VixError::FILE_ERROR,
        ENODEV | ENOENT => VixError::FILE_NOT_FOUND,
        ENOSPC => VixError::DISK_FULL,
        EISDIR => VixError::NOT_A_FILE,
        ESRCH => VixError::NO_SUCH_PROCESS,
        ENAMETOOLONG => VixError::FILE_NAME_TOO_LONG,
        EMSGSIZE | EINVAL => VixError::INVALID_ARG,
        ELOOP | ENOMEM => VixError::OUT_OF_MEMORY,
        _ => VixError::FAIL,
    }
}

/// Runs one file operation. GetToolsState, ValidateCredentials and HGFS packets are not file
/// operations and get `VIX_E_NOT_SUPPORTED`.
pub fn execute(command: &Command) -> OpResult {
    let span = tracing::debug_span!("vix_file_op", op = %command.op());
    let _enter = span.enter();
    let outcome = match command {
        Command::ListFiles(r) => list_files(r),
        Command::CreateDirectory(r) => create_directory(&r.path, r.create_parents).map(no_result),
        Command::DeleteFile(r) => delete_file(&r.path).map(no_result),
        Command::DeleteDirectory(r) => delete_directory(&r.path, r.recursive).map(no_result),
        Command::MoveFile(r) => move_file(&r.old_path, &r.new_path, r.overwrite).map(no_result),
        Command::MoveDirectory(r) => move_directory(&r.old_path, &r.new_path).map(no_result),
        Command::CreateTemporaryFile(r) => create_temporary(r, TempKind::File),
        Command::CreateTemporaryDirectory(r) => create_temporary(r, TempKind::Directory),
        Command::SetAttributes(r) => set_attributes(r).map(no_result),
        Command::TransferFromGuest(r) => transfer_from_guest(&r.path),
        Command::TransferToGuest(r) => transfer_to_guest(r).map(no_result),
        // Process operations run in the process service (`crate::process`).
        Command::GetToolsState
        | Command::HgfsPacket(_)
        | Command::ValidateCredentials
        | Command::StartProgram(_)
        | Command::ListProcesses(_)
        | Command::TerminateProcess(_)
        | Command::ReadEnvironmentVariables(_) => Err(OpError::vix(VixError::NOT_SUPPORTED)),
    };
    match outcome {
        Ok(result) => OpResult::ok(result),
        Err(e) => {
            tracing::debug!(error = %e, "file operation failed");
            e.into()
        }
    }
}

fn no_result(_: ()) -> Vec<u8> {
    Vec::new()
}

fn lstat(path: &Path) -> Result<FileStat, OpError> {
    Ok(fstatat(
        AT_FDCWD,
        path,
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?)
}

fn kind(st: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(st.st_mode & SFlag::S_IFMT.bits())
}

// ---------------------------------------------------------------------------------------------
// ListFiles.

/// `VixToolsEscapeXMLString`: `%`, `'`, `"`, `&`, `<`, `>` become `%XX`. Bytes that are not
/// UTF-8 are escaped the same way, so every name survives the trip exactly.
pub fn escape_xml(name: &[u8]) -> String {
    let mut out = String::with_capacity(name.len());
    for chunk in name.utf8_chunks() {
        for c in chunk.valid().chars() {
            if matches!(c, '%' | '\'' | '"' | '&' | '<' | '>') {
                let _ = write!(out, "%{:02X}", c as u32);
            } else {
                out.push(c);
            }
        }
        for b in chunk.invalid() {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// One `<fxi>` entry as `VixToolsPrintFileExtendedInfo` prints it on Linux.
fn format_entry(name: &[u8], dirfd: impl AsFd + Copy, at: &Path) -> String {
    let lst = fstatat(dirfd, at, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok();
    let mut ft = 0;
    let mut size = 0u64;
    let mut target = Vec::new();
    let mut st = lst;
    if let Some(l) = &lst {
        match kind(l) {
            SFlag::S_IFLNK => {
                ft = file_type::SYMLINK;
                target = nix::fcntl::readlinkat(dirfd, at)
                    .map(|t| t.as_bytes().to_vec())
                    .unwrap_or_default();
                // vmtoolsd's Posix_Stat follows the link for the other fields.
                st = fstatat(dirfd, at, nix::fcntl::AtFlags::empty()).ok();
            }
            SFlag::S_IFDIR => ft = file_type::DIRECTORY,
            SFlag::S_IFREG => size = l.st_size as u64,
            _ => {}
        }
    }
    let (mtime, atime, uid, gid, perm) = st.map_or((0, 0, 0, 0, 0), |s| {
        (s.st_mtime, s.st_atime, s.st_uid, s.st_gid, s.st_mode)
    });
    format!(
        "<fxi><Name>{}</Name><ft>{ft}</ft><fs>{size}</fs><mt>{}</mt><at>{}</at>\
         <uid>{}</uid><gid>{}</gid><perm>{}</perm><slt>{}</slt></fxi>",
        escape_xml(name),
        mtime as u64,
        atime as u64,
        uid as i32,
        gid as i32,
        perm as i32,
        escape_xml(&target),
    )
}

/// ListFiles: `"<truncated> <rem>N</rem>"` then one `<fxi>` per entry, paged as vmtoolsd
/// pages: `.` and `..` first, then the directory in `readdir` order, filtered by the pattern;
/// `index + offset` is the first entry; at most `maxResults - offset` entries, fewer when the
/// reply would outgrow a TCLO reply (then truncated is `1` and hostd asks again with `offset`).
/// A path that is not a directory (a symlink to one included) lists that one entry, named by
/// the path as given.
pub fn list_files(req: &ListFilesRequest) -> Result<Vec<u8>, OpError> {
    let invalid = || OpError::vix(VixError::INVALID_ARG);
    if req.offset >= i32::MAX as u64 || req.index < 0 || req.max_results < 0 {
        return Err(invalid());
    }
    let (offset, index, max) = (
        req.offset as usize,
        req.index as usize,
        req.max_results as usize,
    );
    if max > 0 && offset >= max {
        return Err(invalid());
    }
    let pattern = match &req.pattern {
        Some(p) => Some(
            // regex-lite: a backtracking-free engine a tenth of regex's size; patterns name
            // files, so neither speed nor Unicode classes are worth a megabyte of the binary.
            regex_lite::RegexBuilder::new(p)
                .size_limit(PATTERN_SIZE_LIMIT)
                .nest_limit(PATTERN_NEST_LIMIT)
                .build()
                .map_err(|_| invalid())?,
        ),
        None => None,
    };
    let path = Path::new(&req.path);
    let st = lstat(path)?;
    // With maxResults 0 only the count after `index` is wanted (vmtoolsd ignores the offset).
    let mut page = if max > 0 {
        Page::new(index + offset, max - offset)
    } else {
        Page::new(index, 0)
    };
    // Names that are not UTF-8 are matched by their lossy text.
    let matches = |name: &[u8]| {
        pattern
            .as_ref()
            .is_none_or(|re| re.is_match(&String::from_utf8_lossy(name)))
    };
    if kind(&st) == SFlag::S_IFDIR {
        let dirfd = openat(
            AT_FDCWD,
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let mut dir = nix::dir::Dir::from_fd(nix::unistd::dup(&dirfd)?)?;
        for name in [&b"."[..], b".."] {
            if matches(name) {
                page.offer(|| format_entry(name, &dirfd, Path::new(OsStr::from_bytes(name))));
            }
        }
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || !matches(name) {
                continue;
            }
            page.offer(|| format_entry(name, &dirfd, Path::new(OsStr::from_bytes(name))));
        }
    } else if matches(req.path.as_bytes()) {
        page.offer(|| format_entry(req.path.as_bytes(), AT_FDCWD, path));
    }
    Ok(page.finish(max > 0).into_bytes())
}

/// The paging state of one ListFiles reply.
struct Page {
    first: usize,
    limit: usize,
    seen: usize,
    taken: usize,
    size: usize,
    stopped_at: Option<(usize, bool)>,
    entries: String,
}

impl Page {
    fn new(first: usize, limit: usize) -> Page {
        Page {
            first,
            limit,
            seen: 0,
            taken: 0,
            size: LIST_PREFIX_RESERVE,
            stopped_at: None,
            entries: String::new(),
        }
    }

    /// One more matching name; `entry` formats it if it is on this page.
    fn offer(&mut self, entry: impl FnOnce() -> String) {
        let k = self.seen;
        self.seen += 1;
        if self.limit == 0 || k < self.first || self.stopped_at.is_some() {
            return;
        }
        let e = entry();
        if self.size + e.len() < MAX_RESULT_SIZE {
            self.size += e.len();
            self.entries.push_str(&e);
            self.taken += 1;
            if self.taken == self.limit {
                self.stopped_at = Some((k, false));
            }
        } else {
            self.stopped_at = Some((k, true));
        }
    }

    fn finish(self, paged: bool) -> String {
        let (remaining, truncated) = if !paged {
            (self.seen.saturating_sub(self.first), false)
        } else {
            match self.stopped_at {
                Some((k, false)) => (self.seen - k - 1, false),
                Some((k, true)) => (self.seen - k, true),
                None => (0, false),
            }
        };
        let head = if truncated { "1" } else { "0" };
        format!("{head} <rem>{}</rem>{}", remaining as i32, self.entries)
    }
}

// ---------------------------------------------------------------------------------------------
// Directories and files.

/// CreateDirectoryEx: mode 0700 (less the umask); with `parents` the missing ancestors too.
/// An existing path, of any type, is `VIX_E_FILE_ALREADY_EXISTS`.
pub fn create_directory(path: &str, parents: bool) -> Result<(), OpError> {
    let p = Path::new(path);
    match mkdirat(AT_FDCWD, p, Mode::S_IRWXU) {
        Err(Errno::ENOENT) if parents => {
            if let Some(parent) = p.parent().filter(|q| !q.as_os_str().is_empty()) {
                use std::os::unix::fs::DirBuilderExt;
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(parent)?;
            }
            Ok(mkdirat(AT_FDCWD, p, Mode::S_IRWXU)?)
        }
        other => Ok(other?),
    }
}

/// DeleteFileEx: unlinks a file or a symlink (never its target, dangling or not). A directory
/// is `VIX_E_NOT_A_FILE`, and so is anything else that is not a regular file.
pub fn delete_file(path: &str) -> Result<(), OpError> {
    let p = Path::new(path);
    let st = lstat(p)?;
    if !matches!(kind(&st), SFlag::S_IFREG | SFlag::S_IFLNK) {
        return Err(OpError::vix(VixError::NOT_A_FILE));
    }
    Ok(unlinkat(AT_FDCWD, p, UnlinkatFlags::NoRemoveDir)?)
}

/// DeleteDirectoryEx: a symlink or a file is `VIX_E_NOT_A_DIRECTORY`; `recursive` removes the
/// tree without following the symlinks in it, else a non-empty directory is
/// `VIX_E_DIRECTORY_NOT_EMPTY`.
pub fn delete_directory(path: &str, recursive: bool) -> Result<(), OpError> {
    let p = Path::new(path);
    let st = lstat(p)?;
    if kind(&st) != SFlag::S_IFDIR {
        return Err(OpError::vix(VixError::NOT_A_DIRECTORY));
    }
    if recursive {
        // std's remove_dir_all walks with openat/unlinkat and does not follow symlinks
        // (CVE-2022-21658 fixed); were the path swapped for a link meanwhile, it removes the
        // link itself.
        Ok(std::fs::remove_dir_all(p)?)
    } else {
        match unlinkat(AT_FDCWD, p, UnlinkatFlags::RemoveDir) {
            // Solaris says EEXIST for a directory that is not empty; vmtoolsd folds it.
            Err(Errno::EEXIST) => Err(Errno::ENOTEMPTY.into()),
            other => Ok(other?),
        }
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (lstat(a), lstat(b)) {
        (Ok(x), Ok(y)) => x.st_dev == y.st_dev && x.st_ino == y.st_ino,
        _ => false,
    }
}

/// MoveFileEx: renames a file or symlink (the link itself). A real directory as the source is
/// `VIX_E_NOT_A_FILE`, as the destination `VIX_E_FILE_ALREADY_EXISTS`; without `overwrite`
/// an existing destination is `VIX_E_FILE_ALREADY_EXISTS`, refused atomically
/// (`RENAME_NOREPLACE`). Moving a file onto itself does nothing. Across file systems the file
/// is copied into place, then the source removed.
pub fn move_file(old: &str, new: &str, overwrite: bool) -> Result<(), OpError> {
    let (o, n) = (Path::new(old), Path::new(new));
    let st = lstat(o)?;
    if kind(&st) == SFlag::S_IFDIR {
        return Err(OpError::vix(VixError::NOT_A_FILE));
    }
    let flags = if overwrite {
        RenameFlags::empty()
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    match renameat2(AT_FDCWD, o, AT_FDCWD, n, flags) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) if same_file(o, n) => Ok(()),
        // Another file system: File_Move copies, then removes the source.
        Err(Errno::EXDEV) => copy_across(o, n, &st, flags),
        // rename(2) of a file onto a directory.
        Err(Errno::EISDIR) => Err(OpError {
            vix: VixError::FILE_ALREADY_EXISTS,
            errno: Errno::EISDIR as i32 as u32,
        }),
        Err(e) => Err(e.into()),
    }
}

/// A name beside `target` for a file being put in place.
fn temp_beside(target: &Path) -> std::path::PathBuf {
    let name = target
        .file_name()
        .map_or_else(Default::default, |n| n.to_os_string());
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".vix-{:08x}", random_u32()));
    target.with_file_name(tmp)
}

/// The cross-file-system move of a file or symlink: a copy under a temporary name beside the
/// destination, synced, renamed into place (so an interrupted move leaves no partial file
/// and an existing destination intact unless `flags` allow replacing it), then the source
/// removed (its removal failing is ignored, as in `File_Move`).
fn copy_across(o: &Path, n: &Path, st: &FileStat, flags: RenameFlags) -> Result<(), OpError> {
    let tmp = temp_beside(n);
    let made = match kind(st) {
        SFlag::S_IFLNK => {
            let target = nix::fcntl::readlinkat(AT_FDCWD, o)?;
            nix::unistd::symlinkat(target.as_os_str(), AT_FDCWD, &tmp).map_err(OpError::from)
        }
        SFlag::S_IFREG => copy_file(o, &tmp, st),
        _ => Err(Errno::EXDEV.into()),
    };
    made?;
    if let Err(e) = renameat2(AT_FDCWD, &tmp, AT_FDCWD, n, flags) {
        let _ = unlinkat(AT_FDCWD, &tmp, UnlinkatFlags::NoRemoveDir);
        return Err(e.into());
    }
    let _ = unlinkat(AT_FDCWD, o, UnlinkatFlags::NoRemoveDir);
    Ok(())
}

fn copy_file(from: &Path, to: &Path, st: &FileStat) -> Result<(), OpError> {
    let src = openat(
        AT_FDCWD,
        from,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let dst = openat(
        AT_FDCWD,
        to,
        OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(st.st_mode & 0o777),
    )?;
    let (mut src, dst) = (std::fs::File::from(src), std::fs::File::from(dst));
    let copied = std::io::copy(&mut src, &mut &dst).and_then(|_| dst.sync_all());
    if let Err(e) = copied {
        let _ = unlinkat(AT_FDCWD, to, UnlinkatFlags::NoRemoveDir);
        return Err(e.into());
    }
    Ok(())
}

/// MoveDirectory: the source must be a real directory (`VIX_E_NOT_A_DIRECTORY`); the
/// destination must not exist, whatever `overwrite` says, as in vmtoolsd (a directory, file or
/// symlink there is `VIX_E_FILE_ALREADY_EXISTS`), refused atomically.
pub fn move_directory(old: &str, new: &str) -> Result<(), OpError> {
    let (o, n) = (Path::new(old), Path::new(new));
    let st = lstat(o)?;
    if kind(&st) != SFlag::S_IFDIR {
        return Err(OpError::vix(VixError::NOT_A_DIRECTORY));
    }
    match renameat2(AT_FDCWD, o, AT_FDCWD, n, RenameFlags::RENAME_NOREPLACE) {
        Err(Errno::EEXIST) if same_file(o, n) => Ok(()),
        other => Ok(other?),
    }
}

/// What CreateTemporary* makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TempKind {
    /// A file, `O_CREAT | O_EXCL`, mode 0600.
    File,
    /// A directory, `mkdir` 0700.
    Directory,
}

fn random_u32() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    // RandomState is seeded from the OS's random source for each instance.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish() as u32
}

/// CreateTemporaryFileEx / CreateTemporaryDirectory: `<dir>/<prefix>vmware<n><suffix>`, with
/// `n` odd for files and even for directories as `File_MakeTempEx2` numbers them; an empty
/// directory is the temporary directory. Returns the path made.
pub fn create_temporary(req: &CreateTempRequest, what: TempKind) -> Result<Vec<u8>, OpError> {
    let dir = if req.directory.is_empty() {
        std::env::temp_dir().to_string_lossy().into_owned()
    } else {
        req.directory.clone()
    };
    let mut n: u32 = random_u32() & 0x00FF_FF00;
    for _ in 0..TEMP_NAME_ATTEMPTS {
        n = n.wrapping_add((random_u32() >> 8) & 0xFF);
        n = (n & !1) | u32::from(what == TempKind::File);
        let name = format!("{}vmware{n}{}", req.prefix, req.suffix);
        let full = if dir.ends_with('/') {
            format!("{dir}{name}")
        } else {
            format!("{dir}/{name}")
        };
        let made = match what {
            TempKind::File => openat(
                AT_FDCWD,
                Path::new(&full),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_RDWR
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::S_IRUSR | Mode::S_IWUSR,
            )
            .map(drop::<OwnedFd>),
            TempKind::Directory => mkdirat(AT_FDCWD, Path::new(&full), Mode::S_IRWXU),
        };
        match made {
            Ok(()) => return Ok(full.into_bytes()),
            Err(Errno::EEXIST) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::EAGAIN.into())
}

/// ChangeFileAttributes: times (either may be left alone), then owner and group, then the
/// mode (setting the owner clears set-id bits, so the mode comes last), all on the path itself
/// when it is a symlink. Hidden and read-only are Windows attributes: `VIX_E_INVALID_ARG`.
pub fn set_attributes(req: &SetAttributesRequest) -> Result<(), OpError> {
    let o = req.options;
    if o & (opt::SET_HIDDEN | opt::SET_READONLY) != 0 {
        return Err(OpError::vix(VixError::INVALID_ARG));
    }
    let p = Path::new(&req.path);
    let st = lstat(p)?;
    let is_link = kind(&st) == SFlag::S_IFLNK;
    if o & (opt::SET_ACCESS_DATE | opt::SET_MODIFY_DATE) != 0 {
        let time = |set: i32, secs: i64| {
            if o & set != 0 {
                TimeSpec::new(secs, 0)
            } else {
                TimeSpec::UTIME_OMIT
            }
        };
        utimensat(
            AT_FDCWD,
            p,
            &time(opt::SET_ACCESS_DATE, req.access_time),
            &time(opt::SET_MODIFY_DATE, req.modification_time),
            UtimensatFlags::NoFollowSymlink,
        )?;
    }
    if o & (opt::SET_UNIX_OWNERID | opt::SET_UNIX_GROUPID) != 0 {
        let uid = (o & opt::SET_UNIX_OWNERID != 0).then(|| Uid::from_raw(req.owner_id as u32));
        let gid = (o & opt::SET_UNIX_GROUPID != 0).then(|| Gid::from_raw(req.group_id as u32));
        fchownat(
            AT_FDCWD,
            p,
            uid,
            gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )?;
    }
    if o & opt::SET_UNIX_PERMISSIONS != 0 {
        if is_link {
            return Err(OpError::vix(VixError::INVALID_ARG));
        }
        let mode = Mode::from_bits_truncate(req.permissions as u32 & MODE_BITS);
        match fchmodat(AT_FDCWD, p, mode, FchmodatFlags::NoFollowSymlink) {
            // The path became a symlink after the lstat: still never the target.
            Err(Errno::EOPNOTSUPP) => return Err(OpError::vix(VixError::INVALID_ARG)),
            other => other?,
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Transfers (the bytes travel over HGFS; these answer the initiating request).

/// How a directory travels as one stream (govmomi's toolbox forms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// A tar stream.
    Tar,
    /// A gzip'd tar stream.
    Tgz,
}

/// A transfer path that names a directory archive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArchivePath {
    /// The directory.
    pub dir: String,
    /// The stream format.
    pub format: ArchiveFormat,
    /// `prefix=`: prepended to every member name.
    pub prefix: Option<String>,
}

/// Recognises the archive forms govc and govmomi's toolbox use: `/archive:/DIR[?query]`,
/// `DIR/` or `DIR?format=tar|tgz[&prefix=P]` (tar unless `format=tgz`). `None`: a plain
/// path. An archive form with an
/// unknown format is `VIX_E_INVALID_ARG`. Whether `dir` is a directory is for the caller.
pub fn archive_path(path: &str) -> Option<Result<ArchivePath, OpError>> {
    let (explicit, rest) = match path.strip_prefix("/archive:") {
        Some(r) => (true, r),
        None => (false, path),
    };
    let (dir, query) = match rest.split_once('?') {
        Some((d, q)) => (d, Some(q)),
        None => (rest, None),
    };
    let trailing_slash = dir.len() > 1 && dir.ends_with('/');
    if !explicit && query.is_none() && !trailing_slash {
        return None;
    }
    // The query as the HGFS archive handler reads it (tar unless `format=tgz`), so the check
    // here and the transfer that follows agree.
    let invalid = || Some(Err(OpError::vix(VixError::INVALID_ARG)));
    let Ok(query) = toolbox_hgfs::archive::ArchiveQuery::parse(query.unwrap_or("")) else {
        return invalid();
    };
    let format = match query.format {
        toolbox_hgfs::archive::ArchiveFormat::Tar => ArchiveFormat::Tar,
        toolbox_hgfs::archive::ArchiveFormat::TarGzip => ArchiveFormat::Tgz,
    };
    let prefix = match String::from_utf8(query.prefix) {
        Ok(p) if p.is_empty() => None,
        Ok(p) => Some(p),
        Err(_) => return invalid(),
    };
    let dir = if trailing_slash {
        dir.trim_end_matches('/')
    } else {
        dir
    };
    Some(Ok(ArchivePath {
        dir: if dir.is_empty() {
            "/".into()
        } else {
            dir.into()
        },
        format,
        prefix,
    }))
}

/// The archive form, if `path` is one and names a real directory.
fn existing_archive(path: &str) -> Result<Option<ArchivePath>, OpError> {
    match archive_path(path) {
        None => Ok(None),
        Some(Err(e)) => Err(e),
        Some(Ok(a)) => match lstat(Path::new(&a.dir)) {
            Ok(st) if kind(&st) == SFlag::S_IFDIR => Ok(Some(a)),
            _ => Ok(None),
        },
    }
}

/// InitiateFileTransferFromGuest: the file's `<fxi>` (named by the path as given). A symlink
/// is `VIX_E_INVALID_ARG`, a directory `VIX_E_NOT_A_FILE`, unless the path is a directory
/// archive form, which reports a regular file of unknown (maximal) size.
pub fn transfer_from_guest(path: &str) -> Result<Vec<u8>, OpError> {
    if existing_archive(path)?.is_some() {
        return Ok(virtual_file_entry(path, ARCHIVE_SIZE, 0o600));
    }
    let p = Path::new(path);
    let st = lstat(p)?;
    match kind(&st) {
        SFlag::S_IFLNK => Err(OpError::vix(VixError::INVALID_ARG)),
        SFlag::S_IFDIR => Err(OpError::vix(VixError::NOT_A_FILE)),
        _ => Ok(format_entry(path.as_bytes(), AT_FDCWD, p).into_bytes()),
    }
}

/// The `<fxi>` of a file that exists only while it is served (a directory archive, a
/// program's output stream): a regular file of `size` bytes and permissions `perm`, owned by
/// this (helper) process's user, made now.
pub fn virtual_file_entry(name: &str, size: u64, perm: u32) -> Vec<u8> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!(
        "<fxi><Name>{}</Name><ft>0</ft><fs>{size}</fs><mt>{now}</mt><at>{now}</at>\
         <uid>{}</uid><gid>{}</gid><perm>{}</perm><slt></slt></fxi>",
        escape_xml(name.as_bytes()),
        nix::unistd::geteuid().as_raw() as i32,
        nix::unistd::getegid().as_raw() as i32,
        (SFlag::S_IFREG.bits() | (perm & 0o7777)) as i32,
    )
    .into_bytes()
}

fn writable(p: &Path) -> Result<(), OpError> {
    faccessat(
        AT_FDCWD,
        p,
        AccessFlags::W_OK,
        nix::fcntl::AtFlags::AT_EACCESS,
    )
    .map_err(|e| OpError {
        vix: VixError::FILE_ACCESS_ERROR,
        errno: e as i32 as u32,
    })
}

/// InitiateFileTransferToGuest: may the upload go there? Hidden/read-only options are
/// `VIX_E_INVALID_ARG`; a symlink `VIX_E_INVALID_ARG`; a directory `VIX_E_NOT_A_FILE` (a
/// directory archive form instead needs its directory, or the parent of a new one, writable);
/// an existing file without `overwrite`
/// `VIX_E_FILE_ALREADY_EXISTS`, or `VIX_E_FILE_ACCESS_ERROR` when it is not writable; a new
/// file needs a writable directory (`VIX_E_FILE_NAME_INVALID` when the parent is not one).
pub fn transfer_to_guest(req: &TransferToGuestRequest) -> Result<(), OpError> {
    if req.options & (opt::SET_HIDDEN | opt::SET_READONLY) != 0 {
        return Err(OpError::vix(VixError::INVALID_ARG));
    }
    if let Some(a) = archive_path(&req.path) {
        // An archive unpacks into its directory, which the unpacking creates if need be.
        let a = a?;
        let dir = Path::new(&a.dir);
        return match lstat(dir) {
            Ok(st) if kind(&st) == SFlag::S_IFDIR => writable(dir),
            Ok(_) => Err(OpError::vix(VixError::NOT_A_DIRECTORY)),
            Err(e) if e.vix == VixError::FILE_NOT_FOUND => parent_writable(dir),
            Err(e) => Err(e),
        };
    }
    let p = Path::new(&req.path);
    match lstat(p) {
        Ok(st) => match kind(&st) {
            SFlag::S_IFLNK => Err(OpError::vix(VixError::INVALID_ARG)),
            SFlag::S_IFDIR => Err(OpError::vix(VixError::NOT_A_FILE)),
            _ if !req.overwrite => Err(OpError::vix(VixError::FILE_ALREADY_EXISTS)),
            _ => writable(p),
        },
        Err(e) if e.vix == VixError::FILE_NOT_FOUND => parent_writable(p),
        Err(e) => Err(e),
    }
}

/// A new entry at `p` needs its parent to be a directory (`VIX_E_FILE_NAME_INVALID`) the user
/// may write.
fn parent_writable(p: &Path) -> Result<(), OpError> {
    let parent = match p.parent() {
        Some(q) if q.as_os_str().is_empty() => Path::new("."),
        Some(q) => q,
        None => return Err(OpError::vix(VixError::FILE_NAME_INVALID)),
    };
    match nix::sys::stat::stat(parent) {
        Ok(st) if kind(&st) == SFlag::S_IFDIR => writable(parent),
        _ => Err(OpError::vix(VixError::FILE_NAME_INVALID)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_table_matches_vix_translate_errno() {
        assert_eq!(translate_errno(Errno::ENOENT), VixError::FILE_NOT_FOUND);
        assert_eq!(
            translate_errno(Errno::EEXIST),
            VixError::FILE_ALREADY_EXISTS
        );
        assert_eq!(translate_errno(Errno::EACCES), VixError::FILE_ACCESS_ERROR);
        assert_eq!(
            translate_errno(Errno::ENOTEMPTY),
            VixError::DIRECTORY_NOT_EMPTY
        );
        assert_eq!(translate_errno(Errno::EISDIR), VixError::NOT_A_FILE);
        assert_eq!(translate_errno(Errno::ENOTDIR), VixError::NOT_A_DIRECTORY);
        assert_eq!(translate_errno(Errno::ELOOP), VixError::OUT_OF_MEMORY);
        assert_eq!(translate_errno(Errno::EXDEV), VixError::FAIL);
    }

    #[test]
    fn escapes_like_vixtoolsescapexmlstring() {
        assert_eq!(escape_xml(b"a<b>&'\"%c"), "a%3Cb%3E%26%27%22%25c");
        assert_eq!(escape_xml("é".as_bytes()), "é");
        assert_eq!(escape_xml(b"x\xffy"), "x%FFy");
    }

    #[test]
    fn archive_forms() {
        let a = |p: &str| archive_path(p).map(|r| r.unwrap());
        assert_eq!(a("/tmp/x"), None);
        assert_eq!(
            a("/tmp/x/"),
            Some(ArchivePath {
                dir: "/tmp/x".into(),
                format: ArchiveFormat::Tar,
                prefix: None
            })
        );
        assert_eq!(a("/tmp/x?y=1").unwrap().dir, "/tmp/x");
        assert_eq!(a("/tmp/x?format=tar").unwrap().format, ArchiveFormat::Tar);
        assert_eq!(
            a("/archive:/tmp/x?format=tgz&prefix=a%2Fb").unwrap(),
            ArchivePath {
                dir: "/tmp/x".into(),
                format: ArchiveFormat::Tgz,
                prefix: Some("a/b".into())
            }
        );
        assert_eq!(a("/archive:/tmp/x").unwrap().format, ArchiveFormat::Tar);
        assert!(archive_path("/tmp/x?format=zip").unwrap().is_err());
    }
}
