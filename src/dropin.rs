//! The names other tools call: `vmware-rpctool`, `vmware-checkvm` and `vmtoolsd`, answered by
//! the one `toolbox` binary when it is started under one of them (a symlink) or as
//! `toolbox NAME ARGS...`. Output, stderr text and exit codes follow open-vm-tools'
//! `rpctool/rpctool.c`, `checkvm/checkvm.c` and `services/vmtoolsd/cmdLine.c`, so scripts that
//! parse them (cloud-init, Ignition, LinuxKit's metadata package) see no difference. None of
//! these programs takes a transport flag, so the transport comes from `TOOLBOX_TRANSPORT`.

use std::io::Write;
use std::path::PathBuf;
use toolbox_rpc::backdoor::get_version;
use toolbox_rpc::detect::{assume_vmware_from_env, require_vmware};
use toolbox_rpc::port::PortBackdoor;
use toolbox_rpc::transport::connect_rpci;
use toolbox_rpc::{RpciError, Transport};

/// One of the drop-in programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropIn {
    /// `vmware-rpctool CMD`: one RPCI request.
    RpcTool,
    /// `vmware-checkvm [-p]`: the backdoor version or product.
    CheckVm,
    /// `vmtoolsd [--cmd CMD | --cmdfile FILE]`: one request, or the agent.
    Vmtoolsd,
}

/// Every drop-in name, as installed (symlinks to `toolbox`).
pub const NAMES: [&str; 3] = ["vmware-rpctool", "vmware-checkvm", "vmtoolsd"];

impl DropIn {
    /// The drop-in a program name (`argv[0]`, any directory) stands for.
    pub fn from_program(program: &str) -> Option<DropIn> {
        match program.rsplit('/').next().unwrap_or(program) {
            "vmware-rpctool" => Some(DropIn::RpcTool),
            "vmware-checkvm" => Some(DropIn::CheckVm),
            "vmtoolsd" => Some(DropIn::Vmtoolsd),
            _ => None,
        }
    }

    /// Its program name.
    pub fn name(self) -> &'static str {
        match self {
            DropIn::RpcTool => NAMES[0],
            DropIn::CheckVm => NAMES[1],
            DropIn::Vmtoolsd => NAMES[2],
        }
    }
}

/// What a drop-in run ends in.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Exit with this status (output already written).
    Exit(u8),
    /// Plain `vmtoolsd`: run the agent, with this config file if `-c` gave one.
    RunAgent {
        /// `-c FILE` / `--config FILE`.
        config: Option<PathBuf>,
    },
}

/// The process environment a drop-in reads: the transport and whether to assume VMware.
#[derive(Debug, Clone, Default)]
pub struct Env {
    /// `TOOLBOX_TRANSPORT` as given (unparsed).
    pub transport: Option<String>,
    /// `TOOLBOX_ASSUME_VMWARE=1`.
    pub assume_vmware: bool,
    /// The program name as started (argv\[0\]), which rpctool.c prints in its error as is;
    /// `None`: the drop-in's own name.
    pub program: Option<String>,
}

impl Env {
    /// This process's environment.
    pub fn from_process() -> Env {
        Env {
            transport: std::env::var("TOOLBOX_TRANSPORT").ok(),
            assume_vmware: assume_vmware_from_env(),
            program: None,
        }
    }

    fn transport(&self) -> Result<Transport, String> {
        match &self.transport {
            None => Ok(Transport::default()),
            Some(t) => t.parse().map_err(|e| format!("TOOLBOX_TRANSPORT: {e}")),
        }
    }
}

/// rpctool.c returns -1 from `main` when not on VMware.
const EXIT_NOT_VIRTUAL: u8 = 255;

/// Runs drop-in `which` with `args` (without the program name), writing to `out` and `err`.
pub fn run(
    which: DropIn,
    args: &[String],
    env: &Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Outcome {
    let span = tracing::debug_span!("dropin", name = which.name());
    let _enter = span.enter();
    let result = match which {
        DropIn::RpcTool => rpctool(args, env, out, err),
        DropIn::CheckVm => checkvm(args, env, out, err),
        DropIn::Vmtoolsd => vmtoolsd(args, env, out, err),
    };
    let _ = out.flush();
    let _ = err.flush();
    result.unwrap_or(Outcome::Exit(1))
}

type Written = std::io::Result<Outcome>;

/// True when this is a VMware VM, or the transport needs no hypervisor, or the user said so
/// (`VmCheck_IsVirtualWorld` in the originals).
fn virtual_world(transport: &Transport, env: &Env) -> bool {
    matches!(transport, Transport::Unix(_)) || env.assume_vmware || require_vmware().is_ok()
}

/// Sends `request`; prints the reply and a newline (exit 0) or the failure's text on stderr
/// (exit 1), as `RpcOut_sendOne`'s callers do.
fn send_one(
    transport: &Transport,
    env: &Env,
    request: &[u8],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Written {
    let reply = connect_rpci(transport, env.assume_vmware, true)
        .map_err(RpciError::from)
        .and_then(|mut rpci| rpci.call(request));
    match reply {
        Ok(reply) => {
            out.write_all(&reply)?;
            out.write_all(b"\n")?;
            Ok(Outcome::Exit(0))
        }
        Err(RpciError::Refused { reason, .. }) => {
            // The VMX's own text, as the originals print it.
            writeln!(err, "{reason}")?;
            Ok(Outcome::Exit(1))
        }
        Err(e) => {
            writeln!(err, "{e}")?;
            Ok(Outcome::Exit(1))
        }
    }
}

fn bad_environment(which: DropIn, e: &str, err: &mut dyn Write) -> Written {
    writeln!(err, "{}: {e}", which.name())?;
    Ok(Outcome::Exit(1))
}

fn rpctool(args: &[String], env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> Written {
    let transport = match env.transport() {
        Ok(t) => t,
        Err(e) => return bad_environment(DropIn::RpcTool, &e, err),
    };
    // rpctool.c checks the VM before it looks at its arguments.
    if !virtual_world(&transport, env) {
        writeln!(
            err,
            "Error: {} must be run inside a virtual machine on a VMware hypervisor product.",
            env.program.as_deref().unwrap_or(DropIn::RpcTool.name())
        )?;
        return Ok(Outcome::Exit(EXIT_NOT_VIRTUAL));
    }
    let Some(request) = args.first() else {
        rpctool_usage(err)?;
        return Ok(Outcome::Exit(1));
    };
    // rpctool.c compares prefixes: "-hx" and "--helpme" are help too.
    if request.starts_with("-h") || request.starts_with("--help") {
        rpctool_usage(err)?;
        return Ok(Outcome::Exit(0));
    }
    // Only the first argument is sent; the rest are ignored, as by rpctool.c.
    send_one(&transport, env, request.as_bytes(), out, err)
}

fn rpctool_usage(err: &mut dyn Write) -> std::io::Result<()> {
    write!(
        err,
        "rpctool syntax:\n\n  -h | --help\tprint usage.\n  rpctool <text>\tsend <text> as an RPC command.\n"
    )
}

fn checkvm(args: &[String], env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> Written {
    let name = DropIn::CheckVm.name();
    let transport = match env.transport() {
        Ok(t) => t,
        Err(e) => return bad_environment(DropIn::CheckVm, &e, err),
    };
    if !virtual_world(&transport, env) {
        writeln!(
            err,
            "Error: {name} must be run inside a virtual machine on a VMware hypervisor product."
        )?;
        return Ok(Outcome::Exit(1));
    }
    // GETVERSION is a backdoor command: a `unix:DIR` VMX has no answer to it.
    let version = match transport {
        Transport::Unix(_) => None,
        _ => PortBackdoor::open(env.assume_vmware)
            .ok()
            .and_then(|mut port| get_version(&mut port)),
    };
    let Some(version) = version else {
        writeln!(err, "{name}: Couldn't get version")?;
        return Ok(Outcome::Exit(1));
    };
    let mut product = false;
    for a in args {
        match a.as_str() {
            "-p" | "--prod" => product = true,
            "-h" | "--help" | "-?" => {
                write!(
                    out,
                    "Usage:\n  {name} [OPTION...]\n\nHelp Options:\n  -h, --help     Show help options\n\nApplication Options:\n  -p, --prod     print VMware hypervisor product.\n\n"
                )?;
                return Ok(Outcome::Exit(0));
            }
            other => {
                writeln!(err, "{name}: Unknown option {other}")?;
                return Ok(Outcome::Exit(1));
            }
        }
    }
    if product {
        // lib/include/backdoor_def.h: VMX_TYPE_WORKSTATION 1, VMX_TYPE_SCALABLE_SERVER 2.
        let text = match version.vmx_type {
            2 => "ESX Server",
            1 => "Workstation",
            _ => "Unknown",
        };
        writeln!(out, "{text}")?;
    } else {
        writeln!(out, "VMware software version {} (good)", version.version)?;
    }
    Ok(Outcome::Exit(0))
}

/// vmtoolsd's options that take a value, which this agent accepts and ignores (it has one
/// service and no plugins). `cmdLine.c` lists them.
const IGNORED_WITH_VALUE: [&str; 5] = ["--common-path", "--plugin-path", "-p", "--debug", "-g"];

fn vmtoolsd(args: &[String], env: &Env, out: &mut dyn Write, err: &mut dyn Write) -> Written {
    let parse_failed = |err: &mut dyn Write, msg: String| -> Written {
        writeln!(err, "Command line parsing failed: {msg}")?;
        Ok(Outcome::Exit(1))
    };
    let mut config = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |flag: &str| -> Result<String, String> {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("Missing argument for {flag}"))
        };
        match flag {
            "--cmd" => {
                let request = match value(flag) {
                    Ok(v) => v,
                    Err(e) => return parse_failed(err, e),
                };
                return vmtoolsd_cmd(request.into_bytes(), None, env, out, err);
            }
            "--cmdfile" => {
                let file = match value(flag) {
                    Ok(v) => v,
                    Err(e) => return parse_failed(err, e),
                };
                return vmtoolsd_cmd(Vec::new(), Some(PathBuf::from(file)), env, out, err);
            }
            "-v" | "--version" => {
                writeln!(
                    out,
                    "VMware Tools daemon, version {} (toolbox)",
                    env!("CARGO_PKG_VERSION")
                )?;
                return Ok(Outcome::Exit(0));
            }
            "-c" | "--config" => match value(flag) {
                Ok(v) => config = Some(PathBuf::from(v)),
                Err(e) => return parse_failed(err, e),
            },
            "-n" | "--name" => match value(flag) {
                Ok(v) if v == "vmsvc" => {}
                Ok(v) => {
                    // The user service (vmusr: desktop features) is not part of this agent.
                    writeln!(err, "{v} is an invalid service name.")?;
                    return Ok(Outcome::Exit(1));
                }
                Err(e) => return parse_failed(err, e),
            },
            "-l" | "--log" => {}
            f if IGNORED_WITH_VALUE.contains(&f) => {
                if let Err(e) = value(flag) {
                    return parse_failed(err, e);
                }
            }
            "-h" | "--help" | "-?" => {
                write!(
                    out,
                    "Usage:\n  vmtoolsd [OPTION...]\n\nRuns the VMware Tools daemon (toolbox).\n\n  --cmd=command              Sends an RPC command to the host and exits.\n  --cmdfile=command file     Sends an RPC command from a file to the host and exits.\n  -c, --config=path          Uses the config file (toolbox's TOML) at the given path.\n  -n, --name=svcname         Name of the service being started (vmsvc).\n  -v, --version              Prints the daemon version and exits.\n"
                )?;
                return Ok(Outcome::Exit(0));
            }
            other => return parse_failed(err, format!("Unknown option {other}")),
        }
    }
    Ok(Outcome::RunAgent { config })
}

/// `--cmd REQUEST` or `--cmdfile FILE` (whose contents, trailing white space removed, are the
/// request).
fn vmtoolsd_cmd(
    request: Vec<u8>,
    file: Option<PathBuf>,
    env: &Env,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Written {
    let transport = match env.transport() {
        Ok(t) => t,
        Err(e) => return bad_environment(DropIn::Vmtoolsd, &e, err),
    };
    if !virtual_world(&transport, env) {
        let text = if file.is_some() {
            "Unable to send command from file to VMware hypervisor."
        } else {
            "Unable to send command to VMware hypervisor."
        };
        writeln!(err, "{text}")?;
        return Ok(Outcome::Exit(1));
    }
    let request = match file {
        None => request,
        Some(path) => match read_command_file(&path) {
            Some(r) => r,
            None => {
                writeln!(err, "Unable to read command from file {}.", path.display())?;
                return Ok(Outcome::Exit(1));
            }
        },
    };
    send_one(&transport, env, &request, out, err)
}

/// An RPC request is at most this long (the VMX's own limit on a message is far smaller); a
/// larger file is refused rather than read whole.
const MAX_COMMAND_FILE: u64 = 1 << 20;

fn read_command_file(path: &std::path::Path) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_COMMAND_FILE + 1)
        .read_to_end(&mut bytes)
        .ok()?;
    if bytes.len() as u64 > MAX_COMMAND_FILE {
        return None;
    }
    // g_strchomp: trailing ASCII white space goes.
    while bytes.last().is_some_and(|b| b.is_ascii_whitespace()) {
        bytes.pop();
    }
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn vmtoolsd_outcome(line: &str) -> (Outcome, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = Env {
            transport: Some("unix:/nonexistent-dir".into()),
            ..Env::default()
        };
        let o = run(DropIn::Vmtoolsd, &words(line), &env, &mut out, &mut err);
        (o, String::from_utf8_lossy(&err).into_owned())
    }

    #[test]
    fn names_are_found_in_any_directory() {
        assert_eq!(
            DropIn::from_program("/usr/bin/vmware-rpctool"),
            Some(DropIn::RpcTool)
        );
        assert_eq!(DropIn::from_program("vmtoolsd"), Some(DropIn::Vmtoolsd));
        assert_eq!(
            DropIn::from_program("./vmware-checkvm"),
            Some(DropIn::CheckVm)
        );
        assert_eq!(DropIn::from_program("/usr/bin/toolbox"), None);
        for n in NAMES {
            assert_eq!(DropIn::from_program(n).map(DropIn::name), Some(n));
        }
    }

    #[test]
    fn plain_vmtoolsd_runs_the_agent_with_its_config() {
        assert_eq!(vmtoolsd_outcome("").0, Outcome::RunAgent { config: None });
        assert_eq!(
            vmtoolsd_outcome("-n vmsvc -l --config=/etc/t.toml --plugin-path /x -g /y").0,
            Outcome::RunAgent {
                config: Some("/etc/t.toml".into())
            }
        );
    }

    #[test]
    fn vmtoolsd_refuses_what_it_cannot_be() {
        let (o, e) = vmtoolsd_outcome("-n vmusr");
        assert_eq!(
            (o, e.as_str()),
            (Outcome::Exit(1), "vmusr is an invalid service name.\n")
        );
        let (o, e) = vmtoolsd_outcome("--bogus");
        assert_eq!(o, Outcome::Exit(1));
        assert_eq!(e, "Command line parsing failed: Unknown option --bogus\n");
        let (o, e) = vmtoolsd_outcome("--cmd");
        assert_eq!(o, Outcome::Exit(1));
        assert_eq!(
            e,
            "Command line parsing failed: Missing argument for --cmd\n"
        );
    }

    #[test]
    fn a_bad_transport_variable_is_named() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let env = Env {
            transport: Some("carrier-pigeon".into()),
            ..Env::default()
        };
        let o = run(DropIn::RpcTool, &words("ping"), &env, &mut out, &mut err);
        assert_eq!(o, Outcome::Exit(1));
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("vmware-rpctool: TOOLBOX_TRANSPORT: unknown transport"),
            "{err}"
        );
        assert!(out.is_empty());
    }

    #[test]
    fn command_files_lose_trailing_white_space_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cmd");
        std::fs::write(&path, " info-get guestinfo.x \n\t\n").unwrap();
        assert_eq!(
            read_command_file(&path).as_deref(),
            Some(&b" info-get guestinfo.x"[..])
        );
        let big = dir.path().join("big");
        std::fs::write(&big, vec![b'a'; MAX_COMMAND_FILE as usize + 1]).unwrap();
        assert_eq!(read_command_file(&big), None);
        assert_eq!(read_command_file(&dir.path().join("missing")), None);
    }
}
