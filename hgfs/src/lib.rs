//! HGFS, the Host-Guest File System protocol, served from the guest: the requests behind
//! vSphere's guest file transfers (VIX op 84 and the TCLO `f ` command).
//!
//! Blocking and runtime-free: the agent runs the server inside the helper process of the
//! authenticated user, so every file access happens with that user's rights.
//!
//! - [`proto`]: the wire format, free of I/O.
//! - [`client`]: the host's side of a transfer, free of I/O.
//! - [`Server`]: sessions, bounded handle tables, dispatch.
//! - [`FileHandler`] / [`OpenFile`]: what a path stands for; [`PlainFiles`] is the
//!   default, other handlers (directory archives, process stdio) register in front of it.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod archive;
pub mod client;
mod error;
#[doc(hidden)]
pub mod fuzzing;
mod handler;
mod plain;
pub mod proto;
mod server;

pub use error::HgfsError;
pub use handler::{Access, AttrChange, FileAttr, FileHandler, FileKind, OpenFile, OpenIntent};
pub use plain::{PlainFiles, MAX_SEARCH_ENTRIES};
pub use server::{
    Server, ServerConfig, LEGACY_PACKET_MAX, MAX_HANDLES_PER_SESSION, MAX_PENDING_NO_REPLACE,
    MAX_SESSIONS,
};
