//! HGFS over the TCLO `f` command, as the VMX sends it: the real `toolbox run` on unix:DIR,
//! packets encoded by the HGFS client, files checked on disk.

mod util;

use sha2::{Digest, Sha256};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use toolbox::sim::Sim;
use toolbox_hgfs::client::{Client, ClientError, Request, TRANSFER_CHUNK};
use toolbox_hgfs::proto::{
    OpenFlags, Status, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY,
};
use util::*;

const SEC: Duration = Duration::from_secs(1);

/// Sends `f <packet>`; the reply packet, which must come with `OK `.
async fn f(sim: &Sim, packet: &[u8]) -> Vec<u8> {
    let reply = f_raw(sim, packet).await;
    match reply.strip_prefix(b"OK ") {
        Some(r) => r.to_vec(),
        None => panic!("f refused: {}", String::from_utf8_lossy(&reply)),
    }
}

async fn f_raw(sim: &Sim, packet: &[u8]) -> Vec<u8> {
    let request = [&b"f "[..], packet].concat();
    sim.tclo(&request, 10 * SEC).await.expect("f command")
}

async fn ask(sim: &Sim, r: &Request) -> Vec<u8> {
    f(sim, &r.packet).await
}

/// Bytes that do not repeat within a packet.
fn pattern(len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|x| (x.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as u8)
        .collect()
}

async fn session(sim: &Sim, packet_size: u32) -> Client {
    let mut hgfs = Client::new();
    let r = hgfs.create_session(packet_size);
    let reply = ask(sim, &r).await;
    hgfs.accept_session(&r, &reply).unwrap();
    hgfs
}

async fn write_file(sim: &Sim, hgfs: &mut Client, path: &str, data: &[u8], chunk: usize) {
    let r = hgfs.open(
        path.as_bytes(),
        OPEN_MODE_WRITE_ONLY,
        OpenFlags::OPEN_CREATE_EMPTY,
        Some(0o640),
    );
    let handle = hgfs.opened(&r, &ask(sim, &r).await).unwrap();
    for (i, piece) in data.chunks(chunk).enumerate() {
        let r = hgfs.write(handle, (i * chunk) as u64, piece);
        let written = hgfs.written(&r, &ask(sim, &r).await).unwrap();
        assert_eq!(written as usize, piece.len());
    }
    let r = hgfs.close(handle);
    hgfs.done(&r, &ask(sim, &r).await).unwrap();
}

async fn read_file(sim: &Sim, hgfs: &mut Client, path: &str, chunk: u32) -> Vec<u8> {
    let r = hgfs.open(path.as_bytes(), OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None);
    let handle = hgfs.opened(&r, &ask(sim, &r).await).unwrap();
    let mut data = Vec::new();
    loop {
        let r = hgfs.read(handle, data.len() as u64, chunk);
        let reply = ask(sim, &r).await;
        let got = hgfs.read_data(&r, &reply, chunk).unwrap();
        if got.is_empty() {
            break;
        }
        data.extend_from_slice(got);
    }
    let r = hgfs.close(handle);
    hgfs.done(&r, &ask(sim, &r).await).unwrap();
    data
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_written_and_read_over_f_as_the_agents_user_in_both_packet_sizes() {
    let dir = TempDir::new("hgfs-f");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    sim.wait_for(30 * SEC, |r| {
        r.capabilities.iter().any(|c| c == "hgfs_server toolbox 1")
    })
    .await
    .expect("the HGFS capability");

    // 3 MiB and a bit in the VMX's 61 440-byte pieces, in the small default session.
    let data = pattern(3 * 1024 * 1024 + 4321);
    let path = dir.path().join("over-f.bin");
    let name = path.to_str().unwrap();
    let mut hgfs = session(&sim, LARGE_PACKET_MAX).await;
    write_file(&sim, &mut hgfs, name, &data, TRANSFER_CHUNK as usize).await;
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), data.len() as u64);
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert_eq!(
        meta.uid(),
        nix::unistd::geteuid().as_raw(),
        "the agent's own user"
    );
    assert_eq!(
        Sha256::digest(std::fs::read(&path).unwrap()),
        Sha256::digest(&data)
    );
    let back = read_file(&sim, &mut hgfs, name, TRANSFER_CHUNK).await;
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));

    // Whole large packets (half a megabyte a reply, more than the socket buffer holds).
    let big = LARGE_PACKET_MAX - 2048;
    let back = read_file(&sim, &mut hgfs, name, big).await;
    assert_eq!(Sha256::digest(&back), Sha256::digest(&data));
    let path2 = dir.path().join("large-packets.bin");
    write_file(
        &sim,
        &mut hgfs,
        path2.to_str().unwrap(),
        &data,
        big as usize,
    )
    .await;
    assert_eq!(std::fs::read(&path2).unwrap(), data);

    // After the session is gone, its handles and id are stale.
    let r = hgfs.open(name.as_bytes(), OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None);
    let stale_open = r.clone();
    let d = hgfs.destroy_session();
    hgfs.done(&d, &ask(&sim, &d).await).unwrap();
    match hgfs.opened(&stale_open, &ask(&sim, &stale_open).await) {
        Err(ClientError::Status { status, .. }) => assert_eq!(status, Status::STALE_SESSION),
        other => panic!("an open on a destroyed session: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_f_packets_get_errors_and_the_agent_serves_on() {
    let dir = TempDir::new("hgfs-f-bad");
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), QUIET_CONFIG);
    tools_running(&sim).await;

    // No packet at all: refused as vmtoolsd refuses it.
    assert_eq!(
        sim.tclo(b"f", 5 * SEC).await.unwrap(),
        b"ERROR 1 argument required"
    );
    // Garbage and truncated headers: an HGFS error reply, never a dropped channel.
    let mut hgfs = session(&sim, LARGE_PACKET_MAX).await;
    let missing = dir.path().join("missing");
    let r = hgfs.open(
        missing.to_str().unwrap().as_bytes(),
        OPEN_MODE_READ_ONLY,
        OpenFlags::OPEN,
        None,
    );
    for cut in [1, 7, 20, r.packet.len() - 1] {
        let reply = f(&sim, &r.packet[..cut]).await;
        assert!(!reply.is_empty(), "a reply to a packet cut at {cut}");
    }
    let reply = f(&sim, &[0xff; 300]).await;
    assert!(!reply.is_empty());
    // A missing file is its status; the session still works after all that.
    match hgfs.opened(&r, &ask(&sim, &r).await) {
        Err(ClientError::Status { status, .. }) => {
            assert_eq!(status, Status::NO_SUCH_FILE_OR_DIR)
        }
        other => panic!("opening a missing file: {other:?}"),
    }
    let ok = dir.write("present", "twelve bytes");
    let back = read_file(&sim, &mut hgfs, ok.to_str().unwrap(), TRANSFER_CHUNK).await;
    assert_eq!(back, b"twelve bytes");
    assert_eq!(sim.tclo(b"ping", 5 * SEC).await.unwrap(), b"OK ");
}
