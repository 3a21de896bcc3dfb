//! Disk info against this machine's own mounts: what `gather` finds is what `findmnt` lists for
//! the filesystem types vmtoolsd reports, with statvfs's sizes; the agent sends it, the
//! simulator decodes it (JSON, or the binary form when the JSON is refused), and
//! `vmx-sim guest.df` prints it as govc does.

mod util;

use std::process::Command;
use std::time::Duration;
use toolbox::guestinfo::disk::{self, SUPPORTED_FS};
use toolbox::sim::Faults;
use util::*;

/// (target, fstype, size, avail) of the supported filesystems, as findmnt sees them.
fn findmnt() -> Vec<(String, String, u64, u64)> {
    let out = Command::new("findmnt")
        .args(["-rn", "-b", "--kernel", "-o", "TARGET,FSTYPE,SIZE,AVAIL"])
        .output()
        .expect("findmnt (util-linux) runs");
    assert!(out.status.success(), "{out:?}");
    let mut v: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let [t, fs, size, avail] = f[..] else {
                return None;
            };
            SUPPORTED_FS.contains(&fs).then(|| {
                (
                    t.replace("\\x20", " "),
                    fs.to_string(),
                    size.parse().unwrap_or(0),
                    avail.parse().unwrap_or(0),
                )
            })
        })
        .collect();
    v.sort();
    v
}

/// Free space moves while the machine works; sizes must match exactly.
const FREE_SLACK: u64 = 256 << 20;

#[test]
fn gather_matches_findmnt_and_statvfs() {
    let info = disk::gather(true);
    let mut ours: Vec<_> = info
        .partitions
        .iter()
        .map(|p| (p.name.clone(), p.fs_type.clone(), p.total, p.free))
        .collect();
    ours.sort();
    let theirs = findmnt();
    assert_eq!(
        ours.len(),
        theirs.len(),
        "ours {ours:?}\nfindmnt {theirs:?}"
    );
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!((&o.0, &o.1, o.2), (&t.0, &t.1, t.2), "name, type, size");
        assert!(o.3.abs_diff(t.3) <= FREE_SLACK, "free {o:?} vs {t:?}");
        let st = nix::sys::statvfs::statvfs(o.0.as_str()).unwrap();
        assert_eq!(o.2, st.blocks() * st.fragment_size());
    }
    for p in &info.partitions {
        for d in &p.devices {
            assert!(
                d.len() < disk::DISK_DEVICE_NAME_SIZE && d.contains(':'),
                "device names look like scsi0:0: {d}"
            );
        }
    }
}

async fn agent_disks(refuse_json: bool) -> toolbox::sim::GuestReport {
    let dir = TempDir::new(if refuse_json { "disk-v0" } else { "disk-json" });
    let sim = sim(&dir).await;
    if refuse_json {
        sim.set_faults(Faults {
            refuse: vec!["SetGuestDiskInfo".into()],
            ..Faults::default()
        });
    }
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    let r = sim
        .wait_for(Duration::from_secs(10), |r| r.disk_info_updates > 0)
        .await
        .unwrap_or_else(|r| panic!("no disk info: {r:#?}"));
    let df = Command::new(env!("CARGO_BIN_EXE_vmx-sim"))
        .args(["--dir", &sim.dir().display().to_string(), "guest.df"])
        .output()
        .unwrap();
    assert!(df.status.success(), "{df:?}");
    let text = String::from_utf8_lossy(&df.stdout);
    let mut lines = text.lines();
    assert!(lines.next().unwrap().starts_with("Filesystem  "));
    assert_eq!(lines.count(), r.disks.len(), "{text}");

    // A reader who stops early (`| grep -q`) leaves the answer unread: not a panic, not a failure.
    let mut closed = Command::new(env!("CARGO_BIN_EXE_vmx-sim"))
        .args(["--dir", &sim.dir().display().to_string(), "guest.df"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(closed.stdout.take());
    let closed = closed.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&closed.stderr);
    assert!(closed.status.success() && stderr.is_empty(), "{closed:?}");
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_sends_disk_info_as_json() {
    let r = agent_disks(false).await;
    assert_eq!(r.disk_info_form.as_deref(), Some("json"));
    let mut paths: Vec<_> = r.disks.iter().map(|d| d.path.clone()).collect();
    paths.sort();
    let want: Vec<_> = findmnt().into_iter().map(|m| m.0).collect();
    assert_eq!(paths, want);
    assert!(r.disks.iter().all(|d| d.fs_type.is_some()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vmx_refusing_json_gets_the_binary_form() {
    let r = agent_disks(true).await;
    assert_eq!(r.disk_info_form.as_deref(), Some("binary"));
    assert_eq!(r.disks.len(), findmnt().len());
    assert!(r
        .disks
        .iter()
        .all(|d| d.fs_type.is_none() && d.capacity > 0));
}
