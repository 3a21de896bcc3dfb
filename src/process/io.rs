//! Process I/O as files, govmomi's convention (toolbox/process/process.go): a program started
//! without an absolute path gets pipes, and the host writes its standard input and reads its
//! output through the HGFS paths `/proc/<pid>/stdin`, `/proc/<pid>/stdout` and
//! `/proc/<pid>/stderr`.
//!
//! Each stream is a [`Bounded`] buffer between the pipe and the host. A thread per stream
//! moves bytes between the two: for output it reads the pipe into the buffer and stops
//! reading while the buffer is full, so the child blocks on its full pipe (back-pressure)
//! and nothing grows without bound; for input it writes what the host sent into the pipe.
//! Host reads and writes wait a bounded time ([`IO_WAIT`]) so that one slow stream never
//! holds the user's helper (whose requests are served one at a time) for long.

use super::manager::ProcessManager;
use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use toolbox_hgfs::proto::Status;
use toolbox_hgfs::{Access, FileAttr, FileHandler, HgfsError, OpenFile, OpenIntent};

/// Bytes buffered per stream beyond the kernel's pipe: with the pipe's own 64 KiB this is
/// what a program can write to a stream nobody reads before it blocks.
pub const STREAM_BUFFER: usize = 1024 * 1024;

/// Longest a host read waits for output, or a host write for room, before the request is
/// answered (with what is there, or a timeout the host retries on).
pub const IO_WAIT: Duration = Duration::from_secs(5);

/// How long a stat of an output stream waits for the program to end, so that a short
/// program's output has its exact size (govmomi waits 1 s too).
pub const STAT_WAIT: Duration = Duration::from_secs(1);

/// The size an output stream reports while its end is not known: a reader reads until a
/// read returns nothing.
pub const SIZE_UNKNOWN: u64 = i64::MAX as u64;

/// Stack of the threads that move stream bytes (they only copy).
const PUMP_STACK: usize = 128 * 1024;

/// Bytes a pump moves per system call.
const PUMP_CHUNK: usize = 64 * 1024;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Default)]
struct BoundedState {
    data: VecDeque<u8>,
    /// No more bytes will be pushed.
    writer_done: bool,
    /// Nobody will pop any more.
    reader_gone: bool,
    /// Bytes popped so far.
    consumed: u64,
}

/// A byte queue of bounded size: the producer waits while it is full, the consumer while it
/// is empty.
#[derive(Debug)]
pub struct Bounded {
    state: Mutex<BoundedState>,
    changed: Condvar,
    capacity: usize,
}

impl Bounded {
    /// An empty queue holding at most `capacity` bytes.
    pub fn new(capacity: usize) -> Arc<Bounded> {
        Arc::new(Bounded {
            state: Mutex::new(BoundedState::default()),
            changed: Condvar::new(),
            capacity: capacity.max(1),
        })
    }

    /// Queues all of `data`, waiting for room for at most `wait` (`None`: as long as it
    /// takes). Returns how many bytes were queued (fewer than asked only on a timeout after
    /// some went in); `BrokenPipe` once the consumer is gone.
    pub fn push(&self, mut data: &[u8], wait: Option<Duration>) -> io::Result<usize> {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut queued = 0;
        let mut st = lock(&self.state);
        while !data.is_empty() {
            if st.reader_gone {
                return Err(io::Error::from(io::ErrorKind::BrokenPipe));
            }
            let room = self.capacity.saturating_sub(st.data.len());
            if room > 0 {
                let n = room.min(data.len());
                st.data.extend(&data[..n]);
                data = &data[n..];
                queued += n;
                self.changed.notify_all();
                continue;
            }
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return if queued > 0 {
                            Ok(queued)
                        } else {
                            Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "the program is not reading its input",
                            ))
                        };
                    }
                    self.changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        Ok(queued)
    }

    /// Takes up to `buf.len()` bytes, waiting for some for at most `wait` (`None`: as long
    /// as it takes). 0 means the producer is done and everything was taken.
    pub fn pop(&self, buf: &mut [u8], wait: Option<Duration>) -> io::Result<usize> {
        let deadline = wait.map(|w| Instant::now() + w);
        let mut st = lock(&self.state);
        loop {
            if !st.data.is_empty() || buf.is_empty() {
                let (front, _) = st.data.as_slices();
                let n = front.len().min(buf.len());
                buf[..n].copy_from_slice(&front[..n]);
                st.data.drain(..n);
                st.consumed += n as u64;
                self.changed.notify_all();
                return Ok(n);
            }
            if st.writer_done {
                return Ok(0);
            }
            st = match deadline {
                None => self.changed.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no output from the program yet",
                        ));
                    }
                    self.changed
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The producer is done: the consumer gets 0 once the queue is empty.
    pub fn close_writer(&self) {
        lock(&self.state).writer_done = true;
        self.changed.notify_all();
    }

    /// The consumer is gone: pushes fail, what is queued is dropped.
    pub fn close_reader(&self) {
        let mut st = lock(&self.state);
        st.reader_gone = true;
        st.data = VecDeque::new();
        self.changed.notify_all();
    }

    /// Bytes queued now.
    pub fn len(&self) -> usize {
        lock(&self.state).data.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the producer is done.
    pub fn writer_done(&self) -> bool {
        lock(&self.state).writer_done
    }

    /// Waits until the producer is done, for at most `wait`; true if it is.
    pub fn wait_writer_done(&self, wait: Duration) -> bool {
        let deadline = Instant::now() + wait;
        let mut st = lock(&self.state);
        while !st.writer_done {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Which stream of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    /// Standard input (the host writes).
    Stdin,
    /// Standard output (the host reads).
    Stdout,
    /// Standard error (the host reads).
    Stderr,
}

impl Stream {
    fn parse(name: &str) -> Option<Stream> {
        match name {
            "stdin" => Some(Stream::Stdin),
            "stdout" => Some(Stream::Stdout),
            "stderr" => Some(Stream::Stderr),
            _ => None,
        }
    }
}

/// The host's ends of one process's three streams.
#[derive(Debug)]
pub struct ProcessIo {
    /// What the host wrote, on its way to the program's standard input.
    pub stdin: Arc<Bounded>,
    /// The program's standard output.
    pub stdout: Arc<Bounded>,
    /// The program's standard error.
    pub stderr: Arc<Bounded>,
}

impl ProcessIo {
    /// Starts the pumps between the pipes' parent ends and the buffers.
    pub fn attach(stdin: File, stdout: File, stderr: File, capacity: usize) -> io::Result<Self> {
        let io = ProcessIo {
            stdin: Bounded::new(capacity),
            stdout: Bounded::new(capacity),
            stderr: Bounded::new(capacity),
        };
        spawn_feeder(stdin, io.stdin.clone())?;
        spawn_drainer(stdout, io.stdout.clone(), "stdout")?;
        spawn_drainer(stderr, io.stderr.clone(), "stderr")?;
        Ok(io)
    }

    /// The buffer of `stream`.
    pub fn stream(&self, stream: Stream) -> &Arc<Bounded> {
        match stream {
            Stream::Stdin => &self.stdin,
            Stream::Stdout => &self.stdout,
            Stream::Stderr => &self.stderr,
        }
    }

    /// The process record is gone: stop feeding and drop buffered output (the pumps then
    /// discard whatever else the program writes, so it never blocks on a stream nobody can
    /// read any more).
    pub fn release(&self) {
        self.stdin.close_reader();
        self.stdout.close_reader();
        self.stderr.close_reader();
    }
}

fn spawn_drainer(mut pipe: File, buffer: Arc<Bounded>, name: &'static str) -> io::Result<()> {
    std::thread::Builder::new()
        .name(format!("proc-{name}"))
        .stack_size(PUMP_STACK)
        .spawn(move || {
            let mut chunk = vec![0u8; PUMP_CHUNK];
            loop {
                match pipe.read(&mut chunk) {
                    Ok(0) => break,
                    // Once nobody reads, keep draining so the program does not block.
                    Ok(n) => {
                        let _ = buffer.push(&chunk[..n], None);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            buffer.close_writer();
        })
        .map(drop)
}

fn spawn_feeder(mut pipe: File, buffer: Arc<Bounded>) -> io::Result<()> {
    std::thread::Builder::new()
        .name("proc-stdin".into())
        .stack_size(PUMP_STACK)
        .spawn(move || {
            let mut chunk = vec![0u8; PUMP_CHUNK];
            loop {
                match buffer.pop(&mut chunk, None) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if pipe.write_all(&chunk[..n]).is_err() {
                            // The program closed its input: refuse further writes.
                            buffer.close_reader();
                            break;
                        }
                    }
                }
            }
            // Dropping the pipe is the program's end of file.
        })
        .map(drop)
}

/// Splits `/proc/<pid>/<stream>` (with or without the leading `/`, a `?query` ignored).
pub fn parse_stream_path(path: &Path) -> Option<(i64, Stream)> {
    let s = path.to_str()?;
    let s = s.split_once('?').map_or(s, |(p, _)| p);
    let s = s.strip_prefix('/').unwrap_or(s);
    let rest = s.strip_prefix("proc/")?;
    let (pid, stream) = rest.split_once('/')?;
    if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((pid.parse().ok()?, Stream::parse(stream)?))
}

/// The [`FileHandler`] that serves the streams of the processes a [`ProcessManager`]
/// started with I/O. Register it with the helper's HGFS server in front of plain files:
/// `server.register_handler(Box::new(ProcessFiles::new(manager)))`. Paths of processes it
/// does not know (real `/proc` files) are left to the next handler.
#[derive(Debug, Clone)]
pub struct ProcessFiles {
    manager: Arc<ProcessManager>,
}

impl ProcessFiles {
    /// Serves `manager`'s processes.
    pub fn new(manager: Arc<ProcessManager>) -> Self {
        Self { manager }
    }

    fn lookup(&self, path: &Path) -> Result<(i64, Stream, Arc<ProcessIo>), HgfsError> {
        let (pid, stream) = parse_stream_path(path).ok_or_else(|| {
            HgfsError::refused(Status::NO_SUCH_FILE_OR_DIR, "not a process stream")
        })?;
        let io = self.manager.io(pid).ok_or_else(|| {
            HgfsError::refused(
                Status::NO_SUCH_FILE_OR_DIR,
                format!("process {pid} has no I/O"),
            )
        })?;
        Ok((pid, stream, io))
    }
}

impl FileHandler for ProcessFiles {
    fn claims(&self, path: &Path) -> bool {
        parse_stream_path(path).is_some_and(|(pid, _)| self.manager.io(pid).is_some())
    }

    fn stat(&self, path: &Path) -> Result<FileAttr, HgfsError> {
        let (_, stream, io) = self.lookup(path)?;
        Ok(match stream {
            Stream::Stdin => FileAttr::virtual_file(0, 0o200),
            Stream::Stdout | Stream::Stderr => {
                let buffer = io.stream(stream);
                // A short program's whole output then has its exact size; a longer one
                // streams (the buffer is bounded, so it may not end before it is read).
                let size = if buffer.wait_writer_done(STAT_WAIT) {
                    buffer.len() as u64
                } else {
                    SIZE_UNKNOWN
                };
                FileAttr::virtual_file(size, 0o400)
            }
        })
    }

    fn open(&self, path: &Path, intent: &OpenIntent) -> Result<Box<dyn OpenFile>, HgfsError> {
        let (pid, stream, io) = self.lookup(path)?;
        let wrong = |what: &str| {
            HgfsError::refused(
                Status::ACCESS_DENIED,
                format!(
                    "process {pid}: {what} is {}",
                    if what == "stdin" {
                        "write-only"
                    } else {
                        "read-only"
                    }
                ),
            )
        };
        match (stream, intent.access) {
            (Stream::Stdin, Access::Write) => Ok(Box::new(StreamFile {
                buffer: io.stdin.clone(),
                writes: true,
                written: 0,
            })),
            (Stream::Stdout | Stream::Stderr, Access::Read) => Ok(Box::new(StreamFile {
                buffer: io.stream(stream).clone(),
                writes: false,
                written: 0,
            })),
            (Stream::Stdin, _) => Err(wrong("stdin")),
            (Stream::Stdout, _) => Err(wrong("stdout")),
            (Stream::Stderr, _) => Err(wrong("stderr")),
        }
    }
}

/// One open stream.
#[derive(Debug)]
struct StreamFile {
    buffer: Arc<Bounded>,
    writes: bool,
    written: u64,
}

impl OpenFile for StreamFile {
    fn read_at(&mut self, _offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        if self.writes {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        self.buffer.pop(buf, Some(IO_WAIT))
    }

    fn write_at(&mut self, _offset: Option<u64>, data: &[u8]) -> io::Result<usize> {
        if !self.writes {
            return Err(io::Error::from_raw_os_error(libc::EBADF));
        }
        let n = self.buffer.push(data, Some(IO_WAIT))?;
        self.written += n as u64;
        Ok(n)
    }

    fn attr(&self) -> io::Result<FileAttr> {
        Ok(if self.writes {
            FileAttr::virtual_file(self.written, 0o200)
        } else {
            FileAttr::virtual_file(self.buffer.len() as u64, 0o400)
        })
    }

    fn close(self: Box<Self>) -> io::Result<()> {
        // Closing standard input is the program's end of file (govmomi closes it the same
        // way when the transfer to the guest finishes).
        if self.writes {
            self.buffer.close_writer();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_paths() {
        assert_eq!(
            parse_stream_path(Path::new("/proc/42/stdout")),
            Some((42, Stream::Stdout))
        );
        assert_eq!(
            parse_stream_path(Path::new("proc/7/stdin?x=1")),
            Some((7, Stream::Stdin))
        );
        assert_eq!(parse_stream_path(Path::new("/proc/self/stdout")), None);
        assert_eq!(parse_stream_path(Path::new("/proc/1/fd")), None);
        assert_eq!(parse_stream_path(Path::new("/proc//stdout")), None);
        assert_eq!(parse_stream_path(Path::new("/etc/42/stdout")), None);
    }

    #[test]
    fn bounded_waits_and_ends() {
        let q = Bounded::new(4);
        assert_eq!(
            q.push(b"abcdef", Some(Duration::from_millis(20))).unwrap(),
            4
        );
        let mut buf = [0u8; 8];
        assert_eq!(q.pop(&mut buf, Some(Duration::ZERO)).unwrap(), 4);
        assert_eq!(&buf[..4], b"abcd");
        let err = q
            .pop(&mut buf, Some(Duration::from_millis(10)))
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        q.close_writer();
        assert_eq!(q.pop(&mut buf, None).unwrap(), 0);
        q.close_reader();
        assert_eq!(
            q.push(b"x", None).unwrap_err().kind(),
            io::ErrorKind::BrokenPipe
        );
    }
}
