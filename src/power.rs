//! Power operations: `OS_Halt`, `OS_Reboot`, `OS_PowerOn`, `OS_Resume`, `OS_Suspend`.
//!
//! As vmtoolsd's powerOps plugin (`services/plugins/powerOps/powerOps.c`): the request is answered
//! at once, the state change's script runs in the background, then `tools.os.statechange.status
//! <ok> <state>` tells the VMX how it went, and only on success do halt and reboot happen. A
//! second request while one runs is refused. When the same state change failed last time, the
//! retry counts as a success, so a user can force a shutdown past a broken script.

use crate::config::{PowerConfig, PowerMethod};
use crate::dispatch::{Dispatcher, Reply};
use crate::service::Context;
use std::path::PathBuf;
use tracing::{info, warn};

/// `GuestOsState` (`lib/include/vmware/guestrpc/powerops.h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum StateChange {
    /// `OS_Halt`.
    Halt = 1,
    /// `OS_Reboot`.
    Reboot = 2,
    /// `OS_PowerOn`.
    PowerOn = 3,
    /// `OS_Resume`.
    Resume = 4,
    /// `OS_Suspend`.
    Suspend = 5,
}

impl StateChange {
    /// All, with their TCLO command names.
    pub const ALL: [(&'static str, StateChange); 5] = [
        ("OS_Halt", StateChange::Halt),
        ("OS_Reboot", StateChange::Reboot),
        ("OS_PowerOn", StateChange::PowerOn),
        ("OS_Resume", StateChange::Resume),
        ("OS_Suspend", StateChange::Suspend),
    ];

    /// The default script's file name (`GuestApp_GetDefaultScript`): halt and reboot share one.
    pub fn default_script(self) -> &'static str {
        match self {
            StateChange::Halt | StateChange::Reboot => "poweroff-vm-default",
            StateChange::PowerOn => "poweron-vm-default",
            StateChange::Resume => "resume-vm-default",
            StateChange::Suspend => "suspend-vm-default",
        }
    }

    fn configured(self, c: &PowerConfig) -> Option<&String> {
        match self {
            StateChange::Halt | StateChange::Reboot => c.poweroff_script.as_ref(),
            StateChange::PowerOn => c.poweron_script.as_ref(),
            StateChange::Resume => c.resume_script.as_ref(),
            StateChange::Suspend => c.suspend_script.as_ref(),
        }
    }

    /// The script to run: the configured one (none when configured empty), else the default
    /// one when it exists.
    pub fn script(self, c: &PowerConfig) -> Option<PathBuf> {
        match self.configured(c) {
            Some(s) if s.is_empty() => None,
            Some(s) => {
                let p = PathBuf::from(s);
                Some(if p.is_absolute() {
                    p
                } else {
                    c.scripts_dir.join(p)
                })
            }
            None => {
                let p = c.scripts_dir.join(self.default_script());
                p.exists().then_some(p)
            }
        }
    }
}

/// What is in progress and what failed last.
#[derive(Debug, Default)]
pub struct State {
    in_progress: Option<StateChange>,
    last_failed: Option<StateChange>,
}

/// Registers the five handlers.
pub fn register(d: &mut Dispatcher) {
    for (name, change) in StateChange::ALL {
        d.register(name, move |ctx, _| start(ctx, change));
    }
}

fn start(ctx: &Context, change: StateChange) -> Reply {
    {
        let mut st = ctx.power_state();
        if st.in_progress.is_some() {
            return Reply::error("State change already in progress");
        }
        st.in_progress = Some(change);
    }
    info!(?change, "state change requested");
    let c = ctx.clone();
    ctx.spawn(async move { run(&c, change).await });
    Reply::ok("")
}

async fn run_script(path: &PathBuf) -> bool {
    info!(script = %path.display(), "running state change script");
    match tokio::process::Command::new(path)
        .stdin(std::process::Stdio::null())
        .status()
        .await
    {
        Ok(s) if s.success() => true,
        Ok(s) => {
            warn!(script = %path.display(), status = %s, "state change script failed");
            false
        }
        Err(e) => {
            warn!(script = %path.display(), error = %e, "state change script could not run");
            false
        }
    }
}

async fn run(ctx: &Context, change: StateChange) {
    let cfg = &ctx.config().power;
    let mut success = match change.script(cfg) {
        Some(p) => run_script(&p).await,
        None => true,
    };
    {
        let mut st = ctx.power_state();
        if success || st.last_failed == Some(change) {
            success = true;
            st.last_failed = None;
        } else {
            st.last_failed = Some(change);
        }
    }
    let mut msg = format!(
        "tools.os.statechange.status {} {}",
        u32::from(success),
        change as u32
    )
    .into_bytes();
    msg.push(0);
    if let Err(e) = ctx.rpci(&msg).await {
        warn!(error = %e, "sending the state change status");
    }
    if success && matches!(change, StateChange::Halt | StateChange::Reboot) {
        if let Err(e) = act(cfg, change == StateChange::Reboot).await {
            warn!(error = %e, "carrying out the state change");
        }
    }
    ctx.power_state().in_progress = None;
}

/// Why halt or reboot did not happen.
#[derive(Debug, thiserror::Error)]
pub enum PowerError {
    /// A program failed.
    #[error("{program}: {why}")]
    Program {
        /// The program run.
        program: String,
        /// What happened.
        why: String,
    },
    /// A system call failed.
    #[error("{call}: {errno}")]
    Sys {
        /// Which.
        call: &'static str,
        /// Why.
        errno: nix::errno::Errno,
    },
}

async fn run_program(argv: &[String]) -> Result<(), PowerError> {
    let Some((prog, args)) = argv.split_first() else {
        return Err(PowerError::Program {
            program: String::new(),
            why: "empty command".into(),
        });
    };
    let status = tokio::process::Command::new(prog)
        .args(args)
        .stdin(std::process::Stdio::null())
        .status()
        .await
        .map_err(|e| PowerError::Program {
            program: prog.clone(),
            why: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(PowerError::Program {
            program: prog.clone(),
            why: status.to_string(),
        })
    }
}

/// Halts or reboots the guest by the configured method.
pub async fn act(cfg: &PowerConfig, reboot: bool) -> Result<(), PowerError> {
    info!(method = ?cfg.method, reboot, "initiating {}", if reboot { "reboot" } else { "halt" });
    match cfg.method {
        PowerMethod::Systemd => {
            run_program(&[
                "systemctl".into(),
                if reboot { "reboot" } else { "poweroff" }.into(),
            ])
            .await
        }
        PowerMethod::Command => {
            run_program(if reboot {
                &cfg.reboot_command
            } else {
                &cfg.halt_command
            })
            .await
        }
        PowerMethod::Pid1Signal => {
            use nix::sys::signal::{kill, Signal};
            // busybox init: SIGUSR2 powers off, SIGTERM reboots (LinuxKit's init).
            let sig = if reboot {
                Signal::SIGTERM
            } else {
                Signal::SIGUSR2
            };
            kill(nix::unistd::Pid::from_raw(cfg.pid1), sig).map_err(|errno| PowerError::Sys {
                call: "kill",
                errno,
            })
        }
        PowerMethod::Syscall => {
            use nix::sys::reboot::{reboot as sys_reboot, RebootMode};
            nix::unistd::sync();
            let mode = if reboot {
                RebootMode::RB_AUTOBOOT
            } else {
                RebootMode::RB_POWER_OFF
            };
            match sys_reboot(mode) {
                Ok(never) => match never {},
                Err(errno) => Err(PowerError::Sys {
                    call: "reboot",
                    errno,
                }),
            }
        }
        PowerMethod::None => Ok(()),
    }
}
