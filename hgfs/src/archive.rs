//! Directory archives: a directory read from the guest streams out as a tar or gzip'd tar, and a tar
//! or tar.gz written to a directory unpacks into it, as govmomi's toolbox presents them
//! (`toolbox/hgfs/archive.go`): the archive is a pseudo-file whose name is the directory's path,
//! optionally with `?format=tar|tgz` and `prefix=NAME`.
//!
//! Both directions are plain blocking Rust over [`std::io::Read`] / [`std::io::Write`] with bounded
//! memory, so the HGFS server can serve them chunk by chunk at increasing offsets:
//!
//! * [`ArchiveReader`] (guest → host) walks the directory with `openat`/`O_NOFOLLOW`, never following
//!   a symlink, and produces the tar stream in fixed-size blocks on a producer thread. For
//!   [`ArchiveFormat::TarGzip`] the blocks are deflated on worker threads (pigz's scheme: each block
//!   primed with the previous 32 KiB as dictionary and ended on a byte boundary), so the result is a
//!   *single* gzip member, identical in shape to what `gzip` writes. A single member matters: govc
//!   stops reading a toolbox download when a read ends in a gzip header, so concatenated members
//!   could end a transfer early.
//! * [`ArchiveWriter`] (host → guest) parses the stream as it arrives (gzip detected by its magic)
//!   and never writes outside the target directory: see [`unpack`] for the rules.

mod handler;
mod pack;
mod unpack;

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

pub use handler::{archive_target, ArchiveFiles, ARCHIVE_MODE, ARCHIVE_REPORTED_SIZE};
pub use pack::{ArchiveReader, PackOptions, DEFAULT_LEVEL, MAX_WORKERS};
pub use unpack::{unpack, ArchiveWriter, UnpackOptions, UnpackSummary};

/// The URL scheme under which govmomi's toolbox registers its archive handler, as in
/// `/archive:/var/log?format=tgz` (`toolbox/hgfs/archive.go`).
pub const ARCHIVE_SCHEME: &str = "archive";

/// The bytes govmomi's toolbox appends after every archive it streams out: a gzip header's first
/// three bytes (ID1, ID2, CM of RFC 1952). The VMX needs a Content-Length it cannot know, so
/// govc's reader (`guest/toolbox/client.go`) stops when a read ends in these bytes and drops them.
pub const GO_TOOLBOX_TRAILER: [u8; 3] = [0x1f, 0x8b, 0x08];

/// The archive's encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// Plain (GNU) tar.
    Tar,
    /// Gzip'd tar.
    TarGzip,
}

/// What an archive pseudo-file's query asks for: `format=tar|tgz` and `prefix=NAME`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveQuery {
    /// `format`: empty or `tar` is a plain tar, `tgz` a gzip'd one (govmomi's reading).
    pub format: ArchiveFormat,
    /// `prefix`: put before every name in the archive (percent-decoded; govmomi notes that the VMX
    /// trims a trailing `/`, so a client sends `%2F`).
    pub prefix: Vec<u8>,
}

impl ArchiveQuery {
    /// Parses the part after `?`, e.g. `format=tgz&prefix=logs%2F`. Unknown keys are ignored, an
    /// unknown format or a bad percent escape is an error.
    pub fn parse(query: &str) -> Result<Self, ArchiveError> {
        let mut parsed = ArchiveQuery {
            format: ArchiveFormat::Tar,
            prefix: Vec::new(),
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            match key {
                "format" => {
                    parsed.format = match value.as_slice() {
                        b"" | b"tar" => ArchiveFormat::Tar,
                        b"tgz" => ArchiveFormat::TarGzip,
                        _ => {
                            return Err(ArchiveError::UnknownFormat(
                                String::from_utf8_lossy(&value).into_owned(),
                            ))
                        }
                    }
                }
                "prefix" => parsed.prefix = value,
                _ => {}
            }
        }
        Ok(parsed)
    }
}

/// A transfer name in govmomi's archive form, `/archive:/DIR?QUERY` (the leading `/` is what
/// HGFS names carry; `toolbox/hgfs/server.go` strips it and parses the rest as a URL): the
/// percent-decoded directory and the query. `None` for any other name; a plain directory path is
/// also served as an archive (with an empty query), which the server decides by `stat`.
pub fn parse_archive_name(name: &str) -> Result<Option<(PathBuf, ArchiveQuery)>, ArchiveError> {
    let unrooted = name.strip_prefix('/').unwrap_or(name);
    let Some(rest) = unrooted
        .strip_prefix(ARCHIVE_SCHEME)
        .and_then(|rest| rest.strip_prefix(':'))
    else {
        return Ok(None);
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = percent_decode_path(path)?;
    Ok(Some((
        PathBuf::from(std::ffi::OsString::from_vec(path)),
        ArchiveQuery::parse(query)?,
    )))
}

/// Percent escapes only: in a URL's path `+` is a plus.
fn percent_decode_path(text: &str) -> Result<Vec<u8>, ArchiveError> {
    let mut out = Vec::with_capacity(text.len());
    for (index, piece) in text.split('+').enumerate() {
        if index > 0 {
            out.push(b'+');
        }
        out.extend(percent_decode(piece)?);
    }
    Ok(out)
}

fn percent_decode(text: &str) -> Result<Vec<u8>, ArchiveError> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = bytes
                    .get(at + 1..at + 3)
                    .and_then(|hex| std::str::from_utf8(hex).ok())
                    .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                    .ok_or_else(|| ArchiveError::BadQuery(text.to_owned()))?;
                out.push(hex);
                at += 3;
            }
            b'+' => {
                out.push(b' ');
                at += 1;
            }
            byte => {
                out.push(byte);
                at += 1;
            }
        }
    }
    Ok(out)
}

/// What went wrong while packing or unpacking an archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file system call failed on a path (relative to the archive's directory where it is one).
    #[error("{op} {path:?}: {source}")]
    Io {
        /// The call, e.g. `open`, `rename`.
        op: &'static str,
        /// The path it acted on.
        path: PathBuf,
        /// The error the kernel gave.
        #[source]
        source: std::io::Error,
    },
    /// An entry whose name or link target would leave the target directory, or pass through a
    /// symlink or non-directory.
    #[error("archive entry {name:?} refused: {reason}")]
    UnsafeEntry {
        /// The entry's name as the archive gives it (lossy UTF-8).
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The tar stream is malformed.
    #[error("corrupt archive at byte {offset} of the tar stream: {reason}")]
    Corrupt {
        /// Offset in the (decompressed) tar stream.
        offset: u64,
        /// What is wrong.
        reason: String,
    },
    /// The gzip layer is malformed.
    #[error("corrupt gzip stream: {0}")]
    Gzip(#[source] std::io::Error),
    /// The stream ended before the archive did.
    #[error("archive truncated at byte {offset} of the tar stream ({state})")]
    Truncated {
        /// Offset in the (decompressed) tar stream.
        offset: u64,
        /// Where it stopped.
        state: &'static str,
    },
    /// A `format` other than `tar` or `tgz`.
    #[error("unknown archive format {0:?} (expected tar or tgz)")]
    UnknownFormat(String),
    /// A query with a bad percent escape.
    #[error("bad archive query {0:?}")]
    BadQuery(String),
    /// The unpacker was used after it failed or finished.
    #[error("archive unpacking already stopped")]
    Stopped,
    /// A worker thread of the packer could not be started or died.
    #[error("archive worker thread: {0}")]
    Worker(String),
}

impl ArchiveError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ArchiveError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    /// The errno-like kind the HGFS server can map to a status.
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            ArchiveError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

impl From<ArchiveError> for std::io::Error {
    fn from(error: ArchiveError) -> Self {
        match error {
            ArchiveError::Io { ref source, .. } => std::io::Error::new(source.kind(), error),
            other => std::io::Error::new(std::io::ErrorKind::InvalidData, other),
        }
    }
}

/// Entry points for the fuzz targets.
#[doc(hidden)]
pub mod fuzzing {
    use std::io::Write;

    /// Unpacks arbitrary bytes into a fresh temporary directory and checks that nothing appeared
    /// beside it.
    pub fn tar_stream(data: &[u8]) {
        let Ok(outer) = tempfile_dir() else { return };
        let target = outer.join("target");
        if std::fs::create_dir(&target).is_err() {
            return;
        }
        if let Ok(mut writer) =
            super::ArchiveWriter::create(&target, super::UnpackOptions::default())
        {
            // Chunked like HGFS writes, so the parser's resumption is exercised too.
            let mut ok = true;
            for chunk in data.chunks(4093) {
                if writer.write_all(chunk).is_err() {
                    ok = false;
                    break;
                }
            }
            if ok {
                let _ = writer.finish();
            }
        }
        let beside: Vec<_> = std::fs::read_dir(&outer)
            .map(|entries| {
                entries
                    .filter_map(|entry| entry.ok())
                    .map(|e| e.file_name())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            beside,
            vec![std::ffi::OsString::from("target")],
            "wrote outside the target"
        );
        let _ = std::fs::remove_dir_all(&outer);
    }

    fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tar-stream-fuzz-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir)?;
        Ok(dir)
    }
}
