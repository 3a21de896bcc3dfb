//! The server as an unprivileged user (the agent runs it in the authenticated user's
//! helper process): it can do what that user could from a shell, and no more. The test
//! runs itself again as `nobody` for the part that needs it.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use common::Client;
use toolbox_hgfs::proto::{
    OpenFlags, Status, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY, OPEN_MODE_WRITE_ONLY,
};
use toolbox_hgfs::{Server, ServerConfig};

const NOBODY: u32 = 65534;
const CHILD_DIR: &str = "HGFS_TEST_CHILD_DIR";

fn upload(c: &mut Client<'_>, path: &Path, data: &[u8]) -> Result<(), Status> {
    let h = c.open(
        path,
        OPEN_MODE_WRITE_ONLY,
        OpenFlags::OPEN_CREATE_EMPTY,
        None,
    )?;
    c.write(h, 0, data)?;
    match c.close(h) {
        Status::SUCCESS => Ok(()),
        s => Err(s),
    }
}

#[test]
fn an_unprivileged_user_gets_a_shells_rights() {
    if !nix::unistd::Uid::effective().is_root() {
        println!("SKIPPED: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    let shared = dir.path().join("shared");
    fs::create_dir(&home).unwrap();
    fs::create_dir(&shared).unwrap();
    std::os::unix::fs::chown(&home, Some(NOBODY), Some(NOBODY)).unwrap();
    for file in [home.join("doc"), shared.join("mine")] {
        fs::write(&file, b"old").unwrap();
        std::os::unix::fs::chown(&file, Some(NOBODY), Some(NOBODY)).unwrap();
    }
    fs::write(dir.path().join("secret"), b"root only").unwrap();
    fs::set_permissions(dir.path().join("secret"), fs::Permissions::from_mode(0o600)).unwrap();

    let status = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_as_nobody",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_DIR, dir.path())
        .uid(NOBODY)
        .gid(NOBODY)
        .status()
        .unwrap();
    assert!(status.success(), "the child's checks failed");

    // In the user's own directory the upload was staged and renamed: still theirs.
    assert_eq!(fs::read(home.join("doc")).unwrap(), b"new doc");
    assert_eq!(fs::metadata(home.join("doc")).unwrap().uid(), NOBODY);
    assert_eq!(
        fs::read_dir(&home).unwrap().count(),
        2,
        "doc and the new file, no temporary"
    );
    assert_eq!(fs::metadata(home.join("created")).unwrap().uid(), NOBODY);
    // In root's directory their own file was written in place; nothing new appeared.
    assert_eq!(fs::read(shared.join("mine")).unwrap(), b"new mine");
    assert_eq!(fs::read_dir(&shared).unwrap().count(), 1);
    assert_eq!(fs::read(dir.path().join("secret")).unwrap(), b"root only");
}

#[test]
#[ignore = "run by an_unprivileged_user_gets_a_shells_rights as nobody"]
fn child_as_nobody() {
    let dir =
        std::path::PathBuf::from(std::env::var_os(CHILD_DIR).expect("started by the parent test"));
    assert_eq!(nix::unistd::Uid::effective().as_raw(), NOBODY);
    let mut server = Server::new(ServerConfig::default());
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    assert_eq!(upload(&mut c, &dir.join("home/doc"), b"new doc"), Ok(()));
    assert_eq!(
        upload(&mut c, &dir.join("home/created"), b"created"),
        Ok(())
    );
    assert_eq!(
        upload(&mut c, &dir.join("shared/mine"), b"new mine"),
        Ok(())
    );
    assert_eq!(
        upload(&mut c, &dir.join("shared/new"), b"x"),
        Err(Status::ACCESS_DENIED)
    );
    assert_eq!(
        upload(&mut c, &dir.join("secret"), b"x"),
        Err(Status::ACCESS_DENIED)
    );
    assert_eq!(
        c.open(
            &dir.join("secret"),
            OPEN_MODE_READ_ONLY,
            OpenFlags::OPEN,
            None
        ),
        Err(Status::ACCESS_DENIED)
    );
}
