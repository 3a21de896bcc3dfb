//! `vmx-sim`: the VMX simulator. `vmx-sim serve DIR` plays the VMX on `unix:DIR`;
//! `vmx-sim -d DIR <command>` drives a running one (commands named after govc's).

#![forbid(unsafe_code)]

/// `println!` that survives a reader who stops early (`| grep -q`, `| head`): the simulator's
/// answer is then simply unread, which is no reason to panic or to fail the command.
macro_rules! outln {
    ($($arg:tt)*) => { crate::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!`, with the same rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { crate::write_stdout(format_args!($($arg)*)) };
}

#[path = "vmx-sim/guest.rs"]
mod guest;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};
use toolbox::sim::{Client, Control, ControlReply, Faults, GuestReport, Sim};

/// Plays the VMware VMX on a unix:DIR socket pair.
#[derive(Debug, Parser)]
#[command(name = "vmx-sim", version, disable_help_subcommand = true)]
struct Cli {
    /// Directory of a running simulator (before the command: govc's `-d` flags come after it).
    #[arg(short = 'd', long)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Listen on DIR/tclo.sock, DIR/rpci.sock and DIR/ctl.sock until SIGINT/SIGTERM.
    Serve {
        /// The directory.
        dir: PathBuf,
        /// Do not send reset/Capabilities_Register/broadcastIP to new guests.
        #[arg(long)]
        no_greeting: bool,
    },
    /// Wait for the guest's IP address and print it.
    #[command(name = "vm.ip")]
    VmIp {
        /// Seconds to wait.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Print what the guest reported.
    #[command(name = "guest.info")]
    GuestInfo {
        /// As JSON.
        #[arg(long)]
        json: bool,
    },
    /// The guest's filesystems as `govc guest.df` prints them.
    #[command(name = "guest.df")]
    GuestDf,
    /// Power operations: -s halt, -r reboot, -on power on, -suspend suspend.
    #[command(name = "vm.power")]
    VmPower {
        /// Shut the guest down (OS_Halt).
        #[arg(short = 's')]
        halt: bool,
        /// Reboot the guest (OS_Reboot).
        #[arg(short = 'r')]
        reboot: bool,
        /// Tell the guest it was powered on (OS_PowerOn).
        #[arg(long = "on")]
        on: bool,
        /// Suspend (OS_Suspend).
        #[arg(long)]
        suspend: bool,
        /// Resume (OS_Resume).
        #[arg(long)]
        resume: bool,
        /// Seconds to wait for the guest's status report.
        #[arg(long, default_value_t = 30)]
        timeout: u64,
    },
    /// Host-side guestinfo variables.
    Info {
        #[command(subcommand)]
        op: InfoOp,
    },
    /// Send a raw TCLO request and print the guest's reply.
    Rpc {
        /// The request, e.g. "Set_Option broadcastIP 1".
        request: String,
        /// Seconds to wait.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// govc's guest file commands (guest.ls, guest.upload, ...).
    #[command(flatten)]
    Guest(guest::GuestCmd),
    /// Inject a fault: drop, garbage, delay MS, refuse PREFIX, clear.
    Fault {
        /// What.
        kind: String,
        /// Its argument.
        arg: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum InfoOp {
    /// Print a variable.
    Get { key: String },
    /// Set a variable.
    Set { key: String, value: String },
}

fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    match std::io::stdout().lock().write_fmt(args) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            eprintln!("vmx-sim: writing the answer: {e}")
        }
        _ => {}
    }
}

fn fail(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vmx-sim: {msg}");
    ExitCode::FAILURE
}

async fn call(dir: &std::path::Path, c: Control) -> Result<ControlReply, String> {
    let mut client = Client::connect(dir)
        .await
        .map_err(|e| format!("connecting to the simulator in {}: {e}", dir.display()))?;
    let r = client
        .call(&c)
        .await
        .map_err(|e| format!("talking to the simulator: {e}"))?;
    if r.ok {
        Ok(r)
    } else {
        Err(r.error.unwrap_or_else(|| "failed".into()))
    }
}

async fn state(dir: &std::path::Path) -> Result<GuestReport, String> {
    Ok(call(dir, Control::State).await?.state.unwrap_or_default())
}

fn print_report(r: &GuestReport) {
    outln!(
        "Tools version:  {}",
        r.tools_version.as_deref().unwrap_or("-")
    );
    outln!("Capabilities:   {}", r.capabilities.join(", "));
    outln!("Host name:      {}", r.host_name.as_deref().unwrap_or("-"));
    outln!("Guest OS:       {}", r.os_full.as_deref().unwrap_or("-"));
    outln!("Guest id:       {}", r.os_short.as_deref().unwrap_or("-"));
    outln!("IP address:     {}", r.ip.as_deref().unwrap_or("-"));
    if let Some(u) = r.uptime_centis {
        outln!("Uptime:         {}.{:02} s", u / 100, u % 100);
    }
    for (i, n) in r.nics.iter().enumerate() {
        outln!("NIC {i}:          {} {}", n.mac, n.ips.join(" "));
    }
    for rt in &r.routes {
        let via = rt
            .gateway
            .as_deref()
            .map(|g| format!(" via {g}"))
            .unwrap_or_default();
        outln!(
            "Route:          {}{via} nic {} metric {}",
            rt.dest,
            rt.nic,
            rt.metric
        );
    }
    outln!("DNS servers:    {}", r.dns_servers.join(" "));
    outln!("DNS search:     {}", r.dns_search.join(" "));
    if !r.errors.is_empty() {
        outln!("Errors:         {}", r.errors.join("; "));
    }
}

async fn serve(dir: PathBuf, greet: bool) -> ExitCode {
    use tokio::signal::unix::{signal, SignalKind};
    let sim = match Sim::start(&dir, greet).await {
        Ok(s) => s,
        Err(e) => return fail(format!("listening in {}: {e}", dir.display())),
    };
    eprintln!("vmx-sim: serving {}", sim.dir().display());
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return fail("installing signal handlers");
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    for s in [
        toolbox_rpc::transport::TCLO_SOCKET,
        toolbox_rpc::transport::RPCI_SOCKET,
        toolbox::sim::CONTROL_SOCKET,
    ] {
        let _ = std::fs::remove_file(dir.join(s));
    }
    ExitCode::SUCCESS
}

async fn client(dir: PathBuf, cmd: Cmd) -> Result<(), String> {
    match cmd {
        Cmd::Serve { .. } => Ok(()),
        // Answered by `main` (they have exit codes of their own).
        Cmd::Guest(_) => Ok(()),
        Cmd::VmIp { timeout } => {
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                if let Some(ip) = state(&dir).await?.ip.filter(|ip| ip != "unknown") {
                    outln!("{ip}");
                    return Ok(());
                }
                if Instant::now() > deadline {
                    return Err(format!("no IP address from the guest within {timeout} s"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Cmd::GuestInfo { json } => {
            let r = state(&dir).await?;
            if json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&r).map_err(|e| e.to_string())?
                );
            } else {
                print_report(&r);
            }
            Ok(())
        }
        Cmd::GuestDf => {
            let r = state(&dir).await?;
            out!("{}", toolbox::sim::diskinfo::df_table(&r.disks));
            Ok(())
        }
        Cmd::VmPower {
            halt,
            reboot,
            on,
            suspend,
            resume,
            timeout,
        } => {
            let ops = [
                (halt, "OS_Halt", 1),
                (reboot, "OS_Reboot", 2),
                (on, "OS_PowerOn", 3),
                (resume, "OS_Resume", 4),
                (suspend, "OS_Suspend", 5),
            ];
            let chosen: Vec<_> = ops.iter().filter(|o| o.0).collect();
            let [(_, request, state_no)] = chosen[..] else {
                return Err("give exactly one of -s, -r, --on, --suspend, --resume".into());
            };
            let before = state(&dir).await?.statechanges.len();
            let r = call(
                &dir,
                Control::Tclo {
                    request: request.to_string(),
                    timeout_ms: timeout * 1000,
                },
            )
            .await?;
            let reply = r.value.unwrap_or_default();
            outln!("{request}: {reply}");
            if !reply.starts_with("OK") {
                return Err(format!("the guest refused {request}"));
            }
            let deadline = Instant::now() + Duration::from_secs(timeout);
            loop {
                let s = state(&dir).await?;
                if let Some((ok, st)) = s.statechanges.get(before) {
                    outln!("tools.os.statechange.status {ok} {st}");
                    return if *ok == 1 && *st == *state_no {
                        Ok(())
                    } else {
                        Err(format!("state change {request} failed in the guest"))
                    };
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "no state change status from the guest within {timeout} s"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Cmd::Info {
            op: InfoOp::Get { key },
        } => {
            outln!(
                "{}",
                call(&dir, Control::InfoGet { key })
                    .await?
                    .value
                    .unwrap_or_default()
            );
            Ok(())
        }
        Cmd::Info {
            op: InfoOp::Set { key, value },
        } => call(&dir, Control::InfoSet { key, value }).await.map(drop),
        Cmd::Rpc { request, timeout } => {
            let r = call(
                &dir,
                Control::Tclo {
                    request,
                    timeout_ms: timeout * 1000,
                },
            )
            .await?;
            outln!("{}", r.value.unwrap_or_default());
            Ok(())
        }
        Cmd::Fault { kind, arg } => {
            let c = match (kind.as_str(), arg) {
                ("drop", None) => Control::Drop,
                ("garbage", None) => Control::Garbage,
                ("delay", Some(ms)) => Control::Faults(Faults {
                    rpci_delay_ms: ms.parse().map_err(|_| format!("bad delay {ms:?}"))?,
                    refuse: vec![],
                }),
                ("refuse", Some(p)) => Control::Faults(Faults {
                    rpci_delay_ms: 0,
                    refuse: vec![p],
                }),
                ("clear", None) => Control::Faults(Faults::default()),
                (k, a) => return Err(format!("unknown fault {k} {}", a.unwrap_or_default())),
            };
            call(&dir, c).await.map(drop)
        }
    }
}

fn main() -> ExitCode {
    // As govc: a usage error exits 1, help 0.
    let cli = match Cli::try_parse_from(guest::govc_flags(std::env::args())) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(format!("starting the runtime: {e}")),
    };
    rt.block_on(async move {
        match cli.command {
            Cmd::Serve { dir, no_greeting } => serve(dir, !no_greeting).await,
            cmd => {
                let Some(dir) = cli.dir else {
                    return fail("give the simulator's directory with -d DIR");
                };
                let result = match cmd {
                    Cmd::Guest(g) => guest::run(&dir, g).await,
                    cmd => client(dir, cmd).await.map(|()| 0),
                };
                match result {
                    Ok(code) => ExitCode::from(code),
                    Err(e) => fail(e),
                }
            }
        }
    })
}
