//! Bytes to and from the VMware VMX.
//!
//! Layers, bottom up:
//!
//! - [`backdoor`]: the register interface and the [`backdoor::Backdoor`] trait; [`port`] executes
//!   the real instructions (the project's only `unsafe`), after [`detect`] has made sure this is
//!   VMware; [`model`] is a software VMX behind the same trait, for tests and the simulator.
//! - [`message`]: whole messages over the backdoor (RPCI and TCLO channels).
//! - [`datamap`] and [`packet`]: the vsock packet format; [`stream`] and [`vsock`] carry it.
//! - [`rpci`]: guest → VMX requests over any of them; [`transport`] picks one.
//!
//! Protocol codecs ([`datamap`], [`packet`]) do no I/O. Everything here is blocking and usable
//! without an async runtime.

#![deny(missing_docs)]

pub mod backdoor;
pub mod datamap;
pub mod detect;
#[doc(hidden)]
pub mod fuzzing;
pub mod message;
pub mod model;
pub mod packet;
pub mod port;
pub mod rpci;
pub mod stream;
pub mod transport;
pub mod vsock;

pub use message::{MessageChannel, MessageError, Protocol};
pub use rpci::{RpciClient, RpciError};
pub use transport::{Transport, TransportError};
