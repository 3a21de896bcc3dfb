//! Process streams through the real HGFS server, packets built as the VMX builds them: the
//! [`ProcessFiles`] handler registered in front of plain files, as the helper registers it.

#[path = "../hgfs/tests/common/mod.rs"]
mod hgfs_client;

use hgfs_client::Client;
use std::path::PathBuf;
use std::time::Duration;
use toolbox::process::{FunctionRegistry, ManagerConfig, ProcessFiles, ProcessManager};
use toolbox::vix::proto::StartProgramRequest;
use toolbox_hgfs::proto::{
    OpenFlags, Status, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY,
};
use toolbox_hgfs::{Server, ServerConfig};

#[test]
fn stdin_and_stdout_over_hgfs_packets() {
    let manager = ProcessManager::new(ManagerConfig::default(), FunctionRegistry::new());
    let mut server = Server::new(ServerConfig::default());
    server.register_handler(Box::new(ProcessFiles::new(manager.clone())));
    let pid = manager
        .start(&StartProgramRequest {
            start_minimized: false,
            program: "tr".into(),
            arguments: "a-z A-Z".into(),
            working_dir: String::new(),
            env: Vec::new(),
        })
        .unwrap();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let stdin = PathBuf::from(format!("/proc/{pid}/stdin"));
    let stdout = PathBuf::from(format!("/proc/{pid}/stdout"));
    assert_eq!(
        c.open(&stdout, OPEN_MODE_WRITE_ONLY, OpenFlags::OPEN, None),
        Err(Status::ACCESS_DENIED),
        "stdout is read-only"
    );
    let h = c
        .open(&stdin, OPEN_MODE_WRITE_ONLY, OpenFlags::OPEN, None)
        .expect("open stdin");
    let data = b"through the hgfs server\n".repeat(10_000);
    c.write_from(h, 0, &data);
    assert_eq!(c.close(h), Status::SUCCESS);
    let h = c
        .open(&stdout, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None)
        .expect("open stdout");
    let mut out = Vec::new();
    loop {
        match c.read(h, out.len() as u64, 61_440) {
            Ok(chunk) if chunk.is_empty() => break,
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(s) => panic!("read: {s:?}"),
        }
    }
    assert_eq!(c.close(h), Status::SUCCESS);
    assert_eq!(out, data.to_ascii_uppercase());
    assert_eq!(manager.wait(pid, Duration::from_secs(30)), Some(0));
    // A real /proc file is still served by plain files.
    let h = c
        .open(
            &PathBuf::from(format!("/proc/{}/stat", std::process::id())),
            OPEN_MODE_READ_ONLY,
            OpenFlags::OPEN,
            None,
        )
        .expect("plain /proc file");
    assert!(!c.read(h, 0, 4096).unwrap().is_empty());
}
