//! HGFS read and write throughput in process, 61 440-byte requests as the VMX sends them,
//! over the benchmark tree (2 000 files, 200 MiB) that `gen_tree.py` makes; beside each
//! figure the same run's plain pread/pwrite of the same files in the same sizes.
//!
//! Usage: `GEN_TREE=path/to/gen_tree.py cargo bench -p toolbox-hgfs --bench hgfs`
//! (optionally `HGFS_BENCH_ROUNDS=N`, default 3, the best round of each is reported; and
//! `HGFS_BENCH_DIR=DIR` for where the tree and the written copies go, e.g. a tmpfs to
//! measure the server rather than the disk's writeback).

#[path = "../tests/common/mod.rs"]
mod common;

use std::fs::{self, File};
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::Client;
use toolbox_hgfs::proto::{
    self, encode, parse_reply, Op, OpenFlags, RequestReadV3, Status, LARGE_PACKET_MAX,
    OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY,
};
use toolbox_hgfs::{Server, ServerConfig};

/// The request size of guest-operation transfers (the figures in the issue use it).
const CHUNK: usize = 61_440;
/// Where a read V3 request's offset sits in its packet: after the header and the handle.
const OFFSET_AT: usize = proto::HEADER_SIZE + 4;

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read tree")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn mb_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64() / 1e6
}

fn hgfs_read_all(files: &[PathBuf]) -> (u64, Duration) {
    let mut server = Server::new(ServerConfig::default());
    let mut client = Client::connect(&mut server, LARGE_PACKET_MAX);
    let mut total = 0u64;
    let start = Instant::now();
    for path in files {
        let handle = client
            .open(path, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None)
            .expect("open");
        let mut offset = 0u64;
        // One request packet per file, its offset patched in place: a carrier receives
        // into a reused buffer too.
        let body = encode(&RequestReadV3 {
            handle,
            offset,
            required_size: CHUNK as u32,
            reserved: 0,
        });
        let mut packet = proto::encode_request(1, Op::READ_V3, client.session, &body);
        loop {
            packet[OFFSET_AT..OFFSET_AT + 8].copy_from_slice(&offset.to_le_bytes());
            let reply = client.server.handle_packet(&packet);
            let (header, payload) = parse_reply(reply).expect("reply");
            assert_eq!(header.status, Status::SUCCESS);
            let (_, data) = proto::decode_read_v3_reply(payload).expect("read reply");
            black_box(data);
            offset += data.len() as u64;
            if data.len() < CHUNK {
                break;
            }
        }
        total += offset;
        assert_eq!(client.close(handle), Status::SUCCESS);
    }
    (total, start.elapsed())
}

fn plain_read_all(files: &[PathBuf]) -> (u64, Duration) {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    let start = Instant::now();
    for path in files {
        let file = File::open(path).expect("open");
        let mut offset = 0u64;
        loop {
            let n = file.read_at(&mut buf, offset).expect("pread");
            black_box(&buf[..n]);
            offset += n as u64;
            if n < CHUNK {
                break;
            }
        }
        total += offset;
    }
    (total, start.elapsed())
}

fn hgfs_write_all(contents: &[Vec<u8>], dest: &Path) -> (u64, Duration) {
    let mut server = Server::new(ServerConfig::default());
    let mut client = Client::connect(&mut server, LARGE_PACKET_MAX);
    let mut total = 0u64;
    let start = Instant::now();
    for (i, data) in contents.iter().enumerate() {
        let path = dest.join(format!("f{i:04}"));
        let handle = client
            .open(
                &path,
                OPEN_MODE_WRITE_ONLY,
                OpenFlags::OPEN_CREATE_EMPTY,
                None,
            )
            .expect("open");
        for (j, chunk) in data.chunks(CHUNK).enumerate() {
            client.write_from(handle, (j * CHUNK) as u64, chunk);
        }
        assert_eq!(client.close(handle), Status::SUCCESS);
        total += data.len() as u64;
    }
    (total, start.elapsed())
}

fn plain_write_all(contents: &[Vec<u8>], dest: &Path) -> (u64, Duration) {
    let mut total = 0u64;
    let start = Instant::now();
    for (i, data) in contents.iter().enumerate() {
        let file = File::create(dest.join(format!("f{i:04}"))).expect("create");
        for (j, chunk) in data.chunks(CHUNK).enumerate() {
            file.write_all_at(chunk, (j * CHUNK) as u64)
                .expect("pwrite");
        }
        total += data.len() as u64;
    }
    (total, start.elapsed())
}

fn fresh_dir(path: &Path) {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path).expect("destination");
}

fn main() {
    let Some(script) = std::env::var_os("GEN_TREE") else {
        println!("hgfs bench: SKIPPED: set GEN_TREE to the path of gen_tree.py (the benchmark tree generator)");
        return;
    };
    let rounds: usize = std::env::var("HGFS_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let work = match std::env::var_os("HGFS_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir),
        None => tempfile::tempdir(),
    }
    .expect("temporary directory");
    let tree = work.path().join("tree");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&tree)
        .output()
        .expect("run gen_tree.py");
    assert!(
        out.status.success(),
        "gen_tree.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    print!("hgfs bench: {}", String::from_utf8_lossy(&out.stdout));

    let mut files = Vec::new();
    files_under(&tree, &mut files);
    let contents: Vec<Vec<u8>> = files
        .iter()
        .map(|p| fs::read(p).expect("read tree file"))
        .collect();
    let bytes: u64 = contents.iter().map(|c| c.len() as u64).sum();
    println!(
        "hgfs bench: {} files, {} bytes, {CHUNK}-byte requests, best of {rounds} rounds",
        files.len(),
        bytes
    );

    let best = |runs: &mut Vec<f64>| runs.iter().cloned().fold(0.0, f64::max);
    let (mut hr, mut pr, mut hw, mut pw) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let hgfs_dest = work.path().join("hgfs-dest");
    let plain_dest = work.path().join("plain-dest");
    for round in 0..rounds {
        // Alternate which goes first, so neither systematically inherits a warmer cache
        // or the other's dirty pages still being written back.
        let hgfs_first = round % 2 == 1;
        for hgfs in [hgfs_first, !hgfs_first] {
            if hgfs {
                let (b, t) = hgfs_read_all(&files);
                hr.push(mb_per_s(b, t));
            } else {
                let (b, t) = plain_read_all(&files);
                pr.push(mb_per_s(b, t));
            }
        }
        for hgfs in [hgfs_first, !hgfs_first] {
            if hgfs {
                fresh_dir(&hgfs_dest);
                let (b, t) = hgfs_write_all(&contents, &hgfs_dest);
                hw.push(mb_per_s(b, t));
            } else {
                fresh_dir(&plain_dest);
                let (b, t) = plain_write_all(&contents, &plain_dest);
                pw.push(mb_per_s(b, t));
            }
        }
    }
    // The uploads landed whole.
    for (i, data) in contents.iter().enumerate().step_by(97) {
        assert_eq!(
            &fs::read(hgfs_dest.join(format!("f{i:04}"))).expect("uploaded file"),
            data
        );
    }
    let (hr, pr, hw, pw) = (best(&mut hr), best(&mut pr), best(&mut hw), best(&mut pw));
    println!(
        "hgfs read   {hr:8.0} MB/s   (plain pread  {pr:8.0} MB/s, same run)   {:5.1} %",
        100.0 * hr / pr
    );
    println!(
        "hgfs write  {hw:8.0} MB/s   (plain pwrite {pw:8.0} MB/s, same run)   {:5.1} %",
        100.0 * hw / pw
    );
}
