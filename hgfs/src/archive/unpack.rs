//! tar / tar.gz → directory, pushed through [`Write`] as HGFS writes arrive.
//!
//! The tar parser is a resumable state machine over 512-byte records (headers decoded with the
//! `tar` crate's [`Header`]), so no thread and no look-ahead is needed, and every length taken from
//! the stream is bounded before anything is buffered. Every path is resolved component by
//! component from the target directory's descriptor with `openat(O_NOFOLLOW | O_DIRECTORY)`: the
//! walk can neither leave the target nor pass through a symlink, whoever planted it.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use flate2::write::GzDecoder;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, CWD, UTIME_NOW};
use rustix::io::Errno;
use tar::{EntryType, Header};

use super::ArchiveError;

/// Longest GNU long name / long link accepted. Paths are resolved one component at a time, so
/// PATH_MAX does not apply; 64 KiB still covers a few hundred levels of long names.
const MAX_LONG_NAME: u64 = 64 * 1024;

/// Largest PAX extended header accepted (it carries a handful of records).
const MAX_PAX_HEADER: u64 = 1024 * 1024;

/// Directories whose mode and times are applied at the end (after their contents are written,
/// which would change the times, and which a read-only mode would forbid). Past either bound a
/// directory's attributes are applied at once; later entries inside it may then move its mtime.
const MAX_DEFERRED_DIRS: usize = 65_536;
const MAX_DEFERRED_BYTES: usize = 4 * 1024 * 1024;

/// Descriptors of the directories along the last entry's parent kept open, so entries of a deep
/// tree in walk order resolve in a constant number of calls.
const MAX_CACHED_DEPTH: usize = 256;

/// Attempts at picking an unused temporary name before giving up.
const TEMP_NAME_ATTEMPTS: u32 = 16;

/// Buffer in front of each file being written, so writes reach the kernel in large pieces.
const FILE_BUFFER: usize = 256 * 1024;

/// Mode of a target directory the unpack creates when the archive has no entry for its root;
/// the umask applies, as to `mkdir`.
const NEW_ROOT_MODE: u32 = 0o755;

/// Tells apart the temporary names of new target directories made by this process.
static NEW_ROOT_COUNTER: AtomicU64 = AtomicU64::new(0);

/// How to unpack.
#[derive(Debug, Clone, Default)]
pub struct UnpackOptions {
    /// Give entries the archive's owner (uid/gid) when the process may (as root). Off, everything
    /// belongs to the user the process runs as: the impersonated guest user.
    pub preserve_owner: bool,
}

/// What an unpack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnpackSummary {
    /// Regular files written.
    pub files: u64,
    /// Directories created or updated.
    pub directories: u64,
    /// Symlinks created.
    pub symlinks: u64,
    /// Hard links created.
    pub hard_links: u64,
    /// Entries not created: device nodes, fifos, sparse files and unknown types.
    pub skipped: u64,
    /// File content bytes written.
    pub bytes: u64,
}

/// Unpacks a tar or tar.gz read from `reader` into the directory `dir`; see [`ArchiveWriter`].
pub fn unpack<R: io::Read>(
    mut reader: R,
    dir: &Path,
    options: UnpackOptions,
) -> Result<UnpackSummary, ArchiveError> {
    let mut writer = ArchiveWriter::create(dir, options)?;
    let mut buf = vec![0; 64 * 1024];
    loop {
        let read = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(ArchiveError::io("read archive", dir, error)),
        };
        writer.push(&buf[..read])?;
    }
    writer.finish()
}

/// Unpacks a tar or gzip'd tar (told apart by the gzip magic) into a directory as its bytes are
/// written, then [`finish`](Self::finish) checks that the archive was complete.
///
/// Rules:
/// * Names with a `..` component, absolute names and empty names are refused, and so are hard
///   links whose target is such a name: the unpack stops with [`ArchiveError::UnsafeEntry`].
/// * No path is resolved through a symlink or a non-directory, whether it was there before or the
///   archive created it (the archive's `link -> /elsewhere` followed by `link/file` stops at the
///   second entry). An entry replaces an existing file or symlink of its name (never following
///   it); it never replaces a directory.
/// * Symlinks are created as they are; they are never followed during the unpack.
/// * Hard links may only point at entries inside the target.
/// * Device nodes and fifos are skipped (counted in [`UnpackSummary::skipped`]); so are GNU
///   sparse files and unknown entry types. Global PAX headers are ignored.
/// * Modes (including setuid, setgid, sticky) and modification times are kept; owners only with
///   [`UnpackOptions::preserve_owner`].
///
/// "Nothing half-written": each file is written under a temporary name in its directory and
/// renamed into place after its last byte, with its mode and time set. When the stream turns out
/// corrupt or truncated, or the writer is dropped unfinished, the file in progress is removed;
/// entries completed before that point stay, the directories made so far get their modes and
/// times, and the error says where it stopped. A gzip CRC mismatch is only detectable at the end
/// of the stream, after the entries are in place; it is still reported as an error.
#[derive(Debug)]
pub struct ArchiveWriter {
    stage: Stage,
}

#[derive(Debug)]
enum Stage {
    Sniff(Box<TarParser>, Vec<u8>),
    Plain(Box<TarParser>),
    Gzip(Box<GzDecoder<TarParser>>),
    /// The tar ended inside the gzip stream: what follows (govmomi's trailer, padding) is ignored.
    Trailing(Box<TarParser>),
    Stopped,
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

impl ArchiveWriter {
    /// Prepares to unpack into the directory `dir` (followed if it is a symlink: it is the
    /// caller's choice; nothing below it is).
    ///
    /// A `dir` that does not exist is created (its parent must exist): the tree is built under
    /// a temporary name beside it and renamed into place by [`finish`](Self::finish) without
    /// replacing anything that appeared meanwhile, with the mode and time of the archive's own
    /// root entry (`./`) or mode 0755 less the umask. An unpack that fails or is dropped
    /// unfinished removes that temporary tree, so a new directory appears whole or not at all.
    /// An existing `dir` keeps its own mode and time: the archive's root entry does not change
    /// them (a tar of `./` uploaded into `/tmp` must not take its sticky bit).
    pub fn create(dir: &Path, options: UnpackOptions) -> Result<Self, ArchiveError> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let parser = match rustix::fs::openat(CWD, dir, flags, Mode::empty()) {
            Ok(root) => TarParser::new(root, dir.to_path_buf(), options, None),
            Err(Errno::NOENT) => {
                let (root, new_root) = NewRoot::make(dir)?;
                TarParser::new(root, dir.to_path_buf(), options, Some(new_root))
            }
            Err(errno) => return Err(ArchiveError::io("open directory", dir, errno.into())),
        };
        Ok(ArchiveWriter {
            stage: Stage::Sniff(Box::new(parser), Vec::with_capacity(GZIP_MAGIC.len())),
        })
    }

    /// Feeds the next bytes of the archive. On an error the unpack has stopped (see the rules
    /// above) and every later call fails with [`ArchiveError::Stopped`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ArchiveError> {
        let result = self.push_inner(bytes);
        if result.is_err() {
            self.stage = Stage::Stopped;
        }
        result
    }

    fn push_inner(&mut self, mut bytes: &[u8]) -> Result<(), ArchiveError> {
        while !bytes.is_empty() {
            match &mut self.stage {
                Stage::Stopped => return Err(ArchiveError::Stopped),
                Stage::Sniff(_, head) => {
                    let take = (GZIP_MAGIC.len() - head.len()).min(bytes.len());
                    head.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if head.len() == GZIP_MAGIC.len() {
                        self.decide()?;
                    }
                }
                Stage::Plain(parser) | Stage::Trailing(parser) => {
                    parser.feed(bytes)?;
                    return Ok(());
                }
                Stage::Gzip(decoder) => match decoder.write(bytes) {
                    Ok(0) => self.next_member()?,
                    Ok(written) => bytes = &bytes[written..],
                    Err(error) => return Err(from_decoder(error)),
                },
            }
        }
        Ok(())
    }

    /// Picks plain or gzip from the first two bytes and feeds them on.
    fn decide(&mut self) -> Result<(), ArchiveError> {
        let Stage::Sniff(parser, head) = std::mem::replace(&mut self.stage, Stage::Stopped) else {
            return Ok(());
        };
        if head == GZIP_MAGIC {
            tracing::debug!("archive is gzip'd");
            self.stage = Stage::Gzip(Box::new(GzDecoder::new(*parser)));
        } else {
            self.stage = Stage::Plain(parser);
        }
        self.push_inner(&head)
    }

    /// A gzip member ended: check it, then either the tar is complete (ignore the rest) or
    /// another member follows (concatenated gzip, as pigz -i or bgzip write).
    fn next_member(&mut self) -> Result<(), ArchiveError> {
        let Stage::Gzip(decoder) = std::mem::replace(&mut self.stage, Stage::Stopped) else {
            return Ok(());
        };
        let parser = decoder.finish().map_err(from_decoder)?;
        self.stage = if parser.ended() {
            Stage::Trailing(Box::new(parser))
        } else {
            Stage::Gzip(Box::new(GzDecoder::new(parser)))
        };
        Ok(())
    }

    /// Checks that the archive ended properly and applies the directories' modes and times.
    pub fn finish(mut self) -> Result<UnpackSummary, ArchiveError> {
        match std::mem::replace(&mut self.stage, Stage::Stopped) {
            Stage::Stopped => Err(ArchiveError::Stopped),
            Stage::Sniff(mut parser, head) => {
                parser.feed(&head)?;
                parser.finish()
            }
            Stage::Plain(parser) | Stage::Trailing(parser) => parser.finish(),
            Stage::Gzip(mut decoder) => {
                decoder.try_finish().map_err(from_decoder)?;
                decoder.finish().map_err(from_decoder)?.finish()
            }
        }
    }
}

impl Write for ArchiveWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.push(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Errors out of the gzip decoder are either the parser's own, passed through, or the gzip
/// layer's.
fn from_decoder(error: io::Error) -> ArchiveError {
    if error
        .get_ref()
        .is_some_and(|inner| inner.is::<ArchiveError>())
    {
        if let Some(inner) = error.into_inner() {
            if let Ok(archive) = inner.downcast::<ArchiveError>() {
                return *archive;
            }
        }
        return ArchiveError::Stopped;
    }
    ArchiveError::Gzip(error)
}

#[derive(Debug, Default)]
struct Extensions {
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    path: Option<Vec<u8>>,
    link_path: Option<Vec<u8>>,
    size: Option<u64>,
    mtime: Option<i64>,
    uid: Option<u64>,
    gid: Option<u64>,
}

#[derive(Debug, Clone, Copy)]
struct Meta {
    mode: u32,
    mtime: i64,
    uid: u64,
    gid: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Collected {
    LongName,
    LongLink,
    Pax,
}

#[derive(Debug)]
enum Sink {
    Skip,
    Collect(Collected, Vec<u8>),
    File(Box<PartFile>),
}

#[derive(Debug)]
enum State {
    Header,
    Data {
        left: u64,
        sink: Sink,
        pad: u64,
    },
    Pad {
        left: u64,
    },
    /// One zero record seen; a second ends the archive.
    Zero,
    End,
}

/// A file being written under a temporary name; removed on drop unless committed.
#[derive(Debug)]
struct PartFile {
    out: io::BufWriter<File>,
    parent: Arc<OwnedFd>,
    temp: Vec<u8>,
    name: Vec<u8>,
    shown: String,
    meta: Meta,
    committed: bool,
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = rustix::fs::unlinkat(&*self.parent, self.temp.as_slice(), AtFlags::empty());
        }
    }
}

#[derive(Debug)]
struct DeferredDir {
    components: Vec<Vec<u8>>,
    meta: Meta,
}

/// A target directory this unpack creates, built under a temporary name in its parent.
#[derive(Debug)]
struct NewRoot {
    parent: OwnedFd,
    temp: Vec<u8>,
    name: Vec<u8>,
    /// The archive's entry for its root (`./`), applied to the new directory at the end.
    meta: Option<Meta>,
    committed: bool,
}

impl NewRoot {
    /// Makes the temporary directory beside `dir`; returns it opened.
    fn make(dir: &Path) -> Result<(OwnedFd, NewRoot), ArchiveError> {
        use std::os::unix::ffi::OsStrExt;
        let name = dir.file_name().ok_or_else(|| {
            ArchiveError::io(
                "create directory",
                dir,
                io::Error::new(io::ErrorKind::InvalidInput, "no directory name to create"),
            )
        })?;
        let parent_path = match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent,
            _ => Path::new("."),
        };
        let parent = rustix::fs::openat(
            CWD,
            parent_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| ArchiveError::io("open directory", parent_path, errno.into()))?;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let temp = format!(
                ".tbx-unpack-{}-{}.dir",
                std::process::id(),
                NEW_ROOT_COUNTER.fetch_add(1, Ordering::Relaxed)
            )
            .into_bytes();
            match rustix::fs::mkdirat(&parent, temp.as_slice(), Mode::from_raw_mode(NEW_ROOT_MODE))
            {
                Ok(()) => {}
                Err(Errno::EXIST) => continue,
                Err(errno) => return Err(ArchiveError::io("create directory", dir, errno.into())),
            }
            let new_root = NewRoot {
                parent,
                temp,
                name: name.as_bytes().to_vec(),
                meta: None,
                committed: false,
            };
            // From here on a failure drops `new_root`, which removes the directory again.
            let root = rustix::fs::openat(
                &new_root.parent,
                new_root.temp.as_slice(),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|errno| ArchiveError::io("open directory", dir, errno.into()))?;
            return Ok((root, new_root));
        }
        Err(ArchiveError::io(
            "create directory",
            dir,
            io::ErrorKind::AlreadyExists.into(),
        ))
    }

    /// Gives the finished tree the root entry's attributes and its name; it must not exist.
    fn commit(
        &mut self,
        root: &OwnedFd,
        options: &UnpackOptions,
        shown: &Path,
    ) -> Result<(), ArchiveError> {
        if let Some(meta) = self.meta {
            let shown = shown.display().to_string();
            if options.preserve_owner {
                chown_fd(root.as_fd(), meta, &shown)?;
            }
            rustix::fs::fchmod(root, Mode::from_raw_mode(meta.mode))
                .map_err(|errno| ArchiveError::io("chmod", shown.clone(), errno.into()))?;
            rustix::fs::futimens(root, &times(meta.mtime))
                .map_err(|errno| ArchiveError::io("set times", shown, errno.into()))?;
        }
        rustix::fs::renameat_with(
            &self.parent,
            self.temp.as_slice(),
            &self.parent,
            self.name.as_slice(),
            rustix::fs::RenameFlags::NOREPLACE,
        )
        .map_err(|errno| ArchiveError::io("rename into place", shown, errno.into()))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for NewRoot {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        if let Err(error) = remove_tree(&self.parent, &self.temp) {
            tracing::warn!(error = %error, "could not remove an unfinished unpack's directory");
        }
    }
}

/// Removes the directory `name` in `parent` and everything below it, never following a
/// symlink. Only one descriptor is open at a time (the walk goes back up through `..`), so a
/// tree of any depth goes; each directory is made writable first, since the unpack may already
/// have given it a read-only mode.
fn remove_tree(parent: &OwnedFd, name: &[u8]) -> io::Result<()> {
    struct Level {
        name: Vec<u8>,
        subdirs: Vec<Vec<u8>>,
    }
    fn enter(at: BorrowedFd<'_>, name: &[u8]) -> io::Result<(OwnedFd, Level)> {
        let fd = rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let _ = rustix::fs::fchmod(&fd, Mode::from_raw_mode(0o700));
        let mut subdirs = Vec::new();
        let mut others = Vec::new();
        for entry in rustix::fs::Dir::read_from(&fd)? {
            let entry = entry?;
            let child = entry.file_name().to_bytes();
            if child == b"." || child == b".." {
                continue;
            }
            if entry.file_type() == FileType::Directory {
                subdirs.push(child.to_vec());
            } else {
                others.push(child.to_vec());
            }
        }
        for child in others {
            match rustix::fs::unlinkat(&fd, child.as_slice(), AtFlags::empty()) {
                // A file system that reports no entry types: this one is a directory.
                Err(Errno::ISDIR) => subdirs.push(child),
                other => other?,
            }
        }
        Ok((
            fd,
            Level {
                name: name.to_vec(),
                subdirs,
            },
        ))
    }
    let (mut current, level) = enter(parent.as_fd(), name)?;
    let mut stack = vec![level];
    while let Some(top) = stack.last_mut() {
        if let Some(sub) = top.subdirs.pop() {
            let (fd, level) = enter(current.as_fd(), &sub)?;
            current = fd;
            stack.push(level);
            continue;
        }
        let Some(done) = stack.pop() else { break };
        if stack.is_empty() {
            drop(current);
            rustix::fs::unlinkat(parent, done.name.as_slice(), AtFlags::REMOVEDIR)?;
            return Ok(());
        }
        let up = rustix::fs::openat(
            &current,
            "..",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        current = up;
        rustix::fs::unlinkat(&current, done.name.as_slice(), AtFlags::REMOVEDIR)?;
    }
    Ok(())
}

#[derive(Debug)]
struct TarParser {
    root: OwnedFd,
    root_path: PathBuf,
    options: UnpackOptions,
    state: State,
    record: Box<[u8; 512]>,
    record_fill: usize,
    offset: u64,
    extensions: Extensions,
    /// Open directories along the last parent path: (component, descriptor).
    parents: Vec<(Vec<u8>, Arc<OwnedFd>)>,
    deferred: Vec<DeferredDir>,
    deferred_bytes: usize,
    temp_counter: u64,
    summary: UnpackSummary,
    finished: bool,
    /// Set when the unpack creates the target directory.
    new_root: Option<NewRoot>,
}

impl TarParser {
    fn new(
        root: OwnedFd,
        root_path: PathBuf,
        options: UnpackOptions,
        new_root: Option<NewRoot>,
    ) -> Self {
        TarParser {
            root,
            root_path,
            options,
            state: State::Header,
            record: Box::new([0; 512]),
            record_fill: 0,
            offset: 0,
            extensions: Extensions::default(),
            parents: Vec::new(),
            deferred: Vec::new(),
            deferred_bytes: 0,
            temp_counter: 0,
            summary: UnpackSummary::default(),
            finished: false,
            new_root,
        }
    }

    fn ended(&self) -> bool {
        matches!(self.state, State::End)
    }

    fn corrupt(&self, reason: impl Into<String>) -> ArchiveError {
        ArchiveError::Corrupt {
            offset: self.offset,
            reason: reason.into(),
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), ArchiveError> {
        while !bytes.is_empty() {
            match &mut self.state {
                State::End => return Ok(()),
                State::Header | State::Zero => {
                    let take = (512 - self.record_fill).min(bytes.len());
                    self.record[self.record_fill..self.record_fill + take]
                        .copy_from_slice(&bytes[..take]);
                    self.record_fill += take;
                    bytes = &bytes[take..];
                    if self.record_fill == 512 {
                        self.record_fill = 0;
                        let result = self.header();
                        self.offset += 512;
                        if let Err(error) = result {
                            self.state = State::End;
                            return Err(error);
                        }
                    }
                }
                State::Pad { left } => {
                    let take = (*left).min(bytes.len() as u64);
                    *left -= take;
                    bytes = &bytes[take as usize..];
                    self.offset += take;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Data { left, sink, pad } => {
                    let take = (*left).min(bytes.len() as u64) as usize;
                    let (chunk, rest) = bytes.split_at(take);
                    bytes = rest;
                    *left -= take as u64;
                    let (done, pad) = (*left == 0, *pad);
                    let written = match sink {
                        Sink::Skip => Ok(()),
                        Sink::Collect(_, buf) => {
                            buf.extend_from_slice(chunk);
                            Ok(())
                        }
                        Sink::File(part) => {
                            self.summary.bytes += take as u64;
                            part.out.write_all(chunk).map_err(|error| {
                                ArchiveError::io("write", part.shown.clone(), error)
                            })
                        }
                    };
                    self.offset += take as u64;
                    if let Err(error) = written {
                        self.state = State::End;
                        return Err(error);
                    }
                    if done {
                        let next = if pad == 0 {
                            State::Header
                        } else {
                            State::Pad { left: pad }
                        };
                        if let State::Data { sink, .. } = std::mem::replace(&mut self.state, next) {
                            if let Err(error) = self.complete(sink) {
                                self.state = State::End;
                                return Err(error);
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn finish(mut self) -> Result<UnpackSummary, ArchiveError> {
        let complete = match &self.state {
            State::End | State::Zero => self.record_fill == 0 || matches!(self.state, State::End),
            State::Header if self.record_fill > 0 => {
                return Err(ArchiveError::Truncated {
                    offset: self.offset,
                    state: "inside a header",
                })
            }
            State::Header => false,
            State::Data { .. } => {
                return Err(ArchiveError::Truncated {
                    offset: self.offset,
                    state: "inside an entry's data",
                })
            }
            State::Pad { .. } => {
                return Err(ArchiveError::Truncated {
                    offset: self.offset,
                    state: "inside an entry's padding",
                })
            }
        };
        if !complete {
            return Err(ArchiveError::Truncated {
                offset: self.offset,
                state: "no end-of-archive records",
            });
        }
        self.apply_deferred()?;
        if let Some(new_root) = &mut self.new_root {
            new_root.commit(&self.root, &self.options, &self.root_path)?;
        }
        self.finished = true;
        Ok(std::mem::take(&mut self.summary))
    }

    /// One 512-byte record in `self.record` while expecting a header.
    fn header(&mut self) -> Result<(), ArchiveError> {
        if self.record.iter().all(|&byte| byte == 0) {
            self.state = match self.state {
                State::Zero => State::End,
                _ => State::Zero,
            };
            return Ok(());
        }
        // A lone zero record inside an archive: GNU tar reads on, so do we.
        self.state = State::Header;
        let header = Header::from_byte_slice(&self.record[..]);
        let stored = header
            .cksum()
            .map_err(|_| self.corrupt("unreadable header checksum"))?;
        let unsigned: u32 = self
            .record
            .iter()
            .enumerate()
            .map(|(at, &byte)| {
                if (148..156).contains(&at) {
                    u32::from(b' ')
                } else {
                    u32::from(byte)
                }
            })
            .sum();
        let signed: i64 = self
            .record
            .iter()
            .enumerate()
            .map(|(at, &byte)| {
                if (148..156).contains(&at) {
                    i64::from(b' ')
                } else {
                    i64::from(byte as i8)
                }
            })
            .sum();
        if stored != unsigned && i64::from(stored) != signed {
            return Err(self.corrupt("header checksum mismatch"));
        }
        let kind = header.entry_type();
        let is_extension = matches!(
            kind,
            EntryType::GNULongName
                | EntryType::GNULongLink
                | EntryType::XHeader
                | EntryType::XGlobalHeader
        );
        let size = match self.extensions.size {
            Some(size) if !is_extension => size,
            _ => header
                .entry_size()
                .map_err(|_| self.corrupt("unreadable entry size"))?,
        };
        let pad = (512 - size % 512) % 512;
        let collect = |what: Collected, bound: u64, this: &Self| -> Result<Sink, ArchiveError> {
            if size > bound {
                return Err(this.corrupt(format!("{what:?} entry of {size} bytes exceeds {bound}")));
            }
            Ok(Sink::Collect(what, Vec::with_capacity(size as usize)))
        };
        let sink = match kind {
            EntryType::GNULongName => collect(Collected::LongName, MAX_LONG_NAME, self)?,
            EntryType::GNULongLink => collect(Collected::LongLink, MAX_LONG_NAME, self)?,
            EntryType::XHeader => collect(Collected::Pax, MAX_PAX_HEADER, self)?,
            EntryType::XGlobalHeader => Sink::Skip,
            _ => {
                let extensions = std::mem::take(&mut self.extensions);
                self.entry(kind, size, extensions)?
            }
        };
        if size == 0 {
            self.state = State::Header;
            return self.complete(sink);
        }
        self.state = State::Data {
            left: size,
            sink,
            pad,
        };
        Ok(())
    }

    /// A real (non-extension) entry's header: start it.
    fn entry(
        &mut self,
        kind: EntryType,
        size: u64,
        extensions: Extensions,
    ) -> Result<Sink, ArchiveError> {
        let header = Header::from_byte_slice(&self.record[..]);
        let name = extensions
            .path
            .or(extensions.long_name)
            .unwrap_or_else(|| header.path_bytes().into_owned());
        let shown = String::from_utf8_lossy(&name).into_owned();
        let meta = Meta {
            mode: header
                .mode()
                .map_err(|_| self.corrupt(format!("unreadable mode of {shown:?}")))?
                & 0o7777,
            mtime: match extensions.mtime {
                Some(mtime) => mtime,
                None => header
                    .mtime()
                    .ok()
                    .and_then(|mtime| i64::try_from(mtime).ok())
                    .ok_or_else(|| self.corrupt(format!("unreadable mtime of {shown:?}")))?,
            },
            uid: extensions.uid.or_else(|| header.uid().ok()).unwrap_or(0),
            gid: extensions.gid.or_else(|| header.gid().ok()).unwrap_or(0),
        };
        let link = extensions
            .link_path
            .or(extensions.long_link)
            .or_else(|| header.link_name_bytes().map(|link| link.into_owned()));
        // Old (pre-POSIX) archives mark directories only by a trailing slash on a regular entry.
        let kind = if kind == EntryType::Regular && name.last() == Some(&b'/') {
            EntryType::Directory
        } else {
            kind
        };
        let span = tracing::trace_span!("archive_entry", name = %shown, kind = ?kind);
        let _entered = span.enter();

        match kind {
            EntryType::Regular | EntryType::Continuous => {
                let components = safe_components(&name, &shown)?;
                let Some((file_name, parents)) = components.split_last() else {
                    return Err(unsafe_entry(
                        &shown,
                        "a file entry names the target directory itself",
                    ));
                };
                let parent = self.parent(parents, true, &shown)?;
                let part = self.create_temp_file(parent, file_name.clone(), shown, meta)?;
                if size == 0 {
                    self.commit_file(*part)?;
                    return Ok(Sink::Skip);
                }
                Ok(Sink::File(part))
            }
            EntryType::Directory => {
                let components = safe_components(&name, &shown)?;
                if !components.is_empty() {
                    self.directory(components, meta, &shown)?;
                } else if let Some(new_root) = &mut self.new_root {
                    new_root.meta = Some(meta);
                }
                Ok(Sink::Skip)
            }
            EntryType::Symlink => {
                let target =
                    link.ok_or_else(|| self.corrupt(format!("symlink {shown:?} without target")))?;
                let components = safe_components(&name, &shown)?;
                let Some((link_name, parents)) = components.split_last() else {
                    return Err(unsafe_entry(
                        &shown,
                        "a symlink entry names the target directory itself",
                    ));
                };
                let parent = self.parent(parents, true, &shown)?;
                self.symlink(&parent, link_name, &target, meta, &shown)?;
                self.summary.symlinks += 1;
                Ok(Sink::Skip)
            }
            EntryType::Link => {
                let target = link
                    .ok_or_else(|| self.corrupt(format!("hard link {shown:?} without target")))?;
                let target_shown = String::from_utf8_lossy(&target).into_owned();
                let target_components = safe_components(&target, &shown).map_err(|_| {
                    unsafe_entry(&shown, "hard link target outside the target directory")
                })?;
                let Some((target_name, target_parents)) = target_components.split_last() else {
                    return Err(unsafe_entry(
                        &shown,
                        "hard link to the target directory itself",
                    ));
                };
                let components = safe_components(&name, &shown)?;
                let Some((link_name, parents)) = components.split_last() else {
                    return Err(unsafe_entry(
                        &shown,
                        "a hard link entry names the target directory itself",
                    ));
                };
                let source_parent = self.parent(target_parents, false, &target_shown)?;
                let parent = self.parent(parents, true, &shown)?;
                let temp = self.temp_name();
                rustix::fs::linkat(
                    &*source_parent,
                    target_name.as_slice(),
                    &*parent,
                    temp.as_slice(),
                    AtFlags::empty(),
                )
                .map_err(|errno| {
                    ArchiveError::io("link", format!("{shown} -> {target_shown}"), errno.into())
                })?;
                self.rename_into_place(&parent, &temp, link_name, &shown)?;
                self.summary.hard_links += 1;
                Ok(Sink::Skip)
            }
            _ => {
                tracing::debug!(name = %shown, kind = ?kind, "entry type not unpacked; skipped");
                self.summary.skipped += 1;
                Ok(Sink::Skip)
            }
        }
    }

    /// The last byte of an entry's data arrived.
    fn complete(&mut self, sink: Sink) -> Result<(), ArchiveError> {
        match sink {
            Sink::Skip => Ok(()),
            Sink::File(part) => self.commit_file(*part),
            Sink::Collect(what, mut data) => {
                match what {
                    Collected::LongName | Collected::LongLink => {
                        while data.last() == Some(&0) {
                            data.pop();
                        }
                        if what == Collected::LongName {
                            self.extensions.long_name = Some(data);
                        } else {
                            self.extensions.long_link = Some(data);
                        }
                    }
                    Collected::Pax => self.pax(&data)?,
                }
                Ok(())
            }
        }
    }

    /// PAX records: `LENGTH KEY=VALUE\n`, LENGTH counting the whole record.
    fn pax(&mut self, mut data: &[u8]) -> Result<(), ArchiveError> {
        while !data.is_empty() {
            let space = data
                .iter()
                .position(|&byte| byte == b' ')
                .ok_or_else(|| self.corrupt("PAX record without length"))?;
            let length: usize = std::str::from_utf8(&data[..space])
                .ok()
                .and_then(|text| text.parse().ok())
                .filter(|&length| length > space + 1 && length <= data.len())
                .ok_or_else(|| self.corrupt("bad PAX record length"))?;
            let record = &data[space + 1..length];
            data = &data[length..];
            let record = record
                .strip_suffix(b"\n")
                .ok_or_else(|| self.corrupt("PAX record without newline"))?;
            let equals = record
                .iter()
                .position(|&byte| byte == b'=')
                .ok_or_else(|| self.corrupt("PAX record without '='"))?;
            let (key, value) = (&record[..equals], &record[equals + 1..]);
            let number = |value: &[u8]| {
                std::str::from_utf8(value)
                    .ok()
                    .and_then(|text| text.parse::<u64>().ok())
            };
            match key {
                b"path" => self.extensions.path = Some(value.to_vec()),
                b"linkpath" => self.extensions.link_path = Some(value.to_vec()),
                b"size" => {
                    self.extensions.size =
                        Some(number(value).ok_or_else(|| self.corrupt("bad PAX size"))?);
                }
                b"uid" => self.extensions.uid = number(value),
                b"gid" => self.extensions.gid = number(value),
                b"mtime" => {
                    // Seconds with an optional fraction, possibly negative.
                    let whole = value.split(|&byte| byte == b'.').next().unwrap_or_default();
                    self.extensions.mtime = std::str::from_utf8(whole)
                        .ok()
                        .and_then(|text| text.parse().ok());
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn temp_name(&mut self) -> Vec<u8> {
        self.temp_counter += 1;
        format!(
            ".tbx-unpack-{}-{}.part",
            std::process::id(),
            self.temp_counter
        )
        .into_bytes()
    }

    fn create_temp_file(
        &mut self,
        parent: Arc<OwnedFd>,
        name: Vec<u8>,
        shown: String,
        meta: Meta,
    ) -> Result<Box<PartFile>, ArchiveError> {
        let flags =
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        for _ in 0..TEMP_NAME_ATTEMPTS {
            let temp = self.temp_name();
            match rustix::fs::openat(&*parent, temp.as_slice(), flags, Mode::from_raw_mode(0o600)) {
                Ok(fd) => {
                    return Ok(Box::new(PartFile {
                        out: io::BufWriter::with_capacity(FILE_BUFFER, File::from(fd)),
                        parent,
                        temp,
                        name,
                        shown,
                        meta,
                        committed: false,
                    }))
                }
                Err(Errno::EXIST) => continue,
                Err(errno) => return Err(ArchiveError::io("create", shown, errno.into())),
            }
        }
        Err(ArchiveError::io(
            "create",
            shown,
            io::ErrorKind::AlreadyExists.into(),
        ))
    }

    fn commit_file(&mut self, mut part: PartFile) -> Result<(), ArchiveError> {
        let shown = part.shown.clone();
        part.out
            .flush()
            .map_err(|error| ArchiveError::io("write", shown.clone(), error))?;
        let file = part.out.get_ref();
        if self.options.preserve_owner {
            chown_fd(file.as_fd(), part.meta, &shown)?;
        }
        // After the data and the owner change, either of which would clear setuid/setgid.
        rustix::fs::fchmod(file, Mode::from_raw_mode(part.meta.mode))
            .map_err(|errno| ArchiveError::io("chmod", shown.clone(), errno.into()))?;
        rustix::fs::futimens(file, &times(part.meta.mtime))
            .map_err(|errno| ArchiveError::io("set times", shown.clone(), errno.into()))?;
        let parent = Arc::clone(&part.parent);
        let (temp, name) = (part.temp.clone(), part.name.clone());
        self.rename_into_place(&parent, &temp, &name, &shown)?;
        part.committed = true;
        self.summary.files += 1;
        Ok(())
    }

    /// Moves a finished temporary into place, replacing a file or symlink (not following it);
    /// on failure the temporary is removed.
    fn rename_into_place(
        &self,
        parent: &OwnedFd,
        temp: &[u8],
        name: &[u8],
        shown: &str,
    ) -> Result<(), ArchiveError> {
        rustix::fs::renameat(parent, temp, parent, name).map_err(|errno| {
            let _ = rustix::fs::unlinkat(parent, temp, AtFlags::empty());
            ArchiveError::io("rename into place", shown, errno.into())
        })
    }

    fn symlink(
        &mut self,
        parent: &OwnedFd,
        name: &[u8],
        target: &[u8],
        meta: Meta,
        shown: &str,
    ) -> Result<(), ArchiveError> {
        let temp = self.temp_name();
        rustix::fs::symlinkat(target, parent, temp.as_slice())
            .map_err(|errno| ArchiveError::io("symlink", shown, errno.into()))?;
        let settle = || -> Result<(), ArchiveError> {
            if self.options.preserve_owner {
                rustix::fs::chownat(
                    parent,
                    temp.as_slice(),
                    Some(rustix::fs::Uid::from_raw(id32(meta.uid, shown)?)),
                    Some(rustix::fs::Gid::from_raw(id32(meta.gid, shown)?)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(|errno| ArchiveError::io("chown", shown, errno.into()))?;
            }
            rustix::fs::utimensat(
                parent,
                temp.as_slice(),
                &times(meta.mtime),
                AtFlags::SYMLINK_NOFOLLOW,
            )
            .map_err(|errno| ArchiveError::io("set times", shown, errno.into()))
        };
        if let Err(error) = settle() {
            let _ = rustix::fs::unlinkat(parent, temp.as_slice(), AtFlags::empty());
            return Err(error);
        }
        self.rename_into_place(parent, &temp, name, shown)
    }

    fn directory(
        &mut self,
        components: Vec<Vec<u8>>,
        meta: Meta,
        shown: &str,
    ) -> Result<(), ArchiveError> {
        let Some((name, parents)) = components.split_last() else {
            return Ok(());
        };
        let parent = self.parent(parents, true, shown)?;
        match rustix::fs::mkdirat(&*parent, name.as_slice(), Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(Errno::EXIST) => {
                let existing =
                    rustix::fs::statat(&*parent, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|errno| ArchiveError::io("stat", shown, errno.into()))?;
                if FileType::from_raw_mode(existing.st_mode) != FileType::Directory {
                    // A file or symlink of that name (perhaps the archive's own) gives way.
                    rustix::fs::unlinkat(&*parent, name.as_slice(), AtFlags::empty())
                        .map_err(|errno| ArchiveError::io("remove", shown, errno.into()))?;
                    rustix::fs::mkdirat(&*parent, name.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(|errno| ArchiveError::io("mkdir", shown, errno.into()))?;
                }
            }
            Err(errno) => return Err(ArchiveError::io("mkdir", shown, errno.into())),
        }
        self.summary.directories += 1;
        let cost: usize = components
            .iter()
            .map(|component| component.len() + 24)
            .sum();
        if self.deferred.len() < MAX_DEFERRED_DIRS
            && self.deferred_bytes + cost <= MAX_DEFERRED_BYTES
        {
            self.deferred_bytes += cost;
            self.deferred.push(DeferredDir { components, meta });
            Ok(())
        } else {
            self.apply_dir(&components, meta, shown)
        }
    }

    fn apply_dir(
        &mut self,
        components: &[Vec<u8>],
        meta: Meta,
        shown: &str,
    ) -> Result<(), ArchiveError> {
        let Some((name, parents)) = components.split_last() else {
            return Ok(());
        };
        let parent = self.parent(parents, false, shown)?;
        let dir = rustix::fs::openat(
            &*parent,
            name.as_slice(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| ArchiveError::io("open directory", shown, errno.into()))?;
        if self.options.preserve_owner {
            chown_fd(dir.as_fd(), meta, shown)?;
        }
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(meta.mode))
            .map_err(|errno| ArchiveError::io("chmod", shown, errno.into()))?;
        rustix::fs::futimens(&dir, &times(meta.mtime))
            .map_err(|errno| ArchiveError::io("set times", shown, errno.into()))
    }

    /// Directories last first, so a read-only parent is set after its children.
    fn apply_deferred(&mut self) -> Result<(), ArchiveError> {
        let deferred = std::mem::take(&mut self.deferred);
        self.deferred_bytes = 0;
        let mut first_error = None;
        for dir in deferred.iter().rev() {
            let shown = String::from_utf8_lossy(&dir.components.join(&b'/')).into_owned();
            if let Err(error) = self.apply_dir(&dir.components, dir.meta, &shown) {
                first_error.get_or_insert(error);
            }
        }
        self.parents.clear();
        first_error.map_or(Ok(()), Err)
    }

    /// Opens (creating when `create`) the directory `components` below the root, one component
    /// at a time, refusing symlinks and non-directories on the way.
    fn parent(
        &mut self,
        components: &[Vec<u8>],
        create: bool,
        shown: &str,
    ) -> Result<Arc<OwnedFd>, ArchiveError> {
        let common = self
            .parents
            .iter()
            .zip(components)
            .take_while(|((cached, _), wanted)| cached == *wanted)
            .count();
        self.parents.truncate(common);
        if components.is_empty() {
            return Ok(Arc::new(self.root.try_clone().map_err(|error| {
                ArchiveError::io("dup", self.root_path.clone(), error)
            })?));
        }
        let mut current: Option<Arc<OwnedFd>> = self.parents.last().map(|(_, fd)| Arc::clone(fd));
        for (index, component) in components.iter().enumerate().skip(common) {
            let at: BorrowedFd<'_> = match &current {
                Some(fd) => fd.as_fd(),
                None => self.root.as_fd(),
            };
            let next = Arc::new(open_step(at, component, create, shown)?);
            if self.parents.len() == index && index < MAX_CACHED_DEPTH {
                self.parents.push((component.clone(), Arc::clone(&next)));
            }
            current = Some(next);
        }
        match current {
            Some(fd) => Ok(fd),
            None => Ok(Arc::new(self.root.try_clone().map_err(|error| {
                ArchiveError::io("dup", self.root_path.clone(), error)
            })?)),
        }
    }
}

impl Write for TarParser {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.feed(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for TarParser {
    fn drop(&mut self) {
        if !self.finished && self.new_root.is_none() {
            // Stopped early: the directories made so far still get their modes and times.
            // A directory this unpack created goes instead, when `new_root` drops.
            let _ = self.apply_deferred();
        }
    }
}

fn open_step(
    at: BorrowedFd<'_>,
    component: &[u8],
    create: bool,
    shown: &str,
) -> Result<OwnedFd, ArchiveError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    match rustix::fs::openat(at, component, flags, Mode::empty()) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOENT) if create => {
            // Implied directories get the usual default mode (less the umask), as GNU tar does.
            match rustix::fs::mkdirat(at, component, Mode::from_raw_mode(0o777)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(errno) => return Err(ArchiveError::io("mkdir", shown, errno.into())),
            }
            rustix::fs::openat(at, component, flags, Mode::empty())
                .map_err(|errno| step_error(errno, shown))
        }
        Err(errno) => Err(step_error(errno, shown)),
    }
}

fn step_error(errno: Errno, shown: &str) -> ArchiveError {
    match errno {
        Errno::LOOP | Errno::NOTDIR => unsafe_entry(
            shown,
            "its path passes through a symlink or a non-directory",
        ),
        errno => ArchiveError::io("open directory", shown, errno.into()),
    }
}

fn unsafe_entry(shown: &str, reason: &'static str) -> ArchiveError {
    ArchiveError::UnsafeEntry {
        name: shown.to_owned(),
        reason,
    }
}

/// Splits an archive name into components, dropping empty and `.` ones; refuses absolute names,
/// `..` and NUL bytes. An empty result names the target directory itself.
fn safe_components(name: &[u8], shown: &str) -> Result<Vec<Vec<u8>>, ArchiveError> {
    if name.is_empty() {
        return Err(unsafe_entry(shown, "empty name"));
    }
    if name.first() == Some(&b'/') {
        return Err(unsafe_entry(shown, "absolute path"));
    }
    if name.contains(&0) {
        return Err(unsafe_entry(shown, "NUL byte in name"));
    }
    let mut components = Vec::new();
    for component in name.split(|&byte| byte == b'/') {
        match component {
            b"" | b"." => {}
            b".." => return Err(unsafe_entry(shown, "'..' component")),
            component => components.push(component.to_vec()),
        }
    }
    Ok(components)
}

fn times(mtime: i64) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: 0,
            tv_nsec: UTIME_NOW,
        },
        last_modification: Timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    }
}

fn id32(id: u64, shown: &str) -> Result<u32, ArchiveError> {
    u32::try_from(id).map_err(|_| unsafe_entry(shown, "owner id beyond 32 bits"))
}

fn chown_fd(fd: BorrowedFd<'_>, meta: Meta, shown: &str) -> Result<(), ArchiveError> {
    rustix::fs::fchown(
        fd,
        Some(rustix::fs::Uid::from_raw(id32(meta.uid, shown)?)),
        Some(rustix::fs::Gid::from_raw(id32(meta.gid, shown)?)),
    )
    .map_err(|errno| ArchiveError::io("chown", shown, errno.into()))
}
