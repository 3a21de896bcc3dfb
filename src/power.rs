//! Power operations: `OS_Halt`, `OS_Reboot`, `OS_PowerOn`, `OS_Resume`, `OS_Suspend`.
//!
//! As vmtoolsd's powerOps plugin (`services/plugins/powerOps/powerOps.c`): the request is answered
//! at once, the state change's script runs in the background, then `tools.os.statechange.status
//! <ok> <state>` tells the VMX how it went, and only on success do halt and reboot happen. A
//! second request while one runs is refused. When the same state change failed last time, the
//! retry counts as a success, so a user can force a shutdown past a broken script.

use crate::config::{PowerConfig, PowerMethod};
use crate::dispatch::{Context, Deferred, Feature, Registry, Reply};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use tracing::{debug, info, warn};

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

/// `TOOLSOPTION_SCRIPTS_*` (`lib/include/vmware/guestrpc/powerops.h`): the host turns each
/// state change's script on or off; halt and reboot share one.
const SCRIPT_OPTIONS: [(&str, &[StateChange]); 4] = [
    ("toolScripts.afterPowerOn", &[StateChange::PowerOn]),
    (
        "toolScripts.beforePowerOff",
        &[StateChange::Halt, StateChange::Reboot],
    ),
    ("toolScripts.afterResume", &[StateChange::Resume]),
    ("toolScripts.beforeSuspend", &[StateChange::Suspend]),
];

/// What is in progress, what failed last, which scripts the host wants run.
#[derive(Debug)]
struct State {
    in_progress: Option<StateChange>,
    last_failed: Option<StateChange>,
    script_enabled: [bool; 6],
}

/// The power operations feature: owns its state, registers its five handlers, its options and
/// its capabilities.
#[derive(Debug)]
pub struct Power {
    config: PowerConfig,
    state: Mutex<State>,
}

/// Releases the in-progress flag however the state change ends: done, failed, panicked or
/// aborted with the service.
struct InProgress(Arc<Power>);

impl Drop for InProgress {
    fn drop(&mut self) {
        self.0.state().in_progress = None;
    }
}

impl Power {
    /// The feature, with its configuration.
    pub fn new(config: PowerConfig) -> Arc<Power> {
        Arc::new(Power {
            config,
            state: Mutex::new(State {
                in_progress: None,
                last_failed: None,
                script_enabled: [true; 6],
            }),
        })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Never held across an await; a panic elsewhere leaves the data valid.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `PowerOpsStateChange`: answered once the script is started (or found to be unneeded);
    /// its end is reported by `tools.os.statechange.status`.
    fn start(self: &Arc<Self>, ctx: &Context, change: StateChange) -> Reply {
        let enabled = {
            let mut st = self.state();
            if st.in_progress.is_some() {
                return Reply::error("State change already in progress");
            }
            st.in_progress = Some(change);
            st.script_enabled[change as usize]
        };
        let guard = InProgress(self.clone());
        info!(?change, "state change requested");
        let script = if enabled {
            change.script(&self.config)
        } else {
            debug!(?change, "the host turned this script off");
            None
        };
        let me = self.clone();
        let c = ctx.clone();
        let Some(path) = script else {
            ctx.spawn(async move { me.done(&c, change, true, guard).await });
            return Reply::ok("");
        };
        info!(script = %path.display(), "running state change script");
        let spawned = tokio::process::Command::new(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        match spawned {
            Ok(mut child) => {
                ctx.spawn(async move {
                    let ok = match child.wait().await {
                        Ok(s) if s.success() => true,
                        Ok(s) => {
                            warn!(script = %path.display(), status = %s, "state change script failed");
                            false
                        }
                        Err(e) => {
                            warn!(script = %path.display(), error = %e, "waiting for the state change script");
                            false
                        }
                    };
                    me.done(&c, change, ok, guard).await;
                });
                Reply::ok("")
            }
            Err(e) => {
                warn!(script = %path.display(), error = %e, "state change script could not start");
                ctx.spawn(async move { me.done(&c, change, false, guard).await });
                Reply::error("Error starting script")
            }
        }
    }

    /// `PowerOpsStateChangeDone`: the status to the VMX, then halt or reboot on success.
    async fn done(&self, ctx: &Context, change: StateChange, ok: bool, guard: InProgress) {
        let success = {
            let mut st = self.state();
            // A retry of a change that failed last time goes through (softpowerop_retry).
            if ok || st.last_failed == Some(change) {
                st.last_failed = None;
                true
            } else {
                st.last_failed = Some(change);
                false
            }
        };
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
            if let Err(e) = act(&self.config, change == StateChange::Reboot).await {
                warn!(error = %e, "carrying out the state change");
            }
        }
        drop(guard);
    }
}

impl Feature for Power {
    fn register(self: Arc<Self>, r: &mut Registry) {
        for (name, change) in StateChange::ALL {
            let me = self.clone();
            r.handler(name, move |ctx, _| me.start(ctx, change).into());
        }
        for (option, changes) in SCRIPT_OPTIONS {
            let me = self.clone();
            r.option(option, move |_, value| {
                let enabled = match value {
                    "1" => true,
                    "0" => false,
                    _ => return Deferred::Now(false),
                };
                let mut st = me.state();
                for c in changes {
                    st.script_enabled[*c as usize] = enabled;
                }
                Deferred::Now(true)
            });
        }
        // TOOLS_CAP_OLD_NOVAL: the name and a space, no terminator (`ToolsCore_SetCapabilities`).
        r.capability(&b"tools.capability.statechange "[..]);
        r.capability(&b"tools.capability.softpowerop_retry "[..]);
    }
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
