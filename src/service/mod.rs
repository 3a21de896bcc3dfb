//! The TCLO service: connect, answer the VMX, push guest info, reconnect on errors, stop cleanly.
//!
//! Over vsock and `unix:DIR` the host pushes requests: the loop sleeps in `read` and sends the
//! 1 s heartbeat PING vmtoolsd sends (`RPCIN_HEARTBEAT_INTERVAL`, `lib/rpcIn/rpcin.c`). Over the
//! backdoor it polls as vmtoolsd does: every 10 ms × delay, the delay backing off 1, 2, 4, 8, 10
//! while idle and reset by each request, the reply going out with the next poll. A broken channel
//! is reopened after a bounded, growing pause, so it never spins.
//!
//! Library use (appliance init): build with [`ServiceBuilder`], add handlers, `run` it on your
//! runtime, stop it with the [`StopHandle`]. See `examples/embedded.rs`.

pub mod channel;
pub mod timer;

use crate::config::Config;
use crate::dispatch::{Dispatcher, Reply};
use crate::guestinfo::xdr::NicInfo;
use crate::guestinfo::{self, NicFilter, NicMethod, Snapshot};
use crate::power;
use channel::{split_tclo, Connector, PacketReader, RpciConn, TcloConn};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timer::Timer;
use tokio::sync::{watch, Notify};
use toolbox_rpc::packet::{Packet, PacketType};
use toolbox_rpc::rpci::RpciError;
use toolbox_rpc::stream::StreamError;
use toolbox_rpc::TransportError;
use tracing::{debug, info, warn};

/// Name the agent answers `reset` with (`ATR <name>`), as vmtoolsd's main service does.
pub const APP_NAME: &str = "toolbox";

/// `TOOLS_VERSION_UNMANAGED` (`lib/include/vm_tools_version.h`): the host does not manage it.
pub const TOOLS_VERSION_UNMANAGED: u32 = 0x7fff_ffff;
/// `TOOLS_TYPE_OVT`: an open-source tools build, which is what we are to the host.
pub const TOOLS_TYPE_OVT: u32 = 4;

/// Background work bits: a forced guest info push, `Set_Option broadcastIP 1`, capability
/// registration.
const WORK_PUSH: u8 = 1;
const WORK_BROADCAST_IP: u8 = 2;
const WORK_CAPABILITIES: u8 = 4;

/// Backdoor poll period unit (`RpcInScheduleRecvEvent`: `delay * 10` ms).
const POLL_UNIT: Duration = Duration::from_millis(10);
/// `RPCIN_MAX_DELAY` (`lib/rpcChannel/rpcChannelInt.h`): 10 × 10 ms when idle.
const MAX_POLL_DELAY: u32 = 10;
/// How long an RPCI reply may take before the RPCI channel counts as broken. The VMX answers
/// in microseconds; this only bounds a hung peer.
const RPCI_TIMEOUT: Duration = Duration::from_secs(10);
/// Heartbeat over streams.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// Pauses between reconnection attempts: from this, doubling...
const RECONNECT_MIN: Duration = Duration::from_millis(100);
/// ...up to this. govmomi waits 5 s after an RPC error; vmtoolsd's vsock retry goes higher.
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// Errors that end a session (the service reconnects after them).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The transport failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The stream failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
}

struct GuestInfoState {
    nic_method: usize,
    /// The NIC info the VMX last took.
    sent_nics: Option<NicInfo>,
    /// The other messages the VMX last took, by kind.
    sent: HashMap<&'static str, Vec<u8>>,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    connector: Connector,
    trace: bool,
    rpci: tokio::sync::Mutex<Option<RpciConn>>,
    guestinfo: tokio::sync::Mutex<GuestInfoState>,
    work: Notify,
    pending: AtomicU8,
    pub(crate) power: Mutex<power::State>,
    stop: watch::Sender<bool>,
    filter: NicFilter,
    capabilities: Vec<Vec<u8>>,
}

/// What handlers get: RPCI to the VMX, the configuration, a way to run slow work.
#[derive(Clone)]
pub struct Context {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

impl Context {
    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// True in standalone mode (`toolbox -s`): every RPC is traced.
    pub fn trace(&self) -> bool {
        self.shared.trace
    }

    /// Sends an RPCI request, (re)connecting the RPCI channel when needed; the result is the
    /// reply after `"1 "`.
    pub async fn rpci(&self, request: &[u8]) -> Result<Vec<u8>, RpciError> {
        let mut conn = self.shared.rpci.lock().await;
        let mut last = None;
        // One retry on a fresh connection: the VMX may have dropped an idle one.
        for _ in 0..2 {
            if conn.is_none() {
                *conn = Some(self.shared.connector.rpci().map_err(RpciError::Transport)?);
            }
            let Some(c) = conn.as_mut() else { continue };
            let result = tokio::time::timeout(RPCI_TIMEOUT, c.call(request))
                .await
                .unwrap_or_else(|_| {
                    Err(RpciError::Transport(TransportError::Stream(
                        StreamError::Io {
                            what: "waiting for the RPCI reply",
                            source: std::io::ErrorKind::TimedOut.into(),
                        },
                    )))
                });
            match result {
                Err(RpciError::Transport(e)) => {
                    *conn = None;
                    last = Some(e);
                }
                other => {
                    if self.shared.trace {
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

    /// Runs `fut` on the service's runtime, off the request path.
    pub fn spawn(&self, fut: impl std::future::Future<Output = ()> + Send + 'static) {
        tokio::spawn(fut);
    }

    /// Asks for a guest info push now, everything resent.
    pub fn push_guest_info(&self) {
        self.request(WORK_PUSH);
    }

    /// Queues background work. Requests coalesce: a VMX repeating one while it is pending
    /// costs nothing more.
    fn request(&self, bits: u8) {
        self.shared.pending.fetch_or(bits, Ordering::AcqRel);
        self.shared.work.notify_one();
    }

    /// A fresh snapshot of the guest.
    pub fn snapshot(&self) -> Snapshot {
        guestinfo::gather(&self.shared.filter)
    }

    /// Tells the VMX what changed since the last push (everything when `force`).
    pub async fn send_guest_info(&self, force: bool) {
        self.send_snapshot(&self.snapshot(), force).await;
    }

    async fn send_snapshot(&self, snap: &Snapshot, force: bool) {
        let mut st = self.shared.guestinfo.lock().await;
        if force {
            st.sent_nics = None;
            st.sent.clear();
        }
        // NIC info, with vmtoolsd's fallbacks from the method that last worked.
        if st.sent_nics.as_ref() != Some(&snap.nic_info) {
            let mut ok = false;
            for i in st.nic_method..NicMethod::ALL.len() {
                let m = NicMethod::ALL[i];
                match self.rpci(&m.request(&snap.nic_info)).await {
                    Ok(_) => {
                        st.nic_method = i;
                        ok = true;
                        break;
                    }
                    Err(RpciError::Transport(e)) => {
                        warn!(error = %e, "sending NIC info");
                        break;
                    }
                    Err(e) => {
                        debug!(method = ?m, error = %e, "NIC info refused, trying the next form")
                    }
                }
            }
            if ok {
                st.sent_nics = Some(snap.nic_info.clone());
            } else {
                st.nic_method = 0;
            }
        }
        for (key, msg) in guestinfo::other_messages(snap) {
            if st.sent.get(key) == Some(&msg) {
                continue;
            }
            match self.rpci(&msg).await {
                Ok(_) => {
                    st.sent.insert(key, msg);
                }
                Err(e) => debug!(info = key, error = %e, "guest info not taken"),
            }
        }
    }

    pub(crate) fn power_state(&self) -> std::sync::MutexGuard<'_, power::State> {
        // The lock is never held across an await or a panic point.
        self.shared.power.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks the service to stop.
    pub fn stop(&self) {
        let _ = self.shared.stop.send(true);
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
    dispatcher: Dispatcher,
    capabilities: Vec<Vec<u8>>,
}

impl ServiceBuilder {
    /// Starts from a configuration; the default handlers are registered.
    pub fn new(config: Config) -> ServiceBuilder {
        let mut dispatcher = Dispatcher::default();
        register_defaults(&mut dispatcher);
        ServiceBuilder {
            config,
            connector: None,
            assume_vmware: false,
            trace: false,
            dispatcher,
            capabilities: capabilities(),
        }
    }

    /// Adds an RPCI request sent on every `Capabilities_Register`, e.g.
    /// `tools.capability.hgfs_server toolbox 1` from a feature that needs the host to know it.
    pub fn capability(mut self, request: impl Into<Vec<u8>>) -> Self {
        self.capabilities.push(request.into());
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

    /// Adds or replaces a TCLO handler.
    pub fn handler(
        mut self,
        name: &str,
        h: impl Fn(&Context, &[u8]) -> Reply + Send + Sync + 'static,
    ) -> Self {
        self.dispatcher.register(name, h);
        self
    }

    /// The service, ready to run.
    pub fn build(self) -> Service {
        let connector = self.connector.unwrap_or(Connector::Transport {
            transport: self.config.transport.clone(),
            assume_vmware: self.assume_vmware,
        });
        let (stop, _) = watch::channel(false);
        let filter = NicFilter {
            exclude: self.config.guestinfo.exclude_nics.clone(),
            max_nics: self.config.guestinfo.max_nics,
        };
        Service {
            ctx: Context {
                shared: Arc::new(Shared {
                    config: self.config,
                    connector,
                    trace: self.trace,
                    rpci: tokio::sync::Mutex::new(None),
                    guestinfo: tokio::sync::Mutex::new(GuestInfoState {
                        nic_method: 0,
                        sent_nics: None,
                        sent: HashMap::new(),
                    }),
                    work: Notify::new(),
                    pending: AtomicU8::new(0),
                    power: Mutex::new(power::State::default()),
                    stop,
                    filter,
                    capabilities: self.capabilities,
                }),
            },
            dispatcher: Arc::new(self.dispatcher),
        }
    }
}

/// The agent.
#[derive(Debug)]
pub struct Service {
    ctx: Context,
    dispatcher: Arc<Dispatcher>,
}

impl Service {
    /// A handle that stops [`Service::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(self.ctx.shared.stop.clone())
    }

    /// The handlers' context (for RPCI from outside a handler).
    pub fn context(&self) -> Context {
        self.ctx.clone()
    }

    /// Runs until stopped.
    pub async fn run(self) {
        let mut stop = self.ctx.shared.stop.subscribe();
        let worker = tokio::spawn(worker(self.ctx.clone()));
        let mut pause = RECONNECT_MIN;
        let mut last_error = String::new();
        while !*stop.borrow() {
            let started = Instant::now();
            let result = match self.ctx.shared.connector.tclo() {
                Ok(TcloConn::Stream(s)) => self.stream_session(s, &mut stop).await,
                Ok(TcloConn::Backdoor(chan)) => self.backdoor_session(chan, &mut stop).await,
                Err(e) => Err(e.into()),
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
            // A session that lived a while was healthy: start the pauses over.
            if started.elapsed() > Duration::from_secs(10) {
                pause = RECONNECT_MIN;
            }
            // The RPCI channel is probably broken too. If a call holds it, that call finds out
            // for itself (and times out at worst).
            if let Ok(mut rpci) = self.ctx.shared.rpci.try_lock() {
                *rpci = None;
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.changed() => break,
            }
            pause = (pause * 2).min(RECONNECT_MAX);
        }
        worker.abort();
        // Close the RPCI channel so the VMX sees the agent go at once; a call in flight has at
        // most RPCI_TIMEOUT to finish.
        if let Ok(mut rpci) = tokio::time::timeout(RPCI_TIMEOUT, self.ctx.shared.rpci.lock()).await
        {
            *rpci = None;
        }
        info!("stopped");
    }

    async fn stream_session(
        &self,
        s: std::os::unix::net::UnixStream,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        debug!("TCLO stream connected");
        let (r, mut w) = split_tclo(s).map_err(|source| StreamError::Io {
            what: "registering the TCLO socket",
            source,
        })?;
        let mut reader = PacketReader::new(r);
        let mut heartbeat: Option<Timer> = None;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    w.shutdown();
                    return Ok(());
                }
                p = reader.next() => {
                    let p = p?;
                    if p.kind != PacketType::DATA {
                        continue;
                    }
                    let reply = self.dispatcher.dispatch(&self.ctx, &p.payload);
                    w.write_packet(&Packet::data(reply.to_wire())).await?;
                    if heartbeat.is_none() {
                        // vmtoolsd starts the heartbeat after its first successful send.
                        heartbeat = Some(Timer::interval(HEARTBEAT).map_err(|source| StreamError::Io { what: "creating the heartbeat timer", source })?);
                    }
                }
                r = tick_or_never(heartbeat.as_ref()) => {
                    r.map_err(|source| StreamError::Io { what: "heartbeat timer", source })?;
                    w.write_packet(&Packet::ping()).await?;
                }
            }
        }
    }

    async fn backdoor_session(
        &self,
        mut chan: channel::BackdoorChannel,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), SessionError> {
        debug!(id = chan.id(), "TCLO backdoor channel open");
        let mut delay: u32 = 0;
        let mut reply: Vec<u8> = Vec::new();
        let timer = Timer::new().map_err(|source| StreamError::Io {
            what: "creating the poll timer",
            source,
        })?;
        loop {
            tokio::select! {
                biased;
                _ = stop.changed() => {
                    if !reply.is_empty() {
                        let _ = chan.send(&reply);
                    }
                    // Dropping the channel closes it.
                    return Ok(());
                }
                r = timer.sleep(POLL_UNIT * delay) => {
                    r.map_err(|source| StreamError::Io { what: "poll timer", source })?;
                }
            }
            // Even an empty reply is sent: it tells the VMX we are here.
            chan.send(&reply).map_err(TransportError::from)?;
            reply.clear();
            let request = chan.receive().map_err(TransportError::from)?;
            if request.is_empty() {
                delay = match delay {
                    0 => 1,
                    d => (d * 2).min(MAX_POLL_DELAY),
                };
            } else {
                reply = self.dispatcher.dispatch(&self.ctx, &request).to_wire();
                delay = 0;
            }
        }
    }
}

async fn tick_or_never(t: Option<&Timer>) -> std::io::Result<()> {
    match t {
        Some(t) => t.tick().await,
        None => std::future::pending().await,
    }
}

/// Guest info every interval (only what changed) and the queued background work, one at a time.
async fn worker(ctx: Context) {
    let every = Duration::from_secs(ctx.config().guestinfo.interval_secs);
    let timer = match Timer::interval(every) {
        Ok(t) => Some(t),
        Err(e) => {
            warn!(error = %e, "no timerfd; guest info is sent on request only");
            None
        }
    };
    // Pushed at start.
    ctx.send_guest_info(false).await;
    loop {
        tokio::select! {
            r = tick_or_never(timer.as_ref()) => {
                if let Err(e) = r {
                    warn!(error = %e, "guest info timer");
                }
                ctx.send_guest_info(false).await;
            }
            _ = ctx.shared.work.notified() => {
                let bits = ctx.shared.pending.swap(0, Ordering::AcqRel);
                if bits & WORK_CAPABILITIES != 0 {
                    register_capabilities(&ctx).await;
                }
                if bits & WORK_BROADCAST_IP != 0 {
                    broadcast_ip(&ctx).await;
                } else if bits & WORK_PUSH != 0 {
                    ctx.send_guest_info(true).await;
                }
            }
        }
    }
}

fn register_defaults(d: &mut Dispatcher) {
    d.register("reset", |ctx, _| {
        // A reset follows a (re)connection, a resume or a vMotion: tell everything again.
        ctx.push_guest_info();
        Reply::ok(format!("ATR {APP_NAME}"))
    });
    d.register("ping", |_, _| Reply::ok(""));
    d.register("Capabilities_Register", |ctx, _| {
        ctx.request(WORK_CAPABILITIES);
        Reply::ok("")
    });
    d.register("Set_Option", |ctx, args| {
        let (key, value) = crate::dispatch::split_request(args);
        let key = String::from_utf8_lossy(key).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        info!(option = %key, value = %value, "Set_Option");
        if key == "broadcastIP" && value == "1" {
            ctx.request(WORK_BROADCAST_IP);
        }
        Reply::ok("")
    });
    power::register(d);
}

/// The capabilities vmtoolsd's power plugin registers; the tools version follows them.
pub fn capabilities() -> Vec<Vec<u8>> {
    vec![
        // TOOLS_CAP_OLD_NOVAL: name and a space, no terminator (`ToolsCore_SetCapabilities`).
        b"tools.capability.statechange ".to_vec(),
        b"tools.capability.softpowerop_retry ".to_vec(),
    ]
}

async fn register_capabilities(ctx: &Context) {
    for cap in &ctx.shared.capabilities {
        if let Err(e) = ctx.rpci(cap).await {
            warn!(error = %e, "registering capability");
        }
    }
    let mut msg =
        format!("tools.set.versiontype {TOOLS_VERSION_UNMANAGED} {TOOLS_TYPE_OVT}").into_bytes();
    msg.push(0);
    if ctx.rpci(&msg).await.is_err() {
        // Hosts too old for the type: the version alone.
        let mut msg = format!("tools.set.version {TOOLS_VERSION_UNMANAGED}").into_bytes();
        msg.push(0);
        if let Err(e) = ctx.rpci(&msg).await {
            warn!(error = %e, "setting the tools version");
        }
    }
}

async fn broadcast_ip(ctx: &Context) {
    let snap = ctx.snapshot();
    let ip = snap
        .primary_ip()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|| "unknown".into()); // GUESTINFO_IP_UNKNOWN
    if let Err(e) = ctx
        .rpci(format!("info-set guestinfo.ip {ip}").as_bytes())
        .await
    {
        warn!(error = %e, "broadcastIP");
    }
    ctx.send_snapshot(&snap, true).await;
}
