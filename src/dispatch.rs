//! TCLO requests to handlers, and what a handler may ask of the service.
//!
//! A request is `"<name> <args>"`; the reply is `"OK <result>"` or `"ERROR <reason>"`. Features
//! (power, guest info, guest operations, a library user's own) register their handlers,
//! `Set_Option` options, capabilities and reset hooks in a [`Registry`]; the service knows none
//! of them. A handler answers at once or hands back a future ([`Answer::later`]) that slow work
//! completes: TCLO is serial, so the service sends nothing else on the channel but heartbeats
//! until it resolves, and the wire keeps one reply per request, in order.
//!
//! What a handler may ask of the service (RPCI, spawning work, the blocking pool, the
//! configuration) is the [`Host`] trait, behind [`Context`]; tests implement it without a socket.
//!
//! The protocol's own commands are answered here, as vmtoolsd's core does
//! (`services/vmtoolsd/toolsRpc.c`, `lib/rpcChannel/rpcChannel.c`): `reset`, `ping`,
//! `Set_Option` (routed to the feature that owns the option) and `Capabilities_Register`
//! (every registered capability and the tools version are sent first, then the reply).

use crate::config::Config;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use toolbox_rpc::RpciError;
use tracing::{debug, info, warn};

/// `GUEST_RPC_UNKNOWN_COMMAND` (`lib/include/vmware/guestrpc/tclodefs.h`).
pub const UNKNOWN_COMMAND: &str = "Unknown Command";
/// `RpcChannel_Dispatch`'s answer to a request without a name.
pub const BAD_COMMAND: &str = "Bad command";
/// `ToolsCoreRpcSetOption`'s answer when no feature takes an option.
pub const UNKNOWN_OPTION: &str = "Unknown or invalid option";
/// Name the agent answers `reset` with (`ATR <name>`), as vmtoolsd's main service does.
pub const APP_NAME: &str = "toolbox";
/// `TOOLS_VERSION_UNMANAGED` (`lib/include/vm_tools_version.h`): the host does not manage it.
pub const TOOLS_VERSION_UNMANAGED: u32 = 0x7fff_ffff;
/// `TOOLS_TYPE_OVT` (`lib/include/vm_tools_version.h`): an open-source tools build.
pub const TOOLS_TYPE_OVT: u32 = 4;

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

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

/// A value now, or a future that yields it later.
pub enum Deferred<T> {
    /// Ready.
    Now(T),
    /// Completed by slow work; the service waits for it without blocking its loop.
    Later(BoxFuture<T>),
}

impl<T> Deferred<T> {
    /// A value that some slow work produces.
    pub fn later(fut: impl Future<Output = T> + Send + 'static) -> Deferred<T> {
        Deferred::Later(Box::pin(fut))
    }

    /// Waits for the value.
    pub async fn resolve(self) -> T {
        match self {
            Deferred::Now(v) => v,
            Deferred::Later(f) => f.await,
        }
    }
}

impl<T> std::fmt::Debug for Deferred<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Deferred::Now(_) => "Deferred::Now",
            Deferred::Later(_) => "Deferred::Later",
        })
    }
}

/// What a TCLO handler returns.
pub type Answer = Deferred<Reply>;

impl Answer {
    /// A reply some slow work produces.
    pub fn later_reply(fut: impl Future<Output = Reply> + Send + 'static) -> Answer {
        Deferred::later(fut)
    }
}

impl From<Reply> for Answer {
    fn from(r: Reply) -> Answer {
        Deferred::Now(r)
    }
}

/// What handlers may ask of the service that runs them.
pub trait Host: Send + Sync + 'static {
    /// Sends an RPCI request to the VMX; the result is the reply after `"1 "`.
    fn rpci(&self, request: Vec<u8>) -> BoxFuture<Result<Vec<u8>, RpciError>>;
    /// Runs a future on the service's runtime, off the request path.
    fn spawn(&self, fut: BoxFuture<()>);
    /// Runs blocking work on the service's bounded blocking pool, never on its loop.
    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>);
    /// The configuration.
    fn config(&self) -> &Config;
    /// True in standalone mode (`toolbox -s`): every RPC is traced.
    fn trace(&self) -> bool;
}

/// Blocking work that ended without a result (it panicked, or the pool shut down).
#[derive(Debug, thiserror::Error)]
#[error("blocking work did not finish")]
pub struct Abandoned;

/// A handler's view of the service.
#[derive(Clone)]
pub struct Context {
    host: Arc<dyn Host>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// Wraps a host.
    pub fn new(host: Arc<dyn Host>) -> Context {
        Context { host }
    }

    /// Sends an RPCI request; the result is the reply after `"1 "`.
    pub async fn rpci(&self, request: &[u8]) -> Result<Vec<u8>, RpciError> {
        self.host.rpci(request.to_vec()).await
    }

    /// Runs `fut` off the request path.
    pub fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        self.host.spawn(Box::pin(fut));
    }

    /// Runs `work` on the blocking pool and waits for its result.
    pub async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Abandoned> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.host.spawn_blocking(Box::new(move || {
            let _ = tx.send(work());
        }));
        rx.await.map_err(|_| Abandoned)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        self.host.config()
    }

    /// True in standalone mode.
    pub fn trace(&self) -> bool {
        self.host.trace()
    }
}

/// A TCLO handler: the request's arguments in, an answer out.
pub type Handler = Arc<dyn Fn(&Context, &[u8]) -> Answer + Send + Sync>;
/// A `Set_Option` handler: the value in; whether the option was taken (`true` → `OK`).
pub type OptionHandler = Arc<dyn Fn(&Context, &str) -> Deferred<bool> + Send + Sync>;
/// Called on every `reset` (a connection, a resume, a vMotion), before the reply.
pub type ResetHook = Arc<dyn Fn(&Context) + Send + Sync>;
/// Started once when the service runs (a feature's background work).
pub type StartHook = Box<dyn FnOnce(Context) + Send + Sync>;

/// How a handler wants its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Args {
    /// Text, as vmtoolsd's C handlers see it: up to the first NUL, the space after the name
    /// removed.
    Text,
    /// The bytes after the name and its one space, untouched (VIX and HGFS bodies end in 0x00
    /// as often as not).
    Binary,
}

/// A feature: an object that owns its state and registers what it answers.
pub trait Feature: Send + Sync + 'static {
    /// Adds the feature's handlers, options, capabilities and hooks.
    fn register(self: Arc<Self>, registry: &mut Registry);
}

fn handler_names(handlers: &HashMap<Vec<u8>, (Args, Handler)>) -> Vec<String> {
    let mut names: Vec<String> = handlers
        .keys()
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .collect();
    names.sort();
    names
}

/// Collects what features register; becomes a [`Dispatcher`].
#[derive(Default)]
pub struct Registry {
    handlers: HashMap<Vec<u8>, (Args, Handler)>,
    options: HashMap<String, OptionHandler>,
    capabilities: Vec<Vec<u8>>,
    reset_hooks: Vec<ResetHook>,
    start_hooks: Vec<StartHook>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("handlers", &handler_names(&self.handlers))
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .field("capabilities", &self.capabilities.len())
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// Adds or replaces the handler for `name`, with text arguments.
    pub fn handler(
        &mut self,
        name: &str,
        h: impl Fn(&Context, &[u8]) -> Answer + Send + Sync + 'static,
    ) -> &mut Self {
        self.handlers
            .insert(name.as_bytes().to_vec(), (Args::Text, Arc::new(h)));
        self
    }

    /// Adds or replaces the handler for `name`, with binary arguments.
    pub fn binary_handler(
        &mut self,
        name: &str,
        h: impl Fn(&Context, &[u8]) -> Answer + Send + Sync + 'static,
    ) -> &mut Self {
        self.handlers
            .insert(name.as_bytes().to_vec(), (Args::Binary, Arc::new(h)));
        self
    }

    /// Takes `Set_Option <name> <value>`.
    pub fn option(
        &mut self,
        name: &str,
        h: impl Fn(&Context, &str) -> Deferred<bool> + Send + Sync + 'static,
    ) -> &mut Self {
        self.options.insert(name.to_string(), Arc::new(h));
        self
    }

    /// An RPCI request sent on every `Capabilities_Register`, e.g.
    /// `tools.capability.hgfs_server toolbox 1`.
    pub fn capability(&mut self, request: impl Into<Vec<u8>>) -> &mut Self {
        self.capabilities.push(request.into());
        self
    }

    /// Runs on every `reset`.
    pub fn on_reset(&mut self, h: impl Fn(&Context) + Send + Sync + 'static) -> &mut Self {
        self.reset_hooks.push(Arc::new(h));
        self
    }

    /// Runs once when the service starts.
    pub fn on_start(&mut self, h: impl FnOnce(Context) + Send + Sync + 'static) -> &mut Self {
        self.start_hooks.push(Box::new(h));
        self
    }

    /// Registers a feature.
    pub fn feature(&mut self, f: Arc<dyn Feature>) -> &mut Self {
        f.register(self);
        self
    }

    /// The dispatcher, and the start hooks for the service to run.
    pub fn build(self) -> (Dispatcher, Vec<StartHook>) {
        (
            Dispatcher {
                handlers: self.handlers,
                options: self.options,
                capabilities: Arc::new(self.capabilities),
                reset_hooks: self.reset_hooks,
            },
            self.start_hooks,
        )
    }
}

/// Splits a request into its name and the bytes after it, as `StrUtil_GetNextToken` finds the
/// name: leading spaces skipped, the name ending at a space or a NUL. The rest starts after the
/// name's one separating space.
pub fn split_request(request: &[u8]) -> (&[u8], &[u8]) {
    let start = request
        .iter()
        .position(|&b| b != b' ')
        .unwrap_or(request.len());
    let rest = &request[start..];
    let end = rest
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(rest.len());
    let (name, after) = rest.split_at(end);
    let args = match after.first() {
        Some(b' ') => &after[1..],
        _ => after,
    };
    (name, args)
}

/// Text arguments as a C handler sees them: up to the first NUL.
pub fn text_args(args: &[u8]) -> &[u8] {
    match args.iter().position(|&b| b == 0) {
        Some(i) => &args[..i],
        None => args,
    }
}

/// Answers requests.
pub struct Dispatcher {
    handlers: HashMap<Vec<u8>, (Args, Handler)>,
    options: HashMap<String, OptionHandler>,
    capabilities: Arc<Vec<Vec<u8>>>,
    reset_hooks: Vec<ResetHook>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("handlers", &handler_names(&self.handlers))
            .finish_non_exhaustive()
    }
}

impl Dispatcher {
    /// Answers one request.
    pub fn dispatch(&self, ctx: &Context, request: &[u8]) -> Answer {
        let (name, args) = split_request(request);
        let span = tracing::debug_span!("tclo", command = %String::from_utf8_lossy(name), len = request.len());
        let _enter = span.enter();
        let answer = match name {
            b"" => Reply::error(BAD_COMMAND).into(),
            b"reset" => self.reset(ctx),
            b"ping" => Reply::ok("").into(),
            b"Set_Option" => self.set_option(ctx, text_args(args)),
            b"Capabilities_Register" => self.register_capabilities(ctx),
            _ => match self.handlers.get(name) {
                Some((Args::Text, h)) => h(ctx, text_args(args)),
                Some((Args::Binary, h)) => h(ctx, args),
                None => Reply::error(UNKNOWN_COMMAND).into(),
            },
        };
        if ctx.trace() {
            // Standalone mode traces every RPC; arguments are left out as they may carry
            // credentials (guest operations) or guestinfo secrets.
            let name = String::from_utf8_lossy(name).into_owned();
            let args_len = args.len();
            return match answer {
                Deferred::Now(r) => {
                    trace_reply(&name, args_len, &r);
                    Deferred::Now(r)
                }
                Deferred::Later(f) => Deferred::later(async move {
                    let r = f.await;
                    trace_reply(&name, args_len, &r);
                    r
                }),
            };
        }
        answer
    }

    fn reset(&self, ctx: &Context) -> Answer {
        for hook in &self.reset_hooks {
            hook(ctx);
        }
        Reply::ok(format!("ATR {APP_NAME}")).into()
    }

    /// `ToolsCoreRpcSetOption`: the option is the first token, the value all after the next
    /// character; both must be non-empty, and a feature must take it.
    fn set_option(&self, ctx: &Context, args: &[u8]) -> Answer {
        let (option, value) = split_request(args);
        let option = String::from_utf8_lossy(option).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        // The value may be a secret some day: its length only.
        info!(option = %option, value_len = value.len(), "Set_Option");
        let refused = || Reply::error(UNKNOWN_OPTION);
        if option.is_empty() || value.is_empty() {
            return refused().into();
        }
        let Some(h) = self.options.get(&option) else {
            debug!(option = %option, "no feature takes this option");
            return refused().into();
        };
        let to_reply = move |taken: bool| if taken { Reply::ok("") } else { refused() };
        match h(ctx, &value) {
            Deferred::Now(taken) => to_reply(taken).into(),
            Deferred::Later(f) => Answer::later_reply(async move { to_reply(f.await) }),
        }
    }

    /// `ToolsCoreRpcCapReg`: the capabilities, the conf directory and the tools version go to
    /// the VMX before the reply does.
    fn register_capabilities(&self, ctx: &Context) -> Answer {
        let caps = self.capabilities.clone();
        let ctx = ctx.clone();
        Answer::later_reply(async move {
            for cap in caps.iter() {
                if let Err(e) = ctx.rpci(cap).await {
                    warn!(capability = %toolbox_rpc::rpci::command_name(cap), error = %e, "registering capability");
                }
            }
            let mut conf = format!(
                "tools.capability.guest_conf_directory {}",
                ctx.config().power.scripts_dir.display()
            )
            .into_bytes();
            conf.push(0);
            if let Err(e) = ctx.rpci(&conf).await {
                debug!(error = %e, "registering the conf directory");
            }
            let mut msg =
                format!("tools.set.versiontype {TOOLS_VERSION_UNMANAGED} {TOOLS_TYPE_OVT}")
                    .into_bytes();
            msg.push(0);
            if ctx.rpci(&msg).await.is_err() {
                // Hosts too old for the type: the version alone.
                let mut msg = format!("tools.set.version {TOOLS_VERSION_UNMANAGED}").into_bytes();
                msg.push(0);
                if let Err(e) = ctx.rpci(&msg).await {
                    warn!(error = %e, "setting the tools version");
                }
            }
            Reply::ok("")
        })
    }
}

fn trace_reply(name: &str, args_len: usize, reply: &Reply) {
    let wire = reply.to_wire();
    info!(
        request = %name,
        args_len,
        reply = %String::from_utf8_lossy(&wire[..wire.len().min(120)]),
        "tclo"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A host that records RPCI requests and answers them from a function, on the test's
    /// runtime.
    struct TestHost {
        config: Config,
        sent: Mutex<Vec<Vec<u8>>>,
        answer: fn(&[u8]) -> Result<Vec<u8>, RpciError>,
    }

    impl Host for TestHost {
        fn rpci(&self, request: Vec<u8>) -> BoxFuture<Result<Vec<u8>, RpciError>> {
            let r = (self.answer)(&request);
            self.sent.lock().unwrap().push(request);
            Box::pin(async move { r })
        }
        fn spawn(&self, fut: BoxFuture<()>) {
            tokio::spawn(fut);
        }
        fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
            tokio::task::spawn_blocking(work);
        }
        fn config(&self) -> &Config {
            &self.config
        }
        fn trace(&self) -> bool {
            false
        }
    }

    fn host(answer: fn(&[u8]) -> Result<Vec<u8>, RpciError>) -> (Arc<TestHost>, Context) {
        let h = Arc::new(TestHost {
            config: Config::default(),
            sent: Mutex::default(),
            answer,
        });
        (h.clone(), Context::new(h))
    }

    fn accept(_: &[u8]) -> Result<Vec<u8>, RpciError> {
        Ok(Vec::new())
    }

    fn refuse(_: &[u8]) -> Result<Vec<u8>, RpciError> {
        Err(RpciError::Refused {
            command: "x".into(),
            reason: "Unknown command".into(),
        })
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn splits_name_and_arguments() {
        assert_eq!(
            split_request(b"Set_Option broadcastIP 1"),
            (&b"Set_Option"[..], &b"broadcastIP 1"[..])
        );
        assert_eq!(split_request(b"reset\0"), (&b"reset"[..], &b"\0"[..]));
        assert_eq!(split_request(b"ping"), (&b"ping"[..], &b""[..]));
        assert_eq!(split_request(b""), (&b""[..], &b""[..]));
        assert_eq!(split_request(b"  ping"), (&b"ping"[..], &b""[..]));
        assert_eq!(split_request(b"\0ping"), (&b""[..], &b"\0ping"[..]));
    }

    #[test]
    fn binary_arguments_keep_their_trailing_nul_text_ones_stop_at_it() {
        let mut r = Registry::default();
        r.binary_handler("Bin", |_, args| Reply::ok(args.to_vec()).into());
        r.handler("Txt", |_, args| Reply::ok(args.to_vec()).into());
        let (d, _) = r.build();
        let (_, ctx) = host(accept);
        let rt = rt();
        let ask = |req: &[u8]| rt.block_on(d.dispatch(&ctx, req).resolve()).to_wire();
        assert_eq!(ask(b"Bin a\0b\0"), b"OK a\0b\0");
        assert_eq!(ask(b"Bin \0\0"), b"OK \0\0");
        assert_eq!(ask(b"Txt a\0b\0"), b"OK a");
        assert_eq!(ask(b"Txt abc"), b"OK abc");
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

    #[test]
    fn protocol_commands() {
        let (d, _) = Registry::default().build();
        let (_, ctx) = host(accept);
        let rt = rt();
        let ask = |req: &[u8]| rt.block_on(d.dispatch(&ctx, req).resolve()).to_wire();
        assert_eq!(ask(b"reset"), b"OK ATR toolbox");
        assert_eq!(ask(b"ping"), b"OK ");
        assert_eq!(ask(b"Nope"), b"ERROR Unknown Command");
        assert_eq!(ask(b" "), b"ERROR Bad command");
        assert_eq!(ask(b"\0"), b"ERROR Bad command");
    }

    #[test]
    fn set_option_goes_to_its_owner_and_unknown_ones_are_refused() {
        let mut r = Registry::default();
        r.option("broadcastIP", |_, v| Deferred::Now(v == "1" || v == "0"));
        r.option("slow", |_, _| Deferred::later(async { true }));
        let (d, _) = r.build();
        let (_, ctx) = host(accept);
        let rt = rt();
        let ask = |req: &[u8]| rt.block_on(d.dispatch(&ctx, req).resolve()).to_wire();
        assert_eq!(ask(b"Set_Option broadcastIP 1"), b"OK ");
        assert_eq!(
            ask(b"Set_Option broadcastIP 2"),
            b"ERROR Unknown or invalid option"
        );
        assert_eq!(ask(b"Set_Option slow 1"), b"OK ");
        assert_eq!(
            ask(b"Set_Option synctime 1"),
            b"ERROR Unknown or invalid option"
        );
        assert_eq!(
            ask(b"Set_Option broadcastIP"),
            b"ERROR Unknown or invalid option"
        );
        assert_eq!(ask(b"Set_Option"), b"ERROR Unknown or invalid option");
    }

    #[test]
    fn capabilities_are_sent_before_the_reply() {
        let mut r = Registry::default();
        r.capability(&b"tools.capability.statechange "[..]);
        let (d, _) = r.build();
        let (h, ctx) = host(accept);
        let answer = d.dispatch(&ctx, b"Capabilities_Register");
        assert!(
            h.sent.lock().unwrap().is_empty(),
            "nothing sent before the reply is awaited"
        );
        let reply = rt().block_on(answer.resolve());
        assert_eq!(reply.to_wire(), b"OK ");
        let sent = h.sent.lock().unwrap().clone();
        assert_eq!(sent[0], b"tools.capability.statechange ");
        assert!(sent[1].starts_with(b"tools.capability.guest_conf_directory "));
        assert_eq!(sent[2], b"tools.set.versiontype 2147483647 4\0");
    }

    #[test]
    fn old_hosts_get_the_version_alone() {
        let (d, _) = Registry::default().build();
        let (h, ctx) = host(refuse);
        let reply = rt().block_on(d.dispatch(&ctx, b"Capabilities_Register").resolve());
        assert_eq!(reply.to_wire(), b"OK ");
        let sent = h.sent.lock().unwrap().clone();
        assert_eq!(sent.last().unwrap(), b"tools.set.version 2147483647\0");
    }

    #[test]
    fn reset_runs_the_hooks() {
        let mut r = Registry::default();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h2 = hits.clone();
        r.on_reset(move |_| {
            h2.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        });
        let (d, _) = r.build();
        let (_, ctx) = host(accept);
        rt().block_on(d.dispatch(&ctx, b"reset").resolve());
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
