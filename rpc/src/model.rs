//! A register-level software model of the VMX side of the backdoor.
//!
//! It answers GETVERSION and the MESSAGE protocol the way the VMX does (`guest_msg_def.h`,
//! `message.c` read from the other side): channels with cookies, size then payload in either
//! bandwidth, receive acknowledgements, checkpoints that restart a message, refusal of a wrong
//! cookie. Behind the RPCI protocol sits a host function (request → reply); behind TCLO, a queue of
//! requests for the guest and a record of its replies. Faults are injected by call number.
//!
//! [`VmxModel`] is the host's handle; [`ModelPort`] is the guest's [`Backdoor`]. Both share one
//! state behind a mutex, so a test can drive the guest on one thread and inspect the host.

use crate::backdoor::{
    halves, high, low, Backdoor, Regs, BDOORHB_PORT, BDOOR_MAGIC, BDOOR_PORT, CMD_GETVERSION,
    CMD_MESSAGE, HB_CMD_MESSAGE,
};
use crate::message::{kind, status, Protocol, FLAG_COOKIE};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Channels the VMX keeps open at once per VM (`GUESTMSG_MAX_CHANNEL`, `guest_msg_def.h`).
pub const MAX_CHANNELS: usize = 128;

/// How the model VMX behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelConfig {
    /// Offer the high-bandwidth port (`MESSAGE_STATUS_HB`).
    pub high_bandwidth: bool,
    /// Understand `GUESTMSG_FLAG_COOKIE`; an old VMX refuses OPEN with it.
    pub cookies: bool,
    /// GETVERSION's eax.
    pub version: u32,
    /// GETVERSION's ecx.
    pub vmx_type: u32,
    /// Largest message accepted from the guest.
    pub max_message: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            high_bandwidth: true,
            cookies: true,
            version: 6,
            vmx_type: 2,
            max_message: 16 << 20,
        }
    }
}

/// A fault for one future backdoor call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer `MESSAGE_STATUS_CPT` and drop the message in flight, as after a snapshot restore.
    Checkpoint,
    /// Answer with status 0 (failure).
    Fail,
}

/// Host side of the RPCI protocol: request in, reply out.
pub type RpciHandler = Box<dyn FnMut(&[u8]) -> Vec<u8> + Send>;

/// Counters for benchmarks and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ModelStats {
    /// Low-bandwidth calls.
    pub low_calls: u64,
    /// High-bandwidth transfers.
    pub hb_calls: u64,
    /// Messages received from the guest, complete.
    pub messages_in: u64,
    /// Messages taken by the guest, acknowledged.
    pub messages_out: u64,
}

#[derive(Debug)]
struct Channel {
    protocol: Protocol,
    cookie_high: u32,
    cookie_low: u32,
    checks_cookie: bool,
    /// Guest → host message being assembled: (announced size, bytes so far).
    incoming: Option<(usize, Vec<u8>)>,
    /// Host → guest messages; the front one is the one being read.
    outbox: VecDeque<Vec<u8>>,
    /// Read position in the front message, once RECVSIZE announced it.
    reading: Option<usize>,
}

struct State {
    config: ModelConfig,
    channels: Vec<Option<Channel>>,
    next_cookie: u32,
    calls: u64,
    faults: Vec<(u64, Fault)>,
    rpci: RpciHandler,
    tclo_requests: VecDeque<Vec<u8>>,
    tclo_replies: Vec<Vec<u8>>,
    stats: ModelStats,
    log: Option<Vec<(Regs, Regs)>>,
}

/// The host's handle on the model.
#[derive(Clone)]
pub struct VmxModel {
    state: Arc<Mutex<State>>,
}

/// The guest's backdoor into the model.
#[derive(Clone)]
pub struct ModelPort {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for VmxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VmxModel").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ModelPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelPort").finish_non_exhaustive()
    }
}

impl Default for VmxModel {
    fn default() -> Self {
        VmxModel::new(ModelConfig::default())
    }
}

/// The RPCI answer of a VMX with nothing configured: a small guestinfo store.
pub fn default_rpci() -> RpciHandler {
    let mut store: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    Box::new(move |req: &[u8]| {
        let req = req.strip_suffix(b"\0").unwrap_or(req);
        if let Some(rest) = req.strip_prefix(b"info-set ") {
            let (key, value) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b""[..]),
            };
            store.retain(|(k, _)| k != key);
            store.push((key.to_vec(), value.to_vec()));
            return b"1 ".to_vec();
        }
        if let Some(key) = req.strip_prefix(b"info-get ") {
            return match store.iter().find(|(k, _)| k == key) {
                Some((_, v)) => [&b"1 "[..], v].concat(),
                None => b"0 No value found".to_vec(),
            };
        }
        if req == b"ping" || req.starts_with(b"log ") || req.starts_with(b"tools.") {
            return b"1 ".to_vec();
        }
        b"0 Unknown command".to_vec()
    })
}

impl VmxModel {
    /// A model VMX with the default RPCI host ([`default_rpci`]).
    pub fn new(config: ModelConfig) -> VmxModel {
        VmxModel {
            state: Arc::new(Mutex::new(State {
                config,
                channels: (0..MAX_CHANNELS).map(|_| None).collect(),
                next_cookie: 0x1234_5678,
                calls: 0,
                faults: Vec::new(),
                rpci: default_rpci(),
                tclo_requests: VecDeque::new(),
                tclo_replies: Vec::new(),
                stats: ModelStats::default(),
                log: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a test assertion; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The guest's side.
    pub fn port(&self) -> ModelPort {
        ModelPort {
            state: Arc::clone(&self.state),
        }
    }

    /// Current configuration.
    pub fn config(&self) -> ModelConfig {
        self.lock().config
    }

    /// Replaces the RPCI host.
    pub fn set_rpci(&self, handler: RpciHandler) {
        self.lock().rpci = handler;
    }

    /// Injects `fault` into the call `n` calls from now (0 = the very next one).
    pub fn inject(&self, n: u64, fault: Fault) {
        let mut s = self.lock();
        let at = s.calls + n;
        s.faults.push((at, fault));
    }

    /// Queues a TCLO request for the guest.
    pub fn push_tclo(&self, request: impl Into<Vec<u8>>) {
        self.lock().tclo_requests.push_back(request.into());
    }

    /// Takes the non-empty TCLO replies the guest sent so far.
    pub fn take_tclo_replies(&self) -> Vec<Vec<u8>> {
        std::mem::take(&mut self.lock().tclo_replies)
    }

    /// Counters.
    pub fn stats(&self) -> ModelStats {
        self.lock().stats
    }

    /// Starts (or stops) recording every low-bandwidth call's registers in and out.
    pub fn record(&self, on: bool) {
        self.lock().log = on.then(Vec::new);
    }

    /// Takes the recorded calls.
    pub fn take_log(&self) -> Vec<(Regs, Regs)> {
        self.lock()
            .log
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Channels currently open.
    pub fn open_channels(&self) -> usize {
        self.lock().channels.iter().filter(|c| c.is_some()).count()
    }
}

impl State {
    fn take_fault(&mut self) -> Option<Fault> {
        let now = self.calls;
        self.calls += 1;
        let i = self.faults.iter().position(|&(at, _)| at == now)?;
        Some(self.faults.swap_remove(i).1)
    }

    /// The channel the registers name, if the cookie matches.
    fn channel(&mut self, id: u16, cookie_high: u32, cookie_low: u32) -> Option<&mut Channel> {
        let chan = self.channels.get_mut(usize::from(id))?.as_mut()?;
        if chan.checks_cookie && (chan.cookie_high != cookie_high || chan.cookie_low != cookie_low)
        {
            return None;
        }
        Some(chan)
    }

    fn checkpoint(&mut self, id: u16) {
        if let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) {
            chan.incoming = None;
            chan.reading = None;
        }
    }

    /// A complete message from the guest.
    fn deliver(&mut self, id: u16, msg: Vec<u8>) {
        self.stats.messages_in += 1;
        let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) else {
            return;
        };
        match chan.protocol {
            Protocol::Rpci => {
                let reply = (self.rpci)(&msg);
                if let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) {
                    chan.outbox.push_back(reply);
                }
            }
            Protocol::Tclo => {
                if !msg.is_empty() {
                    self.tclo_replies.push(msg);
                }
            }
        }
    }

    fn low(&mut self, r: Regs) -> Regs {
        self.stats.low_calls += 1;
        if r.eax != BDOOR_MAGIC || low(r.edx) != BDOOR_PORT {
            return Regs { eax: u32::MAX, ..r };
        }
        match low(r.ecx) {
            CMD_GETVERSION => Regs {
                eax: self.config.version,
                ebx: BDOOR_MAGIC,
                ecx: self.config.vmx_type,
                ..r
            },
            CMD_MESSAGE => {
                let fault = self.take_fault();
                self.message(r, fault)
            }
            _ => Regs { eax: u32::MAX, ..r },
        }
    }

    fn message(&mut self, r: Regs, fault: Option<Fault>) -> Regs {
        let sub = high(r.ecx);
        let id = high(r.edx);
        let reply = |st: u16, r: Regs| Regs {
            ecx: halves(st, low(r.ecx)),
            ..r
        };
        match fault {
            Some(Fault::Fail) => return reply(0, r),
            Some(Fault::Checkpoint) => {
                self.checkpoint(id);
                return reply(status::CPT, r);
            }
            None => {}
        }
        if sub == kind::OPEN {
            return self.open(r);
        }
        let hb = if self.config.high_bandwidth {
            status::HB
        } else {
            0
        };
        let max_message = self.config.max_message;
        let Some(chan) = self.channel(id, r.esi, r.edi) else {
            return reply(0, r);
        };
        match sub {
            kind::SENDSIZE => {
                let size = r.ebx as usize;
                if size > max_message {
                    return reply(0, r);
                }
                chan.incoming = Some((size, Vec::with_capacity(size)));
                if size == 0 {
                    chan.incoming = None;
                    self.deliver(id, Vec::new());
                }
                reply(status::SUCCESS | hb, r)
            }
            kind::SENDPAYLOAD => {
                let Some((size, buf)) = chan.incoming.as_mut() else {
                    return reply(0, r);
                };
                let n = (*size - buf.len()).min(4);
                buf.extend_from_slice(&r.ebx.to_le_bytes()[..n]);
                if buf.len() == *size {
                    let (_, msg) = chan.incoming.take().unwrap_or_default();
                    self.deliver(id, msg);
                }
                reply(status::SUCCESS, r)
            }
            kind::RECVSIZE => {
                if chan.protocol == Protocol::Tclo && chan.outbox.is_empty() {
                    if let Some(req) = self.tclo_requests.pop_front() {
                        // Re-borrow: `self` was used above.
                        if let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) {
                            chan.outbox.push_back(req);
                        }
                    }
                }
                let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) else {
                    return reply(0, r);
                };
                match chan.outbox.front() {
                    None => {
                        chan.reading = None;
                        reply(status::SUCCESS | hb, r)
                    }
                    Some(msg) => {
                        chan.reading = Some(0);
                        Regs {
                            ebx: msg.len() as u32,
                            edx: halves(kind::SENDSIZE, low(r.edx)),
                            ..reply(status::SUCCESS | status::DORECV | hb, r)
                        }
                    }
                }
            }
            kind::RECVPAYLOAD => {
                if r.ebx & u32::from(status::SUCCESS) == 0 {
                    // The guest gave up on the message.
                    chan.outbox.pop_front();
                    chan.reading = None;
                    return reply(status::SUCCESS, r);
                }
                let (Some(pos), Some(msg)) = (chan.reading, chan.outbox.front()) else {
                    return reply(0, r);
                };
                if pos >= msg.len() {
                    return reply(0, r);
                }
                let mut word = [0u8; 4];
                let n = (msg.len() - pos).min(4);
                word[..n].copy_from_slice(&msg[pos..pos + n]);
                chan.reading = Some(pos + n);
                Regs {
                    ebx: u32::from_le_bytes(word),
                    edx: halves(kind::SENDPAYLOAD, low(r.edx)),
                    ..reply(status::SUCCESS, r)
                }
            }
            kind::RECVSTATUS => {
                if chan.reading.is_none() {
                    return reply(0, r);
                }
                chan.reading = None;
                chan.outbox.pop_front();
                if r.ebx & u32::from(status::SUCCESS) != 0 {
                    self.stats.messages_out += 1;
                }
                reply(status::SUCCESS, r)
            }
            kind::CLOSE => {
                self.channels[usize::from(id)] = None;
                reply(status::SUCCESS, r)
            }
            _ => reply(0, r),
        }
    }

    fn open(&mut self, r: Regs) -> Regs {
        let fail = Regs {
            ecx: halves(0, low(r.ecx)),
            ..r
        };
        let wants_cookie = r.ebx & FLAG_COOKIE != 0;
        if wants_cookie && !self.config.cookies {
            return fail;
        }
        let protocol = match r.ebx & !FLAG_COOKIE {
            m if m == Protocol::Rpci.magic() => Protocol::Rpci,
            m if m == Protocol::Tclo.magic() => Protocol::Tclo,
            _ => return fail,
        };
        let Some(id) = self.channels.iter().position(|c| c.is_none()) else {
            return fail;
        };
        let (cookie_high, cookie_low) = if wants_cookie {
            self.next_cookie = self
                .next_cookie
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12345);
            let h = self.next_cookie;
            self.next_cookie = self
                .next_cookie
                .wrapping_mul(1_103_515_245)
                .wrapping_add(12345);
            (h, self.next_cookie)
        } else {
            (0, 0)
        };
        self.channels[id] = Some(Channel {
            protocol,
            cookie_high,
            cookie_low,
            checks_cookie: wants_cookie,
            incoming: None,
            outbox: VecDeque::new(),
            reading: None,
        });
        Regs {
            ecx: halves(status::SUCCESS, low(r.ecx)),
            edx: halves(id as u16, low(r.edx)),
            esi: cookie_high,
            edi: cookie_low,
            ..r
        }
    }

    /// Checks a high-bandwidth call. `len` is the buffer's length: `rep outsb`/`rep insb` move
    /// ecx bytes, so the VMX takes the transfer size from ecx, and a guest whose ecx disagrees
    /// with its buffer is refused here rather than read past.
    fn hb_check(
        &mut self,
        r: Regs,
        cookie_high: u32,
        cookie_low: u32,
        len: usize,
    ) -> Result<u16, Regs> {
        self.stats.hb_calls += 1;
        let failed = |st: u16| Regs {
            ebx: halves(st, low(r.ebx)),
            ..r
        };
        let id = high(r.edx);
        match self.take_fault() {
            Some(Fault::Fail) => return Err(failed(0)),
            Some(Fault::Checkpoint) => {
                self.checkpoint(id);
                return Err(failed(status::CPT));
            }
            None => {}
        }
        if !self.config.high_bandwidth
            || r.eax != BDOOR_MAGIC
            || low(r.edx) != BDOORHB_PORT
            || low(r.ebx) != HB_CMD_MESSAGE
            || high(r.ebx) != status::SUCCESS
            || self.channel(id, cookie_high, cookie_low).is_none()
            || r.ecx as usize != len
        {
            return Err(failed(0));
        }
        Ok(id)
    }

    fn hb_out(&mut self, r: Regs, data: &[u8]) -> Regs {
        let id = match self.hb_check(r, r.ebp, r.edi, data.len()) {
            Ok(id) => id,
            Err(out) => return out,
        };
        let ok = Regs {
            ebx: halves(status::SUCCESS, low(r.ebx)),
            ..r
        };
        let fail = Regs {
            ebx: halves(0, low(r.ebx)),
            ..r
        };
        let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) else {
            return fail;
        };
        match chan.incoming.take() {
            Some((size, buf)) if buf.is_empty() && size == data.len() => {
                self.deliver(id, data.to_vec());
                ok
            }
            other => {
                chan.incoming = other;
                fail
            }
        }
    }

    fn hb_in(&mut self, r: Regs, buf: &mut [u8]) -> Regs {
        let id = match self.hb_check(r, r.esi, r.ebp, buf.len()) {
            Ok(id) => id,
            Err(out) => return out,
        };
        let ok = Regs {
            ebx: halves(status::SUCCESS, low(r.ebx)),
            ..r
        };
        let fail = Regs {
            ebx: halves(0, low(r.ebx)),
            ..r
        };
        let Some(Some(chan)) = self.channels.get_mut(usize::from(id)) else {
            return fail;
        };
        match (chan.reading, chan.outbox.front()) {
            (Some(0), Some(msg)) if msg.len() == buf.len() => {
                buf.copy_from_slice(msg);
                chan.reading = Some(msg.len());
                ok
            }
            _ => fail,
        }
    }
}

impl ModelPort {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Backdoor for ModelPort {
    fn in_out(&mut self, regs: Regs) -> Regs {
        let mut s = self.lock();
        let out = s.low(regs);
        if let Some(log) = s.log.as_mut() {
            log.push((regs, out));
        }
        out
    }

    fn hb_out(&mut self, regs: Regs, data: &[u8]) -> Regs {
        self.lock().hb_out(regs, data)
    }

    fn hb_in(&mut self, regs: Regs, buf: &mut [u8]) -> Regs {
        self.lock().hb_in(regs, buf)
    }
}
