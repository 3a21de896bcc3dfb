//! The `toolbox` command line: flags parsed by clap, then run.

use crate::config::Config;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::PathBuf;
use toolbox_rpc::backdoor::get_version;
use toolbox_rpc::detect::assume_vmware_from_env;
use toolbox_rpc::port::PortBackdoor;
use toolbox_rpc::transport::connect_rpci;
use toolbox_rpc::{RpciError, Transport, TransportError};

/// An in-guest VMware tools agent.
#[derive(Debug, PartialEq, Eq, Parser)]
#[command(
    name = "toolbox",
    version,
    about,
    disable_help_subcommand = true,
    after_help = "Also answers as vmware-rpctool, vmware-checkvm and vmtoolsd (--cmd, --cmdfile; \
                  plain vmtoolsd runs the agent) when called by those names (symlinks) or as \
                  `toolbox vmware-rpctool ARGS...`; they take the transport from TOOLBOX_TRANSPORT."
)]
pub struct Cli {
    /// Where the VMX is: backdoor, vsock, unix:DIR or auto (vsock, then backdoor). Overrides
    /// the config file's `transport`.
    #[arg(long, global = true, env = "TOOLBOX_TRANSPORT")]
    pub transport: Option<Transport>,

    /// Config file (TOML); default /etc/toolbox/toolbox.toml when it exists.
    #[arg(long, short = 'c', global = true)]
    pub config: Option<PathBuf>,

    /// Standalone test mode: run the agent in the foreground and trace every RPC in and out.
    #[arg(short = 's', long)]
    pub standalone: bool,

    /// Use the backdoor even though CPUID does not name VMware (test guests such as QEMU's
    /// vmport). Also TOOLBOX_ASSUME_VMWARE=1.
    #[arg(long, global = true)]
    pub assume_vmware: bool,

    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the agent (the daemon): answer the VMX, push guest info, carry out power operations.
    Run,
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
    /// Check a config file (default: -c FILE, else /etc/toolbox/toolbox.toml) and print it
    /// with every default filled in.
    Config {
        /// What to do with it.
        #[command(subcommand)]
        op: ConfigOp,
    },
    /// Internal: write the man page and shell completions into DIR (packaging; builds with the
    /// `generate` feature).
    #[cfg(feature = "generate")]
    #[command(name = "__generate", hide = true)]
    Generate {
        /// Where to write toolbox.1, toolbox.bash, _toolbox (zsh) and toolbox.fish.
        dir: PathBuf,
    },
    /// Internal: a guest-operations helper, started by the agent with a socket on stdin (see
    /// `guestops::helper`). Not for use by hand.
    #[command(name = "__guestops-helper", hide = true)]
    GuestOpsHelper,
    /// Internal: one password check, the request on stdin and the verdict on stdout (see
    /// `auth::checker`). Not for use by hand.
    #[command(name = "__auth-check", hide = true)]
    AuthCheck,
}

/// Config file operations.
#[derive(Debug, PartialEq, Eq, Subcommand)]
pub enum ConfigOp {
    /// Parse and validate; exit 1 with the reason if the file is unusable.
    Check {
        /// The file (overrides -c).
        file: Option<PathBuf>,
    },
}

/// guestinfo operations.
#[derive(Debug, PartialEq, Eq, Subcommand)]
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
    /// Gather and send guest info once, as `vmware-toolbox-cmd info update` does.
    Update {
        /// What to send.
        #[arg(value_enum)]
        class: InfoClass,
    },
    /// Wait until the host has set a variable, then print it.
    Wait {
        /// Variable name, e.g. guestinfo.ovfEnv.
        key: String,
        /// Give up (exit 1) after this many seconds; wait for ever without.
        #[arg(long)]
        timeout: Option<u64>,
    },
}

/// What `info update` sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum InfoClass {
    /// NICs, addresses, routes and DNS (NIC info v3).
    Network,
}

/// The first pause between polls of `info wait`; it doubles up to [`WAIT_POLL_MAX`].
pub const WAIT_POLL_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest pause between polls of `info wait`: a variable set by the host shows within
/// a second, and an idle wait costs one RPC a second.
pub const WAIT_POLL_MAX: std::time::Duration = std::time::Duration::from_secs(1);

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
    /// The config file is unusable.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// No subcommand.
    #[error("nothing to do: give a command (run, rpc, info, check) or -s; see --help")]
    NoCommand,
    /// The runtime could not start.
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
    /// A guest-operations helper stopped on an error (already printed).
    #[error("guest-operations helper stopped")]
    Helper,
    /// A password check could not read its request.
    #[error("password check: unreadable request")]
    AuthCheck,
    /// `config check` of a file that does not exist.
    #[error("{0}: no such file")]
    ConfigMissing(PathBuf),
    /// The VMX refused a one-shot request: its text alone, as vmware-rpctool prints it (cloud-init
    /// matches `No value found`).
    #[error("{0}")]
    VmxRefused(String),
    /// `info wait` ran out of time.
    #[error("{key} was not set within {secs} s")]
    WaitTimedOut {
        /// The variable.
        key: String,
        /// The timeout.
        secs: u64,
    },
    /// GETVERSION had no answer.
    #[error("the backdoor did not answer GETVERSION: no VMware backdoor on port 0x5658")]
    NoVersion,
}

impl Cli {
    /// The one-shot forms tools call in loops (`rpc REQ`, `info get KEY`, `info set KEY VALUE`,
    /// with `--transport T` or `TOOLBOX_TRANSPORT`), read without clap: building clap's whole
    /// command tree costs about a tenth of a process start, which one-shot callers such as
    /// cloud-init pay on every call. Anything else, any other flag, a value that looks like a
    /// flag, returns `None` and goes to clap, so both parsers agree wherever this one answers.
    pub fn parse_simple(args: &[String]) -> Option<Cli> {
        let mut transport = None;
        let mut words = Vec::with_capacity(4);
        let mut it = args.iter().skip(1);
        while let Some(a) = it.next() {
            if a == "--transport" {
                transport = Some(it.next()?.parse().ok()?);
            } else if let Some(t) = a.strip_prefix("--transport=") {
                transport = Some(t.parse().ok()?);
            } else if a.starts_with('-') || a.is_empty() {
                return None;
            } else {
                words.push(a.as_str());
            }
        }
        if transport.is_none() {
            if let Some(t) = std::env::var_os("TOOLBOX_TRANSPORT") {
                transport = Some(t.to_str()?.parse().ok()?);
            }
        }
        let command = match words.as_slice() {
            ["rpc", request] => Command::Rpc {
                request: request.to_string(),
            },
            ["info", "get", key] => Command::Info {
                op: InfoOp::Get {
                    key: key.to_string(),
                },
            },
            ["info", "set", key, value] => Command::Info {
                op: InfoOp::Set {
                    key: key.to_string(),
                    value: value.to_string(),
                },
            },
            ["info", "update", "network"] => Command::Info {
                op: InfoOp::Update {
                    class: InfoClass::Network,
                },
            },
            ["info", "wait", key] => Command::Info {
                op: InfoOp::Wait {
                    key: key.to_string(),
                    timeout: None,
                },
            },
            _ => return None,
        };
        Some(Cli {
            transport,
            config: None,
            standalone: false,
            assume_vmware: false,
            command: Some(command),
        })
    }

    fn assume_vmware(&self) -> bool {
        self.assume_vmware || assume_vmware_from_env()
    }
}

fn refused_as_vmx_text(e: RpciError) -> CliError {
    match e {
        RpciError::Refused { reason, .. } => CliError::VmxRefused(reason),
        e => CliError::Rpci(e),
    }
}

/// Polls `info-get` until the variable exists (a refusal means "not yet"), pausing 100 ms,
/// then twice as long each time up to a second; any other failure ends the wait.
fn wait_for_variable(
    transport: &Transport,
    assume: bool,
    key: &str,
    timeout: Option<u64>,
) -> Result<Vec<u8>, CliError> {
    use std::time::{Duration, Instant};
    let deadline = timeout.and_then(|t| Instant::now().checked_add(Duration::from_secs(t)));
    let mut pause = WAIT_POLL_FIRST;
    loop {
        let mut rpci = connect_rpci(transport, assume, true)?;
        match rpci.info_get(key) {
            Ok(v) => return Ok(v),
            Err(RpciError::Refused { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        drop(rpci);
        let now = Instant::now();
        let mut sleep = pause;
        if let Some(d) = deadline {
            if now >= d {
                return Err(CliError::WaitTimedOut {
                    key: toolbox_rpc::rpci::guestinfo_key(key),
                    secs: timeout.unwrap_or(0),
                });
            }
            sleep = sleep.min(d - now);
        }
        std::thread::sleep(sleep);
        pause = (pause * 2).min(WAIT_POLL_MAX);
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    let assume = cli.assume_vmware();
    let command = match (&cli.command, cli.standalone) {
        (Some(c), _) => c,
        (None, true) => &Command::Run,
        (None, false) => return Err(CliError::NoCommand),
    };
    let transport = cli.transport.clone().unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match command {
        Command::GuestOpsHelper => {
            drop(out);
            return match crate::guestops::helper::serve(&crate::agent::helper_registry()) {
                code if code == std::process::ExitCode::SUCCESS => Ok(()),
                _ => Err(CliError::Helper),
            };
        }
        Command::Run => {
            drop(out);
            return run_agent(&cli, assume);
        }
        Command::AuthCheck => {
            drop(out);
            return match crate::auth::serve_check() {
                code if code == std::process::ExitCode::SUCCESS => Ok(()),
                _ => Err(CliError::AuthCheck),
            };
        }
        Command::Config {
            op: ConfigOp::Check { file },
        } => {
            let path = file.as_deref().or(cli.config.as_deref());
            let shown = path.unwrap_or(std::path::Path::new(crate::config::DEFAULT_PATH));
            if path.is_none() && !shown.exists() {
                return Err(CliError::ConfigMissing(shown.to_owned()));
            }
            let config = Config::load(Some(shown))?;
            writeln!(out, "{}: ok", shown.display())?;
            writeln!(out, "{config:#?}")?;
        }
        #[cfg(feature = "generate")]
        Command::Generate { dir } => generate(dir)?,
        Command::Rpc { request } => {
            let mut rpci = connect_rpci(&transport, assume, true)?;
            let reply = rpci.call(request.as_bytes()).map_err(refused_as_vmx_text)?;
            out.write_all(&reply)?;
            if !reply.is_empty() {
                out.write_all(b"\n")?;
            }
        }
        Command::Info { op } => match op {
            InfoOp::Get { key } => {
                let mut rpci = connect_rpci(&transport, assume, true)?;
                let value = rpci.info_get(key).map_err(refused_as_vmx_text)?;
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
            InfoOp::Set { key, value } => {
                let mut rpci = connect_rpci(&transport, assume, true)?;
                rpci.info_set(key, value.as_bytes())
                    .map_err(refused_as_vmx_text)?
            }
            InfoOp::Update {
                class: InfoClass::Network,
            } => {
                let config = Config::load(cli.config.as_deref())?;
                let filter = crate::guestinfo::NicFilter::from_config(&config.guestinfo);
                let info = crate::guestinfo::gather_network(&filter);
                let request = crate::guestinfo::NicMethod::V3AsType10.request(&info);
                let mut rpci = connect_rpci(&transport, assume, true)?;
                rpci.call(&request).map_err(refused_as_vmx_text)?;
            }
            InfoOp::Wait { key, timeout } => {
                let value = wait_for_variable(&transport, assume, key, *timeout)?;
                out.write_all(&value)?;
                out.write_all(b"\n")?;
            }
        },
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

/// Writes the man page and the bash, zsh and fish completions generated from the CLI.
#[cfg(feature = "generate")]
fn generate(dir: &std::path::Path) -> Result<(), CliError> {
    use clap::CommandFactory;
    use clap_complete::{generate_to, Shell};
    std::fs::create_dir_all(dir)?;
    let mut cmd = Cli::command();
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut page)?;
    std::fs::write(dir.join("toolbox.1"), page)?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        generate_to(shell, &mut cmd, "toolbox", dir)?;
    }
    Ok(())
}

fn init_logging(level: &str, output: crate::config::LogOutput, standalone: bool) {
    // TOOLBOX_LOG overrides the configured level; standalone mode shows at least info.
    let mut level: tracing::Level = std::env::var("TOOLBOX_LOG")
        .ok()
        .and_then(|v| v.parse().ok())
        .or_else(|| level.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    if standalone && level < tracing::Level::INFO {
        level = tracing::Level::INFO;
    }
    let logs = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false);
    let _ = match output {
        crate::config::LogOutput::Stderr => logs.with_writer(std::io::stderr).try_init(),
        crate::config::LogOutput::Stdout => logs.with_writer(std::io::stdout).try_init(),
    };
}

/// Tells systemd (`Type=notify`) that the agent is up; a no-op outside systemd.
fn notify_systemd_ready() {
    match sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        Ok(()) => tracing::debug!("TCLO channel up; readiness sent"),
        Err(e) => tracing::warn!(error = %e, "telling systemd we are ready"),
    }
}

/// At most this many threads do blocking work at once.
const BLOCKING_THREADS: usize = 8;
/// An idle blocking thread leaves after this long.
const BLOCKING_KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(2);

/// `toolbox run` and `toolbox -s`: the agent on a one-thread runtime until SIGTERM or SIGINT.
fn run_agent(cli: &Cli, assume_vmware: bool) -> Result<(), CliError> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(t) = &cli.transport {
        config.transport = t.clone();
    }
    init_logging(&config.log_level, config.log_output, cli.standalone);
    // Off VMware no VMX transport can ever work: say so and stop, as vmtoolsd does, rather than
    // retry forever. (`unix:DIR` needs no hypervisor.)
    if !matches!(config.transport, Transport::Unix(_)) && !assume_vmware {
        toolbox_rpc::detect::require_vmware().map_err(TransportError::from)?;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Blocking work (opening channels, guest operations) gets a bounded pool whose threads
        // leave when idle, so an idle agent is one thread.
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_KEEP_ALIVE)
        .build()
        .map_err(CliError::Runtime)?;
    rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).map_err(CliError::Runtime)?;
        let mut int = signal(SignalKind::interrupt()).map_err(CliError::Runtime)?;
        tracing::info!(transport = %config.transport, standalone = cli.standalone, "starting");
        let service = crate::agent::builder(config)
            .assume_vmware(assume_vmware)
            .trace(cli.standalone)
            .on_ready(notify_systemd_ready)
            .build();
        let stop = service.stop_handle();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM"),
                _ = int.recv() => tracing::info!("SIGINT"),
            }
            stop.stop();
        });
        service.run().await;
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(String::from).collect()
    }

    #[test]
    fn the_simple_parser_agrees_with_clap_wherever_it_answers() {
        for line in [
            "toolbox rpc info-get",
            "toolbox info get guestinfo.ovfEnv",
            "toolbox info set guestinfo.x value",
            "toolbox --transport unix:/tmp/vmx info get x",
            "toolbox --transport=backdoor rpc ping",
            "toolbox info --transport vsock get x",
            "toolbox info get x --transport auto",
            "toolbox info update network",
            "toolbox info wait guestinfo.userdata",
        ] {
            let args = argv(line);
            let simple = Cli::parse_simple(&args).unwrap_or_else(|| panic!("{line}"));
            let clap = Cli::try_parse_from(&args).unwrap();
            assert_eq!(simple, clap, "{line}");
        }
    }

    #[test]
    fn everything_else_goes_to_clap() {
        for line in [
            "toolbox",
            "toolbox run",
            "toolbox -s",
            "toolbox check",
            "toolbox info get",
            "toolbox info set x",
            "toolbox info set x -5",
            "toolbox rpc a b",
            "toolbox -c /etc/x.toml info get x",
            "toolbox --assume-vmware info get x",
            "toolbox --transport",
            "toolbox --transport nowhere info get x",
            "toolbox info get x --help",
            "toolbox -- info get x",
            "toolbox info update disk",
            "toolbox info wait x --timeout 5",
        ] {
            assert_eq!(Cli::parse_simple(&argv(line)), None, "{line}");
        }
    }
}
