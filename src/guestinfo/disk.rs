//! Disk info as vmtoolsd reports it: the mounted filesystems of the types its wiper library
//! supports (`lib/wiper/wiperPosix.c`), their free and total bytes as `df` shows them, and the
//! virtual disks under each (`services/plugins/guestInfo/diskInfo.c`), sent as the
//! `SetGuestDiskInfo` JSON of guestInfoServer.c or, when the VMX refuses that, the older binary
//! `SetGuestInfo  3` partition list.

use std::path::{Path, PathBuf};

/// `PARTITION_NAME_SIZE` (`lib/include/guestInfo.h`): a name, its NUL included.
pub const PARTITION_NAME_SIZE: usize = 100;
/// `FSTYPE_SIZE`.
pub const FSTYPE_SIZE: usize = 260;
/// `DISK_DEVICE_NAME_SIZE`: `scsi?:?` and the like, NUL included.
pub const DISK_DEVICE_NAME_SIZE: usize = 15;
/// `INFO_DISK_FREE_SPACE`.
pub const INFO_DISK_FREE_SPACE: u32 = 3;
/// `DISK_INFO_VERSION_1`.
pub const DISK_INFO_VERSION_1: u32 = 1;
/// The binary form counts partitions in one byte (`GuestInfoSendDiskInfoV0`).
pub const V0_MAX_PARTITIONS: usize = 255;
/// Mounts looked at, at most: a bound on what a hostile or broken mount table can make us
/// allocate (vmtoolsd has none; 4096 mounts is far beyond any guest's real disks).
pub const MAX_MOUNTS: usize = 4096;
/// Disks listed under one filesystem, at most (an LVM volume over more is reported without).
pub const MAX_DEVICES: usize = 64;

/// Filesystem types reported (`gKnownPartitions` entries that are not `PARTITION_UNSUPPORTED`).
pub const SUPPORTED_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "hfs", "msdos", "ntfs", "pcfs", "reiserfs", "ufs", "vfat", "zfs",
    "xfs", "btrfs",
];

// PCI classes (diskInfo.c).
const PCI_IDE: u32 = 0x010100;
const PCI_SATA_AHCI_1: u32 = 0x010601;
const PCI_SUBCLASS: u32 = 0xFFFF00;

/// One reported filesystem (`PartitionEntryInt`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Mount point, at most `PARTITION_NAME_SIZE - 1` bytes.
    pub name: String,
    /// Free bytes for unprivileged users.
    pub free: u64,
    /// Total bytes.
    pub total: u64,
    /// Filesystem type.
    pub fs_type: String,
    /// Virtual disks, e.g. `scsi0:1`; empty when not all of them are known.
    pub devices: Vec<String>,
}

/// Everything reported.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct DiskInfo {
    /// In mount table order.
    pub partitions: Vec<Partition>,
}

impl DiskInfo {
    /// `DiskInfoChanged`: the same names with the same free and total bytes count as unchanged
    /// (a change of devices or type alone is not sent, as vmtoolsd).
    pub fn changed_from(&self, old: Option<&DiskInfo>) -> bool {
        let Some(old) = old else { return true };
        if old.partitions.len() != self.partitions.len() {
            return true;
        }
        old.partitions.iter().any(
            |o| match self.partitions.iter().find(|p| p.name == o.name) {
                None => true,
                Some(p) => p.free != o.free || p.total != o.total,
            },
        )
    }

    /// `SetGuestDiskInfo {...}` with its terminator, byte for byte as `GuestInfoSendDiskInfoV1`
    /// writes it on Linux: names in base64, numbers as strings, `fstype` when known, `devices`
    /// when any.
    pub fn json_request(&self) -> Vec<u8> {
        use base64::Engine;
        use std::fmt::Write;
        let mut s =
            format!("SetGuestDiskInfo {{\n\"version\":\"{DISK_INFO_VERSION_1}\",\n\"disks\":[\n");
        for (i, p) in self.partitions.iter().enumerate() {
            if i != 0 {
                s.push_str("},\n");
            }
            let name = base64::engine::general_purpose::STANDARD.encode(p.name.as_bytes());
            let _ = write!(
                s,
                "{{\"name\":\"{name}\",\"free\":\"{}\",\"size\":\"{}\"",
                p.free, p.total
            );
            if !p.fs_type.is_empty() {
                let _ = write!(s, ",\"fstype\":\"{}\"", p.fs_type);
            }
            if !p.devices.is_empty() {
                s.push_str(",\"devices\":[");
                for (j, d) in p.devices.iter().enumerate() {
                    let _ = write!(s, "{}\"{d}\"", if j == 0 { "" } else { "," });
                }
                s.push(']');
            }
        }
        if !self.partitions.is_empty() {
            s.push_str("}\n");
        }
        s.push_str("]}");
        let mut b = s.into_bytes();
        b.push(0);
        b
    }

    /// `SetGuestInfo  3 ` with a count byte and packed `PartitionEntry` records (u64 free,
    /// u64 total, 100-byte NUL-padded name; little-endian as on the guest), at most 255.
    pub fn v0_request(&self) -> Vec<u8> {
        let n = self.partitions.len().min(V0_MAX_PARTITIONS);
        let mut b = format!("SetGuestInfo  {INFO_DISK_FREE_SPACE} ").into_bytes();
        b.push(n as u8);
        for p in &self.partitions[..n] {
            b.extend_from_slice(&p.free.to_le_bytes());
            b.extend_from_slice(&p.total.to_le_bytes());
            let name = truncate(&p.name, PARTITION_NAME_SIZE - 1).as_bytes();
            b.extend_from_slice(name);
            b.resize(b.len() + PARTITION_NAME_SIZE - name.len(), 0);
        }
        b
    }
}

/// `s` cut to at most `max` bytes on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// One line of the mount table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// Source, e.g. `/dev/sda1`.
    pub source: String,
    /// Mount point.
    pub target: String,
    /// Type.
    pub fs_type: String,
}

/// getmntent's unescaping of `\040`-style octal sequences.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct.iter().fold(0u32, |a, c| a * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `/etc/mtab` or `/proc/mounts` text → mounts, at most [`MAX_MOUNTS`].
pub fn parse_mounts(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (source, target, fs_type) = (f.next()?, f.next()?, f.next()?);
            if source.starts_with('#') {
                return None;
            }
            Some(Mount {
                source: unescape(source),
                target: unescape(target),
                fs_type: unescape(fs_type),
            })
        })
        .take(MAX_MOUNTS)
        .collect()
}

/// Reads the running system: the mount table (`/etc/mtab`, else `/proc/mounts`, as
/// `WiperOpenMountFile`), statvfs of each supported filesystem, and, when `devices`, the disks.
pub fn gather(devices: bool) -> DiskInfo {
    let text = std::fs::read_to_string("/etc/mtab")
        .or_else(|_| std::fs::read_to_string("/proc/mounts"))
        .unwrap_or_default();
    let mut info = DiskInfo::default();
    for m in parse_mounts(&text) {
        if !SUPPORTED_FS.contains(&m.fs_type.as_str()) {
            continue;
        }
        // vmtoolsd gives up on the whole list when one statfs fails; one unreadable mount
        // (a stale bind, a dying USB disk) should not hide the others, so it is skipped.
        let Ok(st) = nix::sys::statvfs::statvfs(m.target.as_str()) else {
            continue;
        };
        let block = st.fragment_size();
        info.partitions.push(Partition {
            name: truncate(&m.target, PARTITION_NAME_SIZE - 1).to_string(),
            free: st.blocks_available().saturating_mul(block),
            total: st.blocks().saturating_mul(block),
            fs_type: truncate(&m.fs_type, FSTYPE_SIZE - 1).to_string(),
            devices: if devices {
                disk_devices(&m.source, &m.fs_type)
            } else {
                Vec::new()
            },
        });
    }
    info
}

const SYS_CLASS_BLOCK: &str = "/sys/class/block";
const SYS_DEV_BLOCK: &str = "/sys/dev/block";

fn realpath(p: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(p).ok()
}

fn read_first_line(p: &Path, max: usize) -> Option<String> {
    let t = std::fs::read_to_string(p).ok()?;
    let line = t.lines().next().unwrap_or("");
    Some(truncate(line, max).to_string())
}

/// The number after `prefix` when `name` is `prefix` and digits only.
fn numbered(name: &str, prefix: &str) -> Option<u32> {
    let d = name.strip_prefix(prefix)?;
    (!d.is_empty() && d.bytes().all(|c| c.is_ascii_digit()))
        .then(|| d.parse().ok())
        .flatten()
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

/// `GuestInfoGetDiskDevice`: the disks under the filesystem on `source`, all or none.
pub fn disk_devices(source: &str, fs_type: &str) -> Vec<String> {
    let mut names = Vec::new();
    if !lvm_devices(source, &mut names) {
        if let Some((_, base)) = source.rsplit_once('/') {
            if fs_type != "zfs" {
                let start = Path::new(SYS_CLASS_BLOCK).join(base);
                let mut one = Vec::new();
                if block_device(&start, &mut one) {
                    names = one;
                } else if let Some(p) = dev_root(source) {
                    names.clear();
                    block_device(&p, &mut names);
                } else {
                    names = one;
                }
            }
        }
    }
    if names.iter().any(String::is_empty) {
        names.clear();
    }
    names
}

/// `GuestInfoIsLinuxLvmDevice`: a device-mapper volume lists its disks under `slaves`.
fn lvm_devices(source: &str, names: &mut Vec<String>) -> bool {
    let Some(real) = realpath(Path::new(source)) else {
        return false;
    };
    let slaves = Path::new(SYS_CLASS_BLOCK)
        .join(file_name(&real))
        .join("slaves");
    let Ok(dir) = std::fs::read_dir(&slaves) else {
        return false;
    };
    let entries: Vec<PathBuf> = dir
        .flatten()
        .map(|e| e.path())
        .take(MAX_DEVICES + 1)
        .collect();
    if entries.is_empty() {
        return false;
    }
    if entries.len() > MAX_DEVICES {
        names.push(String::new());
        return true;
    }
    for e in entries {
        block_device(&e, names);
    }
    true
}

/// `GuestInfoCheckDevRoot`: a pseudo device such as `/dev/root` found by its numbers in
/// `/proc/self/mountinfo`.
fn dev_root(source: &str) -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let pattern = format!(" {source} ");
    let line = text.lines().find(|l| l.contains(&pattern))?;
    let majmin = line.split(' ').nth(2)?;
    Some(Path::new(SYS_DEV_BLOCK).join(majmin))
}

/// `GuestInfoLinuxBlockDevice`: appends the disk name found from a `/sys/class/block` entry,
/// or an empty name when there is none; true when found.
fn block_device(start: &Path, names: &mut Vec<String>) -> bool {
    let name = block_device_name(start).unwrap_or_default();
    let found = !name.is_empty();
    // GuestInfoAddDeviceName lower-cases and bounds the name.
    names.push(truncate(&name.to_lowercase(), DISK_DEVICE_NAME_SIZE - 1).to_string());
    found
}

fn scsi_target(real: &Path) -> Option<String> {
    // `H:C:T:L`, the unit is T.
    let mut f = file_name(real).split(':');
    let parts: Vec<&str> = (&mut f).take(5).collect();
    (parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit())))
    .then(|| parts[2].to_string())
}

fn block_device_name(start: &Path) -> Option<String> {
    let mut dev = start.join("device");
    if !dev.exists() {
        dev = start.join("../device");
        if !dev.exists() {
            return None;
        }
    }
    let real = realpath(&dev)?;
    let (mut unit, pci) = if let Some(target) = scsi_target(&real) {
        let mut dev = dev.join("../..");
        let mut pci = dev.join("..");
        let mut unit = target;
        // SAS: the unit is the phy's number and the controller two levels up.
        if pci.join("sas_port").is_dir() {
            unit = "?".into();
            if let Ok(dir) = std::fs::read_dir(&pci) {
                for e in dir.flatten() {
                    let n = e.file_name();
                    let n = n.to_string_lossy();
                    if let Some((phy, u)) = n.strip_prefix("phy-").and_then(|r| r.split_once(':')) {
                        if numbered(phy, "").is_some() && numbered(u, "").is_some() {
                            unit = u.to_string();
                            break;
                        }
                    }
                }
            }
            dev = pci.join("..");
            pci = dev.join("..");
        }
        // GuestInfoGetDevClass: the class may sit one level up (IDE, SATA).
        let mut class_path = pci.join("class");
        if !class_path.exists() {
            let up = pci.join("../class");
            if up.exists() {
                pci = pci.join("..");
                dev = dev.join("..");
                class_path = up;
            }
        }
        let class = read_first_line(&class_path, 32)
            .and_then(|c| u32::from_str_radix(c.trim().trim_start_matches("0x"), 16).ok())
            .unwrap_or(0);
        if (class & PCI_SUBCLASS) == PCI_IDE || class == PCI_SATA_AHCI_1 {
            let cnt = ide_sata_index(&dev, &pci)?;
            if (class & PCI_SUBCLASS) == PCI_IDE {
                return Some(format!("ide{cnt}:{unit}"));
            }
            unit = cnt.to_string();
        }
        (unit, pci)
    } else if numbered(file_name(&real), "nvme").is_some() {
        nvme_unit(&dev)?
    } else {
        return None;
    };
    // GuestInfoGetPCIName: the controller's firmware label (`SCSI0`, `sata1`, `nvme0`).
    match std::fs::read_to_string(pci.join("label")) {
        Ok(t) => {
            let label = truncate(t.lines().next().unwrap_or(""), 24);
            Some(format!("{label}:{unit}"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // The LSI Logic parallel or BusLogic controller in slot 16 of bus 0 has no label.
            let real = realpath(&pci)?;
            file_name(&real)
                .eq("0000:00:10.0")
                .then(|| format!("scsi0:{}", std::mem::take(&mut unit)))
        }
        Err(_) => None,
    }
}

/// `GuestInfoGetIdeSataDev`: how many `ataN` (or `hostN`) ports of the controller come
/// before this one.
fn ide_sata_index(tgt_host: &Path, pci: &Path) -> Option<u32> {
    let real = realpath(tgt_host)?;
    let last = file_name(&real);
    let (prefix, host) = if let Some(n) = numbered(last, "ata") {
        ("ata", n)
    } else {
        ("host", numbered(last, "host")?)
    };
    let dir = std::fs::read_dir(pci).ok()?;
    Some(
        dir.flatten()
            .filter_map(|e| numbered(&e.file_name().to_string_lossy(), prefix))
            .filter(|&n| n < host)
            .count() as u32,
    )
}

/// `GuestInfoNvmeDevice`: the unit is the namespace id less one; the controller's PCI
/// device holds the label.
fn nvme_unit(dev: &Path) -> Option<(String, PathBuf)> {
    let dir = dev.parent()?;
    let nsid: u32 = match read_first_line(&dir.join("nsid"), 16) {
        Some(t) => t.trim().parse().ok()?,
        None => {
            let real = realpath(dir)?;
            let n = file_name(&real);
            let (_, ns) = n.strip_prefix("nvme")?.split_once('n')?;
            numbered(ns, "")?
        }
    };
    Some((nsid.checked_sub(1)?.to_string(), dev.join("../..")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(name: &str, free: u64, total: u64, fs: &str, devices: &[&str]) -> Partition {
        Partition {
            name: name.into(),
            free,
            total,
            fs_type: fs.into(),
            devices: devices.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn json_is_byte_for_byte_vmtoolsds() {
        let info = DiskInfo {
            partitions: vec![
                part("/", 100, 200, "ext4", &["scsi0:0"]),
                part("/data", 5, 10, "xfs", &["scsi0:1", "scsi1:0"]),
                part("/x", 1, 2, "", &[]),
            ],
        };
        let want = "SetGuestDiskInfo {\n\"version\":\"1\",\n\"disks\":[\n\
            {\"name\":\"Lw==\",\"free\":\"100\",\"size\":\"200\",\"fstype\":\"ext4\",\"devices\":[\"scsi0:0\"]},\n\
            {\"name\":\"L2RhdGE=\",\"free\":\"5\",\"size\":\"10\",\"fstype\":\"xfs\",\"devices\":[\"scsi0:1\",\"scsi1:0\"]},\n\
            {\"name\":\"L3g=\",\"free\":\"1\",\"size\":\"2\"}\n]}\0";
        assert_eq!(String::from_utf8(info.json_request()).unwrap(), want);
        assert_eq!(
            DiskInfo::default().json_request(),
            b"SetGuestDiskInfo {\n\"version\":\"1\",\n\"disks\":[\n]}\0"
        );
    }

    #[test]
    fn v0_is_packed_entries_after_a_count() {
        let info = DiskInfo {
            partitions: vec![part("/", 1, 2, "ext4", &[])],
        };
        let b = info.v0_request();
        let head = b"SetGuestInfo  3 ";
        assert_eq!(&b[..head.len()], head);
        assert_eq!(b[head.len()], 1);
        let e = &b[head.len() + 1..];
        assert_eq!(e.len(), 8 + 8 + PARTITION_NAME_SIZE);
        assert_eq!(&e[..8], &1u64.to_le_bytes());
        assert_eq!(&e[8..16], &2u64.to_le_bytes());
        assert_eq!(e[16], b'/');
        assert!(e[17..].iter().all(|&c| c == 0));
    }

    #[test]
    fn change_is_names_free_and_total() {
        let a = DiskInfo {
            partitions: vec![part("/", 1, 2, "ext4", &[])],
        };
        assert!(a.changed_from(None));
        assert!(!a.changed_from(Some(&a)));
        let mut b = a.clone();
        b.partitions[0].devices.push("scsi0:0".into());
        assert!(!b.changed_from(Some(&a)), "devices alone are not a change");
        b.partitions[0].free = 0;
        assert!(b.changed_from(Some(&a)));
        let mut c = a.clone();
        c.partitions[0].name = "/y".into();
        assert!(c.changed_from(Some(&a)));
    }

    #[test]
    fn mount_table_unescapes() {
        let m = parse_mounts("/dev/sda1 /mnt/my\\040disk ext4 rw 0 0\nproc /proc proc rw 0 0\n");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, "/mnt/my disk");
        assert_eq!(m[1].fs_type, "proc");
    }

    /// A sysfs-shaped tree: a PCI controller with `label` (and `class`), a device under it,
    /// and a block entry whose `device` link points there.
    fn fake_controller(
        root: &Path,
        pci: &str,
        label: Option<&str>,
        class: &str,
        dev: &str,
    ) -> PathBuf {
        let ctl = root.join("devices/pci0000:00").join(pci);
        let d = ctl.join(dev);
        std::fs::create_dir_all(&d).unwrap();
        if let Some(l) = label {
            std::fs::write(ctl.join("label"), format!("{l}\n")).unwrap();
        }
        std::fs::write(ctl.join("class"), format!("{class}\n")).unwrap();
        d
    }

    fn block(root: &Path, name: &str, device: &Path) -> PathBuf {
        let b = root.join("block").join(name);
        std::fs::create_dir_all(&b).unwrap();
        std::os::unix::fs::symlink(device, b.join("device")).unwrap();
        b
    }

    #[test]
    fn scsi_disks_are_named_by_the_controller_label_and_target() {
        let t = tempfile::tempdir().unwrap();
        let dev = fake_controller(
            t.path(),
            "0000:03:00.0",
            Some("SCSI1"),
            "0x010700",
            "host2/target2:0:3/2:0:3:0",
        );
        let sda = block(t.path(), "sda", &dev);
        assert_eq!(block_device_name(&sda).as_deref(), Some("SCSI1:3"));
        // A partition finds the disk's device one level up.
        let sda1 = sda.join("sda1");
        std::fs::create_dir_all(&sda1).unwrap();
        let mut names = Vec::new();
        assert!(block_device(&sda1, &mut names));
        assert_eq!(
            names,
            ["scsi1:3"],
            "lower-cased as GuestInfoAddDeviceName does"
        );
    }

    #[test]
    fn the_unlabelled_controller_in_slot_16_is_scsi0() {
        let t = tempfile::tempdir().unwrap();
        let dev = fake_controller(
            t.path(),
            "0000:00:10.0",
            None,
            "0x010000",
            "host0/target0:0:1/0:0:1:0",
        );
        let sdb = block(t.path(), "sdb", &dev);
        assert_eq!(block_device_name(&sdb).as_deref(), Some("scsi0:1"));
    }

    #[test]
    fn sata_units_count_the_ports_before_this_one() {
        let t = tempfile::tempdir().unwrap();
        let dev = fake_controller(
            t.path(),
            "0000:02:05.0",
            Some("sata0"),
            "0x010601",
            "ata3/host2/target2:0:0/2:0:0:0",
        );
        for port in ["ata1", "ata2", "ata4"] {
            std::fs::create_dir_all(t.path().join("devices/pci0000:00/0000:02:05.0").join(port))
                .unwrap();
        }
        let sdc = block(t.path(), "sdc", &dev);
        // The class is the controller's, above the ata3 port: ata1 and ata2 come before it.
        assert_eq!(block_device_name(&sdc).as_deref(), Some("sata0:2"));
    }

    #[test]
    fn nvme_units_are_the_namespace_less_one() {
        let t = tempfile::tempdir().unwrap();
        let dev = fake_controller(
            t.path(),
            "0000:0b:00.0",
            Some("nvme0"),
            "0x010802",
            "nvme/nvme0",
        );
        let ns = block(t.path(), "nvme0n2", &dev);
        std::fs::write(ns.join("nsid"), "2\n").unwrap();
        assert_eq!(block_device_name(&ns).as_deref(), Some("nvme0:1"));
    }

    #[test]
    fn a_disk_of_no_known_bus_has_no_name() {
        let t = tempfile::tempdir().unwrap();
        let dev = fake_controller(t.path(), "0000:00:04.0", None, "0x010000", "virtio2");
        let vda = block(t.path(), "vda", &dev);
        assert_eq!(block_device_name(&vda), None);
    }

    #[test]
    fn scsi_targets() {
        assert_eq!(
            scsi_target(Path::new("/x/target2:0:3/2:0:3:0")).as_deref(),
            Some("3")
        );
        assert_eq!(scsi_target(Path::new("/x/nvme0")), None);
    }
}
