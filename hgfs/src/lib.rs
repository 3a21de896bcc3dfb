//! HGFS, the Host-Guest File System protocol, served from the guest: the requests behind
//! vSphere's guest file transfers (VIX op 84 and the TCLO `f ` command).
//!
//! Blocking and runtime-free: the agent runs the server inside the helper process of the
//! authenticated user, so every file access happens with that user's rights.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod archive;
