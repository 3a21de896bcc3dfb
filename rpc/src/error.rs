//! The transport failure shared by the transport selection ([`crate::transport`]) and the RPCI
//! client ([`crate::rpci`]); re-exported as `toolbox_rpc::TransportError` and
//! `toolbox_rpc::transport::TransportError`.

use crate::detect::DetectError;
use crate::message::MessageError;
use crate::stream::StreamError;
use crate::vsock::VsockError;
use std::path::PathBuf;

/// Why a transport could not carry a message.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Not on VMware (or no backdoor on this platform).
    #[error(transparent)]
    Detect(#[from] DetectError),
    /// The backdoor message channel failed.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A vsock connection could not be made.
    #[error(transparent)]
    Vsock(#[from] VsockError),
    /// A Unix socket could not be reached.
    #[error("connecting to {path}: {source}")]
    Unix {
        /// The socket path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A stream broke or carried garbage.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// `auto` tried everything.
    #[error("no transport to the VMX: vsock: {vsock}; backdoor: {backdoor}")]
    Exhausted {
        /// The vsock failure.
        vsock: Box<TransportError>,
        /// The backdoor failure.
        backdoor: Box<TransportError>,
    },
}
