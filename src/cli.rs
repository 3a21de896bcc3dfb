//! The `toolbox` command line: flags parsed by clap, then run.

use clap::{Parser, Subcommand};
use std::io::Write;
use toolbox_rpc::backdoor::get_version;
use toolbox_rpc::detect::assume_vmware_from_env;
use toolbox_rpc::port::PortBackdoor;
use toolbox_rpc::transport::connect_rpci;
use toolbox_rpc::{RpciError, Transport, TransportError};

/// An in-guest VMware tools agent.
#[derive(Debug, Parser)]
#[command(name = "toolbox", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Where the VMX is: backdoor, vsock, unix:DIR or auto (vsock, then backdoor).
    #[arg(long, global = true, default_value = "auto", env = "TOOLBOX_TRANSPORT")]
    pub transport: Transport,

    /// Use the backdoor even though CPUID does not name VMware (test guests such as QEMU's
    /// vmport). Also TOOLBOX_ASSUME_VMWARE=1.
    #[arg(long, global = true)]
    pub assume_vmware: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Send one guest RPC (RPCI) request and print the reply, as vmware-rpctool does.
    Rpc {
        /// The request, e.g. "info-get guestinfo.ovfEnv".
        request: String,
    },
    /// Read or write guestinfo variables.
    Info {
        /// get or set.
        #[command(subcommand)]
        op: InfoOp,
    },
    /// Check that this is a VMware VM and print the backdoor version, as vmware-checkvm does.
    Check {
        /// Print the product class (ESX Server or Workstation) instead.
        #[arg(short, long)]
        product: bool,
    },
}

/// guestinfo operations.
#[derive(Debug, Subcommand)]
pub enum InfoOp {
    /// Print a variable (the "guestinfo." prefix is optional).
    Get {
        /// Variable name, e.g. guestinfo.ovfEnv.
        key: String,
    },
    /// Set a variable.
    Set {
        /// Variable name.
        key: String,
        /// Its new value.
        value: String,
    },
}

/// A failure of a command, printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// RPC failed.
    #[error(transparent)]
    Rpci(#[from] RpciError),
    /// No transport.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Writing output failed.
    #[error("writing output: {0}")]
    Output(#[from] std::io::Error),
    /// GETVERSION had no answer.
    #[error("the backdoor did not answer GETVERSION: no VMware backdoor on port 0x5658")]
    NoVersion,
}

impl Cli {
    fn assume_vmware(&self) -> bool {
        self.assume_vmware || assume_vmware_from_env()
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let assume = cli.assume_vmware();
    let mut out = std::io::stdout().lock();
    match &cli.command {
        Command::Rpc { request } => {
            let mut rpci = connect_rpci(&cli.transport, assume, true)?;
            let reply = rpci.call(request.as_bytes())?;
            out.write_all(&reply)?;
            if !reply.is_empty() {
                out.write_all(b"\n")?;
            }
        }
        Command::Info { op } => {
            let mut rpci = connect_rpci(&cli.transport, assume, true)?;
            match op {
                InfoOp::Get { key } => {
                    let value = rpci.info_get(key)?;
                    out.write_all(&value)?;
                    out.write_all(b"\n")?;
                }
                InfoOp::Set { key, value } => rpci.info_set(key, value.as_bytes())?,
            }
        }
        Command::Check { product } => {
            let mut port = PortBackdoor::open(assume).map_err(TransportError::from)?;
            let v = get_version(&mut port).ok_or(CliError::NoVersion)?;
            if *product {
                let name = match v.vmx_type {
                    2 => "ESX Server",
                    1 => "Workstation",
                    _ => "Unknown",
                };
                writeln!(out, "{name}")?;
            } else {
                writeln!(out, "VMware software version {} (good)", v.version)?;
            }
        }
    }
    out.flush()?;
    Ok(())
}
