//! What ships: the LinuxKit package's files, the systemd unit, the default configs, and the
//! drop-in names (`vmware-rpctool`, `vmtoolsd`, `vmware-checkvm`) run from symlinks to the real
//! binary over `TOOLBOX_TRANSPORT=unix:DIR` against the simulator, with the outputs and exit
//! codes of open-vm-tools' rpctool.c, cmdLine.c and checkvm.c.

mod util;

use serde_yaml_ng::Value;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;
use util::*;

fn repo_file(rel: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(rel: &str) -> Value {
    serde_yaml_ng::from_str(&repo_file(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_sequence()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn the_linuxkit_build_yml_grants_what_the_original_grants() {
    let build = yaml("linuxkit/build.yml");
    assert_eq!(build["image"].as_str(), Some("toolbox"));
    assert_eq!(strings(&build["arches"]), ["amd64"]);
    let config = &build["config"];
    assert_eq!(config["pid"].as_str(), Some("host"));
    assert_eq!(config["net"].as_str(), Some("host"));
    assert_eq!(strings(&config["capabilities"]), ["CAP_SYS_BOOT"]);
}

#[test]
fn the_example_image_runs_the_package_as_vmtoolsd() {
    let image = yaml("linuxkit/vsphere.yml");
    assert!(image["kernel"]["image"].as_str().is_some());
    assert!(strings(&image["init"])
        .iter()
        .any(|i| i.starts_with("linuxkit/init:")));
    let services = image["services"].as_sequence().unwrap();
    let tools = services
        .iter()
        .find(|s| s["name"].as_str() == Some("vmtoolsd"))
        .expect("a vmtoolsd service");
    assert_eq!(tools["pid"].as_str(), Some("host"));
    assert_eq!(tools["net"].as_str(), Some("host"));
    assert_eq!(strings(&tools["capabilities"]), ["CAP_SYS_BOOT"]);
    // Guest info needs an address to report: a DHCP client runs beside it.
    assert!(services
        .iter()
        .any(|s| s["name"].as_str() == Some("dhcpcd")));
}

#[test]
fn the_dockerfile_builds_with_the_ci_command_into_scratch() {
    let docker = repo_file("linuxkit/Dockerfile");
    let stages: Vec<&str> = docker.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(stages.len(), 2, "{stages:?}");
    assert_eq!(stages[1], "FROM scratch");
    assert!(docker.contains("scripts/build-static.sh"));
    assert!(docker.contains("CMD [\"/usr/bin/vmtoolsd\"]"));
    for name in toolbox::dropin::NAMES {
        assert!(
            docker.contains(&format!("ln -s toolbox /out/usr/bin/{name}")),
            "{name}"
        );
    }
    assert!(docker.contains("linuxkit/toolbox.toml /out/etc/toolbox/toolbox.toml"));
}

#[test]
fn the_shipped_configs_are_valid() {
    let lk = toolbox::config::Config::parse(
        &repo_file("linuxkit/toolbox.toml"),
        Path::new("linuxkit/toolbox.toml"),
    )
    .unwrap();
    assert_eq!(lk.power.method, toolbox::config::PowerMethod::Pid1Signal);
    assert_eq!(lk.power.pid1, 1);
    assert_eq!(lk.log_output, toolbox::config::LogOutput::Stdout);
    let deb = toolbox::config::Config::parse(
        &repo_file("packaging/toolbox.toml"),
        Path::new("packaging/toolbox.toml"),
    )
    .unwrap();
    // The file spells out the defaults.
    assert_eq!(deb.power.method, toolbox::config::PowerMethod::Systemd);
    assert_eq!(deb.transport, toolbox::rpc::Transport::Auto);
}

/// `KEY=VALUE` lines of a unit's section.
fn unit_section<'a>(unit: &'a str, section: &str) -> Vec<(&'a str, &'a str)> {
    let header = format!("[{section}]");
    unit.lines()
        .skip_while(|l| *l != header)
        .skip(1)
        .take_while(|l| !l.starts_with('['))
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .collect()
}

#[test]
fn the_unit_waits_for_readiness_and_restarts() {
    let unit = repo_file("packaging/toolbox.service");
    let service = unit_section(&unit, "Service");
    let get = |k: &str| service.iter().find(|(key, _)| *key == k).map(|(_, v)| *v);
    assert_eq!(get("Type"), Some("notify"));
    assert_eq!(get("ExecStart"), Some("/usr/bin/toolbox run"));
    assert_eq!(get("Restart"), Some("always"));
    let caps = get("CapabilityBoundingSet").unwrap();
    for cap in [
        "CAP_SYS_BOOT",
        "CAP_SYS_RAWIO",
        "CAP_NET_BIND_SERVICE",
        "CAP_SETUID",
    ] {
        assert!(caps.split(' ').any(|c| c == cap), "{cap}");
    }
    assert!(get("RestrictAddressFamilies").unwrap().contains("AF_VSOCK"));
    assert_eq!(
        unit_section(&unit, "Install"),
        [("WantedBy", "multi-user.target")]
    );
}

/// A directory with the drop-in names as symlinks to the real binary.
fn drop_in_links(dir: &TempDir) -> PathBuf {
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for name in toolbox::dropin::NAMES {
        std::os::unix::fs::symlink(BIN, bin.join(name)).unwrap();
    }
    bin
}

async fn run_as(program: &Path, args: &[&str], transport: Option<&Path>) -> Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_remove("TOOLBOX_ASSUME_VMWARE")
        .env_remove("TOOLBOX_LOG");
    match transport {
        Some(dir) => cmd.env("TOOLBOX_TRANSPORT", format!("unix:{}", dir.display())),
        None => cmd.env_remove("TOOLBOX_TRANSPORT"),
    };
    cmd.output().await.unwrap()
}

fn text(b: &[u8]) -> &str {
    std::str::from_utf8(b).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmware_rpctool_prints_the_reply_or_the_vmx_text() {
    let dir = TempDir::new("dropin-rpctool");
    let sim = sim(&dir).await;
    let bin = drop_in_links(&dir);
    sim.info_set("guestinfo.metadata", "eyJ4IjoxfQ==");
    let rpctool = bin.join("vmware-rpctool");

    let ok = run_as(&rpctool, &["info-get guestinfo.metadata"], Some(sim.dir())).await;
    assert_eq!(ok.status.code(), Some(0), "{ok:?}");
    assert_eq!(text(&ok.stdout), "eyJ4IjoxfQ==\n");
    assert_eq!(text(&ok.stderr), "");

    // A refusal: the VMX's own text (after "0 ") on stderr, exit 1.
    let refused_text = sim.rpci(b"info-get guestinfo.absent");
    let refused_text = text(refused_text.strip_prefix(b"0 ").unwrap()).to_owned();
    let no = run_as(&rpctool, &["info-get guestinfo.absent"], Some(sim.dir())).await;
    assert_eq!(no.status.code(), Some(1), "{no:?}");
    assert_eq!(text(&no.stdout), "");
    assert_eq!(text(&no.stderr), format!("{refused_text}\n"));

    // An empty reply is still a line.
    let set = run_as(&rpctool, &["info-set guestinfo.flag yes"], Some(sim.dir())).await;
    assert_eq!((set.status.code(), text(&set.stdout)), (Some(0), "\n"));
    assert_eq!(sim.info_get("guestinfo.flag").as_deref(), Some("yes"));

    // Usage: none given is an error, -h is not; both on stderr.
    let none = run_as(&rpctool, &[], Some(sim.dir())).await;
    assert_eq!(none.status.code(), Some(1));
    assert!(text(&none.stderr).starts_with("rpctool syntax:\n"));
    let help = run_as(&rpctool, &["--help"], Some(sim.dir())).await;
    assert_eq!(help.status.code(), Some(0));
    assert_eq!(help.stderr, none.stderr);
    assert!(help.stdout.is_empty());

    // The same through the subcommand form.
    let sub = run_as(
        Path::new(BIN),
        &["vmware-rpctool", "info-get guestinfo.metadata"],
        Some(sim.dir()),
    )
    .await;
    assert_eq!(
        (sub.status.code(), text(&sub.stdout)),
        (Some(0), "eyJ4IjoxfQ==\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmtoolsd_cmd_and_cmdfile_send_one_request() {
    let dir = TempDir::new("dropin-vmtoolsd");
    let sim = sim(&dir).await;
    let bin = drop_in_links(&dir);
    sim.info_set("guestinfo.userdata", "I2Nsb3VkLWNvbmZpZw==");
    let vmtoolsd = bin.join("vmtoolsd");

    for args in [
        &["--cmd", "info-get guestinfo.userdata"][..],
        &["--cmd=info-get guestinfo.userdata"][..],
    ] {
        let out = run_as(&vmtoolsd, args, Some(sim.dir())).await;
        assert_eq!(out.status.code(), Some(0), "{args:?} {out:?}");
        assert_eq!(text(&out.stdout), "I2Nsb3VkLWNvbmZpZw==\n");
    }

    // cmdLine.c strips trailing white space from the file's contents.
    let file = dir.write("cmd.txt", "info-get guestinfo.userdata\n\n");
    let out = run_as(
        &vmtoolsd,
        &["--cmdfile", file.to_str().unwrap()],
        Some(sim.dir()),
    )
    .await;
    assert_eq!(
        (out.status.code(), text(&out.stdout)),
        (Some(0), "I2Nsb3VkLWNvbmZpZw==\n")
    );

    let missing = dir.path().join("missing.txt");
    let out = run_as(
        &vmtoolsd,
        &["--cmdfile", missing.to_str().unwrap()],
        Some(sim.dir()),
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr),
        format!("Unable to read command from file {}.\n", missing.display())
    );

    let refused = run_as(
        &vmtoolsd,
        &["--cmd", "info-get guestinfo.nope"],
        Some(sim.dir()),
    )
    .await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    assert!(!refused.stderr.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_vmtoolsd_runs_the_agent() {
    let dir = TempDir::new("dropin-agent");
    let sim = sim(&dir).await;
    let bin = drop_in_links(&dir);
    let config = dir.write("toolbox.toml", QUIET_CONFIG);
    let mut agent = tokio::process::Command::new(bin.join("vmtoolsd"))
        .args(["-n", "vmsvc", "-c", config.to_str().unwrap()])
        .env("TOOLBOX_TRANSPORT", format!("unix:{}", sim.dir().display()))
        .env_remove("TOOLBOX_ASSUME_VMWARE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let report = tools_running(&sim).await;
    assert!(report.tools_version.is_some());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), agent.wait())
        .await
        .expect("the agent stops on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vmware_checkvm_needs_the_backdoor() {
    let dir = TempDir::new("dropin-checkvm");
    let bin = drop_in_links(&dir);
    let checkvm = bin.join("vmware-checkvm");
    // GETVERSION is a backdoor call; a unix:DIR VMX cannot answer it.
    let out = run_as(&checkvm, &[], Some(dir.path())).await;
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "vmware-checkvm: Couldn't get version\n");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_vmware_each_name_says_so_as_the_original() {
    if toolbox::rpc::detect::require_vmware().is_ok() {
        println!("SKIPPED: off_vmware_each_name_says_so_as_the_original runs on VMware");
        eprintln!("SKIPPED: off_vmware_each_name_says_so_as_the_original runs on VMware");
        return;
    }
    let dir = TempDir::new("dropin-offvmware");
    let bin = drop_in_links(&dir);
    let rpctool = run_as(&bin.join("vmware-rpctool"), &["info-get guestinfo.x"], None).await;
    // rpctool.c returns -1 from main.
    assert_eq!(rpctool.status.code(), Some(255));
    // rpctool.c names itself by argv[0] as given; checkvm.c by its base name.
    assert_eq!(
        text(&rpctool.stderr),
        format!(
            "Error: {} must be run inside a virtual machine on a VMware hypervisor product.\n",
            bin.join("vmware-rpctool").display()
        )
    );
    let checkvm = run_as(&bin.join("vmware-checkvm"), &["-p"], None).await;
    assert_eq!(checkvm.status.code(), Some(1));
    assert_eq!(
        text(&checkvm.stderr),
        "Error: vmware-checkvm must be run inside a virtual machine on a VMware hypervisor product.\n"
    );
    let cmd = run_as(
        &bin.join("vmtoolsd"),
        &["--cmd", "info-get guestinfo.x"],
        None,
    )
    .await;
    assert_eq!(cmd.status.code(), Some(1));
    assert_eq!(
        text(&cmd.stderr),
        "Unable to send command to VMware hypervisor.\n"
    );
    let file = dir.write("cmd", "info-get guestinfo.x");
    let cmdfile = run_as(
        &bin.join("vmtoolsd"),
        &["--cmdfile", file.to_str().unwrap()],
        None,
    )
    .await;
    assert_eq!(cmdfile.status.code(), Some(1));
    assert_eq!(
        text(&cmdfile.stderr),
        "Unable to send command from file to VMware hypervisor.\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_check_accepts_the_shipped_files_and_names_a_bad_one() {
    let dir = TempDir::new("config-check");
    for rel in ["packaging/toolbox.toml", "linuxkit/toolbox.toml"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(rel);
        let out = run_as(
            Path::new(BIN),
            &["config", "check", path.to_str().unwrap()],
            None,
        )
        .await;
        assert_eq!(out.status.code(), Some(0), "{rel}: {out:?}");
        assert!(text(&out.stdout).starts_with(&format!("{}: ok\n", path.display())));
    }
    let bad = dir.write("bad.toml", "[power]\nmethod = \"teleport\"\n");
    let out = run_as(
        Path::new(BIN),
        &["-c", bad.to_str().unwrap(), "config", "check"],
        None,
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("bad.toml"), "{out:?}");
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_sent_to_systemd_once_the_tclo_channel_is_up() {
    let dir = TempDir::new("notify");
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_nonblocking(true).unwrap();
    let vmx = dir.path().join("vmx");
    let config = dir.write("toolbox.toml", QUIET_CONFIG);
    let mut agent = tokio::process::Command::new(BIN)
        .args(["run", "-c", config.to_str().unwrap()])
        .arg(format!("--transport=unix:{}", vmx.display()))
        .env("NOTIFY_SOCKET", &notify_path)
        .env_remove("TOOLBOX_ASSUME_VMWARE")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut buf = [0u8; 256];
    // No VMX yet: the agent cannot be ready.
    assert_eq!(
        notify.recv(&mut buf).map_err(|e| e.kind()),
        Err(std::io::ErrorKind::WouldBlock)
    );
    let sim = toolbox::sim::Sim::start(&vmx, true).await.unwrap();
    tools_running(&sim).await;
    notify.set_nonblocking(false).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = notify
        .recv(&mut buf)
        .expect("READY=1 within 10 s of tools running");
    assert_eq!(text(&buf[..n]).trim_end(), "READY=1");
    agent.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_output_stdout_puts_the_agents_log_on_stdout() {
    let dir = TempDir::new("log-stdout");
    let sim = sim(&dir).await;
    let config = dir.write(
        "toolbox.toml",
        &format!("log_output = \"stdout\"\n{QUIET_CONFIG}"),
    );
    let agent = tokio::process::Command::new(BIN)
        .args(["run", "-c", config.to_str().unwrap()])
        .arg(format!("--transport=unix:{}", sim.dir().display()))
        .env_remove("TOOLBOX_ASSUME_VMWARE")
        .env_remove("TOOLBOX_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tools_running(&sim).await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), agent.wait_with_output())
        .await
        .expect("the agent stops on SIGTERM")
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let stdout = text(&out.stdout);
    assert!(stdout.contains("starting"), "{stdout}");
    assert!(stdout.contains("stopped"), "{stdout}");
    assert_eq!(text(&out.stderr), "");
}
