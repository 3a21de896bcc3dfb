//! The real backdoor: x86 port I/O on 0x5658/0x5659, and the CPUID instruction that detection
//! asks first. The only `unsafe` code in the project: the crate denies `unsafe_code` everywhere
//! else.
//!
//! The instructions fault (SIGSEGV) on a machine whose hypervisor does not intercept them, unless
//! the process holds I/O permission; so a [`PortBackdoor`] can only be made through
//! [`PortBackdoor::open`], which runs hypervisor detection first ([`crate::detect`]).
//!
//! On targets other than x86_64 Linux, [`PortBackdoor::open`] returns
//! [`crate::detect::DetectError::Unsupported`], [`cpuid`] returns `None`, and the rest of the
//! crate still builds and tests. That fallback is compiled (and tested) on every target.

use crate::backdoor::{Backdoor, Regs};
use crate::detect::DetectError;

/// The hardware backdoor of the machine this process runs on.
#[derive(Debug)]
pub struct PortBackdoor {
    _detected: (),
}

impl PortBackdoor {
    /// Detects VMware, and asks for I/O permission on the two backdoor ports when the process
    /// may have it: VMware lets user mode through without it, other hypervisors do not.
    ///
    /// `assume_vmware` accepts another hypervisor (a test guest such as QEMU, whose CPUID vendor
    /// is not `VMwareVMware`) provided I/O permission was granted, so the instruction cannot
    /// fault.
    pub fn open(assume_vmware: bool) -> Result<PortBackdoor, DetectError> {
        imp::check_access(assume_vmware)?;
        Ok(PortBackdoor { _detected: () })
    }
}

/// The registers CPUID answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct CpuidLeaf {
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// Executes CPUID for `leaf` (sub-leaf 0); `None` on targets without the backdoor.
pub fn cpuid(leaf: u32) -> Option<CpuidLeaf> {
    imp::cpuid(leaf)
}

impl Backdoor for PortBackdoor {
    fn in_out(&mut self, regs: Regs) -> Regs {
        imp::in_out(regs)
    }
    fn hb_out(&mut self, regs: Regs, data: &[u8]) -> Regs {
        imp::hb_out(regs, data)
    }
    fn hb_in(&mut self, regs: Regs, buf: &mut [u8]) -> Regs {
        imp::hb_in(regs, buf)
    }
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod imp {
    use super::CpuidLeaf;
    use crate::backdoor::{Regs, BDOOR_PORT};
    use crate::detect::{self, DetectError};
    use std::arch::asm;

    pub(super) fn check_access(assume_vmware: bool) -> Result<(), DetectError> {
        let vmware = detect::require_vmware();
        let permitted = request_io_permission();
        match vmware {
            Ok(()) => Ok(()),
            // Another hypervisor's backdoor emulation (QEMU's vmport) only answers a process
            // that holds I/O permission; without it the instruction faults.
            Err(_) if assume_vmware && permitted => Ok(()),
            Err(_) if assume_vmware => Err(DetectError::NoIoPermission),
            Err(e) => Err(e),
        }
    }

    pub(super) fn cpuid(leaf: u32) -> Option<CpuidLeaf> {
        // `__cpuid` is an `unsafe fn` at the declared rust-version (1.80) and a safe one in
        // later compilers (1.95), where the block is redundant: it must build on both.
        // SAFETY: CPUID is part of the x86_64 baseline, so the instruction exists on every CPU
        // this code can run on (SGX enclaves, where it faults, are not a target); it writes
        // only eax..edx, which the intrinsic returns, and touches no memory.
        #[allow(unused_unsafe)]
        let r = unsafe { std::arch::x86_64::__cpuid(leaf) };
        Some(CpuidLeaf {
            eax: r.eax,
            ebx: r.ebx,
            ecx: r.ecx,
            edx: r.edx,
        })
    }

    /// `ioperm(0x5658, 4, 1)`: granted to root outside kernel lockdown; refused otherwise, which
    /// is fine on VMware. Four ports, not two: the CPU checks one permission bit per byte of the
    /// access, and `in eax, dx` reads 4 bytes (0x5658..=0x565B); the high-bandwidth port 0x5659
    /// falls inside. `iopl` is never asked for: lockdown forbids it and it grants far more.
    pub(super) fn request_io_permission() -> bool {
        // SAFETY: ioperm only changes this thread's I/O permission bitmap for the backdoor
        // ports; it touches no memory of ours. Failure is reported through the return value.
        let rc = unsafe { libc::ioperm(libc::c_ulong::from(BDOOR_PORT), 4, 1) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "ioperm refused; relying on the hypervisor to allow user-mode port access"
            );
        }
        rc == 0
    }

    pub(super) fn in_out(r: Regs) -> Regs {
        let (mut eax, mut ecx, mut edx, mut esi, mut edi) = (r.eax, r.ecx, r.edx, r.esi, r.edi);
        // LLVM reserves rbx, so it cannot be an operand: swap it with a scratch register around
        // the instruction.
        let mut rbx = u64::from(r.ebx);
        // SAFETY: `PortBackdoor::open` made sure the hypervisor intercepts this port (or the
        // caller explicitly asserted so). The instruction reads and writes only the registers
        // named here; rbx is restored before the block ends; no memory or stack is touched.
        unsafe {
            asm!(
                "xchg {bx}, rbx",
                "in eax, dx",
                "xchg {bx}, rbx",
                bx = inout(reg) rbx,
                inout("eax") eax,
                inout("ecx") ecx,
                inout("edx") edx,
                inout("esi") esi,
                inout("edi") edi,
                options(nostack, preserves_flags),
            );
        }
        Regs {
            eax,
            ebx: rbx as u32,
            ecx,
            edx,
            esi,
            edi,
            ebp: r.ebp,
        }
    }

    pub(super) fn hb_out(r: Regs, data: &[u8]) -> Regs {
        let mut rbx = u64::from(r.ebx);
        let mut eax = r.eax;
        // SAFETY: as for `in_out`, plus: `rep outsb` reads exactly rcx = data.len() bytes from
        // rsi = data.as_ptr(), a live shared borrow; the direction flag is clear per the ABI. rbp
        // holds half of the cookie during the call and is pushed and popped around it; rbx is
        // swapped back. The block may push to the stack, so `nostack` is not claimed.
        unsafe {
            asm!(
                "push rbp",
                "mov rbp, {bp}",
                "xchg {bx}, rbx",
                "rep outsb",
                "xchg {bx}, rbx",
                "pop rbp",
                bx = inout(reg) rbx,
                bp = in(reg) u64::from(r.ebp),
                inout("eax") eax,
                inout("rcx") data.len() => _,
                inout("edx") r.edx => _,
                inout("rsi") data.as_ptr() => _,
                inout("edi") r.edi => _,
            );
        }
        Regs {
            eax,
            ebx: rbx as u32,
            ..r
        }
    }

    pub(super) fn hb_in(r: Regs, buf: &mut [u8]) -> Regs {
        let mut rbx = u64::from(r.ebx);
        let mut eax = r.eax;
        // SAFETY: as for `hb_out`, except that `rep insb` writes at most rcx = buf.len() bytes to
        // rdi = buf.as_mut_ptr(), an exclusive borrow of exactly that length; the hypervisor
        // writes nothing else of ours.
        unsafe {
            asm!(
                "push rbp",
                "mov rbp, {bp}",
                "xchg {bx}, rbx",
                "rep insb",
                "xchg {bx}, rbx",
                "pop rbp",
                bx = inout(reg) rbx,
                bp = in(reg) u64::from(r.ebp),
                inout("eax") eax,
                inout("rcx") buf.len() => _,
                inout("edx") r.edx => _,
                inout("esi") r.esi => _,
                inout("rdi") buf.as_mut_ptr() => _,
            );
        }
        Regs {
            eax,
            ebx: rbx as u32,
            ..r
        }
    }
}

/// What every other target gets. Compiled everywhere so that it type-checks and is tested on
/// the x86_64 build machines too.
#[cfg_attr(all(target_arch = "x86_64", target_os = "linux"), allow(dead_code))]
mod unsupported {
    use super::CpuidLeaf;
    use crate::backdoor::Regs;
    use crate::detect::DetectError;

    pub(super) fn check_access(_assume_vmware: bool) -> Result<(), DetectError> {
        Err(DetectError::Unsupported)
    }
    pub(super) fn cpuid(_leaf: u32) -> Option<CpuidLeaf> {
        None
    }
    // Never reached, since `check_access` refuses; should they be, every call answers with the
    // SUCCESS bit clear, so the message layer fails cleanly.
    pub(super) fn in_out(r: Regs) -> Regs {
        Regs { ecx: 0, ..r }
    }
    pub(super) fn hb_out(r: Regs, _: &[u8]) -> Regs {
        Regs { ebx: 0, ..r }
    }
    pub(super) fn hb_in(r: Regs, _: &mut [u8]) -> Regs {
        Regs { ebx: 0, ..r }
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
use unsupported as imp;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::Hypervisor;
    use crate::message::{MessageChannel, MessageError, Protocol};

    /// A backdoor wired to the fallback functions, as `PortBackdoor` is on other targets.
    struct Fallback;

    impl Backdoor for Fallback {
        fn in_out(&mut self, regs: Regs) -> Regs {
            unsupported::in_out(regs)
        }
        fn hb_out(&mut self, regs: Regs, data: &[u8]) -> Regs {
            unsupported::hb_out(regs, data)
        }
        fn hb_in(&mut self, regs: Regs, buf: &mut [u8]) -> Regs {
            unsupported::hb_in(regs, buf)
        }
    }

    #[test]
    fn the_fallback_refuses_as_unsupported() {
        assert_eq!(
            unsupported::check_access(false),
            Err(DetectError::Unsupported)
        );
        assert_eq!(
            unsupported::check_access(true),
            Err(DetectError::Unsupported)
        );
        assert_eq!(unsupported::cpuid(0), None);
        assert!(matches!(
            MessageChannel::open(Fallback, Protocol::Rpci),
            Err(MessageError::Refused { .. })
        ));
        let mut buf = [0u8; 4];
        assert_eq!(
            Fallback
                .hb_in(
                    Regs {
                        ebx: 1,
                        ..Regs::default()
                    },
                    &mut buf
                )
                .ebx,
            0
        );
        assert_eq!(
            Fallback
                .hb_out(
                    Regs {
                        ebx: 1,
                        ..Regs::default()
                    },
                    &buf
                )
                .ebx,
            0
        );
    }

    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    #[test]
    fn cpuid_answers_on_this_machine() {
        // Leaf 0 names the CPU vendor in ebx:edx:ecx, printable ASCII on every x86_64 CPU.
        let leaf = cpuid(0).expect("x86_64 has CPUID");
        let mut vendor = Vec::new();
        for r in [leaf.ebx, leaf.edx, leaf.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        assert!(vendor.iter().all(|b| b.is_ascii_graphic()), "{vendor:?}");
        assert!(leaf.eax >= 1, "leaf 1 exists on x86_64");
        assert!(Hypervisor::probe().is_some());
    }
}
