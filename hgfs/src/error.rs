//! What a failed operation reports: the HGFS status the client gets and, for the log, what
//! failed on which path.

use std::io;

use crate::proto::{ProtoError, Status};

/// A failed HGFS operation.
#[derive(Debug, thiserror::Error)]
pub enum HgfsError {
    /// A system call failed; the status follows from its errno.
    #[error("{what}: {source}")]
    Io {
        /// What was attempted, and on what.
        what: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The request was refused for a reason of the server's own.
    #[error("{what}: {status}")]
    Refused {
        /// Why.
        what: String,
        /// The status to send.
        status: Status,
    },
    /// The request did not decode.
    #[error("malformed request: {0}")]
    Proto(#[from] ProtoError),
}

impl HgfsError {
    /// A failed system call on `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }

    /// A refusal with `status`.
    pub fn refused(status: Status, what: impl Into<String>) -> Self {
        Self::Refused {
            what: what.into(),
            status,
        }
    }

    /// The status the client gets.
    pub fn status(&self) -> Status {
        match self {
            Self::Io { source, .. } => Status::from(source),
            Self::Refused { status, .. } => *status,
            Self::Proto(_) => Status::PROTOCOL_ERROR,
        }
    }
}

/// errno to HGFS status, as `HgfsConvertFromInternalStatus` does on POSIX
/// (lib/hgfs/hgfsUtil.c); errors without an errno map by kind.
impl From<&io::Error> for Status {
    fn from(err: &io::Error) -> Self {
        let Some(errno) = err.raw_os_error() else {
            return match err.kind() {
                io::ErrorKind::NotFound => Status::NO_SUCH_FILE_OR_DIR,
                io::ErrorKind::AlreadyExists => Status::FILE_EXISTS,
                io::ErrorKind::PermissionDenied => Status::ACCESS_DENIED,
                io::ErrorKind::InvalidInput => Status::INVALID_PARAMETER,
                io::ErrorKind::Unsupported => Status::OPERATION_NOT_SUPPORTED,
                _ => Status::GENERIC_ERROR,
            };
        };
        match errno {
            0 => Status::SUCCESS,
            libc::ENOENT => Status::NO_SUCH_FILE_OR_DIR,
            libc::EBADF => Status::INVALID_HANDLE,
            libc::EPERM => Status::OPERATION_NOT_PERMITTED,
            libc::EISDIR | libc::EEXIST => Status::FILE_EXISTS,
            libc::ENOTDIR => Status::NOT_DIRECTORY,
            libc::ENOTEMPTY => Status::DIR_NOT_EMPTY,
            libc::EPROTO => Status::PROTOCOL_ERROR,
            libc::EACCES => Status::ACCESS_DENIED,
            libc::EINVAL => Status::INVALID_NAME,
            libc::ENOSPC => Status::NO_SPACE,
            libc::EOPNOTSUPP => Status::OPERATION_NOT_SUPPORTED,
            libc::ENAMETOOLONG => Status::NAME_TOO_LONG,
            libc::EXDEV => Status::NOT_SAME_DEVICE,
            libc::ENETRESET => Status::STALE_SESSION,
            libc::ECONNREFUSED => Status::TOO_MANY_SESSIONS,
            _ => Status::GENERIC_ERROR,
        }
    }
}

impl From<io::Error> for Status {
    fn from(err: io::Error) -> Self {
        Status::from(&err)
    }
}
