//! Is this a VMware virtual machine? Asked through CPUID, before any port is touched.
//!
//! CPUID leaf 1 ECX bit 31 says "running under a hypervisor"; leaf 0x4000_0000 names it in
//! EBX:ECX:EDX. VMware's name is `VMwareVMware` (vmw-guestinfo `vmcheck`, open-vm-tools
//! `lib/vmCheck`). The backdoor instructions fault elsewhere, so this gate keeps a non-VMware
//! machine at a clear error instead of a SIGSEGV.

use std::fmt;

/// The vendor string VMware reports at CPUID leaf 0x4000_0000.
pub const VMWARE_VENDOR: &[u8; 12] = b"VMwareVMware";

/// Environment variable that, set to `1`, skips the vendor check (for QEMU's `vmport`).
pub const ASSUME_VMWARE_ENV: &str = "TOOLBOX_ASSUME_VMWARE";

/// What CPUID says about the hypervisor.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Hypervisor {
    /// CPUID.1:ECX bit 31.
    pub present: bool,
    /// CPUID.0x4000_0000:EBX,ECX,EDX.
    pub vendor: [u8; 12],
}

impl Hypervisor {
    /// Reads CPUID; `None` on targets without it.
    pub fn probe() -> Option<Hypervisor> {
        let present = (crate::port::cpuid(1)?.ecx >> 31) & 1 == 1;
        let mut vendor = [0u8; 12];
        if present {
            let leaf = crate::port::cpuid(0x4000_0000)?;
            vendor[0..4].copy_from_slice(&leaf.ebx.to_le_bytes());
            vendor[4..8].copy_from_slice(&leaf.ecx.to_le_bytes());
            vendor[8..12].copy_from_slice(&leaf.edx.to_le_bytes());
        }
        Some(Hypervisor { present, vendor })
    }

    /// True for VMware.
    pub fn is_vmware(&self) -> bool {
        self.present && &self.vendor == VMWARE_VENDOR
    }

    /// The vendor as printable text.
    pub fn vendor_text(&self) -> String {
        self.vendor
            .iter()
            .take_while(|&&b| b != 0)
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    b as char
                } else {
                    '?'
                }
            })
            .collect()
    }
}

impl fmt::Debug for Hypervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hypervisor")
            .field("present", &self.present)
            .field("vendor", &self.vendor_text())
            .finish()
    }
}

/// Why the backdoor may not be used here.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DetectError {
    /// Bare metal or a hypervisor that hides itself.
    #[error("not running on VMware: no hypervisor reported by CPUID (set {ASSUME_VMWARE_ENV}=1 or pass --assume-vmware to try anyway)")]
    NoHypervisor,
    /// Another hypervisor.
    #[error("not running on VMware: the hypervisor is {vendor:?} (set {ASSUME_VMWARE_ENV}=1 or pass --assume-vmware to try anyway)")]
    OtherHypervisor {
        /// Its CPUID vendor string.
        vendor: String,
    },
    /// Told to assume VMware on another hypervisor, but without I/O permission the port
    /// instructions would fault.
    #[error("not running on VMware, and without I/O permission (root, no kernel lockdown) the backdoor cannot be probed safely")]
    NoIoPermission,
    /// No backdoor on this architecture or OS.
    #[error("the VMware backdoor needs x86_64 Linux")]
    Unsupported,
}

/// Errors unless CPUID names VMware.
pub fn require_vmware() -> Result<(), DetectError> {
    match Hypervisor::probe() {
        None => Err(DetectError::Unsupported),
        Some(h) if h.is_vmware() => Ok(()),
        Some(h) if !h.present => Err(DetectError::NoHypervisor),
        Some(h) => Err(DetectError::OtherHypervisor {
            vendor: h.vendor_text(),
        }),
    }
}

/// True when the environment asks to skip detection.
pub fn assume_vmware_from_env() -> bool {
    std::env::var_os(ASSUME_VMWARE_ENV).is_some_and(|v| v == "1" || v == "true")
}
