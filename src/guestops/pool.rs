//! The agent side: a bounded pool of helper processes, one per uid.

use super::frame::{self, FrameError, Report, Setup};
use super::{HelperSettings, ServiceId, HELPER_SUBCOMMAND};
use crate::auth::{AccountFiles, AccountStamp, UserIdentity};
use nix::unistd::geteuid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Looks an account up as it stands now (`None`: it no longer exists).
pub type Resolver = Arc<dyn Fn(&str) -> Option<UserIdentity> + Send + Sync>;

/// Account files to watch: when their stamp changes, every helper whose user no longer
/// resolves to the identity it runs with is stopped, busy or not, without waiting for a
/// request (a helper of a deleted user, or of one removed from a group, does not linger).
#[derive(Clone)]
pub struct AccountWatch {
    /// The files whose [`AccountStamp`] is watched.
    pub files: AccountFiles,
    /// How to look a user up again ([`crate::auth::Authenticator::resolve`]).
    pub resolve: Resolver,
}

impl std::fmt::Debug for AccountWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountWatch")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// How the pool starts and keeps helpers.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// The helper program: the agent's own binary.
    pub program: PathBuf,
    /// Its arguments (the hidden subcommand).
    pub args: Vec<OsString>,
    /// Extra environment for the helper beyond the user's HOME, USER, LOGNAME, SHELL, PATH.
    pub extra_env: Vec<(OsString, OsString)>,
    /// Most helpers alive at once.
    pub max_helpers: usize,
    /// A helper unused this long is stopped.
    pub idle_timeout: Duration,
    /// Longest a single request may take before its helper is killed.
    pub call_timeout: Duration,
    /// Account files to watch, if any.
    pub account_watch: Option<AccountWatch>,
    /// Whether helpers set `PR_SET_NO_NEW_PRIVS` (so programs they start cannot gain
    /// privileges through set-user-ID files or file capabilities either).
    pub no_new_privs: bool,
    /// What the helpers' services need of the configuration.
    pub settings: HelperSettings,
}

impl Default for PoolConfig {
    /// `/proc/self/exe __guestops-helper`: the very binary that runs (even if its file was
    /// replaced by an upgrade since), 8 helpers, 30 s idle (longer while a helper holds
    /// state), 2 min per request, no new privileges.
    fn default() -> Self {
        PoolConfig {
            program: PathBuf::from("/proc/self/exe"),
            args: vec![HELPER_SUBCOMMAND.into()],
            extra_env: Vec::new(),
            max_helpers: 8,
            idle_timeout: Duration::from_secs(30),
            call_timeout: Duration::from_secs(120),
            account_watch: None,
            no_new_privs: true,
            settings: HelperSettings::new(),
        }
    }
}

/// What went wrong running a request as a user.
#[derive(Debug, thiserror::Error)]
pub enum GuestOpsError {
    /// The agent is not root and the request is for another user.
    #[error(
        "guest operations as {user:?} (uid {uid}) need the agent to run as root; it runs as uid {agent_uid}"
    )]
    NotPermitted {
        /// The requested user.
        user: String,
        /// Their uid.
        uid: u32,
        /// The agent's.
        agent_uid: u32,
    },
    /// Every helper slot is busy with a request.
    #[error("all {0} guest-operation helpers are busy")]
    PoolFull(usize),
    /// The helper could not be started.
    #[error("starting the helper for {user:?}: {source}")]
    Spawn {
        /// The user.
        user: String,
        /// Why.
        source: std::io::Error,
    },
    /// The helper refused or failed to become the user.
    #[error("helper for {user:?} could not become the user: {message}")]
    Setup {
        /// The user.
        user: String,
        /// The helper's message or what did not match.
        message: String,
    },
    /// The helper died, timed out or sent a bad frame; it is gone and a new one starts with
    /// the next request.
    #[error("helper for {user:?} failed: {source}")]
    Helper {
        /// The user.
        user: String,
        /// What happened on the socket.
        source: FrameError,
    },
    /// The helper has no handler for that service.
    #[error("helper has no service {0}")]
    UnknownService(ServiceId),
    /// The request is larger than a frame.
    #[error("request of {0} bytes is larger than the {max}-byte limit", max = frame::MAX_PAYLOAD)]
    TooLarge(usize),
}

/// One running helper; killed and reaped when dropped.
struct Helper {
    child: Child,
    stream: UnixStream,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Closing the socket alone would let a helper busy in a handler run on; the kill makes
        // sure it stops, the wait that no zombie stays.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Slot {
    identity: UserIdentity,
    helper: Mutex<Option<Helper>>,
    last_used: Mutex<Instant>,
    /// The helper said, in its last reply, that it holds state its user still needs.
    holds: std::sync::atomic::AtomicBool,
}

struct Inner {
    config: PoolConfig,
    /// The watched files' stamp at the last look.
    accounts_seen: Mutex<Option<AccountStamp>>,
    slots: Mutex<HashMap<u32, Arc<Slot>>>,
    stop: Mutex<bool>,
    wake: Condvar,
    /// The reaper thread runs. Cleared by the reaper itself, under the slots lock, when it
    /// leaves for lack of helpers; so a helper added after that finds it cleared.
    reaper_alive: std::sync::atomic::AtomicBool,
}

/// Helpers by uid. `call` blocks: use it from a blocking pool.
pub struct HelperPool {
    inner: Arc<Inner>,
    /// Runs only while helpers do, so an agent without guest operations in flight is one
    /// thread and wakes for nothing.
    reaper: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl std::fmt::Debug for HelperPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HelperPool")
            .field("config", &self.inner.config)
            .field("helpers", &self.helpers())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The guarded values stay consistent across a panic (they are replaced whole).
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl HelperPool {
    /// A pool. The thread that stops idle helpers starts with the first helper and ends with
    /// the last.
    pub fn new(config: PoolConfig) -> HelperPool {
        let accounts_seen = Mutex::new(config.account_watch.as_ref().map(|w| w.files.stamp()));
        let inner = Arc::new(Inner {
            config,
            accounts_seen,
            slots: Mutex::new(HashMap::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            reaper_alive: std::sync::atomic::AtomicBool::new(false),
        });
        HelperPool {
            inner,
            reaper: Mutex::new(None),
        }
    }

    /// Starts the reaper unless it runs.
    fn ensure_reaper(&self) {
        use std::sync::atomic::Ordering;
        if self.inner.reaper_alive.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut reaper = lock(&self.reaper);
        // The one before has left (or is leaving, its slots lock released): let it go.
        drop(reaper.take());
        let weak = Arc::downgrade(&self.inner);
        *reaper = std::thread::Builder::new()
            .name("guestops-reaper".into())
            .spawn(move || reap_loop(weak))
            .ok();
    }

    /// The uids with a live helper.
    pub fn helpers(&self) -> Vec<u32> {
        let mut uids: Vec<u32> = lock(&self.inner.slots)
            .iter()
            .filter(|(_, s)| s.helper.try_lock().map(|h| h.is_some()).unwrap_or(true))
            .map(|(uid, _)| *uid)
            .collect();
        uids.sort_unstable();
        uids
    }

    /// The process id of `uid`'s helper, if one runs and is not busy.
    pub fn helper_pid(&self, uid: u32) -> Option<u32> {
        let slot = lock(&self.inner.slots).get(&uid).cloned()?;
        let guard = slot.helper.try_lock().ok()?;
        guard.as_ref().map(|h| h.child.id())
    }

    /// Stops `uid`'s helper (e.g. the account changed); the next request starts a new one.
    pub fn retire(&self, uid: u32) {
        let slot = lock(&self.inner.slots).remove(&uid);
        drop(slot);
    }

    /// Stops every helper.
    pub fn retire_all(&self) {
        let slots: Vec<_> = lock(&self.inner.slots).drain().collect();
        drop(slots);
    }

    /// Stops helpers idle longer than the idle timeout, and those whose account changed
    /// (the reaper thread does this on its own; exposed for the agent's timer and for tests).
    pub fn reap_idle(&self) {
        reap(&self.inner);
    }

    /// Stops every helper whose user `resolve` no longer maps to the identity the helper
    /// runs with.
    pub fn retire_changed(&self, resolve: &dyn Fn(&str) -> Option<UserIdentity>) {
        retire_changed(&self.inner, resolve);
    }

    /// Runs `payload` through `service` in `user`'s helper, starting the helper if needed,
    /// and returns the handler's reply.
    pub fn call(
        &self,
        user: &UserIdentity,
        service: ServiceId,
        payload: &[u8],
    ) -> Result<Vec<u8>, GuestOpsError> {
        self.call_parts(user, service, &[payload])
    }

    /// As [`HelperPool::call`], with the payload given in pieces that are sent one after
    /// the other without being copied together (a tag byte and a borrowed HGFS packet, say).
    pub fn call_parts(
        &self,
        user: &UserIdentity,
        service: ServiceId,
        parts: &[&[u8]],
    ) -> Result<Vec<u8>, GuestOpsError> {
        let span = tracing::debug_span!("guestops", user = %user.name, uid = user.uid, %service);
        let _enter = span.enter();
        let payload_len: usize = parts.iter().map(|p| p.len()).sum();
        if payload_len > frame::MAX_PAYLOAD {
            return Err(GuestOpsError::TooLarge(payload_len));
        }
        if service == ServiceId::SETUP {
            return Err(GuestOpsError::UnknownService(service));
        }
        let agent_uid = geteuid().as_raw();
        if agent_uid != 0 && user.uid != agent_uid {
            return Err(GuestOpsError::NotPermitted {
                user: user.name.clone(),
                uid: user.uid,
                agent_uid,
            });
        }
        let slot = self.slot_for(user)?;
        let mut guard = lock(&slot.helper);
        let helper = match &mut *guard {
            Some(helper) => helper,
            empty @ None => {
                let helper = empty.insert(self.spawn(user)?);
                self.ensure_reaper();
                helper
            }
        };
        let outcome = exchange(helper, service, parts);
        *lock(&slot.last_used) = Instant::now();
        match outcome {
            Ok((status @ (frame::STATUS_OK | frame::STATUS_OK_HOLDING), reply)) => {
                slot.holds.store(
                    status == frame::STATUS_OK_HOLDING,
                    std::sync::atomic::Ordering::Release,
                );
                Ok(reply)
            }
            Ok((frame::STATUS_UNKNOWN_SERVICE, _)) => Err(GuestOpsError::UnknownService(service)),
            Ok((status, _)) => {
                *guard = None;
                Err(GuestOpsError::Helper {
                    user: user.name.clone(),
                    source: FrameError::Malformed {
                        what: "helper reply",
                        why: if status == frame::STATUS_SETUP_FAILED {
                            "setup status outside setup"
                        } else {
                            "unknown status"
                        },
                    },
                })
            }
            Err(source) => {
                // Dead, hung or babbling: drop it (kill + reap); the next call starts afresh.
                *guard = None;
                tracing::warn!(error = %source, "guest-ops helper failed; stopped");
                Err(GuestOpsError::Helper {
                    user: user.name.clone(),
                    source,
                })
            }
        }
    }

    /// The slot of `user`'s uid: the existing one if it is for the same identity; a new one
    /// if the identity changed (groups, home, ... : the old helper would run with stale
    /// credentials) or none existed, making room by stopping the least recently used idle
    /// helper when the pool is full.
    fn slot_for(&self, user: &UserIdentity) -> Result<Arc<Slot>, GuestOpsError> {
        let mut slots = lock(&self.inner.slots);
        if let Some(slot) = slots.get(&user.uid) {
            if slot.identity == *user {
                return Ok(slot.clone());
            }
            tracing::info!("identity changed; replacing the helper");
            slots.remove(&user.uid);
        }
        let max = self.inner.config.max_helpers.max(1);
        if slots.len() >= max {
            let idle = slots
                .iter()
                .filter(|(_, s)| s.helper.try_lock().is_ok())
                .min_by_key(|(_, s)| *lock(&s.last_used))
                .map(|(uid, _)| *uid);
            match idle {
                Some(uid) => {
                    tracing::debug!(
                        evicted = uid,
                        "pool full; stopping the least recently used helper"
                    );
                    slots.remove(&uid);
                }
                None => return Err(GuestOpsError::PoolFull(max)),
            }
        }
        let slot = Arc::new(Slot {
            identity: user.clone(),
            helper: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
            holds: std::sync::atomic::AtomicBool::new(false),
        });
        slots.insert(user.uid, slot.clone());
        Ok(slot)
    }

    fn spawn(&self, user: &UserIdentity) -> Result<Helper, GuestOpsError> {
        let config = &self.inner.config;
        let spawn_err = |source| GuestOpsError::Spawn {
            user: user.name.clone(),
            source,
        };
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        // A helper stuck in a handler (a FIFO, a hung NFS mount) is killed rather than holding
        // its user's slot for ever.
        ours.set_read_timeout(Some(config.call_timeout))
            .and_then(|()| ours.set_write_timeout(Some(config.call_timeout)))
            .map_err(spawn_err)?;
        let path = if user.uid == 0 {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        } else {
            "/usr/local/bin:/usr/bin:/bin"
        };
        let mut command = Command::new(&config.program);
        command
            .args(&config.args)
            .env_clear()
            .env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name)
            .env("SHELL", &user.shell)
            .env("PATH", path)
            .envs(config.extra_env.iter().map(|(k, v)| (k, v)))
            .current_dir("/")
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let child = command.spawn().map_err(spawn_err)?;
        drop(command);
        let mut helper = Helper {
            child,
            stream: ours,
        };
        let setup = Setup {
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            home: user.home.clone(),
            no_new_privs: config.no_new_privs,
            settings: config.settings.clone(),
        };
        let setup_err = |message: String| GuestOpsError::Setup {
            user: user.name.clone(),
            message,
        };
        let (status, reply) = exchange(&mut helper, ServiceId::SETUP, &[&setup.encode()])
            .map_err(|e| setup_err(e.to_string()))?;
        if status != frame::STATUS_OK {
            return Err(setup_err(String::from_utf8_lossy(&reply).into_owned()));
        }
        let report = Report::decode(&reply).map_err(|e| setup_err(e.to_string()))?;
        check_report(user, &report).map_err(setup_err)?;
        if !report.stray_fds.is_empty() {
            tracing::warn!(fds = ?report.stray_fds, "helper inherited descriptors it cannot close");
        }
        tracing::debug!(pid = helper.child.id(), "helper started");
        Ok(helper)
    }
}

/// What the helper reports must be what it was asked to become: all three uids and gids, and
/// (when the agent is root and so could set them) exactly the requested groups.
fn check_report(user: &UserIdentity, report: &Report) -> Result<(), String> {
    if report.uids != [user.uid; 3] || report.gids[1] != user.gid {
        return Err(format!(
            "helper runs as uids {:?} gids {:?}, not uid {} gid {}",
            report.uids, report.gids, user.uid, user.gid
        ));
    }
    if geteuid().is_root() {
        let mut want = user.groups.clone();
        let mut got = report.groups.clone();
        want.sort_unstable();
        want.dedup();
        got.sort_unstable();
        got.dedup();
        if want != got || report.gids != [user.gid; 3] {
            return Err(format!(
                "helper has gids {:?} groups {:?}, not gid {} groups {:?}",
                report.gids, got, user.gid, want
            ));
        }
    }
    Ok(())
}

fn exchange(
    helper: &mut Helper,
    service: ServiceId,
    parts: &[&[u8]],
) -> Result<(u8, Vec<u8>), FrameError> {
    frame::write_frame_parts(&mut helper.stream, service.0, parts)?;
    match frame::read_frame(&mut helper.stream)? {
        Some(reply) => Ok(reply),
        None => Err(FrameError::Io(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "helper closed the socket",
        ))),
    }
}

fn retire_changed(inner: &Inner, resolve: &dyn Fn(&str) -> Option<UserIdentity>) {
    let users: Vec<(u32, UserIdentity)> = lock(&inner.slots)
        .iter()
        .map(|(uid, s)| (*uid, s.identity.clone()))
        .collect();
    // Looked up without the pool locked: NSS may be slow.
    let changed: Vec<(u32, UserIdentity)> = users
        .into_iter()
        .filter(|(_, id)| resolve(&id.name).as_ref() != Some(id))
        .collect();
    if changed.is_empty() {
        return;
    }
    let mut slots = lock(&inner.slots);
    let mut gone = Vec::new();
    for (uid, id) in &changed {
        // Only the slot that was looked at: one made since for the new identity stays.
        if slots.get(uid).is_some_and(|s| s.identity == *id) {
            gone.extend(slots.remove(uid));
        }
    }
    tracing::info!(uids = ?changed.iter().map(|(u, _)| *u).collect::<Vec<_>>(), "accounts changed; stopping their helpers");
    stop_helpers(&gone);
    drop(slots);
}

fn watch_accounts(inner: &Inner) {
    let Some(watch) = &inner.config.account_watch else {
        return;
    };
    let now = watch.files.stamp();
    let mut seen = lock(&inner.accounts_seen);
    if seen.as_ref() == Some(&now) {
        return;
    }
    *seen = Some(now);
    drop(seen);
    retire_changed(inner, &*watch.resolve);
}

/// Whether an idle helper still holds state: asks it (the answer it gave with its last reply
/// may be stale: its programs may have ended since). A helper that cannot answer holds
/// nothing worth keeping. Restarts the idle clock of one that holds state, so it is asked
/// again one idle timeout later, not on every tick.
fn still_holds(slot: &Slot) -> bool {
    use std::sync::atomic::Ordering;
    if !slot.holds.load(Ordering::Acquire) {
        return false;
    }
    let Ok(mut guard) = slot.helper.try_lock() else {
        return true;
    };
    let Some(helper) = guard.as_mut() else {
        return false;
    };
    let holds = matches!(
        exchange(helper, ServiceId::HOLDS, &[]),
        Ok((frame::STATUS_OK_HOLDING, _))
    );
    slot.holds.store(holds, Ordering::Release);
    if holds {
        *lock(&slot.last_used) = Instant::now();
    }
    holds
}

fn reap(inner: &Inner) {
    watch_accounts(inner);
    let idle = inner.config.idle_timeout;
    let now = Instant::now();
    let candidates: Vec<(u32, Arc<Slot>)> = lock(&inner.slots)
        .iter()
        .filter(|(_, s)| {
            s.helper.try_lock().is_ok() && now.duration_since(*lock(&s.last_used)) >= idle
        })
        .map(|(uid, s)| (*uid, s.clone()))
        .collect();
    // Asked without the pool locked: a helper's answer takes a round trip.
    let stale: Vec<u32> = candidates
        .into_iter()
        .filter(|(_, s)| !still_holds(s))
        .map(|(uid, _)| uid)
        .collect();
    let mut slots = lock(&inner.slots);
    // Only slots still idle: a request may have come in meanwhile.
    let stale: Vec<u32> = stale
        .into_iter()
        .filter(|uid| {
            slots.get(uid).is_some_and(|s| {
                s.helper.try_lock().is_ok() && now.duration_since(*lock(&s.last_used)) >= idle
            })
        })
        .collect();
    let gone: Vec<_> = stale.iter().filter_map(|uid| slots.remove(uid)).collect();
    if !gone.is_empty() {
        tracing::debug!(uids = ?stale, "stopping idle helpers");
    }
    stop_helpers(&gone);
    drop(slots);
}

/// Stops the helpers of slots just taken out of the pool. Called with the pool still locked,
/// so no one sees a helper gone from the pool whose process still runs. One a request is
/// using stops when that request lets its clone of the slot go.
fn stop_helpers(gone: &[Arc<Slot>]) {
    for slot in gone {
        if let Ok(mut helper) = slot.helper.try_lock() {
            drop(helper.take());
        }
    }
}

fn reap_loop(inner: Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let tick = (strong.config.idle_timeout / 4)
            .clamp(Duration::from_millis(50), Duration::from_secs(5));
        reap(&strong);
        {
            let slots = lock(&strong.slots);
            if slots.is_empty() {
                strong
                    .reaper_alive
                    .store(false, std::sync::atomic::Ordering::Release);
                return;
            }
        }
        let stop = lock(&strong.stop);
        if *stop {
            return;
        }
        let (stop, _) = strong
            .wake
            .wait_timeout(stop, tick)
            .unwrap_or_else(|e| e.into_inner());
        if *stop {
            return;
        }
    }
}

impl Drop for HelperPool {
    fn drop(&mut self) {
        *lock(&self.inner.stop) = true;
        self.inner.wake.notify_all();
        if let Some(reaper) = lock(&self.reaper).take() {
            let _ = reaper.join();
        }
        self.retire_all();
    }
}
