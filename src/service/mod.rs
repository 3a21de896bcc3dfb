//! The TCLO service: connect, answer the VMX, reconnect on errors, stop cleanly.
//!
//! The rules of a session live in [`session`], without I/O; this module is the tokio glue that
//! reads the transport, feeds the session, dispatches requests and sleeps on one timer. The
//! service knows no feature: power, guest info and the rest register through
//! [`crate::dispatch::Registry`], and the composition root ([`crate::agent`]) picks them.
//!
//! Threads: the loop runs on the caller's runtime (one thread for `toolbox run`). Anything that
//! can block (opening a vsock channel walks source ports and pauses between retries; guest
//! operations do file I/O and PAM) goes to the runtime's bounded blocking pool, whose threads
//! exit when idle, so an idle agent is one thread.
//!
//! Library use (appliance init): build with [`ServiceBuilder`], add features and handlers, `run`
//! it on your runtime, stop it with the [`StopHandle`]. See `examples/embedded.rs`.

pub mod channel;
pub mod session;
pub mod timer;

use crate::config::Config;
use crate::dispatch::{
    Answer, BoxFuture, Context, Deferred, Dispatcher, Feature, Host, Registry, Reply, StartHook,
};
use channel::{split_tclo, BackdoorChannel, Connector, PacketReader, RpciConn, TcloConn};
use session::{NotARequest, Reconnect, Session, Transmit};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timer::Timer;
use tokio::sync::watch;
use tokio::task::AbortHandle;
use toolbox_rpc::rpci::RpciError;
use toolbox_rpc::stream::StreamError;
use toolbox_rpc::TransportError;
use tracing::{debug, info, warn};

/// How long an RPCI exchange (connecting included) may take before the RPCI channel counts as
/// broken. The VMX answers in microseconds; this only bounds a hung peer.
const RPCI_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors that end a session (the service reconnects after them).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// The VMX sent a frame that is not a request.
    #[error(transparent)]
    NotARequest(#[from] NotARequest),
    /// Opening the channel could not finish.
    #[error("opening the TCLO channel did not finish")]
    Abandoned,
}

fn io_error(what: &'static str) -> impl FnOnce(std::io::Error) -> StreamError {
    move |source| StreamError::Io { what, source }
}

fn timed_out(what: &'static str) -> RpciError {
    RpciError::Transport(TransportError::Stream(StreamError::Io {
        what,
        source: std::io::ErrorKind::TimedOut.into(),
    }))
}

/// The service's side of [`Host`].
struct Shared {
    config: Config,
    connector: Connector,
    trace: bool,
    rpci: tokio::sync::Mutex<Option<RpciConn>>,
    stop: watch::Sender<bool>,
    /// Tasks features spawned; aborted when the service stops.
    tasks: Mutex<Vec<AbortHandle>>,
}

impl Shared {
    async fn call_rpci(self: &Arc<Self>, request: &[u8]) -> Result<Vec<u8>, RpciError> {
        let mut conn = self.rpci.lock().await;
        let mut last = None;
        // One retry on a fresh connection: the VMX may have dropped an idle one.
        // A channel that fell back to the backdoor goes back to vsock once the pause is over.
        if matches!(*conn, Some(RpciConn::Backdoor(_))) && self.connector.rpci_vsock_retry_due() {
            *conn = None;
        }
        for _ in 0..2 {
            if conn.is_none() {
                *conn = Some(self.open_rpci().await?);
            }
            let Some(c) = conn.as_mut() else { continue };
            let result = tokio::time::timeout(RPCI_TIMEOUT, c.call(request))
                .await
                .unwrap_or_else(|_| Err(timed_out("waiting for the RPCI reply")));
            match result {
                Err(RpciError::Transport(e)) => {
                    *conn = None;
                    last = Some(e);
                }
                other => {
                    if self.trace {
                        let name = toolbox_rpc::rpci::command_name(request);
                        match &other {
                            Ok(r) => {
                                info!(request = %name, len = request.len(), reply_len = r.len(), "rpci ok")
                            }
                            Err(e) => info!(request = %name, error = %e, "rpci failed"),
                        }
                    }
                    return other;
                }
            }
        }
        Err(RpciError::Transport(
            last.unwrap_or(TransportError::Stream(StreamError::Closed)),
        ))
    }

    /// Opens the RPCI channel, on the blocking pool when that may wait, within the RPCI
    /// timeout.
    async fn open_rpci(&self) -> Result<RpciConn, RpciError> {
        if !self.connector.may_block() {
            return Ok(RpciConn::register(self.connector.rpci()?)?);
        }
        let connector = self.connector.clone();
        let link = tokio::time::timeout(
            RPCI_TIMEOUT,
            tokio::task::spawn_blocking(move || connector.rpci()),
        )
        .await
        .map_err(|_| timed_out("opening the RPCI channel"))?
        .map_err(|_| timed_out("opening the RPCI channel"))??;
        Ok(RpciConn::register(link)?)
    }

    fn track(&self, handle: AbortHandle) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(handle);
    }
}

/// A handle on the shared state that implements [`Host`].
struct ServiceHost(Arc<Shared>);

impl Host for ServiceHost {
    fn rpci(&self, request: Vec<u8>) -> BoxFuture<Result<Vec<u8>, RpciError>> {
        let shared = self.0.clone();
        Box::pin(async move { shared.call_rpci(&request).await })
    }

    fn spawn(&self, fut: BoxFuture<()>) {
        self.0.track(tokio::spawn(fut).abort_handle());
    }

    fn spawn_blocking(&self, work: Box<dyn FnOnce() + Send + 'static>) {
        tokio::task::spawn_blocking(work);
    }

    fn config(&self) -> &Config {
        &self.0.config
    }

    fn trace(&self) -> bool {
        self.0.trace
    }
}

/// Stops a running service from anywhere.
#[derive(Clone, Debug)]
pub struct StopHandle(watch::Sender<bool>);

impl StopHandle {
    /// Stops the service: channels are closed and `run` returns.
    pub fn stop(&self) {
        let _ = self.0.send(true);
    }
}

/// Builds a [`Service`].
#[derive(Debug)]
pub struct ServiceBuilder {
    config: Config,
    connector: Option<Connector>,
    assume_vmware: bool,
    trace: bool,
    registry: Registry,
    on_ready: ReadyHook,
}

/// Called once, when the first TCLO channel is up (systemd's `READY=1`).
#[derive(Default)]
struct ReadyHook(Option<Box<dyn FnOnce() + Send + Sync>>);

impl std::fmt::Debug for ReadyHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "ReadyHook(set)"
        } else {
            "ReadyHook(none)"
        })
    }
}

impl ServiceBuilder {
    /// A service with no features: it answers the protocol's own commands only. See
    /// [`crate::agent::builder`] for the agent's features.
    pub fn new(config: Config) -> ServiceBuilder {
        ServiceBuilder {
            config,
            connector: None,
            assume_vmware: false,
            trace: false,
            registry: Registry::default(),
            on_ready: ReadyHook::default(),
        }
    }

    /// Calls `f` once, when the first TCLO channel to the VMX is open (e.g. to tell systemd
    /// the service is ready). Later reconnects do not call it again.
    pub fn on_ready(mut self, f: impl FnOnce() + Send + Sync + 'static) -> Self {
        self.on_ready = ReadyHook(Some(Box::new(f)));
        self
    }

    /// Adds a feature.
    pub fn feature(mut self, f: Arc<dyn Feature>) -> Self {
        self.registry.feature(f);
        self
    }

    /// Adds or replaces a TCLO handler with text arguments.
    pub fn handler(
        mut self,
        name: &str,
        h: impl Fn(&Context, &[u8]) -> Reply + Send + Sync + 'static,
    ) -> Self {
        self.registry
            .handler(name, move |ctx, args| Deferred::Now(h(ctx, args)));
        self
    }

    /// Adds or replaces a TCLO handler that may answer later.
    pub fn deferred_handler(
        mut self,
        name: &str,
        h: impl Fn(&Context, &[u8]) -> Answer + Send + Sync + 'static,
    ) -> Self {
        self.registry.handler(name, h);
        self
    }

    /// Adds an RPCI request sent on every `Capabilities_Register`.
    pub fn capability(mut self, request: impl Into<Vec<u8>>) -> Self {
        self.registry.capability(request);
        self
    }

    /// Uses this connector instead of the configured transport (e.g. the backdoor model).
    pub fn connector(mut self, c: Connector) -> Self {
        self.connector = Some(c);
        self
    }

    /// Skips the CPUID vendor check (QEMU test guests).
    pub fn assume_vmware(mut self, yes: bool) -> Self {
        self.assume_vmware = yes;
        self
    }

    /// Traces every RPC (standalone mode).
    pub fn trace(mut self, yes: bool) -> Self {
        self.trace = yes;
        self
    }

    /// The service, ready to run.
    pub fn build(self) -> Service {
        let connector = self.connector.unwrap_or_else(|| {
            Connector::transport(self.config.transport.clone(), self.assume_vmware)
        });
        let (stop, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            config: self.config,
            connector,
            trace: self.trace,
            rpci: tokio::sync::Mutex::new(None),
            stop,
            tasks: Mutex::default(),
        });
        let (dispatcher, start_hooks) = self.registry.build();
        Service {
            ctx: Context::new(Arc::new(ServiceHost(shared.clone()))),
            shared,
            dispatcher,
            start_hooks,
            on_ready: self.on_ready,
        }
    }
}

/// The agent.
pub struct Service {
    ctx: Context,
    shared: Arc<Shared>,
    dispatcher: Dispatcher,
    start_hooks: Vec<StartHook>,
    on_ready: ReadyHook,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("dispatcher", &self.dispatcher)
            .finish_non_exhaustive()
    }
}

/// Waits for the pending reply; never resolves when there is none.
async fn pending_reply(pending: &mut Option<crate::dispatch::BoxFuture<Reply>>) -> Reply {
    match pending {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// Keeps one timerfd armed for the session's next deadline.
struct Alarm {
    timer: Timer,
    armed: Option<Instant>,
}

impl Alarm {
    fn new() -> Result<Alarm, StreamError> {
        Ok(Alarm {
            timer: Timer::new().map_err(io_error("creating the session timer"))?,
            armed: None,
        })
    }

    /// Arms for `due` unless already armed for it (a syscall only when the deadline moves).
    fn set(&mut self, due: Option<Instant>) -> Result<(), StreamError> {
        if due != self.armed {
            if let Some(d) = due {
                self.timer
                    .set_once(d.saturating_duration_since(Instant::now()))
                    .map_err(io_error("arming the session timer"))?;
            }
            self.armed = due;
        }
        Ok(())
    }

    async fn fired(&mut self) -> Result<(), StreamError> {
        if self.armed.is_none() {
            return std::future::pending().await;
        }
        self.timer
            .tick()
            .await
            .map_err(io_error("waiting for the session timer"))?;
        self.armed = None;
        Ok(())
    }
}

impl Service {
    /// A handle that stops [`Service::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.shared.stop.clone())
    }

    /// The handlers' context (for RPCI from outside a handler).
    pub fn context(&self) -> Context {
        self.ctx.clone()
    }

    /// Runs until stopped.
    pub async fn run(mut self) {
        let mut stop = self.shared.stop.subscribe();
        for hook in std::mem::take(&mut self.start_hooks) {
            hook(self.ctx.clone());
        }
        let mut reconnect = Reconnect::new();
        let mut last_error = String::new();
        while !*stop.borrow() {
            let started = Instant::now();
            let conn = self.open_tclo().await;
            if conn.is_ok() {
                if let Some(ready) = self.on_ready.0.take() {
                    ready();
                }
            }
            let result = match conn {
                Ok(TcloConn::Stream(s)) => self.stream_session(s, &mut stop).await,
                Ok(TcloConn::Backdoor(chan)) => self.backdoor_session(chan, &mut stop).await,
                Err(e) => Err(e),
            };
            match result {
                // Only a stop ends a session without an error.
                Ok(()) => break,
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        warn!(error = %msg, "TCLO channel down; reconnecting");
                        last_error = msg;
                    } else {
                        debug!(error = %msg, "TCLO channel still down");
                    }
                }
            }
            // The RPCI channel is probably broken too. If a call holds it, that call finds out
            // for itself (and times out at worst).
            if let Ok(mut rpci) = self.shared.rpci.try_lock() {
                *rpci = None;
            }
            tokio::select! {
                _ = tokio::time::sleep(reconnect.pause(started.elapsed())) => {}
                _ = stop.changed() => break,
            }
        }
        for task in self
            .shared
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            task.abort();
        }
        // Close the RPCI channel so the VMX sees the agent go at once; a call in flight has at
        // most RPCI_TIMEOUT to finish.
        if let Ok(mut rpci) = tokio::time::timeout(RPCI_TIMEOUT, self.shared.rpci.lock()).await {
            *rpci = None;
        }
        info!("stopped");
    }

    /// Dispatches `request`: a reply now goes to the session, a later one is returned to wait
    /// for.
    fn dispatch(&self, session: &mut Session, request: &[u8]) -> Option<BoxFuture<Reply>> {
        match self.dispatcher.dispatch(&self.ctx, request) {
            Deferred::Now(reply) => {
                session.handle_reply(Instant::now(), reply.to_wire());
                None
            }
            Deferred::Later(f) => Some(f),
        }
    }

    async fn open_tclo(&self) -> Result<TcloConn, SessionError> {
        if !self.shared.connector.may_block() {
            return Ok(self.shared.connector.tclo()?);
        }
        let connector = self.shared.connector.clone();
        tokio::task::spawn_blocking(move || connector.tclo())
            .await
            .map_err(|_| SessionError::Abandoned)?
            .map_err(SessionError::from)
    }

    async fn stream_session(
        &self,
        s: std::os::unix::net::UnixStream,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        debug!("TCLO stream connected");
        let polled = s
            .try_clone()
            .map_err(io_error("duplicating the TCLO socket"))?;
        let (r, mut w) = split_tclo(s).map_err(io_error("registering the TCLO socket"))?;
        let mut reader = PacketReader::new(r).with_busy_poll(polled);
        let mut session = Session::stream();
        let mut alarm = Alarm::new()?;
        let mut pending = None;
        loop {
            alarm.set(session.poll_timeout())?;
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    w.shutdown();
                    return Ok(());
                }
                r = alarm.fired() => {
                    r?;
                    session.handle_timeout(Instant::now());
                }
                reply = pending_reply(&mut pending), if pending.is_some() => {
                    pending = None;
                    session.handle_reply(Instant::now(), reply.to_wire());
                }
                p = reader.next(), if !session.awaiting_reply() => {
                    let request = session.handle_packet(p?)?;
                    pending = self.dispatch(&mut session, &request);
                }
            }
            while let Some(t) = session.poll_transmit() {
                if let Transmit::Packet(p) = t {
                    w.write_packet(&p).await?;
                }
            }
        }
    }

    async fn backdoor_session(
        &self,
        mut chan: BackdoorChannel,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        debug!(id = chan.id(), "TCLO backdoor channel open");
        let mut session = Session::backdoor(Instant::now());
        let mut alarm = Alarm::new()?;
        let mut pending = None;
        loop {
            alarm.set(session.poll_timeout())?;
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    if let Some(reply) = session.unsent_reply() {
                        let _ = chan.send(&reply);
                    }
                    // Dropping the channel closes it.
                    return Ok(());
                }
                reply = pending_reply(&mut pending), if pending.is_some() => {
                    pending = None;
                    session.handle_reply(Instant::now(), reply.to_wire());
                }
                r = alarm.fired() => {
                    r?;
                    session.handle_timeout(Instant::now());
                }
            }
            // A backdoor call is a few microseconds of VMX time: made inline.
            while let Some(Transmit::Poll(reply)) = session.poll_transmit() {
                chan.send(&reply).map_err(TransportError::from)?;
                let request = chan.receive().map_err(TransportError::from)?;
                if let Some(request) = session.handle_polled(Instant::now(), request) {
                    pending = self.dispatch(&mut session, &request);
                }
            }
        }
    }
}
