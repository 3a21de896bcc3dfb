//! The seam between the protocol and what a path stands for: plain files, directory
//! archives, process stdio. The server asks each registered [`FileHandler`] in turn
//! whether it serves a path, and falls back to plain files.

use std::fs::Metadata;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::error::HgfsError;
use crate::proto::{
    attr_valid, nt_time, AttrV2, OpenFlags, FILE_TYPE_DIRECTORY, FILE_TYPE_REGULAR,
    FILE_TYPE_SYMLINK,
};

/// Serves the paths it claims. Implementations run inside the authenticated user's helper
/// process, so every access they make has that user's rights.
pub trait FileHandler: Send {
    /// Whether this handler serves `path` (the guest path under the server's root, with
    /// any `?query` the client appended still on it).
    fn claims(&self, path: &Path) -> bool;

    /// Attributes of `path`; the VMX asks before a transfer (existence, size).
    fn stat(&self, path: &Path) -> Result<FileAttr, HgfsError>;

    /// Opens `path` for reading or writing.
    fn open(&self, path: &Path, intent: &OpenIntent) -> Result<Box<dyn OpenFile>, HgfsError>;

    /// Applies attribute changes. Virtual files have none to change, hence the default.
    fn set_attr(&self, path: &Path, change: &AttrChange) -> Result<(), HgfsError> {
        let _ = (path, change);
        Ok(())
    }
}

/// A file opened through a [`FileHandler`]. Dropping it without [`OpenFile::close`] means
/// the transfer was cut off: an implementation must then leave nothing half-done behind.
pub trait OpenFile: Send {
    /// Fills as much of `buf` as the file has from `offset`; 0 at the end. Streams ignore
    /// the offset (the VMX reads sequentially).
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, or at the end when `offset` is `None` (append);
    /// returns the count written.
    fn write_at(&mut self, offset: Option<u64>, data: &[u8]) -> io::Result<usize>;

    /// Attributes of the open file.
    fn attr(&self) -> io::Result<FileAttr>;

    /// Finishes the file: for an upload, the moment it becomes visible.
    fn close(self: Box<Self>) -> io::Result<()>;
}

/// Read or write access, from the open request's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read only.
    Read,
    /// Write only.
    Write,
    /// Read and write.
    ReadWrite,
}

impl Access {
    /// Whether the file will be written.
    pub fn writes(self) -> bool {
        self != Access::Read
    }
}

/// What an open request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenIntent {
    /// Read or write.
    pub access: Access,
    /// What to do when the file exists or not.
    pub flags: OpenFlags,
    /// Permission bits for a file the open creates, when the request gave them.
    pub create_mode: Option<u32>,
}

/// What kind of file an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file (or anything that is neither a directory nor a symlink).
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
}

/// Attributes of a file, as HGFS reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileAttr {
    /// Kind.
    pub kind: FileKind,
    /// Size in bytes.
    pub size: u64,
    /// Last access (seconds, nanoseconds since the Unix epoch).
    pub atime: (i64, u32),
    /// Last write.
    pub mtime: (i64, u32),
    /// Last attribute change.
    pub ctime: (i64, u32),
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// Bytes allocated on disk.
    pub allocated: u64,
}

impl FileAttr {
    /// From `lstat`/`fstat` metadata.
    pub fn from_metadata(meta: &Metadata) -> Self {
        let kind = if meta.file_type().is_symlink() {
            FileKind::Symlink
        } else if meta.is_dir() {
            FileKind::Directory
        } else {
            FileKind::Regular
        };
        let nanos = |n: i64| u32::try_from(n).unwrap_or(0);
        Self {
            kind,
            size: meta.size(),
            atime: (meta.atime(), nanos(meta.atime_nsec())),
            mtime: (meta.mtime(), nanos(meta.mtime_nsec())),
            ctime: (meta.ctime(), nanos(meta.ctime_nsec())),
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            ino: meta.ino(),
            dev: meta.dev(),
            allocated: meta.blocks().saturating_mul(512),
        }
    }

    /// A virtual file of `size` bytes (archives, process streams).
    pub fn virtual_file(size: u64, mode: u32) -> Self {
        Self {
            kind: FileKind::Regular,
            size,
            atime: (0, 0),
            mtime: (0, 0),
            ctime: (0, 0),
            mode,
            uid: 0,
            gid: 0,
            ino: 0,
            dev: 0,
            allocated: 0,
        }
    }

    /// The wire form, with the fields hgfsServerLinux reports marked valid.
    pub fn to_attr_v2(&self) -> AttrV2 {
        let write_time = nt_time(self.mtime.0, self.mtime.1);
        AttrV2 {
            mask: attr_valid::TYPE
                | attr_valid::SIZE
                | attr_valid::CREATE_TIME
                | attr_valid::ACCESS_TIME
                | attr_valid::WRITE_TIME
                | attr_valid::CHANGE_TIME
                | attr_valid::SPECIAL_PERMS
                | attr_valid::OWNER_PERMS
                | attr_valid::GROUP_PERMS
                | attr_valid::OTHER_PERMS
                | attr_valid::ALLOCATION_SIZE
                | attr_valid::USER_ID
                | attr_valid::GROUP_ID
                | attr_valid::FILE_ID
                | attr_valid::VOLUME_ID,
            file_type: match self.kind {
                FileKind::Regular => FILE_TYPE_REGULAR,
                FileKind::Directory => FILE_TYPE_DIRECTORY,
                FileKind::Symlink => FILE_TYPE_SYMLINK,
            },
            size: self.size,
            // Linux keeps no creation time; hgfsServerLinux reports the write time.
            creation_time: write_time,
            access_time: nt_time(self.atime.0, self.atime.1),
            write_time,
            attr_change_time: nt_time(self.ctime.0, self.ctime.1),
            special_perms: ((self.mode >> 9) & 7) as u8,
            owner_perms: ((self.mode >> 6) & 7) as u8,
            group_perms: ((self.mode >> 3) & 7) as u8,
            other_perms: (self.mode & 7) as u8,
            allocation_size: self.allocated,
            user_id: self.uid,
            group_id: self.gid,
            host_file_id: self.ino,
            volume_id: self.dev as u32,
            ..AttrV2::default()
        }
    }
}

/// Attribute changes a setattr request asks for; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttrChange {
    /// New size (truncate or extend).
    pub size: Option<u64>,
    /// Permission bits to set, and which of them the request gave (`mode_mask`).
    pub mode: Option<(u32, u32)>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time (seconds, nanoseconds).
    pub atime: Option<(i64, u32)>,
    /// New write time.
    pub mtime: Option<(i64, u32)>,
}

impl AttrChange {
    /// The changes an `HgfsAttrV2` with its valid-mask asks for.
    pub fn from_attr_v2(attr: &AttrV2) -> Self {
        let has = |bit: u64| attr.mask & bit != 0;
        let mut bits = 0u32;
        let mut mask = 0u32;
        let mut part = |valid: u64, value: u8, shift: u32| {
            if has(valid) {
                bits |= u32::from(value & 7) << shift;
                mask |= 7 << shift;
            }
        };
        part(attr_valid::SPECIAL_PERMS, attr.special_perms, 9);
        part(attr_valid::OWNER_PERMS, attr.owner_perms, 6);
        part(attr_valid::GROUP_PERMS, attr.group_perms, 3);
        part(attr_valid::OTHER_PERMS, attr.other_perms, 0);
        Self {
            size: has(attr_valid::SIZE).then_some(attr.size),
            mode: (mask != 0).then_some((bits, mask)),
            uid: has(attr_valid::USER_ID).then_some(attr.user_id),
            gid: has(attr_valid::GROUP_ID).then_some(attr.group_id),
            atime: has(attr_valid::ACCESS_TIME).then(|| crate::proto::unix_time(attr.access_time)),
            mtime: has(attr_valid::WRITE_TIME).then(|| crate::proto::unix_time(attr.write_time)),
        }
    }
}
