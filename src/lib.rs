//! toolbox: an in-guest VMware tools agent.
//!
//! The transport to the VMX lives in the `toolbox-rpc` crate ([`toolbox_rpc`]); this crate holds
//! the command line and, in time, the agent built on it.

#![deny(missing_docs)]

pub use toolbox_rpc as rpc;

pub mod cli;
