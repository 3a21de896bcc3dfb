//! The VMX's side of disk info: the `SetGuestDiskInfo` JSON (guestInfoServer.c's
//! `GuestInfoSendDiskInfoV1`) and the binary `SetGuestInfo  3` partition list
//! (`GuestInfoSendDiskInfoV0`), decoded into what vSphere shows as `guest.disk`, and
//! `govc guest.df`'s table of it.

use crate::guestinfo::disk::{DISK_INFO_VERSION_1, PARTITION_NAME_SIZE};
use serde::{Deserialize, Serialize};

/// One filesystem as the host shows it (`GuestDiskInfo`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskView {
    /// `diskPath`: the mount point.
    pub path: String,
    /// `capacity`, bytes.
    pub capacity: u64,
    /// `freeSpace`, bytes.
    pub free: u64,
    /// `filesystemType`, when sent.
    pub fs_type: Option<String>,
    /// The virtual disks under it, e.g. `scsi0:0`.
    pub devices: Vec<String>,
}

/// Filesystems one report may carry: the JSON form has no count limit of its own, so this
/// bounds what a guest can make the host keep (the binary form's count byte allows 255).
pub const MAX_DISKS: usize = 4096;
/// Devices per filesystem, at most.
pub const MAX_DEVICES: usize = 256;

/// What is wrong with a disk report.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DiskInfoError {
    /// Not JSON of the expected shape.
    #[error("disk info JSON: {0}")]
    Json(String),
    /// A version this VMX does not know.
    #[error("disk info version {0:?} unsupported")]
    Version(String),
    /// A field is missing or malformed.
    #[error("disk info entry {index}: {what}")]
    Entry {
        /// Which disk.
        index: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// More entries than allowed.
    #[error("disk info: more than {MAX_DISKS} filesystems or {MAX_DEVICES} devices")]
    TooMany,
    /// The binary form is shorter than its count says.
    #[error("binary disk info: {have} bytes, {count} entries need {need}")]
    Short {
        /// Entries announced.
        count: usize,
        /// Bytes needed.
        need: usize,
        /// Bytes given.
        have: usize,
    },
}

#[derive(Deserialize)]
struct JsonReport {
    version: String,
    disks: Vec<JsonDisk>,
}

#[derive(Deserialize)]
struct JsonDisk {
    name: String,
    free: String,
    size: String,
    fstype: Option<String>,
    #[serde(default)]
    devices: Vec<String>,
}

/// Decodes the text after `SetGuestDiskInfo ` (its terminator, if any, removed).
pub fn decode_json(text: &[u8]) -> Result<Vec<DiskView>, DiskInfoError> {
    use base64::Engine;
    let r: JsonReport =
        serde_json::from_slice(text).map_err(|e| DiskInfoError::Json(e.to_string()))?;
    if r.version != DISK_INFO_VERSION_1.to_string() {
        return Err(DiskInfoError::Version(r.version));
    }
    if r.disks.len() > MAX_DISKS {
        return Err(DiskInfoError::TooMany);
    }
    r.disks
        .into_iter()
        .enumerate()
        .map(|(index, d)| {
            let bad = |what| DiskInfoError::Entry { index, what };
            let name = base64::engine::general_purpose::STANDARD
                .decode(d.name.as_bytes())
                .map_err(|_| bad("name is not base64"))?;
            if d.devices.len() > MAX_DEVICES {
                return Err(DiskInfoError::TooMany);
            }
            Ok(DiskView {
                path: String::from_utf8_lossy(&name).into_owned(),
                free: d.free.parse().map_err(|_| bad("free is not a number"))?,
                capacity: d.size.parse().map_err(|_| bad("size is not a number"))?,
                fs_type: d.fstype,
                devices: d.devices,
            })
        })
        .collect()
}

/// One packed `PartitionEntry`: u64 free, u64 total, the NUL-padded name.
const V0_ENTRY: usize = 8 + 8 + PARTITION_NAME_SIZE;

/// Decodes the data after `SetGuestInfo  3 `: a count byte and that many entries.
pub fn decode_v0(data: &[u8]) -> Result<Vec<DiskView>, DiskInfoError> {
    let Some((&count, rest)) = data.split_first() else {
        return Err(DiskInfoError::Short {
            count: 0,
            need: 1,
            have: 0,
        });
    };
    let count = usize::from(count);
    let need = count * V0_ENTRY;
    if rest.len() < need {
        return Err(DiskInfoError::Short {
            count,
            need: need + 1,
            have: data.len(),
        });
    }
    Ok(rest[..need]
        .chunks_exact(V0_ENTRY)
        .map(|e| {
            let u = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
            let name = &e[16..];
            let end = name.iter().position(|&c| c == 0).unwrap_or(name.len());
            DiskView {
                path: String::from_utf8_lossy(&name[..end]).into_owned(),
                free: u(&e[..8]),
                capacity: u(&e[8..16]),
                fs_type: None,
                devices: Vec::new(),
            }
        })
        .collect())
}

/// govmomi's `units.ByteSize` text.
pub fn byte_size(b: u64) -> String {
    const UNITS: [(&str, u64); 6] = [
        ("EB", 1 << 60),
        ("PB", 1 << 50),
        ("TB", 1 << 40),
        ("GB", 1 << 30),
        ("MB", 1 << 20),
        ("KB", 1 << 10),
    ];
    for (name, size) in UNITS {
        if b >= size {
            return format!("{:.1}{name}", b as f32 / size as f32);
        }
    }
    format!("{b}B")
}

/// The table `govc guest.df` prints (a tabwriter with padding 2; the last column unpadded).
pub fn df_table(disks: &[DiskView]) -> String {
    let mut rows = vec![[
        "Filesystem".to_string(),
        "Size".into(),
        "Used".into(),
        "Avail".into(),
        "Use%".into(),
    ]];
    for d in disks {
        let used = d.capacity.saturating_sub(d.free);
        let pct = if d.capacity == 0 {
            // Go's float division gives NaN here.
            "NaN%".to_string()
        } else {
            format!("{:.0}%", 100.0 * used as f32 / d.capacity as f32)
        };
        rows.push([
            d.path.clone(),
            byte_size(d.capacity),
            byte_size(used),
            byte_size(d.free),
            pct,
        ]);
    }
    let mut widths = [0usize; 4];
    for r in &rows {
        for (w, c) in widths.iter_mut().zip(r.iter()) {
            *w = (*w).max(c.chars().count() + 2);
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (c, w) in r[..4].iter().zip(widths) {
            out.push_str(c);
            out.extend(std::iter::repeat_n(' ', w - c.chars().count()));
        }
        out.push_str(&r[4]);
        out.push('\n');
    }
    out
}

/// Fuzzing entry: both decoders on arbitrary bytes.
#[doc(hidden)]
pub fn fuzz_decode(data: &[u8]) {
    let _ = decode_json(data);
    let _ = decode_v0(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guestinfo::disk::{DiskInfo, Partition};
    use proptest::prelude::*;

    fn sample() -> DiskInfo {
        DiskInfo {
            partitions: vec![
                Partition {
                    name: "/".into(),
                    free: 1 << 30,
                    total: 4 << 30,
                    fs_type: "ext4".into(),
                    devices: vec!["scsi0:0".into()],
                },
                Partition {
                    name: "/my \"data\"".into(),
                    free: 0,
                    total: 1000,
                    fs_type: String::new(),
                    devices: vec![],
                },
            ],
        }
    }

    #[test]
    fn json_round_trips() {
        let req = sample().json_request();
        let body = req
            .strip_prefix(b"SetGuestDiskInfo ")
            .and_then(|b| b.strip_suffix(b"\0"))
            .unwrap();
        let d = decode_json(body).unwrap();
        assert_eq!(d[0].path, "/");
        assert_eq!((d[0].free, d[0].capacity), (1 << 30, 4 << 30));
        assert_eq!(d[0].fs_type.as_deref(), Some("ext4"));
        assert_eq!(d[0].devices, ["scsi0:0"]);
        assert_eq!(d[1].path, "/my \"data\"");
        assert_eq!(d[1].fs_type, None);
    }

    #[test]
    fn v0_round_trips_and_rejects_short() {
        let req = sample().v0_request();
        let data = req.strip_prefix(b"SetGuestInfo  3 ").unwrap();
        let d = decode_v0(data).unwrap();
        assert_eq!(d.len(), 2);
        assert_eq!(d[1].path, "/my \"data\"");
        assert_eq!(d[1].capacity, 1000);
        assert!(matches!(
            decode_v0(&data[..data.len() - 1]),
            Err(DiskInfoError::Short { .. })
        ));
    }

    #[test]
    fn df_is_govcs_table() {
        let d = decode_json(
            br#"{"version":"1","disks":[{"name":"Lw==","free":"1073741824","size":"4294967296"}]}"#,
        )
        .unwrap();
        assert_eq!(
            df_table(&d),
            "Filesystem  Size   Used   Avail  Use%\n/           4.0GB  3.0GB  1.0GB  75%\n"
        );
        assert_eq!(byte_size(512), "512B");
    }

    proptest! {
        #[test]
        fn decoders_take_any_bytes(b in proptest::collection::vec(any::<u8>(), 0..600)) {
            fuzz_decode(&b);
        }

        #[test]
        fn json_decodes_what_is_encoded(free in any::<u64>(), total in any::<u64>(), name in "[ -~]{1,40}") {
            let info = DiskInfo { partitions: vec![Partition { name: name.clone(), free, total, fs_type: "xfs".into(), devices: vec![] }] };
            let req = info.json_request();
            let body = &req["SetGuestDiskInfo ".len()..req.len() - 1];
            let d = decode_json(body).unwrap();
            prop_assert_eq!(&d[0].path, &name);
            prop_assert_eq!((d[0].free, d[0].capacity), (free, total));
        }
    }
}
