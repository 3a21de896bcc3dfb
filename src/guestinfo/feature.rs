//! The guest info feature: what was sent last, when to send again, and `Set_Option broadcastIP`.
//!
//! As vmtoolsd's guestInfo plugin (`services/plugins/guestInfo/guestInfoServer.c`): everything is
//! pushed at start and after each `reset`; every interval only what changed goes again (uptime
//! always does). NIC info tries v3 as type 10, then v3 under type 9, then v2, and remembers the
//! form that worked (`gInfoCache.method`). One worker task does all of it, one push at a time,
//! and requests coalesce: a VMX repeating `reset` cannot pile up pushes.

use super::disk::DiskInfo;
use super::xdr::NicInfo;
use super::{gather, other_messages, NicFilter, NicMethod, Snapshot};
use crate::config::GuestInfoConfig;
use crate::dispatch::{Context, Deferred, Feature, Registry};
use crate::service::timer::Timer;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use toolbox_rpc::rpci::RpciError;
use tracing::{debug, warn};

/// What the VMX last took.
#[derive(Debug, Default)]
struct Sent {
    nic_method: usize,
    nics: Option<NicInfo>,
    /// The other messages, by kind.
    other: HashMap<&'static str, Vec<u8>>,
    /// Disk info as last taken.
    disks: Option<DiskInfo>,
    /// The VMX refused the JSON form: use the binary one from now on (`diskInfoUseJson`).
    disks_binary: bool,
}

/// Work queued for the worker.
#[derive(Debug, Default)]
struct Queued {
    /// Resend everything, from this snapshot when one was just taken.
    forced: Option<Option<Snapshot>>,
}

/// The guest info feature.
#[derive(Debug)]
pub struct GuestInfo {
    filter: NicFilter,
    disk_info: bool,
    interval: Duration,
    sent: tokio::sync::Mutex<Sent>,
    queued: Mutex<Queued>,
    wake: Notify,
}

impl GuestInfo {
    /// The feature, with its configuration.
    pub fn new(config: &GuestInfoConfig) -> Arc<GuestInfo> {
        Arc::new(GuestInfo {
            filter: NicFilter::from_config(config),
            disk_info: config.disk_info,
            interval: Duration::from_secs(config.interval_secs),
            sent: tokio::sync::Mutex::default(),
            queued: Mutex::default(),
            wake: Notify::new(),
        })
    }

    /// A fresh snapshot of the guest, taken on the loop: a gather is 0.3 ms with a handful of
    /// NICs and about 5 ms with 3 000 (netlink answers from the kernel, without waiting on a
    /// device), while a blocking-pool thread per push costs a thread start and a malloc arena
    /// each time, which an idle agent's memory shows (+1 MB after 1 000 pushes, against +0.1 MB
    /// inline). A wildcard `primary_nics` over thousands of links costs ~20 ms, still far below
    /// the heartbeat's 1 s. statvfs of a hung network mount would stall it, as it stalls
    /// vmtoolsd, whose gather runs in its main loop too.
    pub fn snapshot(&self) -> Snapshot {
        gather(&self.filter, self.disk_info)
    }

    /// Asks the worker to resend everything (from `snap` when given).
    fn force_push(&self, snap: Option<Snapshot>) {
        let mut q = self.queued.lock().unwrap_or_else(|e| e.into_inner());
        // A snapshot already queued stays unless a newer one comes.
        if snap.is_some() || q.forced.is_none() {
            q.forced = Some(snap);
        }
        drop(q);
        self.wake.notify_one();
    }

    /// Tells the VMX what changed since the last push (everything when `force`).
    pub async fn send(&self, ctx: &Context, snap: &Snapshot, force: bool) {
        let mut sent = self.sent.lock().await;
        if force {
            sent.nics = None;
            sent.other.clear();
            sent.disks = None;
        }
        if sent.nics.as_ref() != Some(&snap.nic_info) {
            let mut taken = false;
            for i in sent.nic_method..NicMethod::ALL.len() {
                let m = NicMethod::ALL[i];
                match ctx.rpci(&m.request(&snap.nic_info)).await {
                    Ok(_) => {
                        sent.nic_method = i;
                        taken = true;
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
            if taken {
                sent.nics = Some(snap.nic_info.clone());
            } else {
                sent.nic_method = 0;
            }
        }
        if let Some(disks) = &snap.disks {
            if disks.changed_from(sent.disks.as_ref()) {
                self.send_disks(ctx, &mut sent, disks).await;
            }
        }
        for (key, msg) in other_messages(snap) {
            if sent.other.get(key) == Some(&msg) {
                continue;
            }
            match ctx.rpci(&msg).await {
                Ok(_) => {
                    sent.other.insert(key, msg);
                }
                Err(e) => debug!(info = key, error = %e, "guest info not taken"),
            }
        }
    }

    /// `GuestInfoSendDiskInfo`: the JSON form while the VMX takes it, else the binary one.
    async fn send_disks(&self, ctx: &Context, sent: &mut Sent, disks: &DiskInfo) {
        if !sent.disks_binary {
            match ctx.rpci(&disks.json_request()).await {
                Ok(_) => {
                    sent.disks = Some(disks.clone());
                    return;
                }
                Err(RpciError::Transport(e)) => {
                    warn!(error = %e, "sending disk info");
                    return;
                }
                Err(e) => {
                    debug!(error = %e, "disk info JSON refused, using the binary form");
                    sent.disks_binary = true;
                }
            }
        }
        match ctx.rpci(&disks.v0_request()).await {
            Ok(_) => sent.disks = Some(disks.clone()),
            Err(e) => debug!(error = %e, "disk info not taken"),
        }
    }

    /// Guest info every interval (only what changed) and the forced pushes, one at a time.
    async fn worker(self: Arc<Self>, ctx: Context) {
        let timer = match Timer::interval(self.interval) {
            Ok(t) => Some(t),
            Err(e) => {
                warn!(error = %e, "no timerfd; guest info is sent on request only");
                None
            }
        };
        self.send(&ctx, &self.snapshot(), false).await;
        loop {
            tokio::select! {
                r = tick_or_never(timer.as_ref()) => {
                    if let Err(e) = r {
                        warn!(error = %e, "guest info timer");
                    }
                    self.send(&ctx, &self.snapshot(), false).await;
                }
                _ = self.wake.notified() => {
                    let forced = self.queued.lock().unwrap_or_else(|e| e.into_inner()).forced.take();
                    if let Some(snap) = forced {
                        let snap = snap.unwrap_or_else(|| self.snapshot());
                        self.send(&ctx, &snap, true).await;
                    }
                }
            }
        }
    }

    /// `GuestInfoServerSetOption`: `broadcastIP 1` sets `guestinfo.ip` to the primary address,
    /// empty when there is none (`GuestInfo_GetPrimaryIP`), and is taken only when the VMX took
    /// that; `0` is taken as is.
    fn broadcast_ip(self: &Arc<Self>, ctx: &Context, value: &str) -> Deferred<bool> {
        match value {
            "0" => Deferred::Now(true),
            "1" => {
                let me = self.clone();
                let ctx = ctx.clone();
                Deferred::later(async move {
                    let snap = me.snapshot();
                    let ip = snap
                        .primary_ip()
                        .map(|ip| ip.to_string())
                        .unwrap_or_default();
                    let mut msg = format!("info-set guestinfo.ip {ip}").into_bytes();
                    // guestInfoServer.c sends the C string with its terminator.
                    msg.push(0);
                    let taken = match ctx.rpci(&msg).await {
                        Ok(_) => true,
                        Err(e) => {
                            warn!(error = %e, "broadcastIP");
                            false
                        }
                    };
                    // The host asked because it wants to know: tell it everything, from the
                    // snapshot just taken.
                    me.force_push(Some(snap));
                    taken
                })
            }
            _ => Deferred::Now(false),
        }
    }
}

async fn tick_or_never(t: Option<&Timer>) -> std::io::Result<()> {
    match t {
        Some(t) => t.tick().await,
        None => std::future::pending().await,
    }
}

impl Feature for GuestInfo {
    fn register(self: Arc<Self>, r: &mut Registry) {
        let me = self.clone();
        // A reset follows a (re)connection, a resume or a vMotion: tell everything again.
        r.on_reset(move |_| me.force_push(None));
        let me = self.clone();
        r.option("broadcastIP", move |ctx, value| me.broadcast_ip(ctx, value));
        let me = self;
        r.on_start(move |ctx| {
            let c = ctx.clone();
            ctx.spawn(me.worker(c));
        });
    }
}
