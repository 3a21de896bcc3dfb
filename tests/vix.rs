//! Guest operations: govmomi's byte vectors through the codec, and the command server end to
//! end over real files (the file operations run in this process, as its user).

mod util;

use proptest::prelude::*;
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use toolbox::config::{GuestOperationsConfig, OperationSwitch};
use toolbox::vix::client;
use toolbox::vix::property::{PropertyId, PropertyList, Value};
use toolbox::vix::proto::{
    self, attribute_options as opt, Command, CreateDirectoryRequest, CreateTempRequest,
    CredentialType, Credentials, DeleteDirectoryRequest, DeleteFileRequest, HgfsPacketRequest,
    ListFilesRequest, MoveRequest, OpCode, Reply, Request, SetAttributesRequest,
    TransferToGuestRequest, VixError,
};
use toolbox::vix::server::{Server, ToolsInfo};
use toolbox::vix::{InProcess, StaticAuthenticator, UserIdentity};
use util::TempDir;

fn vectors() -> HashMap<String, Vec<u8>> {
    include_str!("vectors/vix/govmomi.txt")
        .lines()
        .map(|l| {
            let (name, hex) = l.split_once(' ').expect("name hex");
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (name.to_string(), bytes)
        })
        .collect()
}

fn user_pass() -> Credentials {
    client::login("user", "pass")
}

/// Each govmomi request decodes to the expected command, and this crate's VMX-side encoder
/// produces the very same bytes.
#[test]
fn govmomi_requests_decode_and_reencode_byte_for_byte() {
    let v = vectors();
    let s = String::from;
    let cases: Vec<(&str, u64, Command)> = vec![
        (
            "req_delete_file",
            1000,
            Command::DeleteFile(DeleteFileRequest {
                options: 0,
                path: s("/tmp/a file"),
            }),
        ),
        (
            "req_create_directory",
            1001,
            Command::CreateDirectory(CreateDirectoryRequest {
                options: 0,
                path: s("/tmp/new/dir"),
                properties: vec![],
                create_parents: true,
            }),
        ),
        (
            "req_delete_directory",
            1002,
            Command::DeleteDirectory(DeleteDirectoryRequest {
                options: 0,
                path: s("/tmp/old"),
                properties: vec![],
                recursive: true,
            }),
        ),
        (
            "req_move_file",
            1003,
            Command::MoveFile(MoveRequest {
                options: 0,
                old_path: s("/tmp/a"),
                new_path: s("/tmp/b c"),
                properties: vec![],
                overwrite: true,
            }),
        ),
        (
            "req_move_directory",
            1004,
            Command::MoveDirectory(MoveRequest {
                options: 0,
                old_path: s("/tmp/d1"),
                new_path: s("/tmp/d2"),
                properties: vec![],
                overwrite: false,
            }),
        ),
        (
            "req_create_temp_file",
            1005,
            Command::CreateTemporaryFile(CreateTempRequest {
                options: 0,
                prefix: s("pre"),
                suffix: s(".suf"),
                directory: s("/var/tmp"),
                properties: vec![],
            }),
        ),
        (
            "req_create_temp_directory",
            1006,
            Command::CreateTemporaryDirectory(CreateTempRequest {
                options: 0,
                prefix: s(""),
                suffix: s(""),
                directory: s(""),
                properties: vec![],
            }),
        ),
        (
            "req_set_attributes",
            1007,
            Command::SetAttributes(SetAttributesRequest {
                options: opt::SET_ACCESS_DATE
                    | opt::SET_MODIFY_DATE
                    | opt::SET_UNIX_OWNERID
                    | opt::SET_UNIX_GROUPID
                    | opt::SET_UNIX_PERMISSIONS,
                access_time: 1_700_000_000,
                modification_time: -1,
                owner_id: 1000,
                group_id: 100,
                permissions: 0o4755,
                hidden: false,
                read_only: false,
                path: s("/tmp/f"),
            }),
        ),
        (
            "req_transfer_to_guest",
            1008,
            Command::TransferToGuest(TransferToGuestRequest {
                options: opt::SET_UNIX_PERMISSIONS,
                path: s("/home/user/up.bin"),
                overwrite: true,
            }),
        ),
        (
            "req_hgfs_packet",
            77,
            Command::HgfsPacket(HgfsPacketRequest {
                timeout: 30,
                packet: vec![1, 0, 0, 0, 0xff, 0xee, 0, 0x10],
            }),
        ),
        (
            "req_list_files",
            9,
            Command::ListFiles(ListFilesRequest {
                options: 0,
                path: s("/etc"),
                pattern: Some(s("^host")),
                index: 2,
                max_results: 50,
                offset: 1,
            }),
        ),
        (
            "req_transfer_from_guest",
            10,
            Command::TransferFromGuest(ListFilesRequest {
                options: 0,
                path: s("/etc/hosts"),
                pattern: None,
                index: 0,
                max_results: 0,
                offset: 0,
            }),
        ),
    ];
    for (name, cookie, expected) in cases {
        let bytes = &v[name];
        let req = Request::parse(bytes).unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(req.header.op, expected.op(), "{name}");
        assert_eq!(req.header.cookie, cookie, "{name}");
        assert_eq!(req.header.credential_type, CredentialType::NAME_PASSWORD);
        assert_eq!(
            Command::decode(req.header.op, req.body).as_ref(),
            Ok(&expected),
            "{name}"
        );
        assert_eq!(
            Credentials::decode(req.header.credential_type, req.credential),
            Ok(user_pass()),
            "{name}"
        );
        assert_eq!(
            &client::request(&expected, Some(&user_pass()), cookie),
            bytes,
            "{name}: our encoder differs"
        );
    }
    let gts = Request::parse(&v["req_get_tools_state"]).unwrap();
    assert_eq!(gts.header.op, OpCode::GET_TOOLS_STATE);
    assert_eq!(
        client::request(&Command::GetToolsState, None, 5),
        v["req_get_tools_state"]
    );
}

#[test]
fn rejects_govmomi_list_files_marshal_as_vmtoolsd_does() {
    let v = vectors();
    let req = Request::parse(&v["req_list_files_govmomi_marshal"]).unwrap();
    let e = Command::decode(req.header.op, req.body).unwrap_err();
    assert_eq!(e.vix_error(), VixError::INVALID_MESSAGE_BODY, "{e}");
}

#[test]
fn govmomi_credentials_decode_and_reencode() {
    let v = vectors();
    for (name, user, pass) in [
        ("cred_user_pass", "user", "pass"),
        ("cred_special", "Administrator", "p a'ss\"wörd\\"),
    ] {
        let c = Credentials::decode(CredentialType::NAME_PASSWORD, &v[name]).unwrap();
        assert_eq!((c.name.as_str(), c.password.expose()), (user, pass));
        let obfuscated =
            Credentials::decode(CredentialType::NAME_PASSWORD_OBFUSCATED, &v[name]).unwrap();
        assert_eq!(obfuscated.name, user);
        assert_eq!(c.encode(), v[name]);
    }
}

#[test]
fn govmomi_property_lists_decode_and_reencode() {
    let v = vectors();
    let l = PropertyList::decode(&v["props_all_types"]).unwrap();
    assert_eq!(
        l.0.iter().map(|p| p.value.clone()).collect::<Vec<_>>(),
        vec![
            Value::Int32(-2),
            Value::String("héllo".into()),
            Value::Bool(true),
            Value::Int64(-1_234_567_890_123),
            Value::Blob(vec![0, 1, 2, 0xff]),
        ]
    );
    assert_eq!(l.encode(), v["props_all_types"]);
    let t = PropertyList::decode(&v["props_tools_state"]).unwrap();
    assert_eq!(
        t.get(PropertyId::GUEST_NAME),
        Some(&Value::String("vm-1".into()))
    );
    assert_eq!(t.get(PropertyId::GUEST_OS_FAMILY), Some(&Value::Int32(1)));
    assert_eq!(t.encode(), v["props_tools_state"]);
}

#[test]
fn govmomi_replies_decode_and_reencode() {
    let v = vectors();
    let r = Reply::decode(&v["reply_tools_state"], false).unwrap();
    assert!(r.error.is_ok());
    let props = client::parse_tools_state(&r.result).unwrap();
    assert_eq!(props.encode(), v["props_tools_state"]);
    assert_eq!(r.encode(false), v["reply_tools_state"]);
    let b = Reply::decode(&v["reply_binary"], true).unwrap();
    assert_eq!(b.result, vec![1, 0, 2, 0]);
    assert_eq!(b.encode(true), v["reply_binary"]);
    let e = Reply::decode(&v["reply_file_not_found"], false).unwrap();
    assert_eq!(e.error, VixError::FILE_NOT_FOUND);
    assert_eq!(e.encode(false), v["reply_file_not_found"]);
}

// ---------------------------------------------------------------------------------------------
// Request validation.

fn message_with(f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let cmd = Command::DeleteFile(DeleteFileRequest {
        options: 0,
        path: "/x".into(),
    });
    let mut m = client::request(&cmd, Some(&user_pass()), 1);
    f(&mut m);
    m
}

#[test]
fn rejects_bad_headers_with_vmtoolsd_errors() {
    let header = VixError::INVALID_MESSAGE_HEADER;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("short", vec![1, 0, 0xd, 0xd0]),
        ("magic", message_with(|m| m[0] = 2)),
        ("version", message_with(|m| m[4] = 4)),
        ("header length", message_with(|m| m[10] = 52)),
        ("total too small", message_with(|m| m[6] -= 1)),
        ("total too large", message_with(|m| m[6] += 1)),
        ("not a request", message_with(|m| m[22] = 0)),
        ("auth data missing", message_with(|m| m[27] = 0x10)),
        ("over 64 KiB", message_with(|m| m[8] = 2)),
        ("truncated", message_with(|m| m.truncate(m.len() - 1))),
    ];
    for (what, m) in cases {
        let e = Request::parse(&m).unwrap_err();
        assert_eq!(e.error.vix_error(), header, "{what}");
    }
}

#[test]
fn rejects_bad_bodies() {
    let body = |path_len: u32, path: &[u8]| {
        [&0i32.to_le_bytes()[..], &path_len.to_le_bytes(), path].concat()
    };
    let op = OpCode::DELETE_GUEST_FILE_EX;
    for (what, b, err) in [
        (
            "short fixed part",
            vec![0u8; 4],
            VixError::INVALID_MESSAGE_HEADER,
        ),
        (
            "past the body",
            body(9, b"/x\0"),
            VixError::INVALID_MESSAGE_BODY,
        ),
        ("no NUL", body(2, b"/xy"), VixError::INVALID_MESSAGE_BODY),
        (
            "NUL inside",
            body(2, b"/\0\0"),
            VixError::INVALID_MESSAGE_BODY,
        ),
        (
            "not UTF-8",
            body(2, b"/\xff\0"),
            VixError::INVALID_UTF8_STRING,
        ),
        ("empty path", body(0, b"\0"), VixError::INVALID_ARG),
    ] {
        assert_eq!(
            Command::decode(op, &b).unwrap_err().vix_error(),
            err,
            "{what}"
        );
    }
    assert_eq!(
        Command::decode(OpCode::LIST_PROCESSES, &[])
            .unwrap_err()
            .vix_error(),
        VixError::UNRECOGNIZED_COMMAND_IN_GUEST
    );
    let temp = CreateTempRequest {
        options: 0,
        prefix: "a".into(),
        suffix: "b".into(),
        directory: "/tmp".into(),
        properties: vec![],
    };
    let mut b = Command::CreateTemporaryFile(temp).encode_body();
    b.push(0);
    assert_eq!(
        Command::decode(OpCode::CREATE_TEMPORARY_FILE_EX, &b)
            .unwrap_err()
            .vix_error(),
        VixError::INVALID_MESSAGE_BODY,
        "extra byte after a temporary-file request"
    );
}

// ---------------------------------------------------------------------------------------------
// The server end to end.

fn server_with(config: GuestOperationsConfig) -> Server {
    let me = UserIdentity {
        name: "user".into(),
        uid: nix::unistd::geteuid().as_raw(),
        gid: nix::unistd::getegid().as_raw(),
        groups: vec![nix::unistd::getegid().as_raw()],
        home: "/".into(),
        shell: "/bin/sh".into(),
    };
    let auth = StaticAuthenticator::default().with("user", "pass", me);
    let hgfs = InProcess::new(|packet: &[u8]| packet.iter().rev().copied().collect());
    Server::new(
        config,
        ToolsInfo::new("vm-1", "Linux 6.1 Test", "other6xlinux-64"),
        Arc::new(auth),
        Arc::new(hgfs),
    )
}

fn server() -> Server {
    server_with(GuestOperationsConfig::default())
}

fn call_as(s: &Server, cmd: &Command, creds: Option<&Credentials>) -> Reply {
    let tclo = client::relayed_request(cmd, creds, 42);
    let args = tclo
        .strip_prefix(format!("{} ", proto::RELAYED_COMMAND).as_bytes())
        .unwrap();
    client::parse_reply(cmd, &s.handle_relayed(args)).unwrap()
}

fn call(s: &Server, cmd: &Command) -> Reply {
    call_as(s, cmd, Some(&user_pass()))
}

fn p(path: &Path) -> String {
    path.to_str().unwrap().to_string()
}

fn list(path: &Path, pattern: Option<&str>, index: i32, max: i32, offset: u64) -> Command {
    Command::ListFiles(ListFilesRequest {
        options: 0,
        path: p(path),
        pattern: pattern.map(String::from),
        index,
        max_results: max,
        offset,
    })
}

fn mkdir(path: &Path, parents: bool) -> Command {
    Command::CreateDirectory(CreateDirectoryRequest {
        options: 0,
        path: p(path),
        properties: vec![],
        create_parents: parents,
    })
}

fn rm(path: &Path) -> Command {
    Command::DeleteFile(DeleteFileRequest {
        options: 0,
        path: p(path),
    })
}

fn rmdir(path: &Path, recursive: bool) -> Command {
    Command::DeleteDirectory(DeleteDirectoryRequest {
        options: 0,
        path: p(path),
        properties: vec![],
        recursive,
    })
}

fn mv(old: &Path, new: &Path, overwrite: bool, dir: bool) -> Command {
    let m = MoveRequest {
        options: 0,
        old_path: p(old),
        new_path: p(new),
        properties: vec![],
        overwrite,
    };
    if dir {
        Command::MoveDirectory(m)
    } else {
        Command::MoveFile(m)
    }
}

fn attrs(path: &Path, options: i32, f: impl FnOnce(&mut SetAttributesRequest)) -> Command {
    let mut r = SetAttributesRequest {
        options,
        access_time: 0,
        modification_time: 0,
        owner_id: 0,
        group_id: 0,
        permissions: 0,
        hidden: false,
        read_only: false,
        path: p(path),
    };
    f(&mut r);
    Command::SetAttributes(r)
}

#[test]
fn get_tools_state_needs_no_credentials_and_lists_the_switches() {
    let mut config = GuestOperationsConfig::default();
    config.operations.insert(
        "DeleteFileInGuest".into(),
        OperationSwitch { disabled: true },
    );
    let s = server_with(config);
    let r = call_as(&s, &Command::GetToolsState, None);
    assert!(r.error.is_ok(), "{r:?}");
    let props = client::parse_tools_state(&r.result).unwrap();
    let get = |id| props.get(id).cloned();
    assert_eq!(
        get(PropertyId::GUEST_NAME),
        Some(Value::String("vm-1".into()))
    );
    assert_eq!(
        get(PropertyId::GUEST_OS_VERSION_SHORT),
        Some(Value::String("other6xlinux-64".into()))
    );
    assert_eq!(get(PropertyId::GUEST_OS_FAMILY), Some(Value::Int32(1)));
    // vmtoolsd's values are the *disabled* state despite the name.
    assert_eq!(
        get(PropertyId::GUEST_LIST_FILES_ENABLED),
        Some(Value::Bool(false))
    );
    assert_eq!(
        get(PropertyId::GUEST_DELETE_FILE_ENABLED),
        Some(Value::Bool(true))
    );
    // Carried out and not switched off: reported as vmtoolsd reports an enabled operation.
    assert_eq!(
        get(PropertyId::GUEST_START_PROGRAM_ENABLED),
        Some(Value::Bool(false))
    );
    // Not carried out by this agent: always reported disabled.
    assert_eq!(
        get(PropertyId::GUEST_ADD_AUTH_ALIAS_ENABLED),
        Some(Value::Bool(true))
    );
    for id in 4540..=4568 {
        assert!(get(PropertyId(id)).is_some(), "property {id} missing");
    }
    let direct = s.handle_get_tools_properties();
    assert!(direct.starts_with(b"0 0 "));
    assert!(client::parse_tools_state(&direct[4..]).is_ok());
}

#[test]
fn every_other_op_needs_valid_credentials() {
    let d = TempDir::new("vix-auth");
    let s = server();
    let target = d.path().join("made");
    let wrong = client::login("user", "wrong");
    let nobody = client::login("nobody", "pass");
    for creds in [None, Some(&wrong), Some(&nobody)] {
        let r = call_as(&s, &mkdir(&target, false), creds);
        let want = if creds.is_none() {
            VixError::NOT_SUPPORTED
        } else {
            VixError::INVALID_LOGIN_CREDENTIALS
        };
        assert_eq!(r.error, want, "{creds:?}");
        assert!(!target.exists());
    }
    // An HGFS packet is a legacy op: a failed login is reported as a permission error.
    let hgfs = Command::HgfsPacket(HgfsPacketRequest {
        timeout: 0,
        packet: vec![1, 2, 3],
    });
    assert_eq!(
        call_as(&s, &hgfs, Some(&wrong)).error,
        VixError::GUEST_USER_PERMISSIONS
    );
    let ok = call(&s, &hgfs);
    assert_eq!((ok.error, ok.result), (VixError::OK, vec![3, 2, 1]));
    let validate = Command::ValidateCredentials;
    assert!(call(&s, &validate).error.is_ok());
    assert_eq!(
        call_as(&s, &validate, Some(&wrong)).error,
        VixError::INVALID_LOGIN_CREDENTIALS
    );
}

#[test]
fn rejects_every_credential_type_but_name_password() {
    let d = TempDir::new("vix-credtype");
    let s = server();
    let target = d.path().join("x");
    let cmd = mkdir(&target, false);
    let good = user_pass().encode();
    for t in [0u32, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0xffff_ffff] {
        let m = proto::encode_request(cmd.op(), 1, 0, CredentialType(t), &cmd.encode_body(), &good);
        let r = Reply::decode(&s.handle_message(&m), false).unwrap();
        assert_eq!(r.error, VixError::NOT_SUPPORTED, "credential type {t}");
        assert!(!target.exists(), "credential type {t} ran the op");
    }
    let obf = Credentials {
        kind: CredentialType::NAME_PASSWORD_OBFUSCATED,
        ..user_pass()
    };
    assert!(call_as(&s, &cmd, Some(&obf)).error.is_ok());
    assert!(target.is_dir());
}

#[test]
fn disabled_operations_answer_20005() {
    let d = TempDir::new("vix-disabled");
    let f = d.write("f", "x");
    let mut one = GuestOperationsConfig::default();
    one.operations.insert(
        "DeleteFileInGuest".into(),
        OperationSwitch { disabled: true },
    );
    let s = server_with(one);
    assert_eq!(call(&s, &rm(&f)).error, VixError::OPERATION_DISABLED);
    assert!(f.exists());
    assert!(call(&s, &list(d.path(), None, 0, 10, 0)).error.is_ok());
    let all = server_with(GuestOperationsConfig {
        disabled: true,
        ..Default::default()
    });
    assert_eq!(
        call(&all, &list(d.path(), None, 0, 10, 0)).error,
        VixError::OPERATION_DISABLED
    );
    assert!(call_as(&all, &Command::GetToolsState, None).error.is_ok());
}

#[test]
fn unknown_ops_and_garbage_get_vmtoolsd_errors() {
    let s = server();
    let m = proto::encode_request(OpCode(999), 1, 0, CredentialType::NAME_PASSWORD, &[], &[]);
    let r = Reply::decode(&s.handle_message(&m), false).unwrap();
    assert_eq!(r.error, VixError::UNRECOGNIZED_COMMAND_IN_GUEST);
    let r = Reply::decode(&s.handle_relayed(b"\"x\"\0garbage"), false).unwrap();
    assert_eq!(r.error, VixError::INVALID_MESSAGE_HEADER);
    let r = Reply::decode(&s.handle_relayed(b"no nul"), false).unwrap();
    assert_eq!(r.error, VixError::INVALID_MESSAGE_HEADER);
}

#[test]
fn list_files_pages_as_vmtoolsd() {
    let d = TempDir::new("vix-ls");
    for i in 0..5 {
        d.write(&format!("f{i}"), &"x".repeat(i));
    }
    std::fs::create_dir(d.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("f1", d.path().join("link")).unwrap();
    let s = server();
    // ".", "..", 5 files, sub, link = 9 entries.
    let all = client::parse_list_files(&call(&s, &list(d.path(), None, 0, 50, 0)).result).unwrap();
    assert_eq!(
        (all.truncated, all.remaining, all.files.len()),
        (false, 0, 9)
    );
    assert_eq!(all.files[0].name, b".");
    assert_eq!(all.files[1].name, b"..");
    let by = |n: &str| all.files.iter().find(|f| f.name == n.as_bytes()).unwrap();
    assert_eq!(by("f3").size, 3);
    assert_eq!(by("sub").file_type, proto::file_type::DIRECTORY);
    assert_eq!(by("link").file_type, proto::file_type::SYMLINK);
    assert_eq!(by("link").symlink_target, b"f1");
    let meta = std::fs::metadata(d.path().join("f3")).unwrap();
    assert_eq!(by("f3").perm, meta.mode());
    assert_eq!(by("f3").mtime, meta.mtime() as u64);
    // Paging: index 2, at most 3: 3 entries, 4 remaining.
    let page = client::parse_list_files(&call(&s, &list(d.path(), None, 2, 3, 0)).result).unwrap();
    assert_eq!((page.files.len(), page.remaining), (3, 4));
    assert_eq!(page.files[0].name, all.files[2].name);
    // hostd's continuation: offset 1 within the same page.
    let cont = client::parse_list_files(&call(&s, &list(d.path(), None, 2, 3, 1)).result).unwrap();
    assert_eq!(cont.files.len(), 2);
    assert_eq!(cont.files[0].name, all.files[3].name);
    // maxResults 0: nothing but the count after index.
    let count = client::parse_list_files(&call(&s, &list(d.path(), None, 4, 0, 0)).result).unwrap();
    assert_eq!((count.files.len(), count.remaining), (0, 5));
    // The pattern filters first; index counts matches.
    let m = client::parse_list_files(&call(&s, &list(d.path(), Some("^f[0-3]$"), 1, 50, 0)).result)
        .unwrap();
    let names: Vec<_> = m.files.iter().map(|f| f.name.clone()).collect();
    assert_eq!(names.len(), 3);
    assert!(names.iter().all(|n| n.starts_with(b"f")));
    // A file (or a symlink) lists itself, named as given.
    let one =
        client::parse_list_files(&call(&s, &list(&d.path().join("link"), None, 0, 50, 0)).result)
            .unwrap();
    assert_eq!(one.files.len(), 1);
    assert_eq!(one.files[0].name, p(&d.path().join("link")).as_bytes());
    assert_eq!(one.files[0].file_type, proto::file_type::SYMLINK);
}

#[test]
fn list_files_errors() {
    let d = TempDir::new("vix-ls-err");
    let s = server();
    let missing = d.path().join("missing");
    let r = call(&s, &list(&missing, None, 0, 50, 0));
    assert_eq!((r.error, r.additional), (VixError::FILE_NOT_FOUND, 2));
    for cmd in [
        list(d.path(), Some("(unclosed"), 0, 50, 0),
        list(d.path(), Some("a{1000}{1000}"), 0, 50, 0),
        list(d.path(), None, 0, 5, 5),
        list(d.path(), None, -1, 5, 0),
        list(d.path(), None, 0, 5, i32::MAX as u64),
    ] {
        assert_eq!(call(&s, &cmd).error, VixError::INVALID_ARG, "{cmd:?}");
    }
}

#[test]
fn list_files_truncates_to_one_tclo_reply() {
    let d = TempDir::new("vix-ls-big");
    for i in 0..400 {
        d.write(&format!("{i:0>200}"), "");
    }
    let s = server();
    let first = call(&s, &list(d.path(), None, 0, 1000, 0));
    assert!(first.result.len() < proto::MAX_RESULT_SIZE);
    let page = client::parse_list_files(&first.result).unwrap();
    assert!(page.truncated);
    let mut got = page.files.len();
    assert_eq!(page.remaining as usize, 402 - got);
    // hostd asks again with offset = entries received, until a reply is not truncated.
    let mut names: Vec<Vec<u8>> = page.files.into_iter().map(|f| f.name).collect();
    loop {
        let r = call(&s, &list(d.path(), None, 0, 1000, got as u64));
        assert!(r.result.len() < proto::MAX_RESULT_SIZE);
        let next = client::parse_list_files(&r.result).unwrap();
        assert!(!next.files.is_empty());
        got += next.files.len();
        names.extend(next.files.into_iter().map(|f| f.name));
        if !next.truncated {
            assert_eq!(next.remaining, 0);
            break;
        }
    }
    assert_eq!(got, 402);
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 402, "no entry twice");
}

#[test]
fn create_and_delete_directories() {
    let d = TempDir::new("vix-dirs");
    let s = server();
    let deep = d.path().join("a/b/c");
    assert_eq!(
        call(&s, &mkdir(&deep, false)).error,
        VixError::FILE_NOT_FOUND
    );
    assert!(call(&s, &mkdir(&deep, true)).error.is_ok());
    assert_eq!(
        std::fs::metadata(&deep).unwrap().permissions().mode() & 0o777,
        0o700 & !umask()
    );
    assert_eq!(
        call(&s, &mkdir(&deep, true)).error,
        VixError::FILE_ALREADY_EXISTS
    );
    let top = d.path().join("a");
    assert_eq!(
        call(&s, &rmdir(&top, false)).error,
        VixError::DIRECTORY_NOT_EMPTY
    );
    let file = d.write("file", "x");
    assert_eq!(
        call(&s, &rmdir(&file, true)).error,
        VixError::NOT_A_DIRECTORY
    );
    assert!(call(&s, &rmdir(&top, true)).error.is_ok());
    assert!(!top.exists());
    assert_eq!(call(&s, &rmdir(&top, true)).error, VixError::FILE_NOT_FOUND);
}

fn umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[test]
fn delete_acts_on_symlinks_never_their_targets() {
    let d = TempDir::new("vix-symlinks");
    let s = server();
    let outside = d.write("secret", "keep");
    let outdir = d.path().join("outdir");
    std::fs::create_dir(&outdir).unwrap();
    std::fs::write(outdir.join("keep"), "keep").unwrap();
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    assert!(call(&s, &rm(&link)).error.is_ok());
    assert!(!link.exists() && outside.exists());
    let dangling = d.path().join("dangling");
    std::os::unix::fs::symlink("/nonexistent/x", &dangling).unwrap();
    assert!(call(&s, &rm(&dangling)).error.is_ok());
    assert!(std::fs::symlink_metadata(&dangling).is_err());
    // A link to a directory is not a directory to delete.
    let dlink = d.path().join("dlink");
    std::os::unix::fs::symlink(&outdir, &dlink).unwrap();
    assert_eq!(
        call(&s, &rmdir(&dlink, true)).error,
        VixError::NOT_A_DIRECTORY
    );
    assert!(outdir.join("keep").exists());
    // A recursive delete does not follow links inside the tree.
    let tree = d.path().join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::os::unix::fs::symlink(&outdir, tree.join("escape")).unwrap();
    assert!(call(&s, &rmdir(&tree, true)).error.is_ok());
    assert!(outdir.join("keep").exists());
    assert_eq!(call(&s, &rm(&outdir)).error, VixError::NOT_A_FILE);
    assert_eq!(
        call(&s, &rm(&d.path().join("none"))).error,
        VixError::FILE_NOT_FOUND
    );
}

#[test]
fn move_files_and_directories() {
    let d = TempDir::new("vix-move");
    let s = server();
    let a = d.write("a", "A");
    let b = d.write("b", "B");
    assert_eq!(
        call(&s, &mv(&a, &b, false, false)).error,
        VixError::FILE_ALREADY_EXISTS
    );
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "B");
    assert!(call(&s, &mv(&a, &b, true, false)).error.is_ok());
    assert_eq!(std::fs::read_to_string(&b).unwrap(), "A");
    assert!(
        call(&s, &mv(&b, &b, false, false)).error.is_ok(),
        "onto itself"
    );
    let dir = d.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(
        call(&s, &mv(&dir, &a, true, false)).error,
        VixError::NOT_A_FILE
    );
    assert_eq!(
        call(&s, &mv(&b, &dir, true, false)).error,
        VixError::FILE_ALREADY_EXISTS
    );
    assert_eq!(
        call(&s, &mv(&b, &a, true, true)).error,
        VixError::NOT_A_DIRECTORY
    );
    let dir2 = d.path().join("dir2");
    std::fs::create_dir(&dir2).unwrap();
    assert_eq!(
        call(&s, &mv(&dir, &dir2, true, true)).error,
        VixError::FILE_ALREADY_EXISTS,
        "MoveDirectory never replaces"
    );
    let dir3 = d.path().join("dir3");
    assert!(call(&s, &mv(&dir, &dir3, false, true)).error.is_ok());
    assert!(dir3.is_dir() && !dir.exists());
    // Moving a link moves the link.
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&dir3, &link).unwrap();
    let moved = d.path().join("moved");
    assert!(call(&s, &mv(&link, &moved, false, false)).error.is_ok());
    assert!(std::fs::symlink_metadata(&moved)
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(dir3.is_dir());
    assert_eq!(
        call(&s, &mv(&d.path().join("none"), &a, true, false)).error,
        VixError::FILE_NOT_FOUND
    );
}

#[test]
fn move_file_across_file_systems_copies_into_place() {
    let d = TempDir::new("vix-xdev");
    let shm = Path::new("/dev/shm");
    let other = |a: &Path, b: &Path| {
        std::fs::metadata(a).map(|m| m.dev()).ok() != std::fs::metadata(b).map(|m| m.dev()).ok()
    };
    if !shm.is_dir() || !other(d.path(), shm) {
        println!("SKIPPED: needs /dev/shm on another file system");
        return;
    }
    let s = server();
    let src = d.write("big", &"0123456789".repeat(100_000));
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let dst = shm.join(format!("vix-xdev-{}", std::process::id()));
    let existing = std::fs::write(&dst, "old");
    assert!(existing.is_ok());
    assert_eq!(
        call(&s, &mv(&src, &dst, false, false)).error,
        VixError::FILE_ALREADY_EXISTS
    );
    assert_eq!(std::fs::read_to_string(&dst).unwrap(), "old");
    assert!(src.exists());
    assert!(call(&s, &mv(&src, &dst, true, false)).error.is_ok());
    assert_eq!(std::fs::read(&dst).unwrap().len(), 1_000_000);
    assert_eq!(
        std::fs::metadata(&dst).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(!src.exists());
    let leftovers: Vec<_> = std::fs::read_dir(shm)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains(".vix-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    std::fs::remove_file(&dst).unwrap();
}

#[test]
fn temporary_files_and_directories() {
    let d = TempDir::new("vix-tmp");
    let s = server();
    let req = |prefix: &str, suffix: &str, dir: &str| CreateTempRequest {
        options: 0,
        prefix: prefix.into(),
        suffix: suffix.into(),
        directory: dir.into(),
        properties: vec![],
    };
    let r = call(
        &s,
        &Command::CreateTemporaryFile(req("pre", ".suf", &p(d.path()))),
    );
    assert!(r.error.is_ok(), "{r:?}");
    let path = String::from_utf8(r.result).unwrap();
    let name = Path::new(&path).file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("prevmware") && name.ends_with(".suf"),
        "{name}"
    );
    let n: u32 = name["prevmware".len()..name.len() - 4].parse().unwrap();
    assert_eq!(n % 2, 1, "files are odd");
    let meta = std::fs::metadata(&path).unwrap();
    assert!(meta.is_file() && meta.len() == 0);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let r = call(
        &s,
        &Command::CreateTemporaryDirectory(req("", "", &p(d.path()))),
    );
    let dpath = String::from_utf8(r.result).unwrap();
    assert!(Path::new(&dpath).is_dir());
    let n: u32 = Path::new(&dpath).file_name().unwrap().to_str().unwrap()["vmware".len()..]
        .parse()
        .unwrap();
    assert_eq!(n % 2, 0, "directories are even");
    let missing = call(
        &s,
        &Command::CreateTemporaryFile(req("", "", &p(&d.path().join("no")))),
    );
    assert_eq!(missing.error, VixError::FILE_NOT_FOUND);
    let file = d.write("plain", "");
    let notdir = call(&s, &Command::CreateTemporaryFile(req("", "", &p(&file))));
    assert_eq!(notdir.error, VixError::NOT_A_DIRECTORY);
}

#[test]
fn change_attributes_on_files_and_links() {
    let d = TempDir::new("vix-attrs");
    let s = server();
    let f = d.write("f", "x");
    let r = call(
        &s,
        &attrs(&f, opt::SET_MODIFY_DATE | opt::SET_UNIX_PERMISSIONS, |r| {
            r.modification_time = 1_000_000_000;
            r.permissions = 0o640;
        }),
    );
    assert!(r.error.is_ok(), "{r:?}");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(m.mtime(), 1_000_000_000);
    assert_eq!(m.permissions().mode() & 0o7777, 0o640);
    let atime_before = m.atime();
    assert!(call(
        &s,
        &attrs(&f, opt::SET_ACCESS_DATE, |r| r.access_time = 1_200_000_000)
    )
    .error
    .is_ok());
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(m.atime(), 1_200_000_000);
    assert_ne!(m.atime(), atime_before);
    assert_eq!(m.mtime(), 1_000_000_000, "mtime left alone");
    // On a link: times on the link, never the target; a mode is refused.
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    assert!(call(
        &s,
        &attrs(&link, opt::SET_MODIFY_DATE, |r| r.modification_time = 5)
    )
    .error
    .is_ok());
    assert_eq!(std::fs::symlink_metadata(&link).unwrap().mtime(), 5);
    assert_eq!(std::fs::metadata(&f).unwrap().mtime(), 1_000_000_000);
    assert_eq!(
        call(
            &s,
            &attrs(&link, opt::SET_UNIX_PERMISSIONS, |r| r.permissions = 0o777)
        )
        .error,
        VixError::INVALID_ARG
    );
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert_eq!(
        call(&s, &attrs(&f, opt::SET_HIDDEN, |_| {})).error,
        VixError::INVALID_ARG
    );
    assert_eq!(
        call(&s, &attrs(&d.path().join("none"), 0, |_| {})).error,
        VixError::FILE_NOT_FOUND
    );
    if nix::unistd::geteuid().is_root() {
        assert!(call(
            &s,
            &attrs(&link, opt::SET_UNIX_OWNERID | opt::SET_UNIX_GROUPID, |r| {
                r.owner_id = 4242;
                r.group_id = 4343;
            })
        )
        .error
        .is_ok());
        let lm = std::fs::symlink_metadata(&link).unwrap();
        assert_eq!((lm.uid(), lm.gid()), (4242, 4343));
        assert_eq!(std::fs::metadata(&f).unwrap().uid(), 0, "target untouched");
    } else {
        println!("SKIPPED: needs root (chown part of change_attributes_on_files_and_links)");
    }
}

#[test]
fn transfer_requests_check_what_vmtoolsd_checks() {
    let d = TempDir::new("vix-xfer");
    let s = server();
    let f = d.write("f", "12345");
    let from = |path: &Path| {
        Command::TransferFromGuest(ListFilesRequest {
            options: 0,
            path: p(path),
            pattern: None,
            index: 0,
            max_results: 0,
            offset: 0,
        })
    };
    let r = call(&s, &from(&f));
    assert!(r.error.is_ok(), "{r:?}");
    let info = client::parse_file_info(&r.result).unwrap();
    assert_eq!((info.name, info.size), (p(&f).into_bytes(), 5));
    let link = d.path().join("link");
    std::os::unix::fs::symlink(&f, &link).unwrap();
    assert_eq!(call(&s, &from(&link)).error, VixError::INVALID_ARG);
    assert_eq!(call(&s, &from(d.path())).error, VixError::NOT_A_FILE);
    assert_eq!(
        call(&s, &from(&d.path().join("none"))).error,
        VixError::FILE_NOT_FOUND
    );
    // The archive form of a directory is a stream of unknown size.
    let archive = format!("{}/?format=tgz", p(d.path()));
    let r = call(
        &s,
        &Command::TransferFromGuest(ListFilesRequest {
            options: 0,
            path: archive.clone(),
            pattern: None,
            index: 0,
            max_results: 0,
            offset: 0,
        }),
    );
    let info = client::parse_file_info(&r.result).unwrap();
    assert_eq!(info.size, i64::MAX as u64);
    assert_eq!(info.name, archive.into_bytes());

    let to = |path: &Path, overwrite: bool, options: i32| {
        Command::TransferToGuest(TransferToGuestRequest {
            options,
            path: p(path),
            overwrite,
        })
    };
    assert!(call(&s, &to(&d.path().join("new"), false, 0)).error.is_ok());
    assert_eq!(
        call(&s, &to(&f, false, 0)).error,
        VixError::FILE_ALREADY_EXISTS
    );
    assert!(call(&s, &to(&f, true, opt::SET_UNIX_PERMISSIONS))
        .error
        .is_ok());
    assert_eq!(call(&s, &to(&link, true, 0)).error, VixError::INVALID_ARG);
    assert_eq!(call(&s, &to(d.path(), true, 0)).error, VixError::NOT_A_FILE);
    assert_eq!(
        call(&s, &to(&f, true, opt::SET_HIDDEN)).error,
        VixError::INVALID_ARG
    );
    assert_eq!(
        call(&s, &to(&d.path().join("none/x"), true, 0)).error,
        VixError::FILE_NAME_INVALID
    );
    // Archive uploads unpack into a directory, made if need be.
    assert!(call(&s, &to(&d.path().join("sub/"), true, 0)).error.is_ok());
    std::fs::create_dir(d.path().join("sub")).unwrap();
    assert!(call(&s, &to(&d.path().join("sub/"), true, 0)).error.is_ok());
    assert_eq!(
        call(&s, &to(&d.path().join("none/sub/"), true, 0)).error,
        VixError::FILE_NAME_INVALID
    );
    assert_eq!(
        call(&s, &to(&d.path().join("f/"), true, 0)).error,
        VixError::NOT_A_DIRECTORY
    );
}

/// Run by `permission_errors_as_an_unprivileged_user` in a child process with uid/gid 65534.
#[test]
fn unprivileged_child() {
    let Ok(dir) = std::env::var("VIX_UNPRIVILEGED_DIR") else {
        return;
    };
    let d = Path::new(&dir);
    let s = server();
    let secret = d.join("root-only/secret");
    assert_eq!(call(&s, &rm(&secret)).error, VixError::FILE_ACCESS_ERROR);
    assert_eq!(
        call(&s, &mkdir(&d.join("root-only/new"), false)).error,
        VixError::FILE_ACCESS_ERROR
    );
    assert_eq!(
        call(&s, &list(&d.join("root-only"), None, 0, 10, 0)).error,
        VixError::FILE_ACCESS_ERROR
    );
    let f = d.join("root-file");
    assert_eq!(
        call(
            &s,
            &attrs(&f, opt::SET_UNIX_PERMISSIONS, |r| r.permissions = 0o777)
        )
        .error,
        VixError::FILE_ACCESS_ERROR
    );
    let to = Command::TransferToGuest(TransferToGuestRequest {
        options: 0,
        path: p(&f),
        overwrite: true,
    });
    assert_eq!(call(&s, &to).error, VixError::FILE_ACCESS_ERROR);
    println!("unprivileged checks passed");
}

#[test]
fn permission_errors_as_an_unprivileged_user() {
    if !nix::unistd::geteuid().is_root() {
        println!("SKIPPED: needs root (permission_errors_as_an_unprivileged_user)");
        return;
    }
    use std::os::unix::process::CommandExt;
    let d = TempDir::new("vix-perm");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let ro = d.path().join("root-only");
    std::fs::create_dir(&ro).unwrap();
    std::fs::write(ro.join("secret"), "s").unwrap();
    std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o700)).unwrap();
    let f = d.write("root-file", "x");
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "unprivileged_child",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("VIX_UNPRIVILEGED_DIR", d.path())
        .uid(65534)
        .gid(65534)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("unprivileged checks passed"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(ro.join("secret").exists());
    assert_eq!(
        std::fs::metadata(&f).unwrap().permissions().mode() & 0o777,
        0o644
    );
}

// ---------------------------------------------------------------------------------------------
// Property tests.

fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 /._é-]{1,40}"
}

fn any_command() -> impl Strategy<Value = Command> {
    let props = proptest::collection::vec(any::<u8>(), 0..16);
    prop_oneof![
        Just(Command::GetToolsState),
        Just(Command::ValidateCredentials),
        (
            any::<i32>(),
            text(),
            proptest::option::of(text()),
            any::<i32>(),
            any::<i32>(),
            any::<u64>()
        )
            .prop_map(|(options, path, pattern, index, max_results, offset)| {
                Command::ListFiles(ListFilesRequest {
                    options,
                    path,
                    pattern,
                    index,
                    max_results,
                    offset,
                })
            }),
        (any::<i32>(), text(), props.clone(), any::<bool>()).prop_map(
            |(options, path, properties, create_parents)| {
                Command::CreateDirectory(CreateDirectoryRequest {
                    options,
                    path,
                    properties,
                    create_parents,
                })
            }
        ),
        (any::<i32>(), text())
            .prop_map(|(options, path)| Command::DeleteFile(DeleteFileRequest { options, path })),
        (any::<i32>(), text(), props.clone(), any::<bool>()).prop_map(
            |(options, path, properties, recursive)| {
                Command::DeleteDirectory(DeleteDirectoryRequest {
                    options,
                    path,
                    properties,
                    recursive,
                })
            }
        ),
        (
            any::<i32>(),
            text(),
            text(),
            props.clone(),
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(options, old_path, new_path, properties, overwrite, dir)| {
                    let m = MoveRequest {
                        options,
                        old_path,
                        new_path,
                        properties,
                        overwrite,
                    };
                    if dir {
                        Command::MoveDirectory(m)
                    } else {
                        Command::MoveFile(m)
                    }
                }
            ),
        (
            any::<i32>(),
            "[a-z]{0,8}",
            "[a-z.]{0,8}",
            "[a-z/]{0,20}",
            props,
            any::<bool>()
        )
            .prop_map(|(options, prefix, suffix, directory, properties, dir)| {
                let t = CreateTempRequest {
                    options,
                    prefix,
                    suffix,
                    directory,
                    properties,
                };
                if dir {
                    Command::CreateTemporaryDirectory(t)
                } else {
                    Command::CreateTemporaryFile(t)
                }
            }),
        (
            any::<i32>(),
            any::<i64>(),
            any::<i64>(),
            any::<i32>(),
            any::<i32>(),
            any::<i32>(),
            any::<bool>(),
            any::<bool>(),
            text()
        )
            .prop_map(
                |(
                    options,
                    access_time,
                    modification_time,
                    owner_id,
                    group_id,
                    permissions,
                    hidden,
                    read_only,
                    path,
                )| {
                    Command::SetAttributes(SetAttributesRequest {
                        options,
                        access_time,
                        modification_time,
                        owner_id,
                        group_id,
                        permissions,
                        hidden,
                        read_only,
                        path,
                    })
                }
            ),
        (any::<i32>(), text(), any::<bool>()).prop_map(|(options, path, overwrite)| {
            Command::TransferToGuest(TransferToGuestRequest {
                options,
                path,
                overwrite,
            })
        }),
        (any::<i32>(), proptest::collection::vec(any::<u8>(), 1..64)).prop_map(
            |(timeout, packet)| Command::HgfsPacket(HgfsPacketRequest { timeout, packet })
        ),
    ]
}

fn any_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<i32>().prop_map(Value::Int32),
        "[^\u{0}]{0,20}".prop_map(Value::String),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int64),
        proptest::collection::vec(any::<u8>(), 1..20).prop_map(Value::Blob),
    ]
}

proptest! {
    #[test]
    fn commands_round_trip(cmd in any_command(), name in "[a-z]{1,10}", pw in "[^\u{0}]{0,20}", cookie in any::<u64>()) {
        let body = cmd.encode_body();
        prop_assert_eq!(Command::decode(cmd.op(), &body), Ok(cmd.clone()));
        let creds = client::login(&name, &pw);
        let msg = client::request(&cmd, Some(&creds), cookie);
        let req = Request::parse(&msg).unwrap();
        prop_assert_eq!(req.header.cookie, cookie);
        prop_assert_eq!(Credentials::decode(req.header.credential_type, req.credential), Ok(creds));
        toolbox::vix::fuzzing::vix_request(&msg);
    }

    #[test]
    fn property_lists_round_trip(values in proptest::collection::vec((any::<i32>(), any_value()), 0..10)) {
        let mut l = PropertyList::default();
        for (id, v) in values {
            l.push(PropertyId(id), v);
        }
        prop_assert_eq!(PropertyList::decode(&l.encode()), Ok(l.clone()));
    }

    #[test]
    fn replies_round_trip(code in any::<u64>(), errno in any::<u32>(), result in proptest::collection::vec(1u8.., 0..40), binary in any::<bool>()) {
        let r = Reply { error: VixError(code), additional: errno, result };
        prop_assert_eq!(Reply::decode(&r.encode(binary), binary), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        toolbox::vix::fuzzing::vix_request(&data);
        let s = server();
        let reply = s.handle_relayed(&data);
        prop_assert!(Reply::decode(&reply, false).is_ok() || Reply::decode(&reply, true).is_ok());
    }

    #[test]
    fn mutated_requests_never_panic(cmd in any_command(), flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4)) {
        let mut msg = client::request(&cmd, Some(&user_pass()), 1);
        for (i, b) in flips {
            let n = msg.len();
            msg[i % n] ^= b;
        }
        toolbox::vix::fuzzing::vix_request(&msg);
    }
}
