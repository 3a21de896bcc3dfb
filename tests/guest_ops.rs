//! Guest operations wired end to end: a VIX request from the simulator, a login by the shadow
//! backend, the operation in the user's helper process, the reply back over TCLO.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;
use toolbox::vix::client;
use toolbox::vix::proto::{Command, CreateDirectoryRequest, Reply, VixError};
use util::*;

const SEC: Duration = Duration::from_secs(1);

/// The agent's config: quiet power, the shadow backend over the test fixtures (bob, uid 2002,
/// password `bob-pw-2`).
fn config() -> String {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/auth");
    format!(
        "{QUIET_CONFIG}[auth]\nbackend = \"shadow\"\npasswd_file = \"{fixtures}/passwd\"\n\
         group_file = \"{fixtures}/group\"\nshadow_file = \"{fixtures}/shadow\"\n\
         shells_file = \"{fixtures}/shells\"\n"
    )
}

async fn vix(sim: &toolbox::sim::Sim, command: &Command, user: &str, password: &str) -> Reply {
    let creds = client::login(user, password);
    let request = client::relayed_request(command, Some(&creds), 7);
    let reply = sim.tclo(&request, 10 * SEC).await.expect("no TCLO reply");
    let body = reply
        .strip_prefix(b"OK ")
        .unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(&reply)));
    client::parse_reply(command, body).expect("reply decodes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_is_made_as_the_logged_in_user_and_a_wrong_password_is_invalid_login() {
    if !root_or_skip(
        "a_directory_is_made_as_the_logged_in_user_and_a_wrong_password_is_invalid_login",
    ) {
        return;
    }
    let dir = TempDir::new("guestops");
    let work = dir.0.join("shared");
    std::fs::create_dir(&work).unwrap();
    std::fs::set_permissions(&work, std::fs::Permissions::from_mode(0o777)).unwrap();
    let sim = sim(&dir).await;
    let _agent = Agent::start(&[], &dir, sim.dir(), &config());
    let r = tools_running(&sim).await;
    assert!(
        r.capabilities.iter().any(|c| c == "hgfs_server toolbox 1"),
        "{:?}",
        r.capabilities
    );

    let target = work.join("made/by/bob");
    let mkdir = Command::CreateDirectory(CreateDirectoryRequest {
        options: 0,
        path: target.to_str().unwrap().to_string(),
        properties: Vec::new(),
        create_parents: true,
    });
    let reply = vix(&sim, &mkdir, "bob", "wrong").await;
    assert_eq!(reply.error, VixError::INVALID_LOGIN_CREDENTIALS);
    assert!(
        !work.join("made").exists(),
        "a failed login changed something"
    );

    // A failure holds the user's next login back for a second (the rate limit): the right
    // password goes through once that has passed.
    let started = std::time::Instant::now();
    let reply = loop {
        let reply = vix(&sim, &mkdir, "bob", "bob-pw-2").await;
        if reply.error != VixError::INVALID_LOGIN_CREDENTIALS || started.elapsed() > 10 * SEC {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(reply.error, VixError::OK, "{reply:?}");
    for d in ["made", "made/by", "made/by/bob"] {
        let meta = std::fs::metadata(work.join(d)).unwrap();
        assert_eq!(meta.uid(), 2002, "{d} is not bob's");
    }

    // Again: the directory exists now, as vmtoolsd says it.
    let again = Command::CreateDirectory(CreateDirectoryRequest {
        options: 0,
        path: target.to_str().unwrap().to_string(),
        properties: Vec::new(),
        create_parents: false,
    });
    let reply = vix(&sim, &again, "bob", "bob-pw-2").await;
    assert_eq!(reply.error, VixError::FILE_ALREADY_EXISTS);

    // The tools state needs no login.
    let request = client::relayed_request(&Command::GetToolsState, None, 8);
    let reply = sim.tclo(&request, 10 * SEC).await.unwrap();
    let body = reply.strip_prefix(b"OK ").unwrap();
    let reply = client::parse_reply(&Command::GetToolsState, body).unwrap();
    assert_eq!(reply.error, VixError::OK);
    client::parse_tools_state(&reply.result).expect("a property list");
}
