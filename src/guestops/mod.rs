//! Guest operations run as the authenticated user, in a helper process per user.
//!
//! Why a process and not `setresuid` in a thread: on Linux the kernel keeps credentials per
//! thread, but glibc (and musl) implement `setresuid`/`setgroups` with a "setxid broadcast"
//! that signals every thread of the process and makes each one switch, so POSIX's
//! process-wide semantics hold. Calling it from one of the agent's blocking threads would turn
//! the whole agent (its TCLO loop, every other user's request) into that user. The raw
//! syscall without the broadcast would be per thread, but Rust forbids it here (`unsafe`), and
//! a thread's credentials still leak through shared memory, open descriptors and the file
//! system root shared with root's threads. A separate process has none of that: it is started
//! by root, drops to the user before it reads a single request, and can never get back.
//!
//! The helper is the agent's own binary run again (`/proc/self/exe __guestops-helper`, see
//! [`helper::serve`]): no second program to install or keep in step, and the setup happens in a
//! fresh, single-threaded process right after `exec`, with nix's safe calls and no
//! `pre_exec` hook (which would be `unsafe`). [`HelperPool`] keeps at most
//! [`PoolConfig::max_helpers`] of them, one per uid, reaps them when idle, restarts one that
//! died on the next request, and replaces one whose user's identity changed.
//!
//! Requests to one helper are serialized (one outstanding request per user; requests of
//! different users run in parallel). Payloads are opaque: the helper hands each to the
//! handler registered for its [`ServiceId`] in a [`HelperRegistry`].

pub mod files;
pub mod frame;
pub mod helper;
mod pool;

pub use pool::{AccountWatch, GuestOpsError, HelperPool, PoolConfig, Resolver};

use std::fmt;

/// Which handler in the helper a request is for.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceId(pub u8);

impl ServiceId {
    /// The setup exchange that starts every helper (not a handler).
    pub const SETUP: ServiceId = ServiceId(0);
    /// Guest files: VIX file operations and the HGFS server, one service because they share
    /// state ([`files`]).
    pub const FILES: ServiceId = ServiceId(1);
    /// Asks whether the helper holds state its user still needs ([`HelperService::holds_state`]):
    /// the pool's idle reaper asks before it stops a helper (not a handler).
    pub const HOLDS: ServiceId = ServiceId(2);
    /// Reports the helper's credentials again (health check, tests).
    pub const IDENTITY: ServiceId = ServiceId(3);
    /// Guest processes (`crate::process`): programs, their I/O, the process list.
    pub const PROCESSES: ServiceId = ServiceId(4);
}

impl fmt::Debug for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ServiceId::SETUP => f.write_str("SETUP"),
            ServiceId::FILES => f.write_str("FILES"),
            ServiceId::HOLDS => f.write_str("HOLDS"),
            ServiceId::IDENTITY => f.write_str("IDENTITY"),
            ServiceId::PROCESSES => f.write_str("PROCESSES"),
            ServiceId(other) => write!(f, "ServiceId(0x{other:02x})"),
        }
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A request handler inside a helper: request bytes in, reply bytes out. One instance per
/// helper process, so it may keep state (HGFS sessions and open handles) across requests of
/// that user.
pub trait HelperService {
    /// Handles one request. Errors are part of the reply's encoding; a panic ends the helper
    /// (the agent sees it die and starts a new one on the next request).
    fn handle(&mut self, request: &[u8]) -> Vec<u8>;

    /// Whether this service holds state its user still needs although no request is in
    /// flight (programs running, exit codes not yet collected): the pool then keeps the helper
    /// past its idle timeout, asking again later.
    fn holds_state(&self) -> bool {
        false
    }
}

/// A stateless handler.
pub type HandlerFn = fn(&[u8]) -> Vec<u8>;

impl HelperService for HandlerFn {
    fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        self(request)
    }
}

/// Makes a fresh [`HelperService`] when a helper starts, from the settings the agent sent it.
pub type ServiceFactory = fn(&HelperSettings) -> Box<dyn HelperService>;

/// Per-service settings the agent hands every helper at setup ([`PoolConfig::settings`]):
/// the helper runs as the user and may not be able to read the agent's configuration file,
/// so what a service needs of it travels with the setup. Opaque bytes, each service encodes
/// and decodes its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HelperSettings {
    entries: Vec<(ServiceId, Vec<u8>)>,
}

impl HelperSettings {
    /// No settings.
    pub fn new() -> HelperSettings {
        HelperSettings::default()
    }

    /// Sets `id`'s settings (replacing earlier ones).
    pub fn with(mut self, id: ServiceId, settings: Vec<u8>) -> HelperSettings {
        self.entries.retain(|(i, _)| *i != id);
        self.entries.push((id, settings));
        self
    }

    /// `id`'s settings; empty when none were given.
    pub fn get(&self, id: ServiceId) -> &[u8] {
        self.entries
            .iter()
            .find(|(i, _)| *i == id)
            .map_or(&[][..], |(_, s)| s)
    }

    /// All entries, for the setup frame.
    pub(crate) fn entries(&self) -> &[(ServiceId, Vec<u8>)] {
        &self.entries
    }
}

enum Entry {
    Plain(HandlerFn),
    Factory(ServiceFactory),
}

/// The handlers a helper serves, by [`ServiceId`]. It is compiled into the binary: the helper
/// process builds the same registry as the agent and never learns handlers from the socket.
#[derive(Default)]
pub struct HelperRegistry {
    entries: Vec<(ServiceId, Entry)>,
}

impl fmt::Debug for HelperRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|(id, _)| id))
            .finish()
    }
}

impl HelperRegistry {
    /// No handlers.
    pub fn new() -> HelperRegistry {
        HelperRegistry::default()
    }

    /// Adds a stateless handler for `id` (replacing one registered before).
    pub fn with_fn(mut self, id: ServiceId, handler: HandlerFn) -> HelperRegistry {
        self.entries.retain(|(i, _)| *i != id);
        self.entries.push((id, Entry::Plain(handler)));
        self
    }

    /// Adds a stateful service for `id`, made once per helper by `factory`.
    pub fn with_factory(mut self, id: ServiceId, factory: ServiceFactory) -> HelperRegistry {
        self.entries.retain(|(i, _)| *i != id);
        self.entries.push((id, Entry::Factory(factory)));
        self
    }

    /// The services one helper process runs.
    pub(crate) fn instantiate(
        &self,
        settings: &HelperSettings,
    ) -> Vec<(ServiceId, Box<dyn HelperService>)> {
        self.entries
            .iter()
            .map(|(id, e)| {
                let service: Box<dyn HelperService> = match e {
                    Entry::Plain(f) => Box::new(*f),
                    Entry::Factory(make) => make(settings),
                };
                (*id, service)
            })
            .collect()
    }
}

/// The hidden subcommand that runs a helper.
pub const HELPER_SUBCOMMAND: &str = "__guestops-helper";
