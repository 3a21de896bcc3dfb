//! The process requests' VIX bodies, the helper payload and the host-side parsers:
//! round trips and arbitrary bytes.

use proptest::prelude::*;
use toolbox::process::proclist::{format_entry, ProcInfo};
use toolbox::process::{decode_reply, encode_call, encode_reply, read_environment};
use toolbox::vix::client;
use toolbox::vix::proto::{
    Command, ListProcessesRequest, ReadEnvRequest, StartProgramRequest, TerminateProcessRequest,
    VixError,
};
use toolbox::vix::OpResult;

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,24}"
}

fn any_process_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        (
            any::<bool>(),
            "[^\u{0}]{1,24}",
            text(),
            text(),
            proptest::collection::vec(text(), 0..5)
        )
            .prop_map(|(start_minimized, program, arguments, working_dir, env)| {
                Command::StartProgram(StartProgramRequest {
                    start_minimized,
                    program,
                    arguments,
                    working_dir,
                    env,
                })
            }),
        (
            any::<u32>(),
            any::<u32>(),
            proptest::collection::vec(any::<u64>(), 0..20)
        )
            .prop_map(
                |(key, offset, pids)| Command::ListProcesses(ListProcessesRequest {
                    key,
                    offset,
                    pids
                })
            ),
        (any::<u64>(), any::<u32>()).prop_map(|(pid, options)| Command::TerminateProcess(
            TerminateProcessRequest { pid, options }
        )),
        proptest::collection::vec(text(), 0..6)
            .prop_map(|names| Command::ReadEnvironmentVariables(ReadEnvRequest { names })),
    ]
}

proptest! {
    #[test]
    fn process_commands_round_trip(cmd in any_process_command(), cookie in any::<u64>()) {
        let body = cmd.encode_body();
        prop_assert_eq!(Command::decode(cmd.op(), &body), Ok(cmd.clone()));
        let msg = client::request(&cmd, Some(&client::login("u", "p")), cookie);
        toolbox::vix::fuzzing::vix_request(&msg);
        toolbox::process::fuzzing::process_call(&encode_call(&cmd));
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics(cmd in any_process_command(), cut in any::<prop::sample::Index>()) {
        let body = cmd.encode_body();
        let n = cut.index(body.len().max(1));
        if n < body.len() {
            prop_assert!(Command::decode(cmd.op(), &body[..n]).is_err());
        }
    }

    #[test]
    fn listings_parse_back(entries in proptest::collection::vec((text(), text(), any::<i64>(), text(), any::<i64>(), any::<i32>(), any::<i64>()), 0..8)) {
        let mut s = String::new();
        let infos: Vec<ProcInfo> = entries.into_iter().map(|(name, command_line, pid, owner, start_time, exit_code, end_time)| ProcInfo { pid, name, command_line, owner, start_time, exit_code, end_time }).collect();
        for p in &infos {
            format_entry(&mut s, p);
        }
        let back = client::parse_process_list(s.as_bytes()).unwrap();
        prop_assert_eq!(back.len(), infos.len());
        for (a, b) in infos.iter().zip(back) {
            prop_assert_eq!(&a.name, &b.name);
            prop_assert_eq!(&a.command_line, &b.command_line);
            prop_assert_eq!(&a.owner, &b.owner);
            prop_assert_eq!((a.pid, a.start_time, a.exit_code, a.end_time), (b.pid, b.start_time, b.exit_code, b.end_time));
        }
    }

    #[test]
    fn environment_parses_back(vars in proptest::collection::vec(("[A-Za-z_][A-Za-z0-9_]{0,8}", text()), 0..8)) {
        let listing = read_environment(&vars, &[]);
        let back = client::parse_env(listing.as_bytes()).unwrap();
        let want: Vec<String> = vars.iter().map(|(k, v)| format!("{k}={v}")).collect();
        prop_assert_eq!(back, want);
    }

    #[test]
    fn replies_round_trip(code in any::<u64>(), errno in any::<u32>(), result in proptest::collection::vec(any::<u8>(), 0..64)) {
        let r = OpResult { error: VixError(code), errno, result };
        prop_assert_eq!(decode_reply(&encode_reply(&r)), Ok(r));
    }

    #[test]
    fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..300)) {
        toolbox::process::fuzzing::process_call(&data);
    }
}

#[test]
fn start_program_layout_matches_govmomi() {
    // govmomi toolbox/vix/protocol.go: lengths count the NUL, empty strings are absent,
    // environment entries NUL-separated after the strings.
    let cmd = client::start_program("/bin/ls", "-l", "", &["A=1".into(), "B=2".into()]);
    let body = cmd.encode_body();
    let mut want = vec![0u8];
    for n in [8u32, 3, 0, 2, 8] {
        want.extend_from_slice(&n.to_le_bytes());
    }
    want.extend_from_slice(b"/bin/ls\0-l\0A=1\0B=2\0");
    assert_eq!(body, want);
    let list = Command::ListProcesses(ListProcessesRequest {
        key: 0,
        offset: 0,
        pids: vec![5],
    })
    .encode_body();
    assert_eq!(
        list,
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]
    );
    // A pid count larger than the body is refused before anything is allocated.
    let mut huge = vec![0u8; 8];
    huge.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(Command::decode(toolbox::vix::proto::OpCode::LIST_PROCESSES_EX, &huge).is_err());
}
