//! Starting, tracking and killing the programs the host asks for, inside the user's helper
//! process (so each program inherits the user's uid, gid and groups without any switch here).
//!
//! As vmtoolsd does (services/plugins/vix/vixTools.c, lib/procMgr/procMgrPosix.c): the
//! program runs as `/bin/sh -c "<program> <arguments>"`, so the quoting and the redirections
//! of the arguments string work; the pid is returned at once; an ended program's exit code
//! and end time stay listed for [`EXITED_PROGRAM_REAP_TIME`]. Each program leads a process
//! group of its own, so a kill reaches the whole tree it started; the helper itself is the
//! leader of a session without a terminal ([`detach_session`]), so no program can get at the
//! agent's. A waiter thread per running program reaps it the moment it ends: no zombies.

use super::functions::{CancelToken, FunctionContext, FunctionRegistry};
use super::io::{ProcessIo, STREAM_BUFFER};
use crate::vix::proto::{StartProgramRequest, VixError};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::{access, AccessFlags, Pid};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How long an ended program's exit code and end time stay listed
/// (`VIX_TOOLS_EXITED_PROGRAM_REAP_TIME`, vixTools.c: 5 minutes, as the VMODL documents).
pub const EXITED_PROGRAM_REAP_TIME: Duration = Duration::from_secs(5 * 60);

/// At most this many ended programs are remembered; the oldest go first. vmtoolsd has no
/// such bound; without it a host starting programs in a loop grows the list for 5 minutes.
pub const MAX_EXITED: usize = 4096;

/// How long TerminateProcess waits after SIGTERM before SIGKILL (`ProcMgr_KillByPid`,
/// procMgrPosix.c: SIGTERM, 5 s, then SIGKILL).
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// Pseudo pids of in-agent functions start above `PID_MAX_LIMIT` (4 194 304,
/// include/linux/threads.h), so they never collide with a real process.
pub const PSEUDO_PID_BASE: i64 = 4_194_304 + 1;

/// Stack of a waiter thread (it only waits).
const WAITER_STACK: usize = 64 * 1024;

/// How the manager runs programs.
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    /// The shell programs run under.
    pub shell: PathBuf,
    /// The owner name listed for the programs (the helper's user).
    pub owner: String,
    /// Bytes buffered per stream of a program with I/O.
    pub stream_buffer: usize,
    /// How long ended programs stay listed.
    pub retain_exited: Duration,
    /// How many ended programs are remembered at most.
    pub max_exited: usize,
    /// SIGTERM to SIGKILL.
    pub kill_grace: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        ManagerConfig {
            shell: PathBuf::from("/bin/sh"),
            owner: std::env::var("USER").unwrap_or_else(|_| nix::unistd::getuid().to_string()),
            stream_buffer: STREAM_BUFFER,
            retain_exited: EXITED_PROGRAM_REAP_TIME,
            max_exited: MAX_EXITED,
            kill_grace: KILL_GRACE,
        }
    }
}

/// Makes the calling process the leader of a new session without a controlling terminal,
/// so the programs it starts are detached from the agent's session. Call once at the start
/// of the helper (std cannot do `setsid` per child without an `unsafe` pre-exec hook). Fails
/// with `EPERM` in a process that already leads a process group; that one is detached enough.
pub fn detach_session() -> nix::Result<()> {
    nix::unistd::setsid().map(drop)
}

/// Why StartProgram failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The program does not exist.
    #[error("program {0:?} not found")]
    NotFound(String),
    /// The program exists but the user may not run it.
    #[error("program {0:?} is not executable by this user")]
    NotExecutable(String),
    /// The working directory is not a directory.
    #[error("working directory {0:?} is not a directory")]
    NotADirectory(String),
    /// An environment entry is not `NAME=value`.
    #[error("environment entry without '=' ({0} bytes)")]
    BadEnv(usize),
    /// Spawning failed.
    #[error("starting {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

impl StartError {
    /// The VIX error vmtoolsd answers with (VixToolsStartProgramImpl).
    pub fn vix_error(&self) -> VixError {
        match self {
            StartError::NotFound(_) => VixError::FILE_NOT_FOUND,
            StartError::NotExecutable(_) => VixError::GUEST_USER_PERMISSIONS,
            StartError::NotADirectory(_) => VixError::NOT_A_DIRECTORY,
            StartError::BadEnv(_) => VixError::INVALID_ARG,
            StartError::Spawn { source, .. } => crate::vix::files::translate_errno(
                Errno::from_raw(source.raw_os_error().unwrap_or(libc::EIO)),
            ),
        }
    }
}

/// Why TerminateProcess failed.
#[derive(Debug, thiserror::Error)]
pub enum TerminateError {
    /// No such process (or it already ended).
    #[error("no process {0}")]
    NoSuchProcess(i64),
    /// The user may not signal it (or it is the helper or the agent itself).
    #[error("not permitted to kill process {0}")]
    NotPermitted(i64),
    /// Another failure.
    #[error("killing process {pid}: {source}")]
    Signal {
        /// The process.
        pid: i64,
        /// Why.
        source: Errno,
    },
}

impl TerminateError {
    /// The VIX error vmtoolsd answers with (VixToolsKillProcess).
    pub fn vix_error(&self) -> VixError {
        match self {
            TerminateError::NoSuchProcess(_) => VixError::NO_SUCH_PROCESS,
            TerminateError::NotPermitted(_) => VixError::GUEST_USER_PERMISSIONS,
            TerminateError::Signal { source, .. } => crate::vix::files::translate_errno(*source),
        }
    }
}

/// What the manager knows about one program it started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessRecord {
    /// Pid (a pseudo pid for a function).
    pub pid: i64,
    /// The program's name (the last component of its path).
    pub name: String,
    /// The command line as run.
    pub command_line: String,
    /// The owner's name.
    pub owner: String,
    /// Start, seconds since the epoch.
    pub start_time: i64,
    /// Exit code and end time (seconds since the epoch) once ended.
    pub exit: Option<(i32, i64)>,
    /// Whether the host can reach its streams under `/proc/<pid>/`.
    pub has_io: bool,
}

enum Kind {
    Os,
    Function(watch::Sender<bool>),
}

struct Entry {
    record: ProcessRecord,
    ended_at: Option<Instant>,
    io: Option<Arc<ProcessIo>>,
    kind: Kind,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<i64, Entry>,
}

/// The programs started in this helper.
pub struct ProcessManager {
    config: ManagerConfig,
    functions: FunctionRegistry,
    state: Mutex<State>,
    ended: Condvar,
    next_pseudo: AtomicI64,
}

impl std::fmt::Debug for ProcessManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessManager")
            .field("config", &self.config)
            .field("functions", &self.functions)
            .field("tracked", &self.lock().entries.len())
            .finish()
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// `'…'` with each `'` closed, escaped and reopened: the program path reaches the shell as
/// one word whatever it contains (vmtoolsd wraps it in double quotes, which still expand
/// `$` and backquotes).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn find_in_path(name: &str, path: &str) -> Option<PathBuf> {
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(name))
        .find(|p| access(p.as_path(), AccessFlags::X_OK).is_ok() && p.is_file())
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    // Killed by a signal: the shell's convention, 128 + the signal.
    status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))
}

impl ProcessManager {
    /// A manager with `functions` available to StartProgram.
    pub fn new(config: ManagerConfig, functions: FunctionRegistry) -> Arc<ProcessManager> {
        Arc::new(ProcessManager {
            config,
            functions,
            state: Mutex::new(State::default()),
            ended: Condvar::new(),
            next_pseudo: AtomicI64::new(PSEUDO_PID_BASE),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.config
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The environment programs get: this process's (the helper's is the user's login
    /// environment) with the request's `NAME=value` entries over it.
    pub fn environment(&self, extra: &[String]) -> Result<Vec<(String, String)>, StartError> {
        let mut env: BTreeMap<String, String> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        for e in extra {
            let (k, v) = e.split_once('=').ok_or(StartError::BadEnv(e.len()))?;
            if k.is_empty() {
                return Err(StartError::BadEnv(e.len()));
            }
            env.insert(k.to_string(), v.to_string());
        }
        Ok(env.into_iter().collect())
    }

    fn working_dir(
        &self,
        req: &StartProgramRequest,
        env: &[(String, String)],
    ) -> Result<PathBuf, StartError> {
        if req.working_dir.is_empty() {
            let home = env
                .iter()
                .find(|(k, _)| k == "HOME")
                .map_or("/", |(_, v)| v.as_str());
            let home = PathBuf::from(home);
            return Ok(if home.is_dir() {
                home
            } else {
                PathBuf::from("/")
            });
        }
        let dir = PathBuf::from(&req.working_dir);
        if dir.is_dir() {
            Ok(dir)
        } else {
            Err(StartError::NotADirectory(req.working_dir.clone()))
        }
    }

    /// Starts what `req` asks for and returns its pid at once. A program name without `/`
    /// is a registered function if there is one, else a program searched in `PATH`, and in
    /// both cases gets pipes (govmomi's convention); an absolute path runs without I/O, its
    /// streams on `/dev/null`, as vmtoolsd runs it.
    pub fn start(self: &Arc<Self>, req: &StartProgramRequest) -> Result<i64, StartError> {
        let span = tracing::debug_span!("start_program", program_len = req.program.len());
        let _enter = span.enter();
        self.prune();
        let env = self.environment(&req.env)?;
        let dir = self.working_dir(req, &env)?;
        if let Some(function) = self.functions.get(&req.program) {
            return self.start_function(req, function, env, dir);
        }
        let with_io = !req.program.contains('/');
        let program = if with_io {
            let path = env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map_or("/usr/local/bin:/usr/bin:/bin", |(_, v)| v.as_str());
            find_in_path(&req.program, path)
                .ok_or_else(|| StartError::NotFound(req.program.clone()))?
        } else {
            PathBuf::from(&req.program)
        };
        let shown = program.to_string_lossy().into_owned();
        match std::fs::metadata(&program) {
            Ok(m) if m.is_dir() => return Err(StartError::NotExecutable(shown)),
            Ok(_) => {}
            Err(_) => return Err(StartError::NotFound(shown)),
        }
        if access(program.as_path(), AccessFlags::X_OK).is_err() {
            return Err(StartError::NotExecutable(shown));
        }
        let command_line = if req.arguments.is_empty() {
            shell_quote(&shown)
        } else {
            format!("{} {}", shell_quote(&shown), req.arguments)
        };
        let mut cmd = Command::new(&self.config.shell);
        cmd.arg("-c")
            .arg(&command_line)
            .current_dir(&dir)
            .env_clear()
            .envs(
                env.iter()
                    .map(|(k, v)| (OsString::from(k), OsString::from(v))),
            )
            .process_group(0);
        let io_stdio = || {
            if with_io {
                Stdio::piped()
            } else {
                Stdio::null()
            }
        };
        cmd.stdin(io_stdio()).stdout(io_stdio()).stderr(io_stdio());
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn {
            program: shown.clone(),
            source,
        })?;
        let pid = i64::from(child.id());
        let io = if with_io {
            match (child.stdin.take(), child.stdout.take(), child.stderr.take()) {
                (Some(i), Some(o), Some(e)) => {
                    let files = (
                        File::from(OwnedFd::from(i)),
                        File::from(OwnedFd::from(o)),
                        File::from(OwnedFd::from(e)),
                    );
                    match ProcessIo::attach(files.0, files.1, files.2, self.config.stream_buffer) {
                        Ok(io) => Some(Arc::new(io)),
                        Err(source) => {
                            let _ = child.kill();
                            let _ = child.wait();
                            return Err(StartError::Spawn {
                                program: shown,
                                source,
                            });
                        }
                    }
                }
                _ => None,
            }
        } else {
            None
        };
        let record = ProcessRecord {
            pid,
            name: program
                .file_name()
                .map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned()),
            command_line: if req.arguments.is_empty() {
                shown.clone()
            } else {
                format!("{shown} {}", req.arguments)
            },
            owner: self.config.owner.clone(),
            start_time: now_secs(),
            exit: None,
            has_io: io.is_some(),
        };
        self.lock().entries.insert(
            pid,
            Entry {
                record,
                ended_at: None,
                io,
                kind: Kind::Os,
            },
        );
        let manager = Arc::downgrade(self);
        let waiter = std::thread::Builder::new()
            .name("proc-wait".into())
            .stack_size(WAITER_STACK)
            .spawn(move || {
                let code = match child.wait() {
                    Ok(status) => exit_code(status),
                    Err(_) => 1,
                };
                if let Some(m) = manager.upgrade() {
                    m.mark_ended(pid, code);
                }
            });
        if let Err(source) = waiter {
            // Without a waiter the child would become a zombie: reap it here, then report.
            self.lock().entries.remove(&pid);
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
            return Err(StartError::Spawn {
                program: shown,
                source,
            });
        }
        tracing::debug!(pid, with_io = io_flag(self, pid), "program started");
        Ok(pid)
    }

    fn start_function(
        self: &Arc<Self>,
        req: &StartProgramRequest,
        function: super::functions::Function,
        env: Vec<(String, String)>,
        dir: PathBuf,
    ) -> Result<i64, StartError> {
        let spawn_err = |source: std::io::Error| StartError::Spawn {
            program: req.program.clone(),
            source,
        };
        let pipe = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map(|(r, w)| (File::from(r), File::from(w)))
                .map_err(|e| spawn_err(e.into()))
        };
        let (stdin_r, stdin_w) = pipe()?;
        let (stdout_r, stdout_w) = pipe()?;
        let (stderr_r, stderr_w) = pipe()?;
        let io = Arc::new(
            ProcessIo::attach(stdin_w, stdout_r, stderr_r, self.config.stream_buffer)
                .map_err(spawn_err)?,
        );
        let pid = self.next_pseudo.fetch_add(1, Ordering::Relaxed);
        let (cancel_tx, cancel) = CancelToken::new();
        let record = ProcessRecord {
            pid,
            name: req.program.clone(),
            command_line: if req.arguments.is_empty() {
                req.program.clone()
            } else {
                format!("{} {}", req.program, req.arguments)
            },
            owner: self.config.owner.clone(),
            start_time: now_secs(),
            exit: None,
            has_io: true,
        };
        self.lock().entries.insert(
            pid,
            Entry {
                record,
                ended_at: None,
                io: Some(io),
                kind: Kind::Function(cancel_tx),
            },
        );
        let context = FunctionContext {
            arguments: req.arguments.clone(),
            working_dir: dir,
            env,
            stdin: stdin_r,
            stdout: stdout_w,
            stderr: stderr_w,
            cancel,
        };
        let manager = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name(format!("fn-{}", req.program))
            .spawn(move || {
                let code =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| function(context)))
                        .unwrap_or(1);
                if let Some(m) = manager.upgrade() {
                    m.mark_ended(pid, code);
                }
            });
        if let Err(e) = spawned {
            self.lock().entries.remove(&pid);
            return Err(spawn_err(e));
        }
        tracing::debug!(pid, "function started");
        Ok(pid)
    }

    fn mark_ended(&self, pid: i64, code: i32) {
        let mut st = self.lock();
        if let Some(e) = st.entries.get_mut(&pid) {
            e.record.exit = Some((code, now_secs()));
            e.ended_at = Some(Instant::now());
        }
        // In the same critical section, so whoever sees the exit also sees the bounds hold.
        self.prune_locked(&mut st);
        drop(st);
        self.ended.notify_all();
    }

    /// Forgets ended programs older than the retention time, and the oldest beyond the
    /// count bound; their stream buffers are released.
    pub fn prune(&self) {
        let mut st = self.lock();
        self.prune_locked(&mut st);
    }

    fn prune_locked(&self, st: &mut State) {
        let retain = self.config.retain_exited;
        let expired: Vec<i64> = st
            .entries
            .iter()
            .filter(|(_, e)| e.ended_at.is_some_and(|t| t.elapsed() >= retain))
            .map(|(pid, _)| *pid)
            .collect();
        for pid in expired {
            if let Some(e) = st.entries.remove(&pid) {
                if let Some(io) = e.io {
                    io.release();
                }
            }
        }
        let mut ended: Vec<(Instant, i64)> = st
            .entries
            .iter()
            .filter_map(|(pid, e)| e.ended_at.map(|t| (t, *pid)))
            .collect();
        if ended.len() > self.config.max_exited {
            ended.sort_unstable();
            let excess = ended.len() - self.config.max_exited;
            for (_, pid) in ended.into_iter().take(excess) {
                if let Some(e) = st.entries.remove(&pid) {
                    if let Some(io) = e.io {
                        io.release();
                    }
                }
            }
        }
    }

    /// The programs started here and still remembered, by pid.
    pub fn list(&self) -> Vec<ProcessRecord> {
        self.prune();
        self.lock()
            .entries
            .values()
            .map(|e| e.record.clone())
            .collect()
    }

    /// One program's record.
    pub fn record(&self, pid: i64) -> Option<ProcessRecord> {
        self.lock().entries.get(&pid).map(|e| e.record.clone())
    }

    /// The streams of a program started with I/O.
    pub fn io(&self, pid: i64) -> Option<Arc<ProcessIo>> {
        self.lock().entries.get(&pid).and_then(|e| e.io.clone())
    }

    /// How many programs are remembered (running and ended).
    pub fn tracked(&self) -> usize {
        self.lock().entries.len()
    }

    /// Waits up to `timeout` for `pid` to end; its exit code if it did.
    pub fn wait(&self, pid: i64, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let mut st = self.lock();
        loop {
            match st.entries.get(&pid) {
                None => return None,
                Some(e) => {
                    if let Some((code, _)) = e.record.exit {
                        return Some(code);
                    }
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            st = self
                .ended
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// TerminateProcess: SIGTERM, then SIGKILL after the grace time if it is still there.
    /// A program started here is signalled as its process group (the tree it started); any
    /// other pid alone, with this helper's rights, so a user cannot kill another user's
    /// process. The helper's own pid and its parent's (the agent) are refused, as vmtoolsd
    /// refuses its own.
    pub fn terminate(&self, pid: i64) -> Result<(), TerminateError> {
        let span = tracing::debug_span!("terminate_process", pid);
        let _enter = span.enter();
        enum Target {
            Group,
            Function,
            Foreign,
        }
        let target = {
            let st = self.lock();
            match st.entries.get(&pid) {
                Some(e) if e.record.exit.is_some() => {
                    return Err(TerminateError::NoSuchProcess(pid));
                }
                Some(e) => match &e.kind {
                    Kind::Os => Target::Group,
                    Kind::Function(cancel) => {
                        let _ = cancel.send(true);
                        if let Some(io) = &e.io {
                            io.stdin.close_writer();
                        }
                        Target::Function
                    }
                },
                None => Target::Foreign,
            }
        };
        match target {
            Target::Function => {
                let _ = self.wait(pid, self.config.kill_grace);
                Ok(())
            }
            Target::Group => {
                let group = Pid::from_raw(pid as i32);
                match killpg(group, Signal::SIGTERM) {
                    // The program moved itself to another group (a daemon's setsid): the
                    // process alone, then.
                    Err(Errno::ESRCH) => signal_result(pid, kill(group, Signal::SIGTERM))?,
                    other => signal_result(pid, other)?,
                }
                if self.wait(pid, self.config.kill_grace).is_none() {
                    if killpg(group, Signal::SIGKILL) == Err(Errno::ESRCH) {
                        let _ = kill(group, Signal::SIGKILL);
                    }
                    let _ = self.wait(pid, self.config.kill_grace);
                }
                // What the leader left behind in its group goes too: "kill the tree".
                let _ = killpg(group, Signal::SIGKILL);
                Ok(())
            }
            Target::Foreign => {
                let Ok(raw) = i32::try_from(pid) else {
                    return Err(TerminateError::NoSuchProcess(pid));
                };
                if raw <= 0
                    || raw == std::process::id() as i32
                    || raw == nix::unistd::getppid().as_raw()
                {
                    return Err(if raw <= 0 {
                        TerminateError::NoSuchProcess(pid)
                    } else {
                        TerminateError::NotPermitted(pid)
                    });
                }
                let target = Pid::from_raw(raw);
                signal_result(pid, kill(target, Signal::SIGTERM))?;
                let deadline = Instant::now() + self.config.kill_grace;
                while Instant::now() < deadline {
                    if !Path::new(&format!("/proc/{raw}")).exists() {
                        return Ok(());
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = kill(target, Signal::SIGKILL);
                Ok(())
            }
        }
    }
}

fn io_flag(m: &ProcessManager, pid: i64) -> bool {
    m.lock().entries.get(&pid).is_some_and(|e| e.io.is_some())
}

fn signal_result(pid: i64, r: nix::Result<()>) -> Result<(), TerminateError> {
    match r {
        Ok(()) => Ok(()),
        Err(Errno::ESRCH) => Err(TerminateError::NoSuchProcess(pid)),
        Err(Errno::EPERM) | Err(Errno::EACCES) => Err(TerminateError::NotPermitted(pid)),
        Err(source) => Err(TerminateError::Signal { pid, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_keeps_one_word() {
        assert_eq!(shell_quote("/bin/a b"), "'/bin/a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
