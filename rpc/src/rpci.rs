//! The RPCI client: guest → VMX requests, answered `"1 <result>"` or `"0 <error>"`.
//!
//! Blocking and allocation-light, so that appliance init can ask one thing (`info-get
//! guestinfo.ovfEnv`) without a runtime.

use crate::backdoor::Backdoor;
use crate::error::TransportError;
use crate::message::MessageChannel;
use crate::packet::Packet;
use crate::stream::PacketStream;
use std::os::unix::net::UnixStream;

/// One request/reply exchange on some transport.
pub trait RoundTrip {
    /// Sends `request`, returns the raw reply (status prefix included).
    fn round_trip(&mut self, request: &[u8]) -> Result<Vec<u8>, TransportError>;
}

impl<B: Backdoor> RoundTrip for MessageChannel<B> {
    fn round_trip(&mut self, request: &[u8]) -> Result<Vec<u8>, TransportError> {
        Ok(self.call(request)?)
    }
}

/// RPCI over a vsock or Unix stream socket: one DATA packet out, one back.
#[derive(Debug)]
pub struct StreamRpci {
    // Framed and buffered: a reply's header and body usually come in one read(2).
    stream: PacketStream<UnixStream>,
    fast_close: bool,
}

impl StreamRpci {
    /// Wraps a connected stream. With `fast_close` each request asks the VMX to close the
    /// connection after replying, as one-shot senders do (`RPCCHANNEL_FLAGS_FAST_CLOSE`).
    pub fn new(stream: UnixStream, fast_close: bool) -> StreamRpci {
        StreamRpci {
            stream: PacketStream::new(stream),
            fast_close,
        }
    }
}

impl RoundTrip for StreamRpci {
    fn round_trip(&mut self, request: &[u8]) -> Result<Vec<u8>, TransportError> {
        let packet = Packet {
            fast_close: self.fast_close,
            ..Packet::data(request)
        };
        self.stream.write_packet(&packet)?;
        Ok(self.stream.read_packet()?.payload)
    }
}

/// An RPCI failure.
#[derive(Debug, thiserror::Error)]
pub enum RpciError {
    /// The bytes did not make it there and back.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The VMX answered `"0 ..."`.
    #[error("{command}: VMX refused: {reason}")]
    Refused {
        /// First word of the request.
        command: String,
        /// The VMX's text after `"0 "`.
        reason: String,
    },
    /// The reply did not start with `"1 "` or `"0 "`.
    #[error("{command}: malformed reply {reply:?}")]
    Malformed {
        /// First word of the request.
        command: String,
        /// The reply, shortened.
        reply: String,
    },
}

/// The first word of a request, for errors and traces: never the arguments, which may carry
/// guestinfo secrets.
pub fn command_name(request: &[u8]) -> String {
    let end = request
        .iter()
        .position(|&b| b == b' ' || b == 0)
        .unwrap_or(request.len());
    String::from_utf8_lossy(&request[..end.min(64)]).into_owned()
}

/// Splits a raw reply into success or the VMX's error text.
pub fn parse_reply(request: &[u8], mut reply: Vec<u8>) -> Result<Vec<u8>, RpciError> {
    // Some VMX replies carry the C string terminator.
    if reply.last() == Some(&0) {
        reply.pop();
    }
    match reply.get(..2) {
        Some(b"1 ") => {
            reply.drain(..2);
            Ok(reply)
        }
        Some(b"0 ") => Err(RpciError::Refused {
            command: command_name(request),
            reason: String::from_utf8_lossy(&reply[2..]).into_owned(),
        }),
        _ => Err(RpciError::Malformed {
            command: command_name(request),
            reply: String::from_utf8_lossy(&reply[..reply.len().min(80)]).into_owned(),
        }),
    }
}

/// A connected RPCI client.
pub struct RpciClient {
    raw: Box<dyn RoundTrip + Send>,
    transport: &'static str,
}

impl std::fmt::Debug for RpciClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RpciClient")
            .field("transport", &self.transport)
            .finish()
    }
}

impl RpciClient {
    /// A client over any round-trip transport; `transport` names it in traces.
    pub fn new(raw: impl RoundTrip + Send + 'static, transport: &'static str) -> RpciClient {
        RpciClient {
            raw: Box::new(raw),
            transport,
        }
    }

    /// Which transport this client uses.
    pub fn transport(&self) -> &'static str {
        self.transport
    }

    /// Sends a request; the result is the reply after `"1 "`.
    pub fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, RpciError> {
        let span = tracing::debug_span!("rpci", command = %command_name(request), transport = self.transport);
        let _enter = span.enter();
        let reply = self.raw.round_trip(request)?;
        let result = parse_reply(request, reply);
        match &result {
            Ok(r) => tracing::trace!(reply_len = r.len(), "ok"),
            Err(e) => tracing::debug!(error = %e, "failed"),
        }
        result
    }

    /// `info-get guestinfo.KEY` (the prefix is added when missing).
    pub fn info_get(&mut self, key: &str) -> Result<Vec<u8>, RpciError> {
        self.call(format!("info-get {}", guestinfo_key(key)).as_bytes())
    }

    /// `info-set guestinfo.KEY VALUE`.
    pub fn info_set(&mut self, key: &str, value: &[u8]) -> Result<(), RpciError> {
        let mut req = format!("info-set {} ", guestinfo_key(key)).into_bytes();
        req.extend_from_slice(value);
        self.call(&req).map(drop)
    }
}

/// `KEY` with the `guestinfo.` namespace the VMX requires for guest-visible variables.
pub fn guestinfo_key(key: &str) -> String {
    if key.starts_with("guestinfo.") {
        key.to_owned()
    } else {
        format!("guestinfo.{key}")
    }
}
