//! The server against real files in a temporary directory, driven through packets as the
//! VMX sends them.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{name_v2, name_v3, Client};
use toolbox_hgfs::proto::{
    self, attr_valid, decode_search_read_v3, encode, AttrV2, Op, OpenFlags, ReplyGetattrV2,
    ReplyGetattrV3, ReplyOpen, ReplyQueryVolumeV3, ReplySearchOpenV3, RequestCreateDirV3,
    RequestCreateSessionV4, RequestDeleteV3, RequestGetattrV2, RequestGetattrV3, RequestOpen,
    RequestQueryVolumeV3, RequestRenameV3, RequestSearchCloseV3, RequestSearchOpenV3,
    RequestSearchReadV3, RequestSetattrV2, Reserved, Status, FILE_NAME_USE_FILE_DESC,
    FILE_TYPE_DIRECTORY, FILE_TYPE_REGULAR, LARGE_PACKET_MAX, OPEN_MODE_READ_ONLY,
    OPEN_MODE_WRITE_ONLY, RENAME_HINT_NO_REPLACE_EXISTING,
};
use toolbox_hgfs::{Server, ServerConfig};

fn server() -> Server {
    Server::new(ServerConfig::default())
}

/// Names in `dir` other than those given.
fn leftovers(dir: &Path, expected: &[&str]) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !expected.contains(&n.as_str()))
        .collect();
    names.sort();
    names
}

#[test]
fn session_packet_size_is_the_smaller_of_both_sides() {
    let mut server = server();
    assert_eq!(
        Client::connect(&mut server, 0x7f800).max_packet_size,
        LARGE_PACKET_MAX
    );
    assert_eq!(Client::connect(&mut server, 8192).max_packet_size, 8192);
    assert_eq!(server.session_count(), 2);
}

#[test]
fn upload_then_download_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);

    let h = c
        .open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            Some(0o640),
        )
        .unwrap();
    for (i, chunk) in data.chunks(61_440).enumerate() {
        assert_eq!(
            c.write(h, (i * 61_440) as u64, chunk).unwrap() as usize,
            chunk.len()
        );
    }
    // Nothing is visible under the target's name before the close.
    assert!(!path.exists());
    assert_eq!(c.close(h), Status::SUCCESS);
    assert_eq!(fs::read(&path).unwrap(), data);
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o640 & !umask()
    );
    assert_eq!(leftovers(dir.path(), &["blob.bin"]), Vec::<String>::new());

    let h = c
        .open(&path, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None)
        .unwrap();
    let mut back = Vec::new();
    loop {
        let chunk = c.read(h, back.len() as u64, 61_440).unwrap();
        if chunk.is_empty() {
            break;
        }
        back.extend_from_slice(&chunk);
    }
    assert_eq!(back, data);
    assert_eq!(c.close(h), Status::SUCCESS);
    assert_eq!(c.close(h), Status::INVALID_HANDLE);
}

fn umask() -> u32 {
    let dir = tempfile::tempdir().unwrap();
    let probe = dir.path().join("probe");
    fs::DirBuilder::new().create(&probe).unwrap();
    !fs::metadata(&probe).unwrap().permissions().mode() & 0o777
}

#[test]
fn read_never_exceeds_the_negotiated_packet() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big");
    fs::write(&path, vec![5u8; 100_000]).unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, 8192);
    let h = c
        .open(&path, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None)
        .unwrap();
    let got = c.read(h, 0, 61_440).unwrap();
    // Header (52) and read reply head (12) share the 8192 bytes.
    assert_eq!(got.len(), 8192 - 52 - 12);
}

#[test]
fn cut_upload_keeps_the_old_file_and_leaves_no_temporary() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.txt");
    fs::write(&path, b"old content").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let mut server = server();
    {
        let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
        let h = c
            .open(
                &path,
                OPEN_MODE_WRITE_ONLY,
                OpenFlags::OPEN_CREATE_EMPTY,
                None,
            )
            .unwrap();
        c.write(h, 0, b"new cont").unwrap();
        assert_eq!(
            leftovers(dir.path(), &["config.txt"]).len(),
            1,
            "the temporary exists meanwhile"
        );
        // The VMX gives up: the session goes without a close.
        assert_eq!(
            c.call(Op::DESTROY_SESSION_V4, &encode(&Reserved::default()))
                .status(),
            Status::SUCCESS
        );
    }
    assert_eq!(fs::read(&path).unwrap(), b"old content");
    assert_eq!(leftovers(dir.path(), &["config.txt"]), Vec::<String>::new());

    // The same when the whole server goes away mid-transfer.
    {
        let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
        let h = c
            .open(&path, OPEN_MODE_WRITE_ONLY, OpenFlags::OPEN_EMPTY, None)
            .unwrap();
        c.write(h, 0, b"partial").unwrap();
    }
    drop(server);
    assert_eq!(fs::read(&path).unwrap(), b"old content");
    assert_eq!(leftovers(dir.path(), &["config.txt"]), Vec::<String>::new());
}

#[test]
fn finished_upload_replaces_and_keeps_the_mode() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("script.sh");
    fs::write(&path, b"old").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o751)).unwrap();
    let ino_before = fs::metadata(&path).unwrap().ino();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let h = c
        .open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            None,
        )
        .unwrap();
    c.write(h, 0, b"new").unwrap();
    assert_eq!(c.close(h), Status::SUCCESS);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"new");
    assert_eq!(meta.permissions().mode() & 0o777, 0o751);
    assert_ne!(
        meta.ino(),
        ino_before,
        "renamed into place, not written in place"
    );
}

#[test]
fn no_overwrite_upload_is_refused_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("target");
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);

    fs::write(&path, b"there").unwrap();
    assert_eq!(
        c.open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_SAFE,
            None
        ),
        Err(Status::FILE_EXISTS)
    );

    // A file that appears while the upload runs is not overwritten either.
    fs::remove_file(&path).unwrap();
    let h = c
        .open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_SAFE,
            None,
        )
        .unwrap();
    c.write(h, 0, b"upload").unwrap();
    fs::write(&path, b"raced in").unwrap();
    assert_eq!(c.close(h), Status::FILE_EXISTS);
    assert_eq!(fs::read(&path).unwrap(), b"raced in");
    assert_eq!(leftovers(dir.path(), &["target"]), Vec::<String>::new());

    // And without the race it lands.
    fs::remove_file(&path).unwrap();
    let h = c
        .open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_SAFE,
            None,
        )
        .unwrap();
    c.write(h, 0, b"upload").unwrap();
    assert_eq!(c.close(h), Status::SUCCESS);
    assert_eq!(fs::read(&path).unwrap(), b"upload");
}

#[test]
fn symlink_is_not_followed_when_opening_for_write() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    fs::write(&secret, b"do not touch").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&secret, &link).unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    for flags in [
        OpenFlags::OPEN,
        OpenFlags::OPEN_CREATE,
        OpenFlags::OPEN_EMPTY,
        OpenFlags::OPEN_CREATE_EMPTY,
        OpenFlags::OPEN_CREATE_SAFE,
    ] {
        let got = c.open(&link, OPEN_MODE_WRITE_ONLY, flags, None);
        assert!(got.is_err(), "{flags}: {got:?}");
    }
    assert_eq!(fs::read(&secret).unwrap(), b"do not touch");
    assert!(fs::symlink_metadata(&link)
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(
        leftovers(dir.path(), &["secret", "link"]),
        Vec::<String>::new()
    );
}

#[test]
fn stale_and_unknown_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"x").unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let h = c
        .open(&path, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None)
        .unwrap();
    assert_eq!(
        c.call(Op::DESTROY_SESSION_V4, &encode(&Reserved::default()))
            .status(),
        Status::SUCCESS
    );
    assert_eq!(c.read(h, 0, 10), Err(Status::STALE_SESSION));
    assert_eq!(
        c.open(&path, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None),
        Err(Status::STALE_SESSION)
    );
    c.session = 0xdead_beef;
    assert_eq!(c.close(h), Status::STALE_SESSION);
    assert_eq!(server.open_handles(), 0);
}

#[test]
fn too_many_sessions() {
    let mut server = Server::new(ServerConfig {
        max_sessions: 2,
        ..ServerConfig::default()
    });
    Client::connect(&mut server, LARGE_PACKET_MAX);
    Client::connect(&mut server, LARGE_PACKET_MAX);
    let packet = proto::encode_request(
        1,
        Op::CREATE_SESSION_V4,
        0,
        &encode(&RequestCreateSessionV4 {
            max_packet_size: LARGE_PACKET_MAX,
            ..Default::default()
        }),
    );
    let reply = server.handle_packet(&packet).to_vec();
    assert_eq!(
        proto::parse_reply(&reply).unwrap().0.status,
        Status::TOO_MANY_SESSIONS
    );
}

#[test]
fn handle_table_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::new(ServerConfig {
        max_handles: 3,
        ..ServerConfig::default()
    });
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let mut handles = Vec::new();
    for i in 0..3 {
        let path = dir.path().join(format!("f{i}"));
        handles.push(
            c.open(
                &path,
                OPEN_MODE_WRITE_ONLY,
                OpenFlags::OPEN_CREATE_EMPTY,
                None,
            )
            .unwrap(),
        );
    }
    let extra = dir.path().join("extra");
    assert_eq!(
        c.open(
            &extra,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            None
        ),
        Err(Status::GENERIC_ERROR)
    );
    let search = c.call(
        Op::SEARCH_OPEN_V3,
        &encode(&RequestSearchOpenV3 {
            reserved: 0,
            dir_name: name_v3(dir.path()),
        }),
    );
    assert_eq!(search.status(), Status::GENERIC_ERROR);
    // The refused open made nothing: only the three temporaries exist.
    assert_eq!(leftovers(dir.path(), &[]).len(), 3);
    assert_eq!(c.close(handles[0]), Status::SUCCESS);
    assert!(c
        .open(
            &extra,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            None
        )
        .is_ok());
}

#[test]
fn open_v1_and_getattr_v2_as_govmomi_clients_use_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hello.txt");
    fs::write(&path, b"hello").unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);

    let reply = c.call(
        Op::GETATTR_V2,
        &encode(&RequestGetattrV2 {
            hints: 0,
            handle: 0,
            file_name: name_v2(&path),
        }),
    );
    let attr = reply.body::<ReplyGetattrV2>().attr;
    assert_eq!((attr.file_type, attr.size), (FILE_TYPE_REGULAR, 5));
    assert_ne!(attr.mask & attr_valid::SIZE, 0);

    let reply = c.call(
        Op::OPEN,
        &encode(&RequestOpen {
            mode: OPEN_MODE_READ_ONLY,
            flags: OpenFlags::OPEN,
            permissions: 0,
            file_name: name_v2(&path),
        }),
    );
    let handle = reply.body::<ReplyOpen>().handle;
    assert_eq!(c.read(handle, 1, 100).unwrap(), b"ello");
    assert_eq!(
        c.call(Op::CLOSE, &encode(&proto::RequestClose { handle }))
            .status(),
        Status::SUCCESS
    );

    let missing = dir.path().join("missing");
    let reply = c.call(
        Op::GETATTR_V2,
        &encode(&RequestGetattrV2 {
            hints: 0,
            handle: 0,
            file_name: name_v2(&missing),
        }),
    );
    assert_eq!(reply.status(), Status::NO_SUCH_FILE_OR_DIR);
    assert!(reply.payload.is_empty());
}

#[test]
fn getattr_v3_by_name_and_by_handle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"12345678").unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let by_name = c
        .call(
            Op::GETATTR_V3,
            &encode(&RequestGetattrV3 {
                hints: 0,
                reserved: 0,
                file_name: name_v3(dir.path()),
            }),
        )
        .body::<ReplyGetattrV3>();
    assert_eq!(by_name.attr.file_type, FILE_TYPE_DIRECTORY);

    let h = c
        .open(&path, OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None)
        .unwrap();
    let mut name = name_v3(Path::new("/"));
    name.name.clear();
    name.flags = FILE_NAME_USE_FILE_DESC;
    name.fid = h;
    let by_handle = c
        .call(
            Op::GETATTR_V3,
            &encode(&RequestGetattrV3 {
                hints: 0,
                reserved: 0,
                file_name: name.clone(),
            }),
        )
        .body::<ReplyGetattrV3>();
    assert_eq!(
        (by_handle.attr.file_type, by_handle.attr.size),
        (FILE_TYPE_REGULAR, 8)
    );
    assert_eq!(
        by_handle.attr.host_file_id,
        fs::metadata(&path).unwrap().ino()
    );
    name.fid = h + 100;
    let reply = c.call(
        Op::GETATTR_V3,
        &encode(&RequestGetattrV3 {
            hints: 0,
            reserved: 0,
            file_name: name,
        }),
    );
    assert_eq!(reply.status(), Status::INVALID_HANDLE);
}

fn setattr(c: &mut Client<'_>, path: &Path, attr: AttrV2) -> Status {
    c.call(
        Op::SETATTR_V2,
        &encode(&RequestSetattrV2 {
            hints: 0,
            attr,
            handle: 0,
            file_name: name_v2(path),
        }),
    )
    .status()
}

#[test]
fn setattr_changes_mode_size_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"0123456789").unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let attr = AttrV2 {
        mask: attr_valid::SIZE
            | attr_valid::OWNER_PERMS
            | attr_valid::OTHER_PERMS
            | attr_valid::WRITE_TIME,
        size: 4,
        owner_perms: 7,
        other_perms: 0,
        write_time: proto::nt_time(1_700_000_000, 500),
        ..AttrV2::default()
    };
    assert_eq!(setattr(&mut c, &path, attr.clone()), Status::SUCCESS);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(meta.len(), 4);
    // Owner and other given, group kept.
    assert_eq!(meta.permissions().mode() & 0o777, 0o740);
    assert_eq!(meta.mtime(), 1_700_000_000);
    let me = fs::metadata(dir.path()).unwrap();
    let owner = AttrV2 {
        mask: attr_valid::USER_ID | attr_valid::GROUP_ID,
        user_id: me.uid(),
        group_id: me.gid(),
        ..AttrV2::default()
    };
    assert_eq!(setattr(&mut c, &path, owner), Status::SUCCESS);
    assert_eq!(
        setattr(&mut c, &dir.path().join("missing"), attr),
        Status::NO_SUCH_FILE_OR_DIR
    );
}

#[test]
fn setattr_acts_on_a_symlink_itself() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"t").unwrap();
    fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let chmod = AttrV2 {
        mask: attr_valid::OWNER_PERMS | attr_valid::OTHER_PERMS,
        owner_perms: 7,
        other_perms: 7,
        ..AttrV2::default()
    };
    assert_eq!(
        setattr(&mut c, &link, chmod),
        Status::OPERATION_NOT_SUPPORTED
    );
    let truncate = AttrV2 {
        mask: attr_valid::SIZE,
        size: 0,
        ..AttrV2::default()
    };
    assert_ne!(setattr(&mut c, &link, truncate), Status::SUCCESS);
    let touch = AttrV2 {
        mask: attr_valid::WRITE_TIME,
        write_time: proto::nt_time(1_000_000_000, 0),
        ..AttrV2::default()
    };
    assert_eq!(setattr(&mut c, &link, touch), Status::SUCCESS);
    let target_meta = fs::metadata(&target).unwrap();
    assert_eq!(target_meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(target_meta.len(), 1);
    assert_ne!(target_meta.mtime(), 1_000_000_000);
    assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), 1_000_000_000);
}

#[test]
fn search_lists_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["a", "b c", "ü"] {
        fs::write(dir.path().join(name), name.as_bytes()).unwrap();
    }
    fs::create_dir(dir.path().join("sub")).unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let search = c
        .call(
            Op::SEARCH_OPEN_V3,
            &encode(&RequestSearchOpenV3 {
                reserved: 0,
                dir_name: name_v3(dir.path()),
            }),
        )
        .body::<ReplySearchOpenV3>()
        .search;
    let mut seen = Vec::new();
    for offset in 0.. {
        let reply = c.call(
            Op::SEARCH_READ_V3,
            &encode(&RequestSearchReadV3 {
                search,
                offset,
                flags: 0,
                reserved: 0,
            }),
        );
        assert_eq!(reply.status(), Status::SUCCESS);
        match decode_search_read_v3(&reply.payload).unwrap() {
            Some(entry) => {
                let name = String::from_utf8(entry.name).unwrap();
                let kind = entry.attr.file_type;
                seen.push((name, kind));
            }
            None => break,
        }
    }
    seen.sort();
    let want: Vec<(String, u32)> = [
        (".", 1),
        ("..", 1),
        ("a", 0),
        ("b c", 0),
        ("sub", 1),
        ("ü", 0),
    ]
    .iter()
    .map(|(n, k)| (n.to_string(), *k))
    .collect();
    assert_eq!(seen, want);
    let close = |c: &mut Client<'_>| {
        c.call(
            Op::SEARCH_CLOSE_V3,
            &encode(&RequestSearchCloseV3 {
                search,
                reserved: 0,
            }),
        )
        .status()
    };
    assert_eq!(close(&mut c), Status::SUCCESS);
    assert_eq!(close(&mut c), Status::INVALID_HANDLE);

    let file = dir.path().join("a");
    let reply = c.call(
        Op::SEARCH_OPEN_V3,
        &encode(&RequestSearchOpenV3 {
            reserved: 0,
            dir_name: name_v3(&file),
        }),
    );
    assert_eq!(reply.status(), Status::NOT_DIRECTORY);
}

fn v3_name_op<T: proto::Wire>(c: &mut Client<'_>, op: Op, body: T) -> Status {
    c.call(op, &encode(&body)).status()
}

#[test]
fn mkdir_delete_and_rename() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("sub");
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let mkdir = |path: &Path| RequestCreateDirV3 {
        mask: proto::CREATE_DIR_VALID_OWNER_PERMS,
        owner_perms: 7,
        file_name: name_v3(path),
        ..Default::default()
    };
    assert_eq!(
        v3_name_op(&mut c, Op::CREATE_DIR_V3, mkdir(&sub)),
        Status::SUCCESS
    );
    assert_eq!(
        fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        v3_name_op(&mut c, Op::CREATE_DIR_V3, mkdir(&sub)),
        Status::FILE_EXISTS
    );

    let file = sub.join("f");
    fs::write(&file, b"x").unwrap();
    let delete = |path: &Path| RequestDeleteV3 {
        hints: 0,
        reserved: 0,
        file_name: name_v3(path),
    };
    assert_eq!(
        v3_name_op(&mut c, Op::DELETE_DIR_V3, delete(&sub)),
        Status::DIR_NOT_EMPTY
    );

    let other = dir.path().join("other");
    fs::write(&other, b"y").unwrap();
    let rename = |from: &Path, to: &Path, hints| RequestRenameV3 {
        hints,
        reserved: 0,
        old_name: name_v3(from),
        new_name: name_v3(to),
    };
    assert_eq!(
        v3_name_op(
            &mut c,
            Op::RENAME_V3,
            rename(&other, &file, RENAME_HINT_NO_REPLACE_EXISTING)
        ),
        Status::FILE_EXISTS
    );
    assert_eq!(fs::read(&file).unwrap(), b"x");
    assert_eq!(
        v3_name_op(&mut c, Op::RENAME_V3, rename(&other, &file, 0)),
        Status::SUCCESS
    );
    assert_eq!(fs::read(&file).unwrap(), b"y");
    assert!(!other.exists());

    // Deleting a symlink removes the link, not its target.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&file, &link).unwrap();
    assert_eq!(
        v3_name_op(&mut c, Op::DELETE_FILE_V3, delete(&link)),
        Status::SUCCESS
    );
    assert!(file.exists());

    assert_eq!(
        v3_name_op(&mut c, Op::DELETE_FILE_V3, delete(&file)),
        Status::SUCCESS
    );
    assert_eq!(
        v3_name_op(&mut c, Op::DELETE_FILE_V3, delete(&file)),
        Status::NO_SUCH_FILE_OR_DIR
    );
    assert_eq!(
        v3_name_op(&mut c, Op::DELETE_DIR_V3, delete(&sub)),
        Status::SUCCESS
    );
    assert!(!sub.exists());
}

#[test]
fn volume_info() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let reply = c
        .call(
            Op::QUERY_VOLUME_INFO_V3,
            &encode(&RequestQueryVolumeV3 {
                reserved: 0,
                file_name: name_v3(dir.path()),
            }),
        )
        .body::<ReplyQueryVolumeV3>();
    let st = nix::sys::statvfs::statvfs(dir.path()).unwrap();
    assert_eq!(reply.total_bytes, st.blocks() as u64 * st.fragment_size());
    assert!(reply.free_bytes <= reply.total_bytes);
}

#[test]
fn a_served_root_is_not_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    fs::create_dir(&root).unwrap();
    fs::write(dir.path().join("outside"), b"o").unwrap();
    fs::write(root.join("inside"), b"i").unwrap();
    let mut server = Server::new(ServerConfig {
        root: root.clone(),
        ..ServerConfig::default()
    });
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    let h = c
        .open(
            Path::new("/inside"),
            OPEN_MODE_READ_ONLY,
            OpenFlags::OPEN,
            None,
        )
        .unwrap();
    assert_eq!(c.read(h, 0, 10).unwrap(), b"i");
    assert_eq!(
        c.open(
            Path::new("/../outside"),
            OPEN_MODE_READ_ONLY,
            OpenFlags::OPEN,
            None
        ),
        Err(Status::INVALID_NAME)
    );
}

#[test]
fn legacy_framing_gets_legacy_replies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    fs::write(&path, b"abc").unwrap();
    let mut server = server();
    // A V3 getattr behind the 8-byte HgfsRequest, no session.
    let mut packet = Vec::new();
    packet.extend_from_slice(&77u32.to_le_bytes());
    packet.extend_from_slice(&Op::GETATTR_V3.0.to_le_bytes());
    packet.extend_from_slice(&encode(&RequestGetattrV3 {
        hints: 0,
        reserved: 0,
        file_name: name_v3(&path),
    }));
    let reply = server.handle_packet(&packet).to_vec();
    assert_eq!(&reply[..4], &77u32.to_le_bytes());
    assert_eq!(&reply[4..8], &Status::SUCCESS.0.to_le_bytes());
    let body: ReplyGetattrV3 = proto::decode(&reply[8..]).unwrap();
    assert_eq!(body.attr.size, 3);

    // A V4 op cannot come without the session header.
    let mut packet = Vec::new();
    packet.extend_from_slice(&78u32.to_le_bytes());
    packet.extend_from_slice(&Op::CREATE_SESSION_V4.0.to_le_bytes());
    let reply = server.handle_packet(&packet).to_vec();
    assert_eq!(
        proto::parse_reply(&reply).unwrap().0.status,
        Status::PROTOCOL_ERROR
    );
}

#[test]
fn garbage_and_unsupported_ops_get_well_formed_errors() {
    let mut server = server();
    for packet in [&[][..], &[1, 2, 3][..], &[0xff; 60][..]] {
        let reply = server.handle_packet(packet).to_vec();
        let (header, payload) = proto::parse_reply(&reply).unwrap();
        assert_eq!(header.status, Status::PROTOCOL_ERROR);
        assert!(payload.is_empty());
    }
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    assert_eq!(
        c.call(Op::OPEN_V4, &[0; 64]).status(),
        Status::OPERATION_NOT_SUPPORTED
    );
    assert_eq!(
        c.call(Op(0x1234), &[]).status(),
        Status::OPERATION_NOT_SUPPORTED
    );
    // A truncated body is a protocol error, not a panic.
    assert_eq!(
        c.call(Op::READ_V3, &[0; 5]).status(),
        Status::PROTOCOL_ERROR
    );
    assert_eq!(format!("{}", Op(0x1234)), "Op(0x1234)");
    assert_eq!(format!("{}", Status(99)), "Status(0x63)");
}

#[test]
fn reads_of_a_directory_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = server();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    assert_eq!(
        c.open(dir.path(), OPEN_MODE_READ_ONLY, OpenFlags::OPEN, None),
        Err(Status::FILE_EXISTS)
    );
    let _unused: PathBuf = dir.path().to_path_buf();
}

#[test]
fn a_tiny_offered_packet_size_is_raised_to_the_minimum() {
    let mut server = server();
    assert_eq!(
        Client::connect(&mut server, 100).max_packet_size,
        proto::PACKET_MAX
    );
}

#[test]
fn an_announced_no_replace_upload_never_overwrites() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kept");
    fs::write(&path, b"original").unwrap();
    let mut server = server();
    let guest = path.as_os_str().as_bytes().to_vec();

    // The VMX opens with "create or truncate", but the VIX layer said overwrite=false.
    server.upload_without_replace(&guest).unwrap();
    let mut c = Client::connect(&mut server, LARGE_PACKET_MAX);
    assert_eq!(
        c.open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            None
        ),
        Err(Status::FILE_EXISTS)
    );
    assert_eq!(fs::read(&path).unwrap(), b"original");

    // A file that appears during the announced upload survives it.
    fs::remove_file(&path).unwrap();
    c.server.upload_without_replace(&guest).unwrap();
    let h = c
        .open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            None,
        )
        .unwrap();
    c.write(h, 0, b"upload").unwrap();
    fs::write(&path, b"raced in").unwrap();
    assert_eq!(c.close(h), Status::FILE_EXISTS);
    assert_eq!(fs::read(&path).unwrap(), b"raced in");

    // The announcement is used up: the next upload replaces as asked.
    let h = c
        .open(
            &path,
            OPEN_MODE_WRITE_ONLY,
            OpenFlags::OPEN_CREATE_EMPTY,
            None,
        )
        .unwrap();
    c.write(h, 0, b"replaced").unwrap();
    assert_eq!(c.close(h), Status::SUCCESS);
    assert_eq!(fs::read(&path).unwrap(), b"replaced");
    assert_eq!(leftovers(dir.path(), &["kept"]), Vec::<String>::new());
}
