//! Bytes to and from the VMware VMX.
//!
//! Layers, bottom up:
//!
//! - [`backdoor`]: the register interface and the [`backdoor::Backdoor`] trait; [`port`] executes
//!   the real instructions (the project's only `unsafe`), after [`detect`] has made sure this is
//!   VMware; [`model`] is a software VMX behind the same trait, for tests and the simulator.
//! - [`message`]: whole messages over the backdoor (RPCI and TCLO channels).
//! - [`datamap`] and [`packet`]: the vsock packet format and its framer, shared by the blocking
//!   driver [`stream`] and the agent's async one; [`vsock`] opens the sockets.
//! - [`rpci`]: guest → VMX requests over any of them; [`transport`] picks one, and
//!   [`transport::RpciFallback`] decides when RPCI that fell back to the backdoor tries vsock again.
//!
//! Protocol codecs ([`datamap`], [`packet`]) do no I/O. Everything here is blocking and usable
//! without an async runtime.

#![deny(missing_docs)]
// The port instructions and CPUID are the only `unsafe` code; `port` is the one module allowed it.
#![deny(unsafe_code)]

pub mod backdoor;
pub mod datamap;
pub mod detect;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod model;
pub mod packet;
#[allow(unsafe_code)]
pub mod port;
pub mod rpci;
pub mod stream;
pub mod transport;
pub mod vsock;

pub use message::{MessageChannel, MessageError, Protocol};
pub use rpci::{RpciClient, RpciError};
pub use transport::{Transport, TransportError};
