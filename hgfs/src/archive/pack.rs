//! Directory → tar / tar.gz, pulled through [`Read`] with bounded memory.
//!
//! Threads: a producer walks the tree and fills [`BLOCK_SIZE`] tar blocks; for gzip, worker
//! threads deflate the blocks independently (each primed with the previous block's last 32 KiB,
//! ended with a sync flush so the next one starts on a byte boundary: pigz's scheme), which yields
//! one ordinary gzip member. The reader takes the blocks back in order through a queue of
//! per-block channels, so at most [`QUEUE_DEPTH`] blocks are in flight whatever the tree's size.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};

use flate2::{Compress, Compression, FlushCompress, Status};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, Stat, CWD};
use tar::{EntryType, Header};

use super::{ArchiveError, ArchiveFormat, GO_TOOLBOX_TRAILER};

/// Size of the tar blocks the producer hands on: big enough that the per-block cost of a deflate
/// stream (reset, dictionary, sync marker) disappears, small enough that the queue stays a few MiB.
const BLOCK_SIZE: usize = 256 * 1024;

/// Deflate's window: the history a block needs from its predecessor to compress as well as one
/// long stream would.
const DICTIONARY_SIZE: usize = 32 * 1024;

/// Blocks in flight between the producer and the reader (each at most about 2 × [`BLOCK_SIZE`]
/// with its compressed form), which bounds the packer's memory to a few MiB.
const QUEUE_DEPTH: usize = 6;

/// Worker threads at most; more than a few do not pay on the small guests this runs on.
pub const MAX_WORKERS: usize = 4;

/// Directories open at once during the walk (one descriptor each); deeper subtrees are skipped
/// with a warning instead of exhausting the process's descriptors.
const MAX_OPEN_DEPTH: usize = 1000;

/// Files with several links whose first name is remembered, so later names become hard-link
/// entries; past it they are stored again in full (bounded memory).
const MAX_TRACKED_HARDLINKS: usize = 65_536;

/// `/etc/passwd` and `/etc/group` larger than this are not read for owner names.
const MAX_ACCOUNT_FILE: u64 = 16 * 1024 * 1024;

/// Deflate level: 2 measured within 5 % of `gzip -6`'s size on the benchmark tree at about twice
/// its speed per core; 1 (zlib-rs' quick strategy) came out 14 % larger.
pub const DEFAULT_LEVEL: u32 = 2;

/// How to pack.
#[derive(Debug, Clone)]
pub struct PackOptions {
    /// Tar or gzip'd tar.
    pub format: ArchiveFormat,
    /// Put before every name in the archive (govmomi's `prefix` query).
    pub prefix: Vec<u8>,
    /// Deflate level 0–9 for [`ArchiveFormat::TarGzip`].
    pub level: u32,
    /// Deflate worker threads (at least 1, at most [`MAX_WORKERS`] are used).
    pub workers: usize,
    /// Append [`GO_TOOLBOX_TRAILER`] after the archive, as govmomi's toolbox does and govc expects.
    pub go_toolbox_trailer: bool,
}

impl PackOptions {
    /// The options for a format: default level, one worker per core, with govmomi's trailer.
    pub fn new(format: ArchiveFormat) -> Self {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        PackOptions {
            format,
            prefix: Vec::new(),
            level: DEFAULT_LEVEL,
            workers: cores.clamp(1, MAX_WORKERS),
            go_toolbox_trailer: true,
        }
    }
}

type Chunk = Result<Vec<u8>, ArchiveError>;

/// A directory (or a single file) as a tar stream, produced as it is read.
///
/// Dropping it stops the producer and workers at their next block.
#[derive(Debug)]
pub struct ArchiveReader {
    current: Vec<u8>,
    at: usize,
    order: Option<Receiver<Receiver<Chunk>>>,
    position: u64,
}

impl ArchiveReader {
    /// Starts archiving `path`: a directory's contents (names relative to it, the directory
    /// itself not included, as govmomi does) or a single file under its own name. `path` itself
    /// must not be a symlink; nothing below it is followed.
    pub fn open(path: &Path, options: PackOptions) -> Result<Self, ArchiveError> {
        let span =
            tracing::debug_span!("archive_pack", path = %path.display(), format = ?options.format);
        let _entered = span.enter();
        let root = rustix::fs::openat(
            CWD,
            path,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| ArchiveError::io("open", path, errno.into()))?;
        let root_stat = rustix::fs::fstat(&root)
            .map_err(|errno| ArchiveError::io("stat", path, errno.into()))?;
        let file_name = path
            .file_name()
            .map(|name| name.as_encoded_bytes().to_vec())
            .unwrap_or_default();

        let (order_tx, order_rx) = mpsc::sync_channel(QUEUE_DEPTH);
        let sink: Box<dyn BlockSink> = match options.format {
            ArchiveFormat::Tar => Box::new(PlainSink { order: order_tx }),
            ArchiveFormat::TarGzip => Box::new(GzipSink::start(order_tx, &options)?),
        };
        let walker = Walker {
            out: TarOut::new(sink),
            names: AccountNames::load(),
            links: HashMap::new(),
            root_path: path.to_path_buf(),
            go_toolbox_trailer: options.go_toolbox_trailer,
        };
        let prefix = options.prefix;
        std::thread::Builder::new()
            .name("archive-pack".into())
            .spawn(move || walker.run(root, root_stat, prefix, file_name))
            .map_err(|error| ArchiveError::Worker(error.to_string()))?;
        Ok(ArchiveReader {
            current: Vec::new(),
            at: 0,
            order: Some(order_rx),
            position: 0,
        })
    }

    /// Bytes handed out so far: the offset the next read continues at.
    pub fn position(&self) -> u64 {
        self.position
    }

    fn next_chunk(&mut self) -> io::Result<bool> {
        let Some(order) = &self.order else {
            return Ok(false);
        };
        let Ok(pending) = order.recv() else {
            self.order = None;
            return Ok(false);
        };
        match pending.recv() {
            Ok(Ok(bytes)) => {
                self.current = bytes;
                self.at = 0;
                Ok(true)
            }
            Ok(Err(error)) => {
                self.order = None;
                Err(error.into())
            }
            Err(_) => {
                self.order = None;
                Err(ArchiveError::Worker("a deflate worker stopped".into()).into())
            }
        }
    }
}

impl Read for ArchiveReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            if self.at == self.current.len() && !self.next_chunk()? {
                break;
            }
            let take = (self.current.len() - self.at).min(buf.len() - filled);
            buf[filled..filled + take].copy_from_slice(&self.current[self.at..self.at + take]);
            self.at += take;
            filled += take;
        }
        self.position += filled as u64;
        Ok(filled)
    }
}

/// The reader went away: stop producing.
struct Stopped;

trait BlockSink: Send {
    fn block(&mut self, data: Vec<u8>, segments: Vec<Segment>) -> Result<(), Stopped>;
    fn finish(
        &mut self,
        data: Vec<u8>,
        segments: Vec<Segment>,
        trailer: &[u8],
    ) -> Result<(), Stopped>;
    fn fail(&mut self, error: ArchiveError);
}

fn send_ready(order: &SyncSender<Receiver<Chunk>>, chunk: Chunk) -> Result<(), Stopped> {
    let (tx, rx) = mpsc::sync_channel(1);
    // A fresh channel with room for one: cannot block or fail.
    let _ = tx.send(chunk);
    order.send(rx).map_err(|_| Stopped)
}

struct PlainSink {
    order: SyncSender<Receiver<Chunk>>,
}

impl BlockSink for PlainSink {
    fn block(&mut self, data: Vec<u8>, _: Vec<Segment>) -> Result<(), Stopped> {
        send_ready(&self.order, Ok(data))
    }

    fn finish(
        &mut self,
        mut data: Vec<u8>,
        _: Vec<Segment>,
        trailer: &[u8],
    ) -> Result<(), Stopped> {
        data.extend_from_slice(trailer);
        send_ready(&self.order, Ok(data))
    }

    fn fail(&mut self, error: ArchiveError) {
        let _ = send_ready(&self.order, Err(error));
    }
}

/// A stretch of a tar block: up to `end`, either file content or tar metadata (headers, padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Segment {
    end: usize,
    content: bool,
}

struct DeflateJob {
    data: Vec<u8>,
    segments: Vec<Segment>,
    dictionary: Vec<u8>,
    last: bool,
    done: SyncSender<Chunk>,
}

struct GzipSink {
    order: SyncSender<Receiver<Chunk>>,
    jobs: Option<SyncSender<DeflateJob>>,
    dictionary: Vec<u8>,
    crc: crc32fast::Hasher,
    length: u64,
}

impl GzipSink {
    fn start(
        order: SyncSender<Receiver<Chunk>>,
        options: &PackOptions,
    ) -> Result<Self, ArchiveError> {
        let (jobs_tx, jobs_rx) = mpsc::sync_channel::<DeflateJob>(QUEUE_DEPTH);
        let jobs_rx = Arc::new(Mutex::new(jobs_rx));
        let level = options.level.min(9);
        for index in 0..options.workers.clamp(1, MAX_WORKERS) {
            let jobs = Arc::clone(&jobs_rx);
            std::thread::Builder::new()
                .name(format!("archive-deflate-{index}"))
                .spawn(move || deflate_worker(&jobs, level))
                .map_err(|error| ArchiveError::Worker(error.to_string()))?;
        }
        // RFC 1952 member header: ID1 ID2 CM=deflate, no flags, no mtime, XFL 0, OS 3 (Unix).
        let header = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 3];
        send_ready(&order, Ok(header)).map_err(|_| ArchiveError::Worker("reader gone".into()))?;
        Ok(GzipSink {
            order,
            jobs: Some(jobs_tx),
            dictionary: Vec::new(),
            crc: crc32fast::Hasher::new(),
            length: 0,
        })
    }

    fn submit(&mut self, data: Vec<u8>, segments: Vec<Segment>, last: bool) -> Result<(), Stopped> {
        self.crc.update(&data);
        self.length += data.len() as u64;
        let keep = data.len().min(DICTIONARY_SIZE);
        let dictionary =
            std::mem::replace(&mut self.dictionary, data[data.len() - keep..].to_vec());
        let (done, result) = mpsc::sync_channel(1);
        let jobs = self.jobs.as_ref().ok_or(Stopped)?;
        jobs.send(DeflateJob {
            data,
            segments,
            dictionary,
            last,
            done,
        })
        .map_err(|_| Stopped)?;
        self.order.send(result).map_err(|_| Stopped)
    }
}

impl BlockSink for GzipSink {
    fn block(&mut self, data: Vec<u8>, segments: Vec<Segment>) -> Result<(), Stopped> {
        self.submit(data, segments, false)
    }

    fn finish(
        &mut self,
        data: Vec<u8>,
        segments: Vec<Segment>,
        trailer: &[u8],
    ) -> Result<(), Stopped> {
        self.submit(data, segments, true)?;
        self.jobs = None;
        let crc = std::mem::take(&mut self.crc).finalize();
        let mut tail = Vec::with_capacity(8 + trailer.len());
        tail.extend_from_slice(&crc.to_le_bytes());
        // ISIZE is the length modulo 2^32 (RFC 1952).
        tail.extend_from_slice(&(self.length as u32).to_le_bytes());
        tail.extend_from_slice(trailer);
        send_ready(&self.order, Ok(tail))
    }

    fn fail(&mut self, error: ArchiveError) {
        self.jobs = None;
        let _ = send_ready(&self.order, Err(error));
    }
}

fn deflate_worker(jobs: &Mutex<Receiver<DeflateJob>>, level: u32) {
    let mut deflate = Compress::new(Compression::new(level), false);
    let mut store = Compress::new(Compression::none(), false);
    loop {
        let job = {
            let Ok(jobs) = jobs.lock() else { return };
            match jobs.recv() {
                Ok(job) => job,
                Err(_) => return,
            }
        };
        let result = deflate_job(&job, level, &mut deflate, &mut store);
        let _ = job.done.send(result);
    }
}

/// Content shorter than this is deflated without a look: the switch would cost more than it saves.
const MIN_STORED_RUN: usize = 8 * 1024;

/// Metadata this short between two stored runs is stored with them rather than switching twice.
const MAX_BRIDGED_METADATA: usize = 2 * 1024;

/// Deflates one block as runs: file content that looks incompressible is stored, the rest
/// deflated, each run primed with the 32 KiB before it and ended with a sync flush (the block's
/// last run in the archive's last block with the final flush).
fn deflate_job(
    job: &DeflateJob,
    level: u32,
    deflate: &mut Compress,
    store: &mut Compress,
) -> Chunk {
    let data = &job.data;
    let mut runs: Vec<(usize, bool)> = Vec::with_capacity(job.segments.len() + 1);
    let mut start = 0;
    for segment in &job.segments {
        let piece = &data[start..segment.end];
        let stored = level > 0
            && segment.content
            && piece.len() >= MIN_STORED_RUN
            && looks_incompressible(piece, deflate);
        runs.push((segment.end, stored));
        start = segment.end;
    }
    if start < data.len() || runs.is_empty() {
        runs.push((data.len(), false));
    }
    // Bridge short metadata between stored runs, then merge equal neighbours.
    for index in 1..runs.len().saturating_sub(1) {
        let length = runs[index].0 - runs[index - 1].0;
        if !runs[index].1
            && runs[index - 1].1
            && runs[index + 1].1
            && length <= MAX_BRIDGED_METADATA
        {
            runs[index].1 = true;
        }
    }
    runs.dedup_by(|later, earlier| {
        if later.1 == earlier.1 {
            earlier.0 = later.0;
            true
        } else {
            false
        }
    });

    // Deflate never grows data by more than 5 bytes per 16 KiB stored block, plus the markers.
    let mut out = Vec::with_capacity(data.len() + data.len() / 1024 + 64 * runs.len());
    let mut start = 0;
    let count = runs.len();
    for (index, &(end, stored)) in runs.iter().enumerate() {
        let finish = job.last && index + 1 == count;
        if stored {
            deflate_run(store, &data[start..end], &[], finish, &mut out)?;
        } else if start >= DICTIONARY_SIZE {
            deflate_run(
                deflate,
                &data[start..end],
                &data[start - DICTIONARY_SIZE..start],
                finish,
                &mut out,
            )?;
        } else {
            let borrowed = job.dictionary.len().min(DICTIONARY_SIZE - start);
            let mut dictionary = job.dictionary[job.dictionary.len() - borrowed..].to_vec();
            dictionary.extend_from_slice(&data[..start]);
            deflate_run(deflate, &data[start..end], &dictionary, finish, &mut out)?;
        }
        start = end;
    }
    Ok(out)
}

/// Spots random-looking content (already compressed files, encrypted data), which deflate would
/// spend most of its time on for nothing, by deflating small samples: if none shrinks by 3 %,
/// the run is stored. A repetition longer than a sample but within deflate's window is missed,
/// which costs some size, never correctness.
fn looks_incompressible(data: &[u8], deflate: &mut Compress) -> bool {
    const SAMPLE: usize = 4096;
    // The start, and the middle of a longer run.
    let starts = [0, (data.len() / 2).min(data.len() - SAMPLE)];
    let samples = if data.len() >= 4 * SAMPLE { 2 } else { 1 };
    let mut out = Vec::with_capacity(SAMPLE + 64);
    for &at in &starts[..samples] {
        let sample = &data[at..at + SAMPLE];
        deflate.reset();
        out.clear();
        match deflate.compress_vec(sample, &mut out, FlushCompress::Finish) {
            Ok(Status::StreamEnd) if out.len() < SAMPLE - SAMPLE / 32 => return false,
            Ok(Status::StreamEnd) => {}
            _ => return false,
        }
    }
    true
}

fn deflate_run(
    engine: &mut Compress,
    data: &[u8],
    dictionary: &[u8],
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(), ArchiveError> {
    let failed = |error: flate2::CompressError| ArchiveError::Worker(format!("deflate: {error}"));
    engine.reset();
    if !dictionary.is_empty() {
        engine.set_dictionary(dictionary).map_err(failed)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let start_in = engine.total_in();
    loop {
        let consumed = (engine.total_in() - start_in) as usize;
        if out.len() == out.capacity() {
            out.reserve(64 * 1024);
        }
        let status = engine
            .compress_vec(&data[consumed..], out, flush)
            .map_err(failed)?;
        let consumed = (engine.total_in() - start_in) as usize;
        let finished = match status {
            Status::StreamEnd => true,
            Status::Ok | Status::BufError => {
                !last && consumed == data.len() && out.len() < out.capacity()
            }
        };
        if finished {
            return Ok(());
        }
    }
}

/// The tar stream under construction, cut into [`BLOCK_SIZE`] pieces.
struct TarOut {
    buf: Vec<u8>,
    fill: usize,
    /// Where file content and metadata alternate in the current block, for the deflate workers.
    segments: Vec<Segment>,
    content: bool,
    sink: Box<dyn BlockSink>,
}

impl TarOut {
    fn new(sink: Box<dyn BlockSink>) -> Self {
        TarOut {
            buf: vec![0; BLOCK_SIZE],
            fill: 0,
            segments: Vec::new(),
            content: false,
            sink,
        }
    }

    fn flush_full(&mut self) -> Result<(), Stopped> {
        if self.fill == BLOCK_SIZE {
            let full = std::mem::replace(&mut self.buf, vec![0; BLOCK_SIZE]);
            self.close_segment();
            self.fill = 0;
            self.sink.block(full, std::mem::take(&mut self.segments))?;
        }
        Ok(())
    }

    /// The stream switches between file content and metadata here.
    fn mark(&mut self, content: bool) {
        if content != self.content {
            self.close_segment();
            self.content = content;
        }
    }

    fn close_segment(&mut self) {
        if self.fill > self.segments.last().map_or(0, |segment| segment.end) {
            self.segments.push(Segment {
                end: self.fill,
                content: self.content,
            });
        }
    }

    fn write(&mut self, mut bytes: &[u8]) -> Result<(), Stopped> {
        self.mark(false);
        while !bytes.is_empty() {
            let take = bytes.len().min(BLOCK_SIZE - self.fill);
            self.buf[self.fill..self.fill + take].copy_from_slice(&bytes[..take]);
            self.fill += take;
            bytes = &bytes[take..];
            self.flush_full()?;
        }
        Ok(())
    }

    fn zeros(&mut self, mut count: usize) -> Result<(), Stopped> {
        while count > 0 {
            let take = count.min(BLOCK_SIZE - self.fill);
            self.buf[self.fill..self.fill + take].fill(0);
            self.fill += take;
            count -= take;
            self.flush_full()?;
        }
        Ok(())
    }

    /// Copies exactly `size` bytes of `file` (zeros if it shrank meanwhile, as GNU tar does, and
    /// never more than announced if it grew), reading straight into the block buffer.
    fn file(&mut self, file: &mut File, size: u64) -> Result<Result<(), io::Error>, Stopped> {
        let mut left = size;
        self.mark(true);
        while left > 0 {
            let room = (BLOCK_SIZE - self.fill).min(usize::try_from(left).unwrap_or(usize::MAX));
            let read = match file.read(&mut self.buf[self.fill..self.fill + room]) {
                Ok(0) => {
                    self.zeros(usize::try_from(left).unwrap_or(usize::MAX))?;
                    return Ok(Ok(()));
                }
                Ok(read) => read,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    // The header promised `size` bytes: keep the stream valid, report the loss.
                    self.zeros(usize::try_from(left).unwrap_or(usize::MAX))?;
                    return Ok(Err(error));
                }
            };
            self.fill += read;
            left -= read as u64;
            self.flush_full()?;
        }
        Ok(Ok(()))
    }

    fn pad(&mut self, size: u64) -> Result<(), Stopped> {
        let partial = (size % 512) as usize;
        if partial != 0 {
            self.zeros(512 - partial)?;
        }
        Ok(())
    }

    fn finish(mut self, trailer: &[u8]) -> Result<(), Stopped> {
        // End of archive: two zero records (POSIX).
        self.zeros(1024)?;
        self.close_segment();
        let mut last = std::mem::take(&mut self.buf);
        last.truncate(self.fill);
        self.sink
            .finish(last, std::mem::take(&mut self.segments), trailer)
    }
}

/// Owner names for the tar headers, read from the account files directly: the static agent has
/// no NSS to ask.
struct AccountNames {
    users: HashMap<u32, Vec<u8>>,
    groups: HashMap<u32, Vec<u8>>,
}

impl AccountNames {
    fn load() -> Self {
        AccountNames {
            users: read_account_file(Path::new("/etc/passwd")),
            groups: read_account_file(Path::new("/etc/group")),
        }
    }
}

/// `name:password:id:...` lines; the first name for an id wins.
fn read_account_file(path: &Path) -> HashMap<u32, Vec<u8>> {
    let mut names = HashMap::new();
    let Ok(file) = File::open(path) else {
        return names;
    };
    let mut text = Vec::new();
    if file.take(MAX_ACCOUNT_FILE).read_to_end(&mut text).is_err() {
        return names;
    }
    for line in text.split(|&byte| byte == b'\n') {
        let mut fields = line.split(|&byte| byte == b':');
        let (Some(name), Some(_), Some(id)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Some(id) = std::str::from_utf8(id).ok().and_then(|id| id.parse().ok()) else {
            continue;
        };
        names.entry(id).or_insert_with(|| name.to_vec());
    }
    names
}

struct Frame {
    dir: Dir,
    path_len: usize,
}

struct Walker {
    out: TarOut,
    names: AccountNames,
    links: HashMap<(u64, u64), Vec<u8>>,
    root_path: PathBuf,
    go_toolbox_trailer: bool,
}

impl Walker {
    fn run(mut self, root: OwnedFd, root_stat: Stat, prefix: Vec<u8>, file_name: Vec<u8>) {
        let result = if FileType::from_raw_mode(root_stat.st_mode) == FileType::Directory {
            self.walk(root, prefix)
        } else {
            let mut name = prefix;
            name.extend_from_slice(&file_name);
            self.regular(File::from(root), &name).map(|_| ())
        };
        let trailer: &[u8] = if self.go_toolbox_trailer {
            &GO_TOOLBOX_TRAILER
        } else {
            &[]
        };
        match result {
            Ok(()) => {
                let _ = self.out.finish(trailer);
            }
            Err(WalkError::Stopped) => {}
            Err(WalkError::Failed(error)) => self.out.sink.fail(error),
        }
    }

    fn walk(&mut self, root: OwnedFd, mut path: Vec<u8>) -> Result<(), WalkError> {
        let root_path = self.root_path.clone();
        let dir = Dir::new(root)
            .map_err(|errno| ArchiveError::io("read directory", root_path, errno.into()))?;
        let mut stack = vec![Frame {
            path_len: path.len(),
            dir,
        }];
        loop {
            let depth = stack.len();
            let Some(frame) = stack.last_mut() else { break };
            let entry = match frame.dir.read() {
                None => {
                    stack.pop();
                    continue;
                }
                Some(Err(errno)) => {
                    tracing::warn!(path = %String::from_utf8_lossy(&path), %errno, "directory listing cut short");
                    stack.pop();
                    continue;
                }
                Some(Ok(entry)) => entry,
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            path.truncate(frame.path_len);
            path.extend_from_slice(name);
            let Ok(fd) = frame.dir.fd() else {
                stack.pop();
                continue;
            };
            let stat = match rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(stat) => stat,
                Err(errno) => {
                    tracing::warn!(path = %String::from_utf8_lossy(&path), %errno, "skipped: cannot stat");
                    continue;
                }
            };
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    path.push(b'/');
                    self.header(EntryType::Directory, &path, None, &stat, 0)?;
                    if depth >= MAX_OPEN_DEPTH {
                        tracing::warn!(path = %String::from_utf8_lossy(&path), "skipped: deeper than {MAX_OPEN_DEPTH} directories");
                        continue;
                    }
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    match rustix::fs::openat(fd, name, flags, Mode::empty()).and_then(Dir::new) {
                        Ok(dir) => stack.push(Frame {
                            dir,
                            path_len: path.len(),
                        }),
                        Err(errno) => {
                            tracing::warn!(path = %String::from_utf8_lossy(&path), %errno, "skipped contents: cannot open directory");
                        }
                    }
                }
                FileType::RegularFile => {
                    let flags =
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
                    match rustix::fs::openat(fd, name, flags, Mode::empty()) {
                        Ok(file) => {
                            let path = path.clone();
                            self.regular(File::from(file), &path)?;
                        }
                        Err(errno) => {
                            tracing::warn!(path = %String::from_utf8_lossy(&path), %errno, "skipped: cannot open");
                        }
                    }
                }
                FileType::Symlink => match rustix::fs::readlinkat(fd, name, Vec::new()) {
                    Ok(target) => {
                        let path = path.clone();
                        self.header(EntryType::Symlink, &path, Some(target.as_bytes()), &stat, 0)?;
                    }
                    Err(errno) => {
                        tracing::warn!(path = %String::from_utf8_lossy(&path), %errno, "skipped: cannot read link");
                    }
                },
                // Recorded as GNU tar does (header only); the unpacker does not create them.
                FileType::Fifo => self.header(EntryType::Fifo, &path.clone(), None, &stat, 0)?,
                FileType::CharacterDevice => {
                    self.header(EntryType::Char, &path.clone(), None, &stat, 0)?
                }
                FileType::BlockDevice => {
                    self.header(EntryType::Block, &path.clone(), None, &stat, 0)?
                }
                // Sockets have no content a tar can carry (GNU tar skips them too).
                _ => tracing::debug!(path = %String::from_utf8_lossy(&path), "skipped: socket"),
            }
        }
        Ok(())
    }

    fn regular(&mut self, mut file: File, path: &[u8]) -> Result<(), WalkError> {
        let stat = rustix::fs::fstat(file.as_fd()).map_err(|errno| {
            ArchiveError::io(
                "stat",
                PathBuf::from(String::from_utf8_lossy(path).into_owned()),
                errno.into(),
            )
        })?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            // Replaced by something else between the stat and the open.
            return Ok(());
        }
        if stat.st_nlink > 1 {
            let key = (stat.st_dev, stat.st_ino);
            if let Some(first) = self.links.get(&key) {
                let first = first.clone();
                return self.header(EntryType::Link, path, Some(&first), &stat, 0);
            }
            if self.links.len() < MAX_TRACKED_HARDLINKS {
                self.links.insert(key, path.to_vec());
            }
        }
        let size = u64::try_from(stat.st_size).unwrap_or(0);
        self.header(EntryType::Regular, path, None, &stat, size)?;
        if let Err(error) = self
            .out
            .file(&mut file, size)
            .map_err(|_| WalkError::Stopped)?
        {
            tracing::warn!(path = %String::from_utf8_lossy(path), %error, "read failed; rest of the file stored as zeros");
        }
        self.out.pad(size)?;
        Ok(())
    }

    /// Writes an entry's header, preceded by GNU long-name / long-link entries when the name or
    /// link target does not fit the 100 bytes of the header.
    fn header(
        &mut self,
        kind: EntryType,
        path: &[u8],
        link: Option<&[u8]>,
        stat: &Stat,
        size: u64,
    ) -> Result<(), WalkError> {
        if path.len() > 100 {
            self.long_name(EntryType::GNULongName, path)?;
        }
        if let Some(link) = link.filter(|link| link.len() > 100) {
            self.long_name(EntryType::GNULongLink, link)?;
        }
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(stat.st_mode & 0o7777);
        header.set_uid(u64::from(stat.st_uid));
        header.set_gid(u64::from(stat.st_gid));
        header.set_mtime(u64::try_from(stat.st_mtime).unwrap_or(0));
        header.set_size(size);
        if matches!(kind, EntryType::Char | EntryType::Block) {
            let device = stat.st_rdev;
            let _ = header.set_device_major(rustix::fs::major(device));
            let _ = header.set_device_minor(rustix::fs::minor(device));
        }
        if let Some(gnu) = header.as_gnu_mut() {
            copy_field(&mut gnu.name, path);
            if let Some(link) = link {
                copy_field(&mut gnu.linkname, link);
            }
            if let Some(user) = self.names.users.get(&stat.st_uid) {
                copy_field(&mut gnu.uname, user);
            }
            if let Some(group) = self.names.groups.get(&stat.st_gid) {
                copy_field(&mut gnu.gname, group);
            }
        }
        header.set_cksum();
        self.out.write(header.as_bytes())?;
        Ok(())
    }

    fn long_name(&mut self, kind: EntryType, name: &[u8]) -> Result<(), WalkError> {
        let mut header = Header::new_gnu();
        header.set_entry_type(kind);
        header.set_mode(0o644);
        let size = name.len() as u64 + 1;
        header.set_size(size);
        if let Some(gnu) = header.as_gnu_mut() {
            copy_field(&mut gnu.name, b"././@LongLink");
        }
        header.set_cksum();
        self.out.write(header.as_bytes())?;
        self.out.write(name)?;
        self.out.write(&[0])?;
        self.out.pad(size)?;
        Ok(())
    }
}

fn copy_field(field: &mut [u8], value: &[u8]) {
    let take = value.len().min(field.len());
    field[..take].copy_from_slice(&value[..take]);
    field[take..].fill(0);
}

enum WalkError {
    Stopped,
    Failed(ArchiveError),
}

impl From<Stopped> for WalkError {
    fn from(_: Stopped) -> Self {
        WalkError::Stopped
    }
}

impl From<ArchiveError> for WalkError {
    fn from(error: ArchiveError) -> Self {
        WalkError::Failed(error)
    }
}
