//! The helper side: what `toolbox __guestops-helper` runs, started by [`super::HelperPool`]
//! with the socket on its standard input.
//!
//! Before it reads any request it becomes the user the setup frame names: supplementary
//! groups, then gids, then uids (that order: once the uid is not 0 the others can no longer be
//! changed), then it checks that neither root uid nor root gid can be regained, forbids new
//! privileges (no setuid executable can raise it later) and marks itself non-dumpable (so the
//! user cannot ptrace it or read its `/proc` entries), sets umask 022 and moves to the
//! user's home if the user may enter it, else to `/`. The agent has already cleared the
//! environment and set HOME, USER, LOGNAME, SHELL and PATH for the user.

use super::frame::{self, FrameError, Report, Setup};
use super::{HelperRegistry, ServiceId};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{
    geteuid, getgroups, getresgid, getresuid, getuid, setgid, setgroups, setresgid, setresuid,
    setuid, Gid, Uid,
};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

/// Why a helper stopped.
#[derive(Debug, thiserror::Error)]
pub enum HelperError {
    /// The socket failed or carried a bad frame.
    #[error(transparent)]
    Frame(#[from] FrameError),
    /// Standard input is unusable as the socket.
    #[error("helper stdin: {0}")]
    Stdin(io::Error),
    /// The first frame was not a setup.
    #[error("expected the setup frame first, got service {0}")]
    NoSetup(ServiceId),
    /// Becoming the user failed.
    #[error("becoming uid {uid}: {step}: {source}")]
    Drop {
        /// The target user.
        uid: u32,
        /// Which call failed.
        step: &'static str,
        /// Its error.
        source: nix::Error,
    },
    /// Root could be regained after the drop: the drop did not hold.
    #[error("uid {0}: root privileges could be regained after dropping them")]
    Regained(u32),
    /// A non-root agent was asked to run a helper for someone else.
    #[error("running as uid {agent}, cannot become uid {target}: only root can switch users")]
    NotRoot {
        /// Our uid.
        agent: u32,
        /// Who was asked for.
        target: u32,
    },
}

/// Runs a helper on standard input until the agent closes the socket; returns the exit code.
/// A bad frame ends this helper only: the agent notices and starts a new one when needed.
pub fn serve(registry: &HelperRegistry) -> ExitCode {
    match serve_stdin(registry) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("toolbox guest-ops helper: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve_stdin(registry: &HelperRegistry) -> Result<(), HelperError> {
    let socket = io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(HelperError::Stdin)?;
    // Standard input becomes /dev/null, so that nothing but this loop can talk to the agent.
    let null = std::fs::File::open("/dev/null").map_err(HelperError::Stdin)?;
    nix::unistd::dup2_stdin(&null).map_err(|e| HelperError::Stdin(e.into()))?;
    drop(null);
    let mut stream = UnixStream::from(socket);
    serve_on(&mut stream, registry)
}

/// The helper's loop on an already connected socket.
pub fn serve_on(stream: &mut UnixStream, registry: &HelperRegistry) -> Result<(), HelperError> {
    let Some((tag, payload)) = frame::read_frame(stream)? else {
        return Ok(());
    };
    if ServiceId(tag) != ServiceId::SETUP {
        return Err(HelperError::NoSetup(ServiceId(tag)));
    }
    let setup = Setup::decode(&payload)?;
    let own = std::os::fd::AsRawFd::as_raw_fd(&*stream);
    let report = match become_user(&setup, &[own]) {
        Ok(r) => r,
        Err(e) => {
            let _ =
                frame::write_frame(stream, frame::STATUS_SETUP_FAILED, e.to_string().as_bytes());
            return Err(e);
        }
    };
    frame::write_frame(stream, frame::STATUS_OK, &report.encode())?;
    let mut services = registry.instantiate(&setup.settings);
    let status = |services: &[(ServiceId, Box<dyn super::HelperService>)]| {
        if services.iter().any(|(_, s)| s.holds_state()) {
            frame::STATUS_OK_HOLDING
        } else {
            frame::STATUS_OK
        }
    };
    while let Some((tag, request)) = frame::read_frame(stream)? {
        let id = frame::service_of(tag);
        if id == ServiceId::HOLDS {
            frame::write_frame(stream, status(&services), &[])?;
            continue;
        }
        if id == ServiceId::IDENTITY {
            let now = current_report(Vec::new()).map_err(|source| HelperError::Drop {
                uid: setup.uid,
                step: "reading credentials",
                source,
            })?;
            frame::write_frame(stream, frame::STATUS_OK, &now.encode())?;
            continue;
        }
        match services.iter_mut().find(|(i, _)| *i == id) {
            Some((_, service)) => {
                let reply = service.handle(&request);
                frame::write_frame(stream, status(&services), &reply)?;
            }
            None => frame::write_frame(stream, frame::STATUS_UNKNOWN_SERVICE, &[])?,
        }
    }
    Ok(())
}

fn current_report(stray_fds: Vec<String>) -> Result<Report, nix::Error> {
    let u = getresuid()?;
    let g = getresgid()?;
    Ok(Report {
        uids: [u.real.as_raw(), u.effective.as_raw(), u.saved.as_raw()],
        gids: [g.real.as_raw(), g.effective.as_raw(), g.saved.as_raw()],
        groups: getgroups()?.into_iter().map(|g| g.as_raw()).collect(),
        stray_fds,
    })
}

/// Descriptors above 2 other than our own sockets and the directory listing itself, by
/// target. std marks everything it opens close-on-exec, so these can only come from the
/// agent's parent or a C library (a PAM module) that opened without O_CLOEXEC. Closing a
/// descriptor this process does not own needs `unsafe` (I/O safety), which this crate
/// forbids; they are reported to the agent instead, which logs them. The helper itself never
/// uses them and, being non-dumpable, cannot be made to hand them out.
fn stray_descriptors(keep: &[i32]) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return Vec::new();
    };
    let entries: Vec<(i32, std::path::PathBuf)> = dir
        .flatten()
        .filter_map(|e| {
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            Some((fd, e.path()))
        })
        .collect();
    entries
        .into_iter()
        .filter(|(fd, _)| *fd > 2 && !keep.contains(fd))
        .filter_map(|(fd, path)| {
            // The listing's own descriptor is closed by now and no longer resolves.
            let target = std::fs::read_link(path).ok()?;
            Some(format!("{fd} -> {}", target.display()))
        })
        .collect()
}

/// Whether this process already runs with all of `setup`'s ids and exactly its groups.
fn already(setup: &Setup) -> Result<bool, nix::Error> {
    let u = getresuid()?;
    let g = getresgid()?;
    let uid = Uid::from_raw(setup.uid);
    let gid = Gid::from_raw(setup.gid);
    if [u.real, u.effective, u.saved] != [uid; 3] || [g.real, g.effective, g.saved] != [gid; 3] {
        return Ok(false);
    }
    let mut have: Vec<u32> = getgroups()?.into_iter().map(|g| g.as_raw()).collect();
    let mut want = setup.groups.clone();
    for v in [&mut have, &mut want] {
        v.sort_unstable();
        v.dedup();
    }
    Ok(have == want)
}

fn become_user(setup: &Setup, keep: &[i32]) -> Result<Report, HelperError> {
    let uid = Uid::from_raw(setup.uid);
    let gid = Gid::from_raw(setup.gid);
    let step = |step: &'static str| {
        move |source| HelperError::Drop {
            uid: setup.uid,
            step,
            source,
        }
    };
    if already(setup).map_err(step("reading credentials"))? {
        // Already exactly that identity (root's helper of an agent running as root): nothing
        // to switch, which also works where the agent lacks CAP_SETUID/CAP_SETGID (LinuxKit
        // grants it CAP_SYS_BOOT only).
    } else if geteuid().is_root() {
        let groups: Vec<Gid> = setup.groups.iter().map(|g| Gid::from_raw(*g)).collect();
        setgroups(&groups).map_err(step("setgroups"))?;
        setresgid(gid, gid, gid).map_err(step("setresgid"))?;
        setresuid(uid, uid, uid).map_err(step("setresuid"))?;
        if !uid.is_root() {
            if setuid(Uid::from_raw(0)).is_ok() || setresuid(uid, Uid::from_raw(0), uid).is_ok() {
                return Err(HelperError::Regained(setup.uid));
            }
            if setup.gid != 0 && setgid(Gid::from_raw(0)).is_ok() {
                return Err(HelperError::Regained(setup.uid));
            }
        }
    } else if getuid() != uid || geteuid() != uid {
        return Err(HelperError::NotRoot {
            agent: geteuid().as_raw(),
            target: setup.uid,
        });
    }
    if setup.no_new_privs {
        nix::sys::prctl::set_no_new_privs().map_err(step("PR_SET_NO_NEW_PRIVS"))?;
    }
    nix::sys::prctl::set_dumpable(false).map_err(step("PR_SET_DUMPABLE"))?;
    umask(Mode::from_bits_truncate(0o022));
    // As the user, so a home the user cannot enter is not entered.
    if std::env::set_current_dir(&setup.home).is_err() {
        std::env::set_current_dir("/").map_err(|e| HelperError::Drop {
            uid: setup.uid,
            step: "chdir /",
            source: nix::Error::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    }
    let strays = stray_descriptors(keep);
    current_report(strays).map_err(step("reading credentials"))
}
