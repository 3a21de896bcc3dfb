//! The backdoor message channel: whole messages over the register interface.
//!
//! Follows `lib/message/message.c` of open-vm-tools step for step: OPEN (with the cookie flag,
//! then without), SENDSIZE then the payload in one high-bandwidth `rep outsb` or four bytes per
//! SENDPAYLOAD call, RECVSIZE then the payload by `rep insb` or RECVPAYLOAD calls, a RECVSTATUS
//! acknowledgement, CLOSE. A checkpoint (the VM was saved and restored mid-message) restarts the
//! whole message; the VMX sets `MESSAGE_STATUS_CPT` to say so.

use crate::backdoor::{
    halves, high, Backdoor, Regs, BDOORHB_PORT, BDOOR_MAGIC, BDOOR_PORT, CMD_MESSAGE,
    HB_CMD_MESSAGE,
};
use tracing::trace;

/// Message types, the high half of ecx (`MessageType`, `lib/include/guest_msg_def.h`).
#[allow(missing_docs)]
pub mod kind {
    pub const OPEN: u16 = 0;
    pub const SENDSIZE: u16 = 1;
    pub const SENDPAYLOAD: u16 = 2;
    pub const RECVSIZE: u16 = 3;
    pub const RECVPAYLOAD: u16 = 4;
    pub const RECVSTATUS: u16 = 5;
    pub const CLOSE: u16 = 6;
}

/// Reply status bits, the high half of ecx (or ebx for high bandwidth) (`guest_msg_def.h`).
#[allow(missing_docs)]
pub mod status {
    pub const SUCCESS: u16 = 0x0001;
    pub const DORECV: u16 = 0x0002;
    pub const CLOSED: u16 = 0x0004;
    pub const UNSENT: u16 = 0x0008;
    pub const CPT: u16 = 0x0010;
    pub const POWEROFF: u16 = 0x0020;
    pub const TIMEOUT: u16 = 0x0040;
    pub const HB: u16 = 0x0080;
}

/// Asks the VMX for a cookie-protected channel (`GUESTMSG_FLAG_COOKIE`, `guest_msg_def.h`).
pub const FLAG_COOKIE: u32 = 0x8000_0000;

/// Largest message this side accepts from the VMX. The size comes from the VMX in a register,
/// so it is bounded before anything is allocated. Guest RPC replies are small, but guestinfo
/// values (an OVF environment) and HGFS packets can reach hundreds of KiB.
pub const MAX_RECEIVE_SIZE: usize = 4 << 20;

/// How many checkpoint restarts one message may take. The reference retries forever; a VMX that
/// answers "checkpoint" to every call would then hang the guest, so we give up after this many.
pub const MAX_CHECKPOINT_RETRIES: u32 = 64;

/// The two guest RPC protocols.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// Guest → VMX requests (`RPCI_PROTOCOL_NUM`, `lib/include/rpcout.h`).
    Rpci,
    /// VMX → guest requests ('TCLO', `lib/include/rpcin.h` users).
    Tclo,
}

impl Protocol {
    /// The magic number OPEN carries in ebx.
    pub fn magic(self) -> u32 {
        match self {
            Protocol::Rpci => 0x4943_5052,
            Protocol::Tclo => 0x4f4c_4354,
        }
    }

    /// Lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Rpci => "rpci",
            Protocol::Tclo => "tclo",
        }
    }
}

/// The message step that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Opening the channel.
    Open,
    /// Announcing the size of an outgoing message.
    SendSize,
    /// Sending the payload (either bandwidth).
    SendPayload,
    /// Asking for the size of an incoming message.
    ReceiveSize,
    /// Receiving the payload (either bandwidth).
    ReceivePayload,
    /// Acknowledging a received message.
    ReceiveStatus,
    /// Closing the channel.
    Close,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Step::Open => "open",
            Step::SendSize => "send size",
            Step::SendPayload => "send payload",
            Step::ReceiveSize => "receive size",
            Step::ReceivePayload => "receive payload",
            Step::ReceiveStatus => "receive status",
            Step::Close => "close",
        })
    }
}

/// A backdoor message channel failure.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum MessageError {
    /// The VMX answered without the SUCCESS bit.
    #[error("backdoor {protocol} channel: {step} refused by the VMX (status {status:#06x})")]
    Refused {
        /// Channel protocol.
        protocol: &'static str,
        /// Where.
        step: Step,
        /// The status half-word.
        status: u16,
    },
    /// The VMX answered out of protocol.
    #[error("backdoor {protocol} channel: {step}: {what}")]
    Protocol {
        /// Channel protocol.
        protocol: &'static str,
        /// Where.
        step: Step,
        /// What was wrong.
        what: String,
    },
    /// Checkpoint retries ran out.
    #[error("backdoor {protocol} channel: {step} interrupted by {MAX_CHECKPOINT_RETRIES} checkpoints in a row")]
    Checkpoints {
        /// Channel protocol.
        protocol: &'static str,
        /// Where.
        step: Step,
    },
}

/// An open message channel.
pub struct MessageChannel<B: Backdoor> {
    bd: B,
    protocol: Protocol,
    id: u16,
    cookie_high: u32,
    cookie_low: u32,
    closed: bool,
}

impl<B: Backdoor> std::fmt::Debug for MessageChannel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Cookies stay out of logs.
        f.debug_struct("MessageChannel")
            .field("protocol", &self.protocol)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<B: Backdoor> MessageChannel<B> {
    /// Opens a channel for `protocol`: with cookies first, and without when the VMX is too old
    /// to know them.
    pub fn open(mut bd: B, protocol: Protocol) -> Result<Self, MessageError> {
        let mut last = 0;
        for flags in [FLAG_COOKIE, 0] {
            let mut regs = Regs::command(CMD_MESSAGE, kind::OPEN);
            regs.ebx = protocol.magic() | flags;
            let out = bd.in_out(regs);
            last = high(out.ecx);
            if last & status::SUCCESS != 0 {
                let chan = MessageChannel {
                    bd,
                    protocol,
                    id: high(out.edx),
                    cookie_high: out.esi,
                    cookie_low: out.edi,
                    closed: false,
                };
                trace!(
                    protocol = protocol.name(),
                    id = chan.id,
                    "backdoor channel open"
                );
                return Ok(chan);
            }
        }
        Err(MessageError::Refused {
            protocol: protocol.name(),
            step: Step::Open,
            status: last,
        })
    }

    /// The channel number the VMX assigned.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// The protocol this channel speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    fn regs(&self, sub: u16, ebx: u32) -> Regs {
        let mut r = Regs::command(CMD_MESSAGE, sub);
        r.ebx = ebx;
        r.edx = halves(self.id, BDOOR_PORT);
        r.esi = self.cookie_high;
        r.edi = self.cookie_low;
        r
    }

    fn hb_regs(&self) -> Regs {
        Regs {
            eax: BDOOR_MAGIC,
            ebx: halves(status::SUCCESS, HB_CMD_MESSAGE),
            ecx: 0,
            edx: halves(self.id, BDOORHB_PORT),
            esi: 0,
            edi: 0,
            ebp: 0,
        }
    }

    fn refused(&self, step: Step, status: u16) -> MessageError {
        MessageError::Refused {
            protocol: self.protocol.name(),
            step,
            status,
        }
    }

    fn checkpoints(&self, step: Step) -> MessageError {
        MessageError::Checkpoints {
            protocol: self.protocol.name(),
            step,
        }
    }

    /// Sends one message. An empty message is allowed (the TCLO "nothing to report" poll).
    pub fn send(&mut self, data: &[u8]) -> Result<(), MessageError> {
        let Ok(size) = u32::try_from(data.len()) else {
            return Err(MessageError::Protocol {
                protocol: self.protocol.name(),
                step: Step::SendSize,
                what: format!("message of {} bytes is too large", data.len()),
            });
        };
        let mut retries = 0;
        'retry: loop {
            if retries > MAX_CHECKPOINT_RETRIES {
                return Err(self.checkpoints(Step::SendPayload));
            }
            retries += 1;
            let out = self.bd.in_out(self.regs(kind::SENDSIZE, size));
            let st = high(out.ecx);
            if st & status::SUCCESS == 0 {
                return Err(self.refused(Step::SendSize, st));
            }
            if st & status::HB != 0 {
                if data.is_empty() {
                    return Ok(());
                }
                let mut regs = self.hb_regs();
                regs.ecx = size;
                regs.ebp = self.cookie_high;
                regs.edi = self.cookie_low;
                let out = self.bd.hb_out(regs, data);
                let st = high(out.ebx);
                if st & status::SUCCESS == 0 {
                    if st & status::CPT != 0 {
                        continue 'retry;
                    }
                    return Err(self.refused(Step::SendPayload, st));
                }
                return Ok(());
            }
            for chunk in data.chunks(4) {
                let mut word = [0u8; 4];
                word[..chunk.len()].copy_from_slice(chunk);
                let out = self
                    .bd
                    .in_out(self.regs(kind::SENDPAYLOAD, u32::from_le_bytes(word)));
                let st = high(out.ecx);
                if st & status::SUCCESS == 0 {
                    if st & status::CPT != 0 {
                        continue 'retry;
                    }
                    return Err(self.refused(Step::SendPayload, st));
                }
            }
            return Ok(());
        }
    }

    /// Receives one message; an empty vector when the VMX has none waiting.
    pub fn receive(&mut self) -> Result<Vec<u8>, MessageError> {
        let mut retries = 0;
        'retry: loop {
            if retries > MAX_CHECKPOINT_RETRIES {
                return Err(self.checkpoints(Step::ReceivePayload));
            }
            retries += 1;
            let out = self.bd.in_out(self.regs(kind::RECVSIZE, 0));
            let st = high(out.ecx);
            if st & status::SUCCESS == 0 {
                return Err(self.refused(Step::ReceiveSize, st));
            }
            if st & status::DORECV == 0 {
                return Ok(Vec::new());
            }
            if high(out.edx) != kind::SENDSIZE {
                return Err(MessageError::Protocol {
                    protocol: self.protocol.name(),
                    step: Step::ReceiveSize,
                    what: format!(
                        "expected a SENDSIZE from the VMX, got type {}",
                        high(out.edx)
                    ),
                });
            }
            let size = out.ebx as usize;
            if size > MAX_RECEIVE_SIZE {
                // Tell the VMX the message is refused, as message.c does on allocation failure.
                self.signal_receive_error(kind::RECVPAYLOAD);
                return Err(MessageError::Protocol {
                    protocol: self.protocol.name(),
                    step: Step::ReceiveSize,
                    what: format!(
                        "message of {size} bytes exceeds the {MAX_RECEIVE_SIZE} byte limit"
                    ),
                });
            }
            let mut buf = vec![0u8; size];
            if st & status::HB != 0 {
                if size > 0 {
                    let mut regs = self.hb_regs();
                    regs.ecx = out.ebx;
                    regs.esi = self.cookie_high;
                    regs.ebp = self.cookie_low;
                    let out = self.bd.hb_in(regs, &mut buf);
                    let st = high(out.ebx);
                    if st & status::SUCCESS == 0 {
                        if st & status::CPT != 0 {
                            continue 'retry;
                        }
                        self.signal_receive_error(kind::RECVPAYLOAD);
                        return Err(self.refused(Step::ReceivePayload, st));
                    }
                }
            } else {
                for chunk in buf.chunks_mut(4) {
                    let out = self
                        .bd
                        .in_out(self.regs(kind::RECVPAYLOAD, u32::from(status::SUCCESS)));
                    let st = high(out.ecx);
                    if st & status::SUCCESS == 0 {
                        if st & status::CPT != 0 {
                            continue 'retry;
                        }
                        self.signal_receive_error(kind::RECVPAYLOAD);
                        return Err(self.refused(Step::ReceivePayload, st));
                    }
                    if high(out.edx) != kind::SENDPAYLOAD {
                        self.signal_receive_error(kind::RECVPAYLOAD);
                        return Err(MessageError::Protocol {
                            protocol: self.protocol.name(),
                            step: Step::ReceivePayload,
                            what: format!(
                                "expected a SENDPAYLOAD from the VMX, got type {}",
                                high(out.edx)
                            ),
                        });
                    }
                    let n = chunk.len();
                    chunk.copy_from_slice(&out.ebx.to_le_bytes()[..n]);
                }
            }
            let out = self
                .bd
                .in_out(self.regs(kind::RECVSTATUS, u32::from(status::SUCCESS)));
            let st = high(out.ecx);
            if st & status::SUCCESS == 0 {
                if st & status::CPT != 0 {
                    continue 'retry;
                }
                self.signal_receive_error(kind::RECVSTATUS);
                return Err(self.refused(Step::ReceiveStatus, st));
            }
            return Ok(buf);
        }
    }

    /// Tells the VMX that the message in flight could not be taken (status 0 for the step).
    fn signal_receive_error(&mut self, step: u16) {
        let out = self.bd.in_out(self.regs(step, 0));
        if high(out.ecx) & status::SUCCESS == 0 {
            trace!(id = self.id, "VMX refused the receive-error signal too");
        }
    }

    /// One RPCI round trip: send, then receive the reply.
    pub fn call(&mut self, request: &[u8]) -> Result<Vec<u8>, MessageError> {
        self.send(request)?;
        self.receive()
    }

    /// Closes the channel; dropping it closes it too, ignoring errors.
    pub fn close(mut self) -> Result<(), MessageError> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<(), MessageError> {
        if self.closed {
            return Ok(());
        }
        self.closed = true;
        let out = self.bd.in_out(self.regs(kind::CLOSE, 0));
        let st = high(out.ecx);
        if st & status::SUCCESS == 0 {
            return Err(self.refused(Step::Close, st));
        }
        trace!(
            protocol = self.protocol.name(),
            id = self.id,
            "backdoor channel closed"
        );
        Ok(())
    }
}

impl<B: Backdoor> Drop for MessageChannel<B> {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}
