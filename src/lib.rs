//! toolbox: an in-guest VMware tools agent.
//!
//! The transport to the VMX lives in the `toolbox-rpc` crate ([`toolbox_rpc`]); this crate holds
//! the agent built on it: [`service`] (the TCLO loop and its [`dispatch`]er), [`guestinfo`] and
//! its [`xdr`](guestinfo::xdr) encoding, [`power`] operations, [`config`], the command line
//! ([`cli`]); guest operations: the [`vix`] codec and command server, [`auth`]entication and
//! per-user helper processes ([`guestops`]). [`agent`] wires the features together;
//! [`dropin`] answers as `vmware-rpctool`, `vmware-checkvm` and `vmtoolsd`.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub use toolbox_rpc as rpc;

pub mod agent;
pub mod auth;
pub mod cli;
pub mod codec;
pub mod config;
pub mod dispatch;
pub mod dropin;
#[doc(hidden)]
pub mod fuzzing;
pub mod guestinfo;
pub mod guestops;
pub mod power;
pub mod process;
pub mod service;
#[cfg(feature = "sim")]
pub mod sim;
pub mod vix;
