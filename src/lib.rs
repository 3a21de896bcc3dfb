//! toolbox: an in-guest VMware tools agent.
//!
//! The transport to the VMX lives in the `toolbox-rpc` crate ([`toolbox_rpc`]); this crate holds
//! the agent built on it: [`service`] (the TCLO loop and its [`dispatch`]er), [`guestinfo`] and
//! its [`xdr`](guestinfo::xdr) encoding, [`power`] operations, [`config`], the command line
//! ([`cli`]), and guest operations' [`auth`]entication and per-user helper processes
//! ([`guestops`]).

#![deny(missing_docs)]

pub use toolbox_rpc as rpc;

pub mod auth;
pub mod cli;
pub mod config;
pub mod dispatch;
#[doc(hidden)]
pub mod fuzzing;
pub mod guestinfo;
pub mod guestops;
pub mod power;
pub mod service;
pub mod sim;
