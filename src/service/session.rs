//! The TCLO session rules, without I/O or a clock of their own.
//!
//! The driver feeds in what arrived (a packet, a polled request, a handler's reply) with the
//! time it is, asks [`Session::poll_transmit`] what to send, and sleeps until
//! [`Session::poll_timeout`], then calls [`Session::handle_timeout`]. The rules, from
//! open-vm-tools' `lib/rpcIn/rpcin.c`:
//!
//! - Streams (vsock, `unix:DIR`): the host pushes requests. A packet without a payload is not a
//!   request; rpcin.c closes the channel on it and never answers, so the session asks for a
//!   reopen ([`NotARequest`]). The 1 s heartbeat (`RPCIN_HEARTBEAT_INTERVAL`) starts after the
//!   first reply went out.
//! - Backdoor: the guest polls. Each poll sends the previous reply (empty when there is none,
//!   which tells the VMX the guest is alive) and receives a request. An empty request backs the
//!   delay off 1, 2, 4, 8, 10 (`RpcInUpdateDelayTime`, `RPCIN_MAX_DELAY`), in 10 ms units; a
//!   request resets it to 0, so its reply goes out with the very next poll.
//! - While a handler's reply is pending nothing else is read or polled: TCLO is serial, and a
//!   backdoor poll would hand the VMX an empty reply for the pending request.

use std::time::{Duration, Instant};
use toolbox_rpc::packet::Packet;

/// `RPCIN_HEARTBEAT_INTERVAL`: the guest's PING period on streams.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// The backdoor poll period unit (`RpcInScheduleRecvEvent`: `delay * 10` ms).
pub const POLL_UNIT: Duration = Duration::from_millis(10);
/// `RPCIN_MAX_DELAY` (`lib/rpcChannel/rpcChannelInt.h`): 10 × 10 ms when idle.
pub const MAX_POLL_DELAY: u32 = 10;

/// A frame that is not a request: the channel must be closed and reopened, unanswered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("TCLO packet without a payload: not a request")]
pub struct NotARequest;

/// What the driver sends next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transmit {
    /// A packet on the stream (a reply or the heartbeat).
    Packet(Packet),
    /// A backdoor poll: send this reply (possibly empty), then receive the next request and
    /// give it to [`Session::handle_polled`].
    Poll(Vec<u8>),
}

#[derive(Debug)]
enum Mode {
    Stream {
        /// When the next heartbeat is due; `None` until the first reply went out.
        heartbeat: Option<Instant>,
        outbox: Option<Packet>,
    },
    Backdoor {
        delay: u32,
        /// When to poll next; `None` while a reply is pending.
        next_poll: Option<Instant>,
        reply: Vec<u8>,
        poll_due: bool,
    },
}

/// One TCLO session's state.
#[derive(Debug)]
pub struct Session {
    mode: Mode,
    awaiting_reply: bool,
    heartbeat_due: bool,
}

impl Session {
    /// A session on a stream.
    pub fn stream() -> Session {
        Session {
            mode: Mode::Stream {
                heartbeat: None,
                outbox: None,
            },
            awaiting_reply: false,
            heartbeat_due: false,
        }
    }

    /// A session on the backdoor; the first poll is due at once.
    pub fn backdoor(now: Instant) -> Session {
        Session {
            mode: Mode::Backdoor {
                delay: 0,
                next_poll: Some(now),
                reply: Vec::new(),
                poll_due: false,
            },
            awaiting_reply: false,
            heartbeat_due: false,
        }
    }

    /// True while a request waits for its handler; the driver reads nothing meanwhile.
    pub fn awaiting_reply(&self) -> bool {
        self.awaiting_reply
    }

    /// A packet arrived on the stream: the request to dispatch, or the reason to reopen.
    ///
    /// rpcin.c looks at the payload only, whatever the packet's type says.
    pub fn handle_packet(&mut self, packet: Packet) -> Result<Vec<u8>, NotARequest> {
        if packet.payload.is_empty() {
            return Err(NotARequest);
        }
        self.awaiting_reply = true;
        Ok(packet.payload)
    }

    /// A backdoor poll received `request`: the request to dispatch, or `None` when there was
    /// none (and the delay backs off).
    pub fn handle_polled(&mut self, now: Instant, request: Vec<u8>) -> Option<Vec<u8>> {
        let Mode::Backdoor {
            delay, next_poll, ..
        } = &mut self.mode
        else {
            return None;
        };
        if request.is_empty() {
            *delay = match *delay {
                0 => 1,
                d => (d * 2).min(MAX_POLL_DELAY),
            };
            *next_poll = Some(now + POLL_UNIT * *delay);
            return None;
        }
        *delay = 0;
        *next_poll = None;
        self.awaiting_reply = true;
        Some(request)
    }

    /// The handler answered the pending request.
    pub fn handle_reply(&mut self, now: Instant, wire: Vec<u8>) {
        self.awaiting_reply = false;
        match &mut self.mode {
            Mode::Stream { heartbeat, outbox } => {
                *outbox = Some(Packet::data(wire));
                // vmtoolsd registers its heartbeat after the first successful send.
                heartbeat.get_or_insert(now + HEARTBEAT);
            }
            Mode::Backdoor {
                next_poll, reply, ..
            } => {
                *reply = wire;
                *next_poll = Some(now);
            }
        }
    }

    /// When [`Session::handle_timeout`] is due next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.mode {
            Mode::Stream { heartbeat, .. } => *heartbeat,
            Mode::Backdoor { next_poll, .. } if !self.awaiting_reply => *next_poll,
            Mode::Backdoor { .. } => None,
        }
    }

    /// Time passed: a heartbeat or a poll may be due.
    pub fn handle_timeout(&mut self, now: Instant) {
        match &mut self.mode {
            Mode::Stream { heartbeat, .. } => {
                if let Some(due) = heartbeat {
                    if now >= *due {
                        self.heartbeat_due = true;
                        // A loaded machine skips beats rather than sending a burst.
                        *due = (*due + HEARTBEAT).max(now);
                    }
                }
            }
            Mode::Backdoor {
                next_poll,
                poll_due,
                ..
            } => {
                if !self.awaiting_reply && next_poll.is_some_and(|t| now >= t) {
                    *poll_due = true;
                    *next_poll = None;
                }
            }
        }
    }

    /// What to send now, if anything; call until `None`.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        match &mut self.mode {
            Mode::Stream { outbox, .. } => {
                if let Some(p) = outbox.take() {
                    return Some(Transmit::Packet(p));
                }
                if std::mem::take(&mut self.heartbeat_due) {
                    return Some(Transmit::Packet(Packet::ping()));
                }
                None
            }
            Mode::Backdoor {
                poll_due, reply, ..
            } => {
                if std::mem::take(poll_due) {
                    return Some(Transmit::Poll(std::mem::take(reply)));
                }
                None
            }
        }
    }

    /// At a stop: the reply still owed to the VMX over the backdoor, if any.
    pub fn unsent_reply(&mut self) -> Option<Vec<u8>> {
        match &mut self.mode {
            Mode::Backdoor { reply, .. } if !reply.is_empty() => Some(std::mem::take(reply)),
            _ => None,
        }
    }
}

/// Pauses between reconnection attempts: from `min`, doubling to `max`; a session that lived
/// longer than `healthy` starts them over.
#[derive(Debug, Clone)]
pub struct Reconnect {
    min: Duration,
    max: Duration,
    healthy: Duration,
    next: Duration,
}

impl Reconnect {
    /// 100 ms doubling to 5 s, reset after a 10 s session. govmomi waits 5 s after an RPC error;
    /// vmtoolsd's vsock retry goes higher.
    pub fn new() -> Reconnect {
        Reconnect::with(
            Duration::from_millis(100),
            Duration::from_secs(5),
            Duration::from_secs(10),
        )
    }

    /// Custom bounds.
    pub fn with(min: Duration, max: Duration, healthy: Duration) -> Reconnect {
        Reconnect {
            min,
            max,
            healthy,
            next: min,
        }
    }

    /// The pause after a session that lasted `lived`.
    pub fn pause(&mut self, lived: Duration) -> Duration {
        if lived > self.healthy {
            self.next = self.min;
        }
        let pause = self.next;
        self.next = (self.next * 2).min(self.max);
        pause
    }
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolbox_rpc::packet::PacketType;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn stream_answers_in_order_and_heartbeats_only_after_the_first_reply() {
        let t0 = Instant::now();
        let mut s = Session::stream();
        assert_eq!(s.poll_timeout(), None, "no heartbeat before a reply");
        let req = s.handle_packet(Packet::data("ping")).unwrap();
        assert_eq!(req, b"ping");
        assert!(s.awaiting_reply());
        assert_eq!(
            s.poll_transmit(),
            None,
            "nothing before the handler answers"
        );
        s.handle_reply(t0, b"OK ".to_vec());
        assert!(!s.awaiting_reply());
        assert_eq!(
            s.poll_transmit(),
            Some(Transmit::Packet(Packet::data("OK ")))
        );
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.poll_timeout(), Some(t0 + HEARTBEAT));
        s.handle_timeout(t0 + ms(999));
        assert_eq!(s.poll_transmit(), None, "not early");
        s.handle_timeout(t0 + HEARTBEAT);
        let Some(Transmit::Packet(p)) = s.poll_transmit() else {
            panic!("heartbeat due")
        };
        assert_eq!(p.kind, PacketType::PING);
        assert_eq!(s.poll_timeout(), Some(t0 + 2 * HEARTBEAT));
    }

    #[test]
    fn a_later_reply_does_not_move_the_heartbeat() {
        let t0 = Instant::now();
        let mut s = Session::stream();
        s.handle_packet(Packet::data("a")).unwrap();
        s.handle_reply(t0, b"OK ".to_vec());
        s.poll_transmit();
        s.handle_packet(Packet::data("b")).unwrap();
        s.handle_reply(t0 + ms(500), b"OK ".to_vec());
        s.poll_transmit();
        assert_eq!(s.poll_timeout(), Some(t0 + HEARTBEAT));
    }

    #[test]
    fn heartbeats_go_on_while_a_reply_is_pending() {
        let t0 = Instant::now();
        let mut s = Session::stream();
        s.handle_packet(Packet::data("a")).unwrap();
        s.handle_reply(t0, b"OK ".to_vec());
        s.poll_transmit();
        s.handle_packet(Packet::data("slow")).unwrap();
        for beat in 1..=3 {
            s.handle_timeout(t0 + HEARTBEAT * beat);
            assert!(
                matches!(s.poll_transmit(), Some(Transmit::Packet(p)) if p.kind == PacketType::PING)
            );
        }
        assert!(s.awaiting_reply());
    }

    #[test]
    fn a_late_wakeup_sends_one_heartbeat_not_a_burst() {
        let t0 = Instant::now();
        let mut s = Session::stream();
        s.handle_packet(Packet::data("a")).unwrap();
        s.handle_reply(t0, b"OK ".to_vec());
        s.poll_transmit();
        s.handle_timeout(t0 + 5 * HEARTBEAT);
        assert!(s.poll_transmit().is_some());
        assert_eq!(s.poll_transmit(), None);
        assert_eq!(s.poll_timeout(), Some(t0 + 5 * HEARTBEAT));
    }

    #[test]
    fn rejects_packets_without_a_payload() {
        let mut s = Session::stream();
        assert_eq!(s.handle_packet(Packet::data("")), Err(NotARequest));
        assert_eq!(s.handle_packet(Packet::ping()), Err(NotARequest));
        assert!(!s.awaiting_reply());
    }

    #[test]
    fn accepts_a_payload_whatever_the_packet_type() {
        let mut s = Session::stream();
        let p = Packet {
            kind: PacketType(7),
            ..Packet::data("ping")
        };
        assert_eq!(s.handle_packet(p), Ok(b"ping".to_vec()));
    }

    #[test]
    fn backdoor_backs_off_1_2_4_8_10_and_a_request_resets_it() {
        let t0 = Instant::now();
        let mut s = Session::backdoor(t0);
        assert_eq!(s.poll_timeout(), Some(t0), "first poll at once");
        let mut now = t0;
        let mut gaps = Vec::new();
        for _ in 0..7 {
            s.handle_timeout(now);
            assert_eq!(s.poll_transmit(), Some(Transmit::Poll(Vec::new())));
            assert_eq!(s.handle_polled(now, Vec::new()), None);
            let next = s.poll_timeout().unwrap();
            gaps.push((next - now).as_millis());
            now = next;
        }
        assert_eq!(gaps, [10, 20, 40, 80, 100, 100, 100]);

        s.handle_timeout(now);
        assert_eq!(s.poll_transmit(), Some(Transmit::Poll(Vec::new())));
        assert_eq!(
            s.handle_polled(now, b"ping".to_vec()),
            Some(b"ping".to_vec())
        );
        assert_eq!(s.poll_timeout(), None, "no poll while the reply is pending");
        s.handle_timeout(now + ms(500));
        assert_eq!(s.poll_transmit(), None);

        let later = now + ms(700);
        s.handle_reply(later, b"OK ".to_vec());
        assert_eq!(
            s.poll_timeout(),
            Some(later),
            "the reply goes with the next poll, at once"
        );
        s.handle_timeout(later);
        assert_eq!(s.poll_transmit(), Some(Transmit::Poll(b"OK ".to_vec())));
        assert_eq!(s.handle_polled(later, Vec::new()), None);
        assert_eq!(
            s.poll_timeout(),
            Some(later + ms(10)),
            "the back-off starts over"
        );
    }

    #[test]
    fn backdoor_owes_its_reply_at_a_stop() {
        let t0 = Instant::now();
        let mut s = Session::backdoor(t0);
        s.handle_timeout(t0);
        s.poll_transmit();
        s.handle_polled(t0, b"reset".to_vec());
        s.handle_reply(t0, b"OK ATR toolbox".to_vec());
        assert_eq!(s.unsent_reply(), Some(b"OK ATR toolbox".to_vec()));
        assert_eq!(s.unsent_reply(), None);
    }

    #[test]
    fn reconnect_pauses_double_to_the_cap_and_reset_after_a_healthy_session() {
        let mut r = Reconnect::new();
        let short = ms(1);
        let got: Vec<u128> = (0..8).map(|_| r.pause(short).as_millis()).collect();
        assert_eq!(got, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        assert_eq!(r.pause(Duration::from_secs(11)).as_millis(), 100);
        assert_eq!(r.pause(short).as_millis(), 200);
    }
}
