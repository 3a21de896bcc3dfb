//! Plain files and directories on the guest's own filesystem.
//!
//! Writes that replace a file's content (an upload: `OPEN_EMPTY`, `OPEN_CREATE_EMPTY`,
//! `OPEN_CREATE_SAFE`) go to a temporary file created with `O_EXCL` in the target's
//! directory and are renamed over the target when the client closes the handle, so a
//! transfer cut off midway leaves the old file as it was and no partial file behind.
//! The directory is held open from the start, so the temporary file and the rename stay in
//! the same directory even if its path changes meanwhile. `OPEN_CREATE_SAFE` is renamed
//! with `RENAME_NOREPLACE` (or link and unlink where that is missing), so a file that
//! appears during the upload is never overwritten.
//!
//! Where the user may write the file but not its directory, the upload falls back to
//! truncating and writing in place, as vmtoolsd does, and logs a warning.
//!
//! The last component of a path opened for writing is never followed if it is a symlink,
//! nor are those of setattr, delete and rename, which act on a link itself. Reads do
//! follow symlinks: the server runs with the authenticated user's rights, so reading
//! through a link gives nothing a shell would not.

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;

use crate::error::HgfsError;
use crate::handler::{Access, AttrChange, FileAttr, FileHandler, FileKind, OpenFile, OpenIntent};
use crate::proto::{OpenFlags, Status};

/// Permission bits of a new file when the request gives none (before the umask).
const DEFAULT_FILE_MODE: u32 = 0o644;
/// Permission bits of a new directory when the request gives none (before the umask).
const DEFAULT_DIR_MODE: u32 = 0o777;
/// How many temporary names an upload tries before giving up: collisions need another
/// upload to the same name with the same random suffix.
const TEMP_NAME_ATTEMPTS: u32 = 16;
/// Entries one directory search may hold: the listing is taken when the search opens
/// (as hgfsServer does) and this bounds its memory.
pub const MAX_SEARCH_ENTRIES: usize = 200_000;

/// The filesystem handler every path falls back to.
#[derive(Debug, Default)]
pub struct PlainFiles {
    _private: (),
}

fn err(what: &str, path: &Path, source: io::Error) -> HgfsError {
    HgfsError::io(format!("{what} {}", path.display()), source)
}

fn nix_err(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl PlainFiles {
    /// The handler.
    pub fn new() -> Self {
        Self::default()
    }

    /// Lists a directory for a search: `.` and `..` first, as readdir gives them.
    pub fn list_dir(&self, path: &Path) -> Result<Vec<OsString>, HgfsError> {
        let entries = fs::read_dir(path).map_err(|e| err("list", path, e))?;
        let mut names = vec![OsString::from("."), OsString::from("..")];
        for entry in entries {
            let entry = entry.map_err(|e| err("list", path, e))?;
            if names.len() >= MAX_SEARCH_ENTRIES {
                return Err(HgfsError::refused(
                    Status::GENERIC_ERROR,
                    format!(
                        "list {}: more than {MAX_SEARCH_ENTRIES} entries",
                        path.display()
                    ),
                ));
            }
            names.push(entry.file_name());
        }
        Ok(names)
    }

    /// Attributes of a directory entry itself (a symlink is reported as one).
    pub fn entry_attr(&self, path: &Path) -> Result<FileAttr, HgfsError> {
        fs::symlink_metadata(path)
            .map(|m| FileAttr::from_metadata(&m))
            .map_err(|e| err("stat", path, e))
    }

    /// Creates a directory; `mode` `None` means the default (less the umask).
    pub fn create_dir(&self, path: &Path, mode: Option<u32>) -> Result<(), HgfsError> {
        fs::DirBuilder::new()
            .mode(mode.unwrap_or(DEFAULT_DIR_MODE))
            .create(path)
            .map_err(|e| err("mkdir", path, e))
    }

    /// Removes a file or symlink (never what a link points to).
    pub fn delete_file(&self, path: &Path) -> Result<(), HgfsError> {
        fs::remove_file(path).map_err(|e| err("unlink", path, e))
    }

    /// Removes an empty directory.
    pub fn delete_dir(&self, path: &Path) -> Result<(), HgfsError> {
        fs::remove_dir(path).map_err(|e| err("rmdir", path, e))
    }

    /// Renames; with `no_replace` an existing target makes it fail, atomically.
    pub fn rename(&self, from: &Path, to: &Path, no_replace: bool) -> Result<(), HgfsError> {
        let what = || format!("rename {} to {}", from.display(), to.display());
        if no_replace {
            rename_no_replace(None, from, None, to).map_err(|e| HgfsError::io(what(), e))
        } else {
            fs::rename(from, to).map_err(|e| HgfsError::io(what(), e))
        }
    }

    /// Free bytes available to the caller and total bytes of the volume holding `path`.
    pub fn volume_info(&self, path: &Path) -> Result<(u64, u64), HgfsError> {
        let st = nix::sys::statvfs::statvfs(path).map_err(|e| err("statvfs", path, nix_err(e)))?;
        let frag = st.fragment_size();
        Ok((
            (st.blocks_available() as u64).saturating_mul(frag),
            (st.blocks() as u64).saturating_mul(frag),
        ))
    }

    fn open_read(&self, path: &Path) -> Result<Box<dyn OpenFile>, HgfsError> {
        let file = File::open(path).map_err(|e| err("open", path, e))?;
        let meta = file.metadata().map_err(|e| err("fstat", path, e))?;
        if meta.is_dir() {
            return Err(err(
                "open",
                path,
                io::Error::from_raw_os_error(libc::EISDIR),
            ));
        }
        Ok(Box::new(PlainFile { file, staged: None }))
    }

    fn open_in_place(
        &self,
        path: &Path,
        intent: &OpenIntent,
    ) -> Result<Box<dyn OpenFile>, HgfsError> {
        let file = OpenOptions::new()
            .read(intent.access == Access::ReadWrite)
            .write(true)
            .create(intent.flags == OpenFlags::OPEN_CREATE)
            .mode(intent.create_mode.unwrap_or(DEFAULT_FILE_MODE))
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| err("open", path, e))?;
        Ok(Box::new(PlainFile { file, staged: None }))
    }

    fn open_truncating(
        &self,
        path: &Path,
        intent: &OpenIntent,
    ) -> Result<Box<dyn OpenFile>, HgfsError> {
        let file = OpenOptions::new()
            .read(intent.access == Access::ReadWrite)
            .write(true)
            .truncate(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map_err(|e| err("open", path, e))?;
        Ok(Box::new(PlainFile { file, staged: None }))
    }

    fn open_staged(
        &self,
        path: &Path,
        intent: &OpenIntent,
    ) -> Result<Box<dyn OpenFile>, HgfsError> {
        let (dir_path, name) = split_parent(path)
            .ok_or_else(|| err("upload", path, io::Error::from_raw_os_error(libc::EISDIR)))?;
        let dir = nix::fcntl::open(
            dir_path,
            OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| err("open directory", dir_path, nix_err(e)))?;
        let existing = match nix::sys::stat::fstatat(&dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Some(st),
            Err(nix::Error::ENOENT) => None,
            Err(e) => return Err(err("stat", path, nix_err(e))),
        };
        if let Some(st) = &existing {
            let kind = st.st_mode & libc::S_IFMT;
            let refuse = if kind == libc::S_IFLNK {
                Some(libc::ELOOP)
            } else if kind == libc::S_IFDIR {
                Some(libc::EISDIR)
            } else if intent.flags == OpenFlags::OPEN_CREATE_SAFE {
                Some(libc::EEXIST)
            } else {
                None
            };
            if let Some(errno) = refuse {
                return Err(err("upload", path, io::Error::from_raw_os_error(errno)));
            }
        } else if intent.flags == OpenFlags::OPEN_EMPTY {
            return Err(err(
                "upload",
                path,
                io::Error::from_raw_os_error(libc::ENOENT),
            ));
        }
        // A replaced file keeps its permission bits, as an O_TRUNC open would.
        let mode = match &existing {
            Some(st) => st.st_mode & 0o777,
            None => intent.create_mode.unwrap_or(DEFAULT_FILE_MODE),
        };
        let (temp_name, fd) = match create_temp(&dir, name, mode) {
            Ok(made) => made,
            Err(e)
                if existing.is_some()
                    && matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::EPERM)) =>
            {
                // The user may write the file but not its directory (a file of theirs in
                // a directory of root's): vmtoolsd would truncate and write in place, and
                // refusing would be a regression, so do that, without the atomicity.
                tracing::warn!(path = %path.display(), "directory not writable: uploading in place");
                return self.open_truncating(path, intent);
            }
            Err(e) => return Err(err("create temporary for", path, e)),
        };
        let file = File::from(fd);
        let staged = Staged {
            dir,
            temp_name,
            target_name: name.to_os_string(),
            no_replace: intent.flags == OpenFlags::OPEN_CREATE_SAFE,
            committed: false,
        };
        if let Some(st) = &existing {
            // Exact bits, past the umask; then the old owner where we may set it.
            file.set_permissions(fs::Permissions::from_mode(st.st_mode & 0o777))
                .map_err(|e| err("chmod temporary for", path, e))?;
            let _ = std::os::unix::fs::fchown(&file, Some(st.st_uid), Some(st.st_gid));
        }
        Ok(Box::new(PlainFile {
            file,
            staged: Some(staged),
        }))
    }

    fn set_attr_inner(&self, path: &Path, change: &AttrChange) -> io::Result<()> {
        // An O_PATH handle on the entry itself: the checks and changes below all act on
        // the same object, and a symlink is never followed.
        let handle = nix::fcntl::open(
            path,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(nix_err)?;
        let st = nix::sys::stat::fstat(&handle).map_err(nix_err)?;
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        // The kernel resolves /proc/self/fd/N to the object the handle holds (glibc's
        // fchmodat(AT_SYMLINK_NOFOLLOW) works the same way).
        let by_fd = PathBuf::from(format!("/proc/self/fd/{}", handle.as_raw_fd()));
        if let Some(size) = change.size {
            if is_link {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            OpenOptions::new().write(true).open(&by_fd)?.set_len(size)?;
        }
        if change.uid.is_some() || change.gid.is_some() {
            nix::unistd::fchownat(
                &handle,
                "",
                change.uid.map(nix::unistd::Uid::from_raw),
                change.gid.map(nix::unistd::Gid::from_raw),
                AtFlags::AT_EMPTY_PATH,
            )
            .map_err(nix_err)?;
        }
        if let Some((bits, mask)) = change.mode {
            if is_link {
                return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
            }
            let mode = (st.st_mode & 0o7777 & !mask) | (bits & mask);
            fs::set_permissions(&by_fd, fs::Permissions::from_mode(mode))?;
        }
        if change.atime.is_some() || change.mtime.is_some() {
            let spec = |t: Option<(i64, u32)>| match t {
                Some((s, ns)) => TimeSpec::new(s, i64::from(ns)),
                None => TimeSpec::UTIME_OMIT,
            };
            let (target, flag) = if is_link {
                (path, UtimensatFlags::NoFollowSymlink)
            } else {
                (by_fd.as_path(), UtimensatFlags::FollowSymlink)
            };
            nix::sys::stat::utimensat(
                nix::fcntl::AT_FDCWD,
                target,
                &spec(change.atime),
                &spec(change.mtime),
                flag,
            )
            .map_err(nix_err)?;
        }
        Ok(())
    }
}

impl FileHandler for PlainFiles {
    fn claims(&self, _path: &Path) -> bool {
        true
    }

    fn stat(&self, path: &Path) -> Result<FileAttr, HgfsError> {
        // Follow links, as a download would; a dangling link is still reported, as itself.
        match fs::metadata(path) {
            Ok(meta) => Ok(FileAttr::from_metadata(&meta)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => self.entry_attr(path),
            Err(e) => Err(err("stat", path, e)),
        }
    }

    fn open(&self, path: &Path, intent: &OpenIntent) -> Result<Box<dyn OpenFile>, HgfsError> {
        if !intent.access.writes() {
            return self.open_read(path);
        }
        match intent.flags {
            OpenFlags::OPEN | OpenFlags::OPEN_CREATE => self.open_in_place(path, intent),
            OpenFlags::OPEN_EMPTY | OpenFlags::OPEN_CREATE_EMPTY | OpenFlags::OPEN_CREATE_SAFE => {
                self.open_staged(path, intent)
            }
            other => Err(HgfsError::refused(
                Status::INVALID_PARAMETER,
                format!("open {}: flags {other}", path.display()),
            )),
        }
    }

    fn set_attr(&self, path: &Path, change: &AttrChange) -> Result<(), HgfsError> {
        self.set_attr_inner(path, change)
            .map_err(|e| err("setattr", path, e))
    }
}

fn split_parent(path: &Path) -> Option<(&Path, &OsStr)> {
    let name = path.file_name()?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Some((parent, name))
}

fn create_temp(dir: &OwnedFd, target: &OsStr, mode: u32) -> io::Result<(OsString, OwnedFd)> {
    let seed = RandomState::new();
    for attempt in 0..TEMP_NAME_ATTEMPTS {
        let mut hasher = seed.build_hasher();
        hasher.write_u32(attempt);
        hasher.write_u32(std::process::id());
        let mut name = OsString::from(".");
        // Keep the temporary name within NAME_MAX however long the target's is.
        let stem = target.as_bytes();
        name.push(OsStr::from_bytes(&stem[..stem.len().min(200)]));
        name.push(format!(".hgfs-{:016x}.tmp", hasher.finish()));
        match nix::fcntl::openat(
            dir,
            name.as_os_str(),
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_RDWR | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(mode),
        ) {
            Ok(fd) => return Ok((name, fd)),
            Err(nix::Error::EEXIST) => continue,
            Err(e) => return Err(nix_err(e)),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Renames without replacing: `renameat2(RENAME_NOREPLACE)` where the C library has it,
/// else (or where the filesystem refuses the flag) a hard link, which fails if the target
/// exists, and an unlink of the old name.
fn rename_no_replace(
    from_dir: Option<&OwnedFd>,
    from: &Path,
    to_dir: Option<&OwnedFd>,
    to: &Path,
) -> io::Result<()> {
    let cwd = nix::fcntl::AT_FDCWD;
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::fd::AsFd;
        let fd1 = from_dir.map(|d| d.as_fd()).unwrap_or(cwd);
        let fd2 = to_dir.map(|d| d.as_fd()).unwrap_or(cwd);
        match nix::fcntl::renameat2(
            fd1,
            from,
            fd2,
            to,
            nix::fcntl::RenameFlags::RENAME_NOREPLACE,
        ) {
            Ok(()) => return Ok(()),
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOSYS) => {}
            Err(e) => return Err(nix_err(e)),
        }
    }
    use std::os::fd::AsFd;
    let fd1 = from_dir.map(|d| d.as_fd()).unwrap_or(cwd);
    let fd2 = to_dir.map(|d| d.as_fd()).unwrap_or(cwd);
    nix::unistd::linkat(fd1, from, fd2, to, AtFlags::empty()).map_err(nix_err)?;
    nix::unistd::unlinkat(fd1, from, nix::unistd::UnlinkatFlags::NoRemoveDir).map_err(nix_err)
}

/// An upload in progress: the temporary file and where it goes.
#[derive(Debug)]
struct Staged {
    dir: OwnedFd,
    temp_name: OsString,
    target_name: OsString,
    no_replace: bool,
    committed: bool,
}

impl Staged {
    fn commit(&mut self) -> io::Result<()> {
        let (from, to) = (Path::new(&self.temp_name), Path::new(&self.target_name));
        if self.no_replace {
            rename_no_replace(Some(&self.dir), from, Some(&self.dir), to)?;
        } else {
            nix::fcntl::renameat(&self.dir, from, &self.dir, to).map_err(nix_err)?;
        }
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            // The upload did not finish: the target keeps its old content.
            if let Err(e) = nix::unistd::unlinkat(
                &self.dir,
                self.temp_name.as_os_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            ) {
                tracing::warn!(temp = ?self.temp_name, error = %e, "removing an unfinished upload failed");
            } else {
                tracing::info!(target = ?self.target_name, "unfinished upload discarded");
            }
        }
    }
}

/// An open plain file, possibly an upload staged in a temporary file.
#[derive(Debug)]
struct PlainFile {
    file: File,
    staged: Option<Staged>,
}

impl OpenFile for PlainFile {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        // A regular file reads short only at its end, so one pread answers (a second one
        // would only find the end again, a syscall per file for nothing).
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => return other,
            }
        }
    }

    fn write_at(&mut self, offset: Option<u64>, data: &[u8]) -> io::Result<usize> {
        let at = match offset {
            Some(at) => at,
            None => self.file.metadata()?.len(),
        };
        self.file.write_all_at(data, at)?;
        Ok(data.len())
    }

    fn attr(&self) -> io::Result<FileAttr> {
        let mut attr = FileAttr::from_metadata(&self.file.metadata()?);
        if attr.kind == FileKind::Symlink {
            attr.kind = FileKind::Regular;
        }
        Ok(attr)
    }

    fn close(mut self: Box<Self>) -> io::Result<()> {
        match self.staged.as_mut() {
            Some(staged) => staged.commit(),
            None => Ok(()),
        }
    }
}
