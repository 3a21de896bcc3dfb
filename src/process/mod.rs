//! Guest processes: StartProgram, ListProcessesEx, TerminateProcess and
//! ReadEnvironmentVariables, process I/O as files, in-agent functions and the HTTP round trip.
//!
//! Everything here runs inside the authenticated user's helper process
//! ([`crate::guestops`]): a program started there inherits the user's uid, gid and groups
//! without any switch, a kill has exactly the user's rights, and the environment is the
//! user's login environment the agent gave the helper. The agent reaches it as the helper
//! service [`PROCESS_SERVICE`]: [`encode_call`] the decoded VIX command, send it with
//! `HelperPool::call(user, PROCESS_SERVICE, &payload)`, and [`decode_reply`] the answer.
//! One [`ProcessManager`] per helper ([`shared`], set up by [`manager_for`] from the
//! `[process]` settings the agent sent) is shared by the service and by the [`ProcessFiles`]
//! handler the helper's HGFS server registers, so `/proc/<pid>/stdout` of a program reaches
//! the same pipes.
//!
//! - [`manager`]: starting, reaping, remembering and killing programs.
//! - [`proclist`]: the `/proc` listing and its chunks.
//! - [`io`]: the bounded stream buffers and the [`ProcessFiles`] HGFS handler.
//! - [`functions`]: the registry of in-agent functions.
//! - [`http`]: the `http.RoundTrip` function.
//! - [`config`]: `[process]` and `[process.http]`.

pub mod config;
pub mod functions;
pub mod http;
pub mod io;
pub mod manager;
pub mod proclist;

pub use functions::{CancelToken, Function, FunctionContext, FunctionRegistry};
pub use io::ProcessFiles;
pub use manager::{ManagerConfig, ProcessManager, ProcessRecord, StartError, TerminateError};

use crate::codec::Reader;
use crate::guestops::{HelperService, HelperSettings, ServiceId};
use crate::vix::files::escape_xml;
use crate::vix::proto::{Command, OpCode, VixError, MAX_RESULT_SIZE};
use crate::vix::OpResult;
use std::sync::{Arc, OnceLock};

/// The helper service id of process operations.
pub const PROCESS_SERVICE: ServiceId = ServiceId::PROCESSES;

/// True for the ops this module carries out.
pub fn is_process_op(op: OpCode) -> bool {
    matches!(
        op,
        OpCode::START_PROGRAM
            | OpCode::LIST_PROCESSES_EX
            | OpCode::TERMINATE_PROCESS
            | OpCode::READ_ENV_VARIABLES
    )
}

/// The payload for [`PROCESS_SERVICE`]: the op (u32 LE) and the command's VIX body, which
/// the helper decodes again with the same bounded decoder.
pub fn encode_call(command: &Command) -> Vec<u8> {
    let mut out = command.op().0.to_le_bytes().to_vec();
    out.extend_from_slice(&command.encode_body());
    out
}

/// The helper's answer: VIX error (u64 LE), errno (u32 LE), result, as the file service
/// answers VIX commands; [`decode_reply`] reads it back.
pub use crate::guestops::files::{
    encode_result as encode_reply, try_decode_result as decode_reply,
};

static SHARED: OnceLock<Arc<ProcessManager>> = OnceLock::new();

/// The functions a helper offers by default: `http.RoundTrip` with `config`.
pub fn default_functions(config: &config::ProcessConfig) -> FunctionRegistry {
    FunctionRegistry::new().with(
        http::ROUND_TRIP,
        http::round_trip_function(config.http.clone()),
    )
}

/// Sets up this process's manager (once, before the first [`shared`]; later calls change
/// nothing and return false). The helper calls it at start with the agent's `[process]`
/// configuration and the library user's functions; it also makes the helper a session
/// leader ([`manager::detach_session`]).
pub fn install(config: &config::ProcessConfig, functions: FunctionRegistry) -> bool {
    let mut installed = false;
    SHARED.get_or_init(|| {
        installed = true;
        let _ = manager::detach_session();
        ProcessManager::new(
            ManagerConfig {
                stream_buffer: config.stream_buffer_bytes.max(4096),
                ..ManagerConfig::default()
            },
            functions,
        )
    });
    installed
}

/// This helper's manager, set up from the `[process]` settings the agent sent (the defaults
/// when it sent none or they do not decode, which is logged). Library users who add their
/// own functions call [`install`] before the helper serves, in their own factory.
pub fn manager_for(settings: &HelperSettings) -> Arc<ProcessManager> {
    let config = match config::ProcessConfig::from_settings(settings.get(PROCESS_SERVICE)) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "using the default process settings");
            config::ProcessConfig::default()
        }
    };
    install(&config, default_functions(&config));
    shared()
}

/// This process's manager (the defaults, with `http.RoundTrip`, unless [`install`] ran).
pub fn shared() -> Arc<ProcessManager> {
    SHARED
        .get_or_init(|| {
            let config = config::ProcessConfig::default();
            ProcessManager::new(ManagerConfig::default(), default_functions(&config))
        })
        .clone()
}

/// The `<ev>NAME=value</ev>` list ReadEnvironmentVariables answers
/// (`VixToolsGetMultipleEnvVarsForUser` / `…GetAllEnvVars…`): the names asked for that are
/// set, in the order asked, or every variable; names and values escaped as vmtoolsd does.
pub fn read_environment(env: &[(String, String)], names: &[String]) -> String {
    let mut out = String::new();
    let mut push = |k: &str, v: &str| {
        out.push_str("<ev>");
        out.push_str(&escape_xml(k.as_bytes()));
        out.push('=');
        out.push_str(&escape_xml(v.as_bytes()));
        out.push_str("</ev>");
    };
    if names.is_empty() {
        for (k, v) in env {
            push(k, v);
        }
    } else {
        for n in names {
            if let Some((k, v)) = env.iter().find(|(k, _)| k == n) {
                push(k, v);
            }
        }
    }
    out
}

/// The helper service: one per helper process, over [`shared`].
#[derive(Debug)]
pub struct ProcessService {
    manager: Arc<ProcessManager>,
    listings: proclist::ListingCache,
}

impl ProcessService {
    /// A service over `manager`.
    pub fn new(manager: Arc<ProcessManager>) -> Self {
        ProcessService {
            manager,
            listings: proclist::ListingCache::new(),
        }
    }

    /// The manager.
    pub fn manager(&self) -> &Arc<ProcessManager> {
        &self.manager
    }

    /// Carries out one decoded process command.
    pub fn execute(&mut self, command: &Command) -> OpResult {
        let span = tracing::debug_span!("process_op", op = %command.op());
        let _enter = span.enter();
        match command {
            Command::StartProgram(req) => match self.manager.start(req) {
                Ok(pid) => OpResult::ok(pid.to_string().into_bytes()),
                Err(e) => {
                    tracing::debug!(error = %e, "StartProgram failed");
                    OpResult::error(e.vix_error(), 0)
                }
            },
            Command::ListProcesses(req) => match proclist::list_processes(
                &mut self.listings,
                &self.manager,
                req,
                MAX_RESULT_SIZE,
            ) {
                Ok(bytes) => OpResult::ok(bytes),
                Err(e) => OpResult::error(e, 0),
            },
            Command::TerminateProcess(req) => {
                let pid = i64::try_from(req.pid).unwrap_or(i64::MAX);
                match self.manager.terminate(pid) {
                    Ok(()) => OpResult::ok(Vec::new()),
                    Err(e) => {
                        tracing::debug!(error = %e, "TerminateProcess failed");
                        OpResult::error(e.vix_error(), 0)
                    }
                }
            }
            Command::ReadEnvironmentVariables(req) => match self.manager.environment(&[]) {
                Ok(env) => OpResult::ok(read_environment(&env, &req.names).into_bytes()),
                Err(e) => OpResult::error(e.vix_error(), 0),
            },
            _ => OpResult::error(VixError::UNRECOGNIZED_COMMAND_IN_GUEST, 0),
        }
    }
}

impl HelperService for ProcessService {
    /// Programs still running, or ended with exit codes the host has yet to read: the helper
    /// must outlive its idle timeout, or they would be lost with it.
    fn holds_state(&self) -> bool {
        self.manager.prune();
        self.manager.tracked() > 0
    }

    fn handle(&mut self, request: &[u8]) -> Vec<u8> {
        let mut r = Reader::new(request);
        let result = match r.u32_le() {
            None => OpResult::error(VixError::INVALID_MESSAGE_BODY, 0),
            Some(op) => match Command::decode(OpCode(op), r.rest()) {
                Ok(cmd) if is_process_op(cmd.op()) => self.execute(&cmd),
                Ok(_) => OpResult::error(VixError::UNRECOGNIZED_COMMAND_IN_GUEST, 0),
                Err(e) => OpResult::error(e.vix_error(), 0),
            },
        };
        encode_reply(&result)
    }
}

/// The factory for `HelperRegistry::with_factory(PROCESS_SERVICE, service_factory)`.
pub fn service_factory(settings: &HelperSettings) -> Box<dyn HelperService> {
    Box::new(ProcessService::new(manager_for(settings)))
}

#[doc(hidden)]
pub mod fuzzing {
    /// The helper-side entry: arbitrary bytes never panic; only decodable requests for
    /// harmless ops are executed (start/kill are refused before execution here).
    pub fn process_call(data: &[u8]) {
        use crate::vix::proto::{Command, OpCode};
        let mut r = crate::codec::Reader::new(data);
        if let Some(op) = r.u32_le() {
            if let Ok(cmd) = Command::decode(OpCode(op), r.rest()) {
                let again = super::encode_call(&cmd);
                let mut r2 = crate::codec::Reader::new(&again);
                assert_eq!(r2.u32_le(), Some(op));
                assert_eq!(Command::decode(OpCode(op), r2.rest()).as_ref(), Ok(&cmd));
            }
        }
        if let Ok(reply) = super::decode_reply(data) {
            assert_eq!(super::encode_reply(&reply), data);
        }
        let _ = crate::vix::client::parse_process_chunk(data);
        let _ = crate::vix::client::parse_process_list(data);
        let _ = crate::vix::client::parse_env(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_filtered_and_escaped() {
        let env = vec![
            ("A".to_string(), "1<2".to_string()),
            ("B".to_string(), "x".to_string()),
        ];
        assert_eq!(
            read_environment(&env, &["B".into(), "NONE".into(), "A".into()]),
            "<ev>B=x</ev><ev>A=1%3C2</ev>"
        );
        assert_eq!(read_environment(&env, &[]), "<ev>A=1%3C2</ev><ev>B=x</ev>");
    }
}
