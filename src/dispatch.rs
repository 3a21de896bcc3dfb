//! TCLO requests to handlers: `"<name> <args>"` in, `"OK <result>"` or `"ERROR <reason>"` out.
//!
//! Handlers run on the service loop and must return at once; slow work (scripts, guest info,
//! RPCI calls) is spawned through the [`crate::service::Context`] so that `ping` is always
//! answered. Library users add their own handlers with [`Dispatcher::register`].

use crate::service::Context;
use std::collections::HashMap;
use std::sync::Arc;

/// `GUEST_RPC_UNKNOWN_COMMAND` (`lib/include/vmware/guestrpc/tclodefs.h`).
pub const UNKNOWN_COMMAND: &str = "Unknown Command";

/// A handler's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// Success (`OK `) or failure (`ERROR `).
    pub ok: bool,
    /// The text after the status word.
    pub body: Vec<u8>,
}

impl Reply {
    /// `OK <body>`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            ok: true,
            body: body.into(),
        }
    }

    /// `ERROR <body>`.
    pub fn error(body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            ok: false,
            body: body.into(),
        }
    }

    /// The bytes sent back to the VMX (`RpcInExecRpc`, `lib/rpcIn/rpcin.c`).
    pub fn to_wire(&self) -> Vec<u8> {
        let status: &[u8] = if self.ok { b"OK " } else { b"ERROR " };
        [status, &self.body].concat()
    }
}

/// A TCLO handler: the request's arguments (after the first space) in, a reply out.
pub type Handler = Arc<dyn Fn(&Context, &[u8]) -> Reply + Send + Sync>;

/// Splits a request into its name and arguments. The name ends at the first space; a trailing
/// NUL some VMX versions add is ignored.
pub fn split_request(request: &[u8]) -> (&[u8], &[u8]) {
    let request = request.strip_suffix(b"\0").unwrap_or(request);
    match request.iter().position(|&b| b == b' ') {
        Some(i) => (&request[..i], &request[i + 1..]),
        None => (request, &[]),
    }
}

/// The handler registry.
#[derive(Clone, Default)]
pub struct Dispatcher {
    handlers: HashMap<Vec<u8>, Handler>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self
            .handlers
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        names.sort();
        f.debug_struct("Dispatcher")
            .field("handlers", &names)
            .finish()
    }
}

impl Dispatcher {
    /// Adds or replaces the handler for `name`.
    pub fn register(
        &mut self,
        name: &str,
        handler: impl Fn(&Context, &[u8]) -> Reply + Send + Sync + 'static,
    ) {
        self.handlers
            .insert(name.as_bytes().to_vec(), Arc::new(handler));
    }

    /// True when `name` has a handler.
    pub fn handles(&self, name: &str) -> bool {
        self.handlers.contains_key(name.as_bytes())
    }

    /// Answers one request.
    pub fn dispatch(&self, ctx: &Context, request: &[u8]) -> Reply {
        let (name, args) = split_request(request);
        let span = tracing::debug_span!("tclo", command = %String::from_utf8_lossy(name), len = request.len());
        let _enter = span.enter();
        let reply = match self.handlers.get(name) {
            Some(h) => h(ctx, args),
            None if name.is_empty() => Reply::error("Bad command"),
            None => Reply::error(UNKNOWN_COMMAND),
        };
        if ctx.trace() {
            // Standalone mode traces every RPC; arguments are left out as they may carry
            // credentials (guest operations) or guestinfo secrets.
            let wire = reply.to_wire();
            tracing::info!(
                request = %String::from_utf8_lossy(name),
                args_len = args.len(),
                reply = %String::from_utf8_lossy(&wire[..wire.len().min(120)]),
                "tclo"
            );
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_name_and_arguments() {
        assert_eq!(
            split_request(b"Set_Option broadcastIP 1"),
            (&b"Set_Option"[..], &b"broadcastIP 1"[..])
        );
        assert_eq!(split_request(b"reset\0"), (&b"reset"[..], &b""[..]));
        assert_eq!(split_request(b"ping"), (&b"ping"[..], &b""[..]));
        assert_eq!(split_request(b""), (&b""[..], &b""[..]));
    }

    #[test]
    fn wire_form() {
        assert_eq!(Reply::ok("ATR toolbox").to_wire(), b"OK ATR toolbox");
        assert_eq!(Reply::ok("").to_wire(), b"OK ");
        assert_eq!(
            Reply::error(UNKNOWN_COMMAND).to_wire(),
            b"ERROR Unknown Command"
        );
    }
}
