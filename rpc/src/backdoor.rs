//! The backdoor's register interface: constants, the register file and the trait that the message
//! channel talks through.
//!
//! A backdoor call loads magic, command and arguments into the general purpose registers and
//! executes `in eax, dx` on [`BDOOR_PORT`]; the VMX intercepts the instruction and writes its answer
//! back into the same registers. The high-bandwidth port [`BDOORHB_PORT`] moves a whole buffer with
//! `rep outsb` / `rep insb`. Everything above this module sees only [`Backdoor`], so the channel
//! logic runs unchanged against the real port ([`crate::port::PortBackdoor`]) or the software model
//! ([`crate::model::VmxModel`]).

/// `'VMXh'`, in eax on every call and in ebx of a GETVERSION answer (`lib/include/backdoor_def.h`).
pub const BDOOR_MAGIC: u32 = 0x564D_5868;
/// Low-bandwidth port (`BDOOR_PORT`, `backdoor_def.h`).
pub const BDOOR_PORT: u16 = 0x5658;
/// High-bandwidth port (`BDOORHB_PORT`, `backdoor_def.h`).
pub const BDOORHB_PORT: u16 = 0x5659;
/// `BDOOR_CMD_GETVERSION` (`backdoor_def.h`).
pub const CMD_GETVERSION: u16 = 10;
/// `BDOOR_CMD_MESSAGE` (`backdoor_def.h`).
pub const CMD_MESSAGE: u16 = 30;
/// `BDOORHB_CMD_MESSAGE` (`backdoor_def.h`).
pub const HB_CMD_MESSAGE: u16 = 0;

/// The registers of one backdoor call, in or out. Only the low 32 bits of each take part.
///
/// `ebp` is used by the high-bandwidth calls only (it carries half of the channel cookie).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Regs {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
    pub esi: u32,
    pub edi: u32,
    pub ebp: u32,
}

/// High 16 bits of a register.
pub fn high(r: u32) -> u16 {
    (r >> 16) as u16
}

/// Low 16 bits of a register.
pub fn low(r: u32) -> u16 {
    r as u16
}

/// Two 16-bit halves into one register.
pub fn halves(high: u16, low: u16) -> u32 {
    (u32::from(high) << 16) | u32::from(low)
}

impl Regs {
    /// A low-bandwidth command: magic in eax, `cmd` in cx (low), `sub` in cx (high), the port in dx.
    pub fn command(cmd: u16, sub: u16) -> Regs {
        Regs {
            eax: BDOOR_MAGIC,
            ecx: halves(sub, cmd),
            edx: u32::from(BDOOR_PORT),
            ..Regs::default()
        }
    }
}

/// Access to the VMX through backdoor registers.
///
/// Implementations: [`crate::port::PortBackdoor`] executes the real instructions;
/// [`crate::model::ModelPort`] is the software VMX used by tests and the simulator.
pub trait Backdoor {
    /// A low-bandwidth call (`in eax, dx` on [`BDOOR_PORT`]).
    fn in_out(&mut self, regs: Regs) -> Regs;
    /// A high-bandwidth transfer guest → VMX (`rep outsb` on [`BDOORHB_PORT`]). The caller
    /// fills every register but the source address (rsi), which the implementation points at
    /// `data`; `regs.ecx` equals `data.len()` (the VMX takes the count from ecx; the model
    /// refuses a call where they differ).
    fn hb_out(&mut self, regs: Regs, data: &[u8]) -> Regs;
    /// A high-bandwidth transfer VMX → guest (`rep insb` on [`BDOORHB_PORT`]). The caller fills
    /// every register but the destination address (rdi), which the implementation points at
    /// `buf`; `regs.ecx` equals `buf.len()` (checked by the model likewise).
    fn hb_in(&mut self, regs: Regs, buf: &mut [u8]) -> Regs;
}

impl<B: Backdoor + ?Sized> Backdoor for &mut B {
    fn in_out(&mut self, regs: Regs) -> Regs {
        (**self).in_out(regs)
    }
    fn hb_out(&mut self, regs: Regs, data: &[u8]) -> Regs {
        (**self).hb_out(regs, data)
    }
    fn hb_in(&mut self, regs: Regs, buf: &mut [u8]) -> Regs {
        (**self).hb_in(regs, buf)
    }
}

impl<B: Backdoor + ?Sized> Backdoor for Box<B> {
    fn in_out(&mut self, regs: Regs) -> Regs {
        (**self).in_out(regs)
    }
    fn hb_out(&mut self, regs: Regs, data: &[u8]) -> Regs {
        (**self).hb_out(regs, data)
    }
    fn hb_in(&mut self, regs: Regs, buf: &mut [u8]) -> Regs {
        (**self).hb_in(regs, buf)
    }
}

/// What GETVERSION answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Version {
    /// The backdoor version (eax).
    pub version: u32,
    /// The VMX type (ecx): 1 = Workstation-class, 2 = ESX-class (`VMX_TYPE_*`, `backdoor_def.h`).
    pub vmx_type: u32,
}

/// Asks GETVERSION; `None` when ebx does not come back as [`BDOOR_MAGIC`] (no backdoor there).
pub fn get_version(bd: &mut impl Backdoor) -> Option<Version> {
    // ebx anything but the magic and cx high no known VMX type, so that an unchanged register
    // cannot pass for an answer (`lib/vmCheck/vmcheck.c`).
    let mut regs = Regs::command(CMD_GETVERSION, 0xFFFF);
    regs.ebx = !BDOOR_MAGIC;
    let out = bd.in_out(regs);
    (out.ebx == BDOOR_MAGIC && out.eax != u32::MAX).then_some(Version {
        version: out.eax,
        vmx_type: out.ecx,
    })
}
