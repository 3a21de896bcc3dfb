//! Directory archives as HGFS files: the [`FileHandler`] that serves govmomi's archive names.
//!
//! A name `/archive:/DIR?format=tgz` (govmomi's toolbox form) or `/DIR?format=tar|tgz` (what
//! govc sends for a directory) reads as the directory packed on the fly and, opened for
//! writing, unpacks what is written into the directory. Reads and writes must come in order, as
//! the VMX sends them; the stream is never buffered whole.

use super::{
    parse_archive_name, ArchiveQuery, ArchiveReader, ArchiveWriter, PackOptions, UnpackOptions,
};
use crate::error::HgfsError;
use crate::handler::{FileAttr, FileHandler, OpenFile, OpenIntent};
use crate::proto::Status;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The size an archive pseudo-file reports: unknown ahead of packing, so as large as can be, as
/// govmomi's toolbox reports it; the reader stops at the stream's end.
pub const ARCHIVE_REPORTED_SIZE: u64 = i64::MAX as u64;
/// Mode an archive pseudo-file reports.
pub const ARCHIVE_MODE: u32 = 0o600;

/// Serves archive names.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArchiveFiles;

/// The directory and query an archive name stands for; `None` for any other name.
pub fn archive_target(path: &Path) -> Option<Result<(PathBuf, ArchiveQuery), HgfsError>> {
    let name = std::str::from_utf8(path.as_os_str().as_bytes()).ok()?;
    let bad = |e: super::ArchiveError| HgfsError::refused(Status::INVALID_PARAMETER, e.to_string());
    match parse_archive_name(name) {
        Ok(Some(found)) => return Some(Ok(found)),
        Ok(None) => {}
        Err(e) => return Some(Err(bad(e))),
    }
    let (dir, query) = name.split_once('?')?;
    Some(
        ArchiveQuery::parse(query)
            .map(|q| (PathBuf::from(dir), q))
            .map_err(bad),
    )
}

impl FileHandler for ArchiveFiles {
    fn claims(&self, path: &Path) -> bool {
        archive_target(path).is_some()
    }

    fn stat(&self, path: &Path) -> Result<FileAttr, HgfsError> {
        let (dir, _) = archive_target(path).ok_or_else(|| {
            HgfsError::refused(Status::INVALID_PARAMETER, "not an archive name")
        })??;
        let meta =
            std::fs::metadata(&dir).map_err(|e| HgfsError::io(dir.display().to_string(), e))?;
        if !meta.is_dir() {
            return Err(HgfsError::refused(
                Status::NOT_DIRECTORY,
                format!("{}: not a directory", dir.display()),
            ));
        }
        Ok(FileAttr::virtual_file(ARCHIVE_REPORTED_SIZE, ARCHIVE_MODE))
    }

    fn open(&self, path: &Path, intent: &OpenIntent) -> Result<Box<dyn OpenFile>, HgfsError> {
        let (dir, query) = archive_target(path).ok_or_else(|| {
            HgfsError::refused(Status::INVALID_PARAMETER, "not an archive name")
        })??;
        let at = |e: super::ArchiveError| HgfsError::io(dir.display().to_string(), e.into());
        if intent.access.writes() {
            let writer = ArchiveWriter::create(&dir, UnpackOptions::default()).map_err(at)?;
            return Ok(Box::new(Unpacking {
                writer: Some(writer),
                written: 0,
            }));
        }
        let mut options = PackOptions::new(query.format);
        options.prefix = query.prefix;
        let reader = ArchiveReader::open(&dir, options).map_err(at)?;
        Ok(Box::new(Packing { reader }))
    }
}

fn out_of_order(what: &str, wanted: u64, got: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what} at offset {got}, the stream is at {wanted}: archives go in order"),
    )
}

struct Packing {
    reader: ArchiveReader,
}

impl OpenFile for Packing {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> io::Result<usize> {
        let at = self.reader.position();
        if offset != at {
            return Err(out_of_order("read", at, offset));
        }
        let mut filled = 0;
        // Fill the request as far as the stream goes: a short read tells the VMX it ended.
        while filled < buf.len() {
            match self.reader.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }

    fn write_at(&mut self, _offset: Option<u64>, _data: &[u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "an archive opened for reading",
        ))
    }

    fn attr(&self) -> io::Result<FileAttr> {
        Ok(FileAttr::virtual_file(ARCHIVE_REPORTED_SIZE, ARCHIVE_MODE))
    }

    fn close(self: Box<Self>) -> io::Result<()> {
        Ok(())
    }
}

struct Unpacking {
    /// `None` once finished.
    writer: Option<ArchiveWriter>,
    written: u64,
}

impl OpenFile for Unpacking {
    fn read_at(&mut self, _offset: u64, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "an archive opened for writing",
        ))
    }

    fn write_at(&mut self, offset: Option<u64>, data: &[u8]) -> io::Result<usize> {
        if let Some(offset) = offset {
            if offset != self.written {
                return Err(out_of_order("write", self.written, offset));
            }
        }
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| io::Error::other("archive already finished"))?;
        writer.push(data)?;
        self.written += data.len() as u64;
        Ok(data.len())
    }

    fn attr(&self) -> io::Result<FileAttr> {
        Ok(FileAttr::virtual_file(self.written, ARCHIVE_MODE))
    }

    fn close(mut self: Box<Self>) -> io::Result<()> {
        match self.writer.take() {
            Some(w) => w.finish().map(drop).map_err(io::Error::from),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::ArchiveFormat;
    use super::*;

    #[test]
    fn recognises_both_archive_forms_and_nothing_else() {
        let (dir, q) = archive_target(Path::new("/archive:/var/log?format=tgz"))
            .unwrap()
            .unwrap();
        assert_eq!(dir, Path::new("/var/log"));
        assert_eq!(q.format, ArchiveFormat::TarGzip);
        let (dir, q) = archive_target(Path::new("/var/log?format=tar"))
            .unwrap()
            .unwrap();
        assert_eq!(dir, Path::new("/var/log"));
        assert_eq!(q.format, ArchiveFormat::Tar);
        assert!(archive_target(Path::new("/var/log/syslog")).is_none());
        assert!(archive_target(Path::new("/x?format=zip")).unwrap().is_err());
    }
}
