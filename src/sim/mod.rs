//! `vmx-sim`: plays the VMX on a `unix:DIR` pair, for tests and for trying the agent without
//! VMware.
//!
//! It listens on `DIR/tclo.sock` and `DIR/rpci.sock` with the vsock wire format. On each TCLO
//! connection it greets the guest as the VMX does (`reset`, `Capabilities_Register`,
//! `Set_Option broadcastIP 1`) and then sends whatever it is asked to; it answers RPCI from its
//! own guestinfo store and decodes and records everything the guest reports. `DIR/ctl.sock`
//! takes JSON-line commands from `vmx-sim -d DIR ...` and from tests. Faults: drop the channel,
//! send garbage, delay or refuse replies.

pub mod diskinfo;
pub mod guestops;

use crate::guestinfo::info_type;
use crate::guestinfo::xdr::{self, NicInfo};
use crate::service::channel::PacketReader;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, Notify};
use toolbox_rpc::packet::{Packet, PacketType};
use toolbox_rpc::transport::{RPCI_SOCKET, TCLO_SOCKET};

/// The control socket's name in DIR.
pub const CONTROL_SOCKET: &str = "ctl.sock";

/// A NIC as the simulator shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct NicView {
    /// MAC address.
    pub mac: String,
    /// `addr/prefix` strings.
    pub ips: Vec<String>,
    /// Origin and status per address, as numbers (`None` when absent).
    pub ip_origin_status: Vec<(Option<i32>, Option<i32>)>,
}

/// A route as the simulator shows it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RouteView {
    /// `dest/prefix`.
    pub dest: String,
    /// Gateway.
    pub gateway: Option<String>,
    /// Index into the NIC list.
    pub nic: u32,
    /// Metric.
    pub metric: u32,
}

/// Everything the guest reported.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GuestReport {
    /// `guestinfo.ip` as set by the guest.
    pub ip: Option<String>,
    /// How many times the guest set it.
    pub ip_sets: u64,
    /// Whether the last `guestinfo.ip` request carried the C string terminator, as
    /// guestInfoServer.c sends it.
    pub ip_nul_terminated: Option<bool>,
    /// NICs from the last NIC info.
    pub nics: Vec<NicView>,
    /// Routes from the last NIC info.
    pub routes: Vec<RouteView>,
    /// DNS servers.
    pub dns_servers: Vec<String>,
    /// DNS search suffixes.
    pub dns_search: Vec<String>,
    /// DNS host and domain name.
    pub dns_host: Option<String>,
    /// Domain.
    pub dns_domain: Option<String>,
    /// The SetGuestInfo type the NIC info came as (10, or 9 for a fallback).
    pub nic_info_type: Option<u32>,
    /// NIC info updates received.
    pub nic_info_updates: u64,
    /// Host name.
    pub host_name: Option<String>,
    /// OS full name.
    pub os_full: Option<String>,
    /// Guest id.
    pub os_short: Option<String>,
    /// Detailed data string.
    pub os_detailed: Option<String>,
    /// Uptime, hundredths of a second.
    pub uptime_centis: Option<u64>,
    /// `tools.set.versiontype` / `tools.set.version` text.
    pub tools_version: Option<String>,
    /// Registered capabilities.
    pub capabilities: Vec<String>,
    /// `tools.os.statechange.status` reports: (ok, state).
    pub statechanges: Vec<(u32, u32)>,
    /// Heartbeat PINGs.
    pub pings: u64,
    /// TCLO packets from the guest while no request was outstanding: a guest that answers
    /// what was not a request desynchronises the VMX's request/reply pairing.
    pub unsolicited_replies: u64,
    /// TCLO connections accepted.
    pub tclo_connections: u64,
    /// The latest TCLO connection (numbered from 1 as `tclo_connections` counts them) on which
    /// the guest answered the whole greeting, the VMX's opening requests.
    pub greeted_connection: u64,
    /// RPCI requests answered.
    pub rpci_requests: u64,
    /// RPCI replies the delay fault holds back right now: a test can tell that the guest did
    /// something while an RPCI request of its was still unanswered.
    pub rpci_replies_held: u64,
    /// Filesystems from the last disk info (`guest.disk`).
    #[serde(default)]
    pub disks: Vec<diskinfo::DiskView>,
    /// The form the last disk info came in: `json` or `binary`.
    #[serde(default)]
    pub disk_info_form: Option<String>,
    /// Disk info updates received.
    #[serde(default)]
    pub disk_info_updates: u64,
    /// Requests not understood, and decode errors.
    pub errors: Vec<String>,
}

/// Faults to inject.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Faults {
    /// Delay before each RPCI reply, ms.
    pub rpci_delay_ms: u64,
    /// RPCI requests starting with one of these are refused (`0 ...`).
    pub refuse: Vec<String>,
}

/// A control request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Control {
    /// Send a TCLO request and return the guest's reply.
    Tclo {
        /// Request text.
        request: String,
        /// Milliseconds to wait for a connected guest and its reply.
        timeout_ms: u64,
    },
    /// Send a binary TCLO request (base64) and return the guest's reply (base64): VIX
    /// relayed commands, whose messages are binary.
    TcloBinary {
        /// Request bytes, base64.
        request: String,
        /// Milliseconds to wait for a connected guest and its reply.
        timeout_ms: u64,
    },
    /// Return the report.
    State,
    /// Host-side guestinfo read.
    InfoGet {
        /// Key, with or without `guestinfo.`.
        key: String,
    },
    /// Host-side guestinfo write.
    InfoSet {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Close the TCLO and RPCI connections.
    Drop,
    /// Send garbage on the TCLO connection.
    Garbage,
    /// Set RPCI faults.
    Faults(Faults),
}

/// A control answer.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct ControlReply {
    /// Success.
    pub ok: bool,
    /// Error text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// TCLO reply or guestinfo value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The report.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<GuestReport>,
}

struct TcloPeer {
    writer: OwnedWriteHalf,
    generation: u64,
}

struct Inner {
    dir: PathBuf,
    greet: bool,
    report: Mutex<GuestReport>,
    store: Mutex<BTreeMap<String, String>>,
    faults: Mutex<Faults>,
    tclo: tokio::sync::Mutex<Option<TcloPeer>>,
    pending: Mutex<Option<oneshot::Sender<Vec<u8>>>>,
    connected: Notify,
    changed: Notify,
    faults_changed: Notify,
    generation: Mutex<u64>,
    rpci_conns: Mutex<Vec<tokio::task::AbortHandle>>,
}

/// A running simulator.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim").field("dir", &self.inner.dir).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Binds a socket, replacing a stale one.
fn bind(path: &Path) -> std::io::Result<UnixListener> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
}

impl Sim {
    /// Starts listening in `dir` (created if needed). With `greet`, each new TCLO connection gets
    /// the VMX's opening requests.
    pub async fn start(dir: &Path, greet: bool) -> std::io::Result<Sim> {
        std::fs::create_dir_all(dir)?;
        let tclo = bind(&dir.join(TCLO_SOCKET))?;
        let rpci = bind(&dir.join(RPCI_SOCKET))?;
        let ctl = bind(&dir.join(CONTROL_SOCKET))?;
        let sim = Sim {
            inner: Arc::new(Inner {
                dir: dir.to_owned(),
                greet,
                report: Mutex::new(GuestReport::default()),
                store: Mutex::new(BTreeMap::new()),
                faults: Mutex::new(Faults::default()),
                tclo: tokio::sync::Mutex::new(None),
                pending: Mutex::new(None),
                connected: Notify::new(),
                changed: Notify::new(),
                faults_changed: Notify::new(),
                generation: Mutex::new(0),
                rpci_conns: Mutex::new(Vec::new()),
            }),
        };
        let s = sim.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = tclo.accept().await {
                s.tclo_connected(conn).await;
            }
        });
        let s = sim.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = rpci.accept().await {
                let s2 = s.clone();
                let h = tokio::spawn(async move { s2.serve_rpci(conn).await });
                lock(&s.inner.rpci_conns).push(h.abort_handle());
            }
        });
        let s = sim.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = ctl.accept().await {
                let s2 = s.clone();
                tokio::spawn(async move { s2.serve_control(conn).await });
            }
        });
        Ok(sim)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// A copy of the report.
    pub fn report(&self) -> GuestReport {
        lock(&self.inner.report).clone()
    }

    /// Waits until `pred` holds for the report, or `timeout` passes; returns the last report.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        pred: impl Fn(&GuestReport) -> bool,
    ) -> Result<GuestReport, GuestReport> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.inner.changed.notified();
            let r = self.report();
            if pred(&r) {
                return Ok(r);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(self.report());
            }
        }
    }

    /// Host-side guestinfo.
    pub fn info_set(&self, key: &str, value: &str) {
        lock(&self.inner.store).insert(toolbox_rpc::rpci::guestinfo_key(key), value.to_string());
    }

    /// Host-side guestinfo.
    pub fn info_get(&self, key: &str) -> Option<String> {
        lock(&self.inner.store)
            .get(&toolbox_rpc::rpci::guestinfo_key(key))
            .cloned()
    }

    /// Sets RPCI faults; they apply to replies already held back too, so clearing the delay
    /// releases those at once.
    pub fn set_faults(&self, f: Faults) {
        *lock(&self.inner.faults) = f;
        self.inner.faults_changed.notify_waiters();
    }

    fn record(&self, f: impl FnOnce(&mut GuestReport)) {
        f(&mut lock(&self.inner.report));
        self.inner.changed.notify_waiters();
    }

    async fn tclo_connected(&self, conn: UnixStream) {
        let generation = {
            let mut g = lock(&self.inner.generation);
            *g += 1;
            *g
        };
        let (r, w) = conn.into_split();
        *self.inner.tclo.lock().await = Some(TcloPeer {
            writer: w,
            generation,
        });
        self.record(|r| r.tclo_connections += 1);
        self.inner.connected.notify_waiters();
        let s = self.clone();
        tokio::spawn(async move {
            let mut reader = PacketReader::new(r);
            while let Ok(p) = reader.next().await {
                if p.kind == PacketType::PING {
                    s.record(|r| r.pings += 1);
                    continue;
                }
                match lock(&s.inner.pending).take() {
                    Some(tx) => {
                        let _ = tx.send(p.payload);
                    }
                    None => s.record(|r| r.unsolicited_replies += 1),
                }
            }
            // Whoever waits for a reply learns the channel is gone.
            lock(&s.inner.pending).take();
            let mut peer = s.inner.tclo.lock().await;
            if peer.as_ref().is_some_and(|p| p.generation == generation) {
                *peer = None;
            }
        });
        if self.inner.greet {
            let s = self.clone();
            tokio::spawn(async move {
                for req in [
                    "reset",
                    "ping",
                    "Capabilities_Register",
                    "Set_Option broadcastIP 1",
                ] {
                    // A greeting belongs to its connection: none of it goes to a later one.
                    let sent = s
                        .tclo_on(Some(generation), req.as_bytes(), Duration::from_secs(5))
                        .await;
                    if let Err(e) = sent {
                        s.record(|r| r.errors.push(format!("greeting {req}: {e}")));
                        return;
                    }
                }
                s.record(|r| r.greeted_connection = r.greeted_connection.max(generation));
            });
        }
    }

    /// Sends a TCLO request to the guest and waits for its reply.
    pub async fn tclo(&self, request: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
        self.tclo_on(None, request, timeout).await
    }

    /// As [`Sim::tclo`]; with `generation`, only on that connection.
    async fn tclo_on(
        &self,
        generation: Option<u64>,
        request: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut peer = loop {
            let connected = self.inner.connected.notified();
            let guard = self.inner.tclo.lock().await;
            if let (Some(want), Some(p)) = (generation, guard.as_ref()) {
                if p.generation != want {
                    return Err("the connection was replaced".into());
                }
            }
            if guard.is_some() {
                break guard;
            }
            drop(guard);
            if tokio::time::timeout_at(deadline, connected).await.is_err() {
                return Err("no guest connected".into());
            }
        };
        let (tx, rx) = oneshot::channel();
        *lock(&self.inner.pending) = Some(tx);
        let Some(p) = peer.as_mut() else {
            return Err("no guest connected".into());
        };
        if let Err(e) = p.writer.write_all(&Packet::data(request).encode()).await {
            *peer = None;
            return Err(format!("sending: {e}"));
        }
        // Keep the channel locked until the reply: TCLO is one request at a time.
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err("guest closed the channel".into()),
            Err(_) => Err("no reply from the guest in time".into()),
        }
    }

    /// Closes the guest's TCLO and RPCI connections (fault injection).
    pub async fn drop_connections(&self) {
        if let Some(mut p) = self.inner.tclo.lock().await.take() {
            let _ = p.writer.shutdown().await;
        }
        for h in lock(&self.inner.rpci_conns).drain(..) {
            h.abort();
        }
    }

    /// Writes `bytes` as they are on the TCLO connection (hostile frames); false when no guest
    /// is connected.
    pub async fn send_raw(&self, bytes: &[u8]) -> bool {
        let mut peer = self.inner.tclo.lock().await;
        match peer.as_mut() {
            Some(p) => p.writer.write_all(bytes).await.is_ok(),
            None => false,
        }
    }

    /// Writes garbage on the TCLO connection (fault injection).
    pub async fn send_garbage(&self) -> bool {
        let mut peer = self.inner.tclo.lock().await;
        match peer.as_mut() {
            Some(p) => p
                .writer
                .write_all(&[0x00, 0x00, 0x00, 0x08, 0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4])
                .await
                .is_ok(),
            None => false,
        }
    }

    async fn serve_rpci(&self, conn: UnixStream) {
        let (r, mut w) = conn.into_split();
        let mut reader = PacketReader::new(r);
        while let Ok(p) = reader.next().await {
            self.delay_rpci_reply().await;
            let reply = self.rpci(&p.payload);
            if w.write_all(&Packet::data(reply).encode()).await.is_err() || p.fast_close {
                break;
            }
        }
    }

    /// Holds an RPCI reply back for the delay fault, counting it in `rpci_replies_held` until it
    /// is let go (also when the connection is aborted meanwhile).
    async fn delay_rpci_reply(&self) {
        struct Held<'a>(&'a Sim);
        impl Drop for Held<'_> {
            fn drop(&mut self) {
                self.0
                    .record(|r| r.rpci_replies_held = r.rpci_replies_held.saturating_sub(1));
            }
        }
        let received = tokio::time::Instant::now();
        let mut held = None;
        loop {
            let changed = self.inner.faults_changed.notified();
            let delay = Duration::from_millis(lock(&self.inner.faults).rpci_delay_ms);
            let until = received + delay;
            if tokio::time::Instant::now() >= until {
                return;
            }
            if held.is_none() {
                self.record(|r| r.rpci_replies_held += 1);
                held = Some(Held(self));
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return,
                _ = changed => {}
            }
        }
    }

    /// Answers one RPCI request as the VMX would, recording what it says.
    pub fn rpci(&self, req: &[u8]) -> Vec<u8> {
        self.record(|r| r.rpci_requests += 1);
        let text_req = String::from_utf8_lossy(&req[..req.len().min(64)]).into_owned();
        if lock(&self.inner.faults)
            .refuse
            .iter()
            .any(|p| text_req.starts_with(p.as_str()))
        {
            return b"0 Refused by fault injection".to_vec();
        }
        let req_nul = req.strip_suffix(b"\0").unwrap_or(req);
        let text = || String::from_utf8_lossy(req_nul).into_owned();
        if let Some(rest) = req_nul.strip_prefix(b"info-set ") {
            let s = String::from_utf8_lossy(rest).into_owned();
            let (k, v) = s.split_once(' ').unwrap_or((&s, ""));
            if !k.starts_with("guestinfo.") {
                return b"0 Permission denied".to_vec();
            }
            if k == "guestinfo.ip" {
                let ip = v.to_string();
                let nul = req.ends_with(b"\0");
                self.record(|r| {
                    r.ip = Some(ip);
                    r.ip_sets += 1;
                    r.ip_nul_terminated = Some(nul);
                });
            }
            lock(&self.inner.store).insert(k.to_string(), v.to_string());
            return b"1 ".to_vec();
        }
        if let Some(k) = req_nul.strip_prefix(b"info-get ") {
            let k = String::from_utf8_lossy(k).into_owned();
            return match lock(&self.inner.store).get(k.trim()) {
                Some(v) => format!("1 {v}").into_bytes(),
                None => b"0 No value found".to_vec(),
            };
        }
        if let Some(body) = req_nul.strip_prefix(b"SetGuestDiskInfo ") {
            return match diskinfo::decode_json(body) {
                Ok(d) => {
                    self.record_disks(d, "json");
                    b"1 ".to_vec()
                }
                Err(e) => {
                    self.record(|r| r.errors.push(e.to_string()));
                    format!("0 {e}").into_bytes()
                }
            };
        }
        if let Some(rest) = req.strip_prefix(b"SetGuestInfo  ") {
            return match self.set_guest_info(rest) {
                Ok(()) => b"1 ".to_vec(),
                Err(e) => {
                    self.record(|r| r.errors.push(format!("SetGuestInfo: {e}")));
                    format!("0 {e}").into_bytes()
                }
            };
        }
        let t = text();
        if let Some(cap) = t.strip_prefix("tools.capability.") {
            let cap = cap.trim_end().to_string();
            self.record(|r| {
                if !r.capabilities.contains(&cap) {
                    r.capabilities.push(cap)
                }
            });
            return b"1 ".to_vec();
        }
        if let Some(v) = t
            .strip_prefix("tools.set.versiontype ")
            .or_else(|| t.strip_prefix("tools.set.version "))
        {
            let v = v.to_string();
            self.record(|r| r.tools_version = Some(v));
            return b"1 ".to_vec();
        }
        if let Some(v) = t.strip_prefix("tools.os.statechange.status ") {
            let mut it = v
                .split_whitespace()
                .map(|x| x.parse::<u32>().unwrap_or(u32::MAX));
            let (a, b) = (it.next().unwrap_or(u32::MAX), it.next().unwrap_or(u32::MAX));
            self.record(|r| r.statechanges.push((a, b)));
            return b"1 ".to_vec();
        }
        if t.starts_with("log ") || t == "ping" {
            return b"1 ".to_vec();
        }
        let name = toolbox_rpc::rpci::command_name(req);
        self.record(|r| r.errors.push(format!("unknown RPCI {name}")));
        b"0 Unknown command".to_vec()
    }

    fn record_disks(&self, disks: Vec<diskinfo::DiskView>, form: &str) {
        let form = form.to_string();
        self.record(|r| {
            r.disks = disks;
            r.disk_info_form = Some(form);
            r.disk_info_updates += 1;
        });
    }

    fn set_guest_info(&self, rest: &[u8]) -> Result<(), String> {
        let sp = rest.iter().position(|&b| b == b' ').ok_or("no type")?;
        let kind: u32 = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or("bad type")?;
        let data = &rest[sp + 1..];
        let text =
            || String::from_utf8_lossy(data.strip_suffix(b"\0").unwrap_or(data)).into_owned();
        match kind {
            info_type::IPADDRESS_V3 | info_type::IPADDRESS_V2 => {
                // Type 9 carries v3 (64 addresses per NIC) or v2, as the VMX accepts both.
                let info = xdr::decode(data).map_err(|e| e.to_string())?;
                self.record(|r| {
                    apply_nic_info(r, &info);
                    r.nic_info_type = Some(kind);
                    r.nic_info_updates += 1;
                });
            }
            info_type::DNS_NAME => {
                let t = text();
                self.record(|r| r.host_name = Some(t));
            }
            info_type::OS_NAME_FULL => {
                let t = text();
                self.record(|r| r.os_full = Some(t));
            }
            info_type::OS_NAME => {
                let t = text();
                self.record(|r| r.os_short = Some(t));
            }
            info_type::UPTIME => {
                let t: u64 = text().trim().parse().map_err(|_| "bad uptime")?;
                self.record(|r| r.uptime_centis = Some(t));
            }
            info_type::OS_DETAILED => {
                if data.len() < 649 || data[..4] != 1u32.to_le_bytes() {
                    return Err("bad detailed data header".into());
                }
                let cstr = |b: &[u8]| {
                    String::from_utf8_lossy(b.split(|&c| c == 0).next().unwrap_or(b)).into_owned()
                };
                let short = cstr(&data[4..133]);
                let full = cstr(&data[133..646]);
                let detailed = cstr(&data[648..]);
                self.record(|r| {
                    r.os_detailed = Some(detailed);
                    r.os_short.get_or_insert(short);
                    r.os_full.get_or_insert(full);
                });
            }
            crate::guestinfo::disk::INFO_DISK_FREE_SPACE => {
                let d = diskinfo::decode_v0(data).map_err(|e| e.to_string())?;
                self.record_disks(d, "binary");
            }
            other => return Err(format!("unsupported type {other}")),
        }
        Ok(())
    }

    async fn serve_control(&self, conn: UnixStream) {
        let (r, mut w) = conn.into_split();
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let reply = match serde_json::from_str::<Control>(&line) {
                Ok(c) => self.control(c).await,
                Err(e) => ControlReply {
                    error: Some(format!("bad control request: {e}")),
                    ..ControlReply::default()
                },
            };
            let mut out = serde_json::to_vec(&reply).unwrap_or_default();
            out.push(b'\n');
            if w.write_all(&out).await.is_err() {
                break;
            }
        }
    }

    /// Carries out a control request.
    pub async fn control(&self, c: Control) -> ControlReply {
        let ok = |value: Option<String>| ControlReply {
            ok: true,
            value,
            ..ControlReply::default()
        };
        match c {
            Control::Tclo {
                request,
                timeout_ms,
            } => match self
                .tclo(request.as_bytes(), Duration::from_millis(timeout_ms))
                .await
            {
                Ok(r) => ok(Some(String::from_utf8_lossy(&r).into_owned())),
                Err(e) => ControlReply {
                    error: Some(e),
                    ..ControlReply::default()
                },
            },
            Control::TcloBinary {
                request,
                timeout_ms,
            } => {
                use base64::Engine as _;
                let b64 = base64::engine::general_purpose::STANDARD;
                let Ok(bytes) = b64.decode(&request) else {
                    return ControlReply {
                        error: Some("the request is not base64".into()),
                        ..ControlReply::default()
                    };
                };
                match self.tclo(&bytes, Duration::from_millis(timeout_ms)).await {
                    Ok(r) => ok(Some(b64.encode(r))),
                    Err(e) => ControlReply {
                        error: Some(e),
                        ..ControlReply::default()
                    },
                }
            }
            Control::State => ControlReply {
                ok: true,
                state: Some(self.report()),
                ..ControlReply::default()
            },
            Control::InfoGet { key } => match self.info_get(&key) {
                Some(v) => ok(Some(v)),
                None => ControlReply {
                    error: Some(format!(
                        "{} is not set",
                        toolbox_rpc::rpci::guestinfo_key(&key)
                    )),
                    ..ControlReply::default()
                },
            },
            Control::InfoSet { key, value } => {
                self.info_set(&key, &value);
                ok(None)
            }
            Control::Drop => {
                self.drop_connections().await;
                ok(None)
            }
            Control::Garbage => {
                if self.send_garbage().await {
                    ok(None)
                } else {
                    ControlReply {
                        error: Some("no guest connected".into()),
                        ..ControlReply::default()
                    }
                }
            }
            Control::Faults(f) => {
                self.set_faults(f);
                ok(None)
            }
        }
    }
}

fn ip_text(t: &xdr::TypedIp) -> String {
    t.ip()
        .map(|i| i.to_string())
        .unwrap_or_else(|| format!("type{}:{:02x?}", t.kind, t.addr))
}

fn apply_nic_info(r: &mut GuestReport, info: &NicInfo) {
    r.nics = info
        .nics
        .iter()
        .map(|n| NicView {
            mac: n.mac.clone(),
            ips: n
                .ips
                .iter()
                .map(|e| format!("{}/{}", ip_text(&e.addr), e.prefix_len))
                .collect(),
            ip_origin_status: n.ips.iter().map(|e| (e.origin, e.status)).collect(),
        })
        .collect();
    r.routes = info
        .routes
        .iter()
        .map(|rt| RouteView {
            dest: format!("{}/{}", ip_text(&rt.dest), rt.prefix_len),
            gateway: rt.next_hop.as_ref().map(ip_text),
            nic: rt.if_index,
            metric: rt.metric,
        })
        .collect();
    if let Some(d) = &info.dns {
        r.dns_servers = d.servers.iter().map(ip_text).collect();
        r.dns_search = d.search.clone();
        r.dns_host = d.host_name.clone();
        r.dns_domain = d.domain_name.clone();
    }
}

/// A client of a running simulator's control socket.
#[derive(Debug)]
pub struct Client {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Client {
    /// Connects to `DIR/ctl.sock`.
    pub async fn connect(dir: &Path) -> std::io::Result<Client> {
        let s = UnixStream::connect(dir.join(CONTROL_SOCKET)).await?;
        let (r, w) = s.into_split();
        Ok(Client {
            lines: BufReader::new(r).lines(),
            writer: w,
        })
    }

    /// One request and its answer.
    pub async fn call(&mut self, c: &Control) -> std::io::Result<ControlReply> {
        let mut line = serde_json::to_vec(c).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.writer.write_all(&line).await?;
        let reply = self.lines.next_line().await?.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "simulator closed the control socket",
            )
        })?;
        serde_json::from_str(&reply).map_err(std::io::Error::other)
    }
}
