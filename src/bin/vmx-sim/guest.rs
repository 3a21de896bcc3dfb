//! `vmx-sim guest.*`: govc's guest file commands, their flags, output and messages, carried
//! out by `toolbox::sim::guestops` through a running simulator.

use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::Path;
use toolbox::sim::guestops::{
    parse_unix_date, AttributeChange, ControlSocket, GuestOps, GuestOpsError, HttpRequest,
    Progress, Quiet, UploadAttributes,
};
use toolbox::vix::client::{login, ls_line};

/// `-l user:pass`, as govc takes it (default from `GOVC_GUEST_LOGIN`).
#[derive(Debug, Args)]
pub struct Login {
    /// Guest VM credentials, `user:password` (or GOVC_GUEST_LOGIN)
    #[arg(
        short = 'l',
        env = "GOVC_GUEST_LOGIN",
        hide_env_values = true,
        default_value = ""
    )]
    login: String,
}

/// The guest file commands.
#[derive(Debug, Subcommand)]
pub enum GuestCmd {
    /// List PATH files in VM.
    #[command(name = "guest.ls")]
    Ls {
        #[command(flatten)]
        login: Login,
        /// Simple path only listing.
        #[arg(short = 's')]
        simple: bool,
        /// The directory or file.
        #[arg(default_value = "")]
        path: String,
        /// Only names matching this regular expression.
        pattern: Option<String>,
    },
    /// Create directory PATH in VM.
    #[command(name = "guest.mkdir")]
    Mkdir {
        #[command(flatten)]
        login: Login,
        /// Create intermediate directories as needed.
        #[arg(short = 'p')]
        parents: bool,
        /// The directory.
        path: String,
    },
    /// Remove file PATH in VM.
    #[command(name = "guest.rm")]
    Rm {
        #[command(flatten)]
        login: Login,
        /// The file.
        path: String,
    },
    /// Remove directory PATH in VM.
    #[command(name = "guest.rmdir")]
    Rmdir {
        #[command(flatten)]
        login: Login,
        /// Recursive removal.
        #[arg(short = 'r')]
        recursive: bool,
        /// The directory.
        path: String,
    },
    /// Move (rename) files in VM.
    #[command(name = "guest.mv")]
    Mv {
        #[command(flatten)]
        login: Login,
        /// Do not overwrite an existing file.
        #[arg(short = 'n')]
        no_clobber: bool,
        /// The source.
        source: String,
        /// The destination.
        dest: String,
    },
    /// Create a temporary file or directory in VM.
    #[command(name = "guest.mktemp")]
    Mktemp {
        #[command(flatten)]
        login: Login,
        /// Make a directory instead of a file.
        #[arg(short = 'd')]
        dir: bool,
        /// If specified, create relative to this directory.
        #[arg(short = 'p', default_value = "")]
        path: String,
        /// Prefix.
        #[arg(short = 't', default_value = "")]
        prefix: String,
        /// Suffix.
        #[arg(short = 's', default_value = "")]
        suffix: String,
    },
    /// Change FILE MODE on VM.
    #[command(name = "guest.chmod")]
    Chmod {
        #[command(flatten)]
        login: Login,
        /// The mode (0644, 0o644, 0x1a4 or decimal).
        mode: String,
        /// The file.
        file: String,
    },
    /// Change FILE UID and GID on VM.
    #[command(name = "guest.chown")]
    Chown {
        #[command(flatten)]
        login: Login,
        /// `UID[:GID]`.
        owner: String,
        /// The file.
        file: String,
    },
    /// Change FILE times on VM.
    #[command(name = "guest.touch")]
    Touch {
        #[command(flatten)]
        login: Login,
        /// Change only the access time.
        #[arg(short = 'a')]
        atime: bool,
        /// Do not create any files.
        #[arg(short = 'c')]
        no_create: bool,
        /// Use DATE (as `date` prints it) instead of current time.
        #[arg(short = 'd')]
        date: Option<String>,
        /// The file.
        file: String,
    },
    /// Copy SOURCE from the local system to DEST in the guest VM ("-": standard input; a
    /// local directory, or a DEST ending in "/", goes as an archive unpacked into DEST).
    #[command(name = "guest.upload")]
    Upload {
        #[command(flatten)]
        login: Login,
        /// If set, the guest destination file is clobbered.
        #[arg(short = 'f')]
        force: bool,
        /// File permissions.
        #[arg(long = "perm", default_value_t = 0, value_parser = parse_go_int)]
        perm: i64,
        /// User ID.
        #[arg(long = "uid", allow_negative_numbers = true)]
        uid: Option<i32>,
        /// Group ID.
        #[arg(long = "gid", allow_negative_numbers = true)]
        gid: Option<i32>,
        /// The local source.
        source: String,
        /// The guest destination.
        dest: String,
    },
    /// Copy SOURCE from the guest VM to DEST on the local system ("-": standard output; a
    /// directory comes as a gzip'd tar).
    #[command(name = "guest.download")]
    Download {
        #[command(flatten)]
        login: Login,
        /// If set, the local destination file is clobbered.
        #[arg(short = 'f')]
        force: bool,
        /// The guest source.
        source: String,
        /// The local destination.
        dest: String,
    },
    /// Start program in VM (prints its pid; guest.ps lists its exit code for 5 minutes
    /// after it ends).
    #[command(name = "guest.start")]
    Start {
        #[command(flatten)]
        login: Login,
        /// The absolute path of the working directory for the program to start.
        #[arg(short = 'C', default_value = "")]
        dir: String,
        /// Set environment variable (key=val).
        #[arg(short = 'e')]
        env: Vec<String>,
        /// PATH ARG...
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List processes in VM (by default only those of the -l user, unless -e, -p or -U).
    #[command(name = "guest.ps")]
    Ps {
        #[command(flatten)]
        login: Login,
        /// Select all processes.
        #[arg(short = 'e')]
        every: bool,
        /// Output exit time and code.
        #[arg(short = 'x')]
        exit: bool,
        /// Wait for process to exit.
        #[arg(short = 'X')]
        wait: bool,
        /// Select by process ID.
        #[arg(short = 'p', value_parser = parse_go_int)]
        pids: Vec<i64>,
        /// Select by process UID.
        #[arg(short = 'U')]
        uids: Vec<String>,
    },
    /// Kill process ID on VM.
    #[command(name = "guest.kill")]
    Kill {
        #[command(flatten)]
        login: Login,
        /// Process ID.
        #[arg(short = 'p', value_parser = parse_go_int)]
        pids: Vec<i64>,
    },
    /// Read NAME environment variables from VM.
    #[command(name = "guest.getenv")]
    Getenv {
        #[command(flatten)]
        login: Login,
        /// The variables (none: all).
        names: Vec<String>,
    },
    /// Run program PATH in VM and display output; exits with the program's exit code. A
    /// PATH without "/" runs as '/bin/bash -c "PATH ARG..."'.
    #[command(name = "guest.run")]
    Run {
        #[command(flatten)]
        login: Login,
        /// Input data string. A value of '-' reads from OS stdin.
        #[arg(short = 'd', default_value = "")]
        data: String,
        /// The absolute path of the working directory for the program to start.
        #[arg(short = 'C', default_value = "")]
        dir: String,
        /// Set environment variables.
        #[arg(short = 'e')]
        env: Vec<String>,
        /// PATH ARG...
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Send an HTTP request to a service in the guest through the toolbox's http.RoundTrip
    /// and print the response body (a status other than 2xx: printed on stderr, exit 1).
    /// URL: http://HOST:PORT/PATH, or http+unix://SOCKET/PATH with SOCKET percent-encoded.
    #[command(name = "http")]
    Http {
        #[command(flatten)]
        login: Login,
        /// The method.
        #[arg(short = 'X', default_value = "GET")]
        method: String,
        /// The request body ('-' reads it from stdin).
        #[arg(short = 'd')]
        data: Option<String>,
        /// A request header, "Name: value".
        #[arg(short = 'H')]
        headers: Vec<String>,
        /// Print the status line and headers before the body.
        #[arg(short = 'i')]
        include: bool,
        /// The URL.
        url: String,
    },
}

/// govc takes its multi-letter flags with one dash (`-perm 0644`); clap wants two. Only
/// `guest.upload` has such flags, so only its arguments are touched (a `guest.run` program's
/// own `-perm` stays as written).
pub fn govc_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut upload = false;
    args.map(|a| {
        upload |= a == "guest.upload";
        if upload {
            for flag in ["-perm", "-uid", "-gid"] {
                if a == flag || a.starts_with(&format!("{flag}=")) {
                    return format!("-{a}");
                }
            }
        }
        a
    })
    .collect()
}

/// Go's `strconv.ParseInt(s, 0, 64)`: a `0x`, `0o`, `0b` or leading-`0` base, `_` allowed
/// between digits after a prefix.
fn parse_go_int(s: &str) -> Result<i64, String> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits) = if let Some(d) = lower.strip_prefix("0x") {
        (16, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0o") {
        (8, d.to_string())
    } else if let Some(d) = lower.strip_prefix("0b") {
        (2, d.to_string())
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string())
    } else {
        (10, lower.clone())
    };
    let digits = if radix != 10 {
        digits.replace('_', "")
    } else {
        digits
    };
    let v = i64::from_str_radix(&digits, radix)
        .map_err(|_| format!("strconv.ParseInt: parsing {s:?}: invalid syntax"))?;
    Ok(if neg { -v } else { v })
}

fn ops(login_text: &str, client: toolbox::sim::Client) -> Result<GuestOps<ControlSocket>, String> {
    let (user, pass) = login_text.split_once(':').unwrap_or((login_text, ""));
    if user.is_empty() {
        return Err("guest login username must not be empty".into());
    }
    Ok(GuestOps::new(ControlSocket(client), login(user, pass)))
}

/// An indicatif bar on a terminal; nothing when stderr is not one.
struct Bar {
    label: &'static str,
    bar: Option<indicatif::ProgressBar>,
}

impl Bar {
    fn new(label: &'static str) -> Bar {
        Bar { label, bar: None }
    }
}

impl Progress for Bar {
    fn start(&mut self, total: Option<u64>) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = match total {
            Some(t) => indicatif::ProgressBar::new(t),
            None => indicatif::ProgressBar::no_length(),
        };
        let template = if total.is_some() {
            "{msg}{bar:30} {bytes}/{total_bytes} {bytes_per_sec} {eta}"
        } else {
            "{msg}{bytes} {bytes_per_sec}"
        };
        if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(self.label);
        self.bar = Some(bar);
    }
    fn advance(&mut self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }
    fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Go's tabwriter as govc sets it up (minwidth 2, padding 2, spaces): every cell but the last
/// of a line padded to its column's widest cell plus two.
fn tabulate(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate().take(row.len().saturating_sub(1)) {
            let w = cell.chars().count();
            if widths.len() <= i {
                widths.push(0);
            }
            widths[i] = widths[i].max(w);
        }
    }
    let mut out = String::new();
    for row in &rows {
        for (i, cell) in row.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < row.len() {
                let width = (widths[i] + 2).max(2);
                out.extend(std::iter::repeat_n(' ', width - cell.chars().count()));
            }
        }
        out.push('\n');
    }
    out
}

fn local<'p>(what: &'static str, path: &'p str) -> impl FnOnce(std::io::Error) -> String + 'p {
    move |e| format!("{what} {path}: {e}")
}

async fn connect(dir: &Path) -> Result<toolbox::sim::Client, String> {
    toolbox::sim::Client::connect(dir)
        .await
        .map_err(|e| format!("connecting to the simulator in {}: {e}", dir.display()))
}

/// Runs one guest command against the simulator in `dir`; the exit code (`guest.run`'s is
/// the program's, `http`'s 1 for a status other than 2xx).
pub async fn run(dir: &Path, cmd: GuestCmd) -> Result<u8, String> {
    match cmd {
        GuestCmd::Start { .. }
        | GuestCmd::Ps { .. }
        | GuestCmd::Kill { .. }
        | GuestCmd::Getenv { .. }
        | GuestCmd::Run { .. }
        | GuestCmd::Http { .. } => process_command(dir, cmd).await,
        files => file_command(dir, files).await.map(|()| 0),
    }
}

/// Standard output for a program's output: once the reader has gone (`| head`), the rest is
/// dropped rather than failing the command, so the guest's temporaries are still removed and
/// the exit code still reported.
struct Stdout {
    closed: bool,
}

impl std::io::Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.closed {
            return Ok(buf.len());
        }
        match std::io::stdout().lock().write_all(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(buf.len())
            }
            Err(e) => Err(e),
            Ok(()) => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if self.closed {
            return Ok(());
        }
        match std::io::stdout().lock().flush() {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
                self.closed = true;
                Ok(())
            }
            r => r,
        }
    }
}

/// The exit code a shell would report for a program's exit code.
fn shell_exit_code(code: i32) -> u8 {
    // Out of a byte's range (not from a POSIX guest): still a failure.
    u8::try_from(code).unwrap_or(1)
}

/// The `guest.ps` table as govc prints it (cli/vm/guest/ps.go): UID, PID, STIME, with `-x`
/// XTIME and XCODE ("-" while running), and CMD; only the processes `show` selects.
pub fn ps_table(
    procs: &[toolbox::vix::client::ProcessInfo],
    exit: bool,
    show: impl Fn(&toolbox::vix::client::ProcessInfo) -> bool,
) -> String {
    let hm = |t: i64| {
        let minutes = t.rem_euclid(86_400) / 60;
        format!("{:02}:{:02}", minutes / 60, minutes % 60)
    };
    let mut lines = vec![if exit {
        "UID\tPID\tSTIME\tXTIME\tXCODE\tCMD".to_string()
    } else {
        "UID\tPID\tSTIME\tCMD".to_string()
    }];
    for p in procs.iter().filter(|p| show(p)) {
        let mut line = format!("{}\t{}\t{}", p.owner, p.pid, hm(p.start_time));
        if exit {
            if p.end_time == 0 {
                line.push_str("\t-\t-");
            } else {
                line.push_str(&format!("\t{}\t{}", hm(p.end_time), p.exit_code));
            }
        }
        line.push('\t');
        // A command line may hold newlines and tabs (a shell's `-c` script): shown as `?`,
        // as ps(1) does, so each process stays one row of the table.
        line.extend(
            p.command_line
                .trim()
                .chars()
                .map(|c| if c.is_control() { '?' } else { c }),
        );
        lines.push(line);
    }
    tabulate(&lines)
}

async fn process_command(dir: &Path, cmd: GuestCmd) -> Result<u8, String> {
    let client = connect(dir).await?;
    let err = |e: GuestOpsError| e.to_string();
    match cmd {
        GuestCmd::Start {
            login,
            dir,
            env,
            command,
        } => {
            let (path, args) = command.split_first().ok_or("give the program's PATH")?;
            let pid = ops(&login.login, client)?
                .start(path, &args.join(" "), &dir, &env)
                .await
                .map_err(err)?;
            outln!("{pid}");
            Ok(0)
        }
        GuestCmd::Ps {
            login,
            every,
            exit,
            wait,
            pids,
            uids,
        } => {
            let user = login
                .login
                .split_once(':')
                .map_or(login.login.as_str(), |(u, _)| u);
            let user = user.to_string();
            let mut ops = ops(&login.login, client)?;
            let mut backoff = toolbox::sim::guestops::Backoff::default();
            let procs = loop {
                let procs = ops.ps(&pids).await.map_err(err)?;
                if wait && procs.iter().any(|p| p.end_time == 0) {
                    backoff.wait().await;
                    continue;
                }
                break procs;
            };
            let every = every || !pids.is_empty();
            let uids = if !every && uids.is_empty() {
                vec![user]
            } else {
                uids
            };
            out!(
                "{}",
                ps_table(&procs, exit, |p| every || uids.contains(&p.owner))
            );
            Ok(0)
        }
        GuestCmd::Kill { login, pids } => {
            let mut ops = ops(&login.login, client)?;
            for pid in pids {
                ops.kill(pid).await.map_err(err)?;
            }
            Ok(0)
        }
        GuestCmd::Getenv { login, names } => {
            for v in ops(&login.login, client)?
                .getenv(&names)
                .await
                .map_err(err)?
            {
                outln!("{v}");
            }
            Ok(0)
        }
        GuestCmd::Run {
            login,
            data,
            dir,
            env,
            command,
        } => {
            let (path, args) = command.split_first().ok_or("give the program's PATH")?;
            let mut ops = ops(&login.login, client)?;
            let mut stdin_lock;
            let mut bytes;
            let stdin: Option<&mut dyn std::io::Read> = match data.as_str() {
                "" => None,
                "-" => {
                    stdin_lock = std::io::stdin().lock();
                    Some(&mut stdin_lock)
                }
                text => {
                    bytes = text.as_bytes();
                    Some(&mut bytes)
                }
            };
            let spec = toolbox::sim::guestops::RunSpec {
                path,
                args,
                dir: &dir,
                env: &env,
                stdin,
            };
            let mut stdout = Stdout { closed: false };
            let mut stderr = std::io::stderr();
            let code = ops.run(spec, &mut stdout, &mut stderr).await.map_err(err)?;
            Ok(shell_exit_code(code))
        }
        GuestCmd::Http {
            login,
            method,
            data,
            headers,
            include,
            url,
        } => {
            use std::io::{Read, Write};
            let mut request = HttpRequest::new(&method, &url).map_err(err)?;
            for h in headers {
                let (name, value) = h
                    .split_once(':')
                    .ok_or_else(|| format!("header {h:?} is not \"Name: value\""))?;
                request
                    .headers
                    .push((name.trim().to_string(), value.trim().to_string()));
            }
            match data.as_deref() {
                None => {}
                Some("-") => {
                    let limit = toolbox::sim::guestops::MAX_HTTP_REQUEST;
                    std::io::stdin()
                        .lock()
                        .take(limit + 1)
                        .read_to_end(&mut request.body)
                        .map_err(local("reading", "stdin"))?;
                    if request.body.len() as u64 > limit {
                        return Err(format!("the request body is larger than {limit} bytes"));
                    }
                }
                Some(text) => request.body = text.as_bytes().to_vec(),
            }
            let response = ops(&login.login, client)?
                .http(&request)
                .await
                .map_err(err)?;
            let mut stdout = Stdout { closed: false };
            let reason = hyper::StatusCode::from_u16(response.status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("");
            let status = format!("{} {reason}", response.status);
            let written: std::io::Result<()> = (|| {
                if include {
                    write!(stdout, "HTTP/1.1 {}\r\n", status.trim_end())?;
                    for (k, v) in &response.headers {
                        write!(stdout, "{k}: {v}\r\n")?;
                    }
                    stdout.write_all(b"\r\n")?;
                }
                stdout.write_all(&response.body)?;
                stdout.flush()
            })();
            written.map_err(local("writing", "stdout"))?;
            if response.is_success() {
                Ok(0)
            } else {
                eprintln!("vmx-sim: {}", status.trim_end());
                Ok(1)
            }
        }
        // `run` sends the file commands to `file_command`.
        _ => Err("not a process command".into()),
    }
}

/// Runs one file command.
async fn file_command(dir: &Path, cmd: GuestCmd) -> Result<(), String> {
    let client = connect(dir).await?;
    let err = |e: GuestOpsError| e.to_string();
    match cmd {
        GuestCmd::Ls {
            login,
            simple,
            path,
            pattern,
        } => {
            let files = ops(&login.login, client)?
                .list(&path, pattern.as_deref())
                .await
                .map_err(err)?;
            let lines: Vec<String> = files.iter().map(|f| ls_line(f, simple)).collect();
            out!("{}", tabulate(&lines));
            Ok(())
        }
        GuestCmd::Mkdir {
            login,
            parents,
            path,
        } => ops(&login.login, client)?
            .mkdir(&path, parents)
            .await
            .map_err(err),
        GuestCmd::Rm { login, path } => ops(&login.login, client)?.rm(&path).await.map_err(err),
        GuestCmd::Rmdir {
            login,
            recursive,
            path,
        } => ops(&login.login, client)?
            .rmdir(&path, recursive)
            .await
            .map_err(err),
        GuestCmd::Mv {
            login,
            no_clobber,
            source,
            dest,
        } => ops(&login.login, client)?
            .mv(&source, &dest, !no_clobber)
            .await
            .map_err(err),
        GuestCmd::Mktemp {
            login,
            dir,
            path,
            prefix,
            suffix,
        } => {
            let name = ops(&login.login, client)?
                .mktemp(dir, &prefix, &suffix, &path)
                .await
                .map_err(err)?;
            outln!("{name}");
            Ok(())
        }
        GuestCmd::Chmod { login, mode, file } => {
            let mode = parse_go_int(&mode)?;
            let mode = u32::try_from(mode).map_err(|_| format!("mode {mode} out of range"))?;
            ops(&login.login, client)?
                .set_attributes(
                    &file,
                    AttributeChange {
                        permissions: Some(mode),
                        ..AttributeChange::default()
                    },
                )
                .await
                .map_err(err)
        }
        GuestCmd::Chown { login, owner, file } => {
            let (uid, gid) = match owner.split_once(':') {
                Some((u, g)) => (u, Some(g)),
                None => (owner.as_str(), None),
            };
            let atoi = |s: &str| {
                s.parse::<i32>()
                    .map_err(|_| format!("strconv.Atoi: parsing {s:?}: invalid syntax"))
            };
            let change = AttributeChange {
                uid: Some(atoi(uid)?),
                gid: gid.map(atoi).transpose()?,
                ..AttributeChange::default()
            };
            ops(&login.login, client)?
                .set_attributes(&file, change)
                .await
                .map_err(err)
        }
        GuestCmd::Touch {
            login,
            atime,
            no_create,
            date,
            file,
        } => {
            let time = match date {
                Some(d) => parse_unix_date(&d).ok_or_else(|| {
                    format!("parsing time {d:?} as \"Mon Jan _2 15:04:05 MST 2006\": cannot parse")
                })?,
                None => now(),
            };
            ops(&login.login, client)?
                .touch(&file, atime, no_create, time)
                .await
                .map_err(err)
        }
        GuestCmd::Upload {
            login,
            force,
            perm,
            uid,
            gid,
            source,
            dest,
        } => {
            let attrs = UploadAttributes {
                permissions: u32::try_from(perm)
                    .map_err(|_| format!("permissions {perm} out of range"))?,
                uid,
                gid,
            };
            let mut ops = ops(&login.login, client)?;
            if source == "-" {
                let mut stdin = std::io::stdin().lock();
                ops.upload(&mut stdin, &dest, attrs, force, &mut Quiet)
                    .await
                    .map_err(err)?;
                return Ok(());
            }
            let path = Path::new(&source);
            let meta = std::fs::metadata(path).map_err(local("open", &source))?;
            let mut bar = Bar::new("Uploading... ");
            if meta.is_dir() {
                use toolbox_hgfs::archive::{ArchiveFormat, ArchiveReader, PackOptions};
                let mut options = PackOptions::new(ArchiveFormat::TarGzip);
                options.go_toolbox_trailer = false;
                let mut reader = ArchiveReader::open(path, options)
                    .map_err(|e| format!("packing {source}: {e}"))?;
                let dest = if dest.ends_with('/') || dest.starts_with("/archive:") {
                    dest
                } else {
                    format!("{dest}/")
                };
                ops.upload(&mut reader, &dest, attrs, force, &mut bar)
                    .await
                    .map_err(err)?;
            } else {
                let mut file = std::fs::File::open(path).map_err(local("open", &source))?;
                ops.upload(&mut file, &dest, attrs, force, &mut bar)
                    .await
                    .map_err(err)?;
            }
            Ok(())
        }
        GuestCmd::Download {
            login,
            force,
            source,
            dest,
        } => {
            let mut ops = ops(&login.login, client)?;
            if dest == "-" {
                let mut stdout = std::io::stdout().lock();
                ops.download(&source, &mut stdout, &mut Quiet)
                    .await
                    .map_err(err)?;
                return Ok(());
            }
            if std::fs::symlink_metadata(&dest).is_ok() && !force {
                return Err("file already exists".into());
            }
            let mut file = std::fs::File::create(&dest).map_err(local("open", &dest))?;
            let mut bar = Bar::new("Downloading... ");
            let result = ops.download(&source, &mut file, &mut bar).await;
            if result.is_err() {
                // What a failed download wrote is no copy of anything.
                drop(file);
                let _ = std::fs::remove_file(&dest);
            }
            result.map_err(err).map(drop)
        }
        // `run` sends the process commands to `process_command`.
        _ => Err("not a file command".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_integers() {
        assert_eq!(parse_go_int("0644"), Ok(0o644));
        assert_eq!(parse_go_int("0o755"), Ok(0o755));
        assert_eq!(parse_go_int("0x1a4"), Ok(0x1a4));
        assert_eq!(parse_go_int("420"), Ok(420));
        assert_eq!(parse_go_int("0"), Ok(0));
        assert!(parse_go_int("0689").is_err());
    }

    #[test]
    fn tabwriter_columns() {
        let t = tabulate(&["a\tbb\tx".into(), "ccc\td\ty".into()]);
        assert_eq!(t, "a    bb  x\nccc  d   y\n");
        assert_eq!(
            govc_flags(
                ["guest.upload", "-perm", "0644", "-f"]
                    .into_iter()
                    .map(String::from)
            ),
            ["guest.upload", "--perm", "0644", "-f"]
        );
        // Other commands' arguments are left alone.
        assert_eq!(
            govc_flags(["guest.run", "ls", "-perm"].into_iter().map(String::from)),
            ["guest.run", "ls", "-perm"]
        );
    }

    #[test]
    fn ps_table_as_govc_prints_it() {
        use toolbox::vix::client::ProcessInfo;
        let p = |pid, owner: &str, end_time, exit_code| ProcessInfo {
            name: "sleep".into(),
            command_line: format!("/bin/sleep {pid} "),
            pid,
            owner: owner.into(),
            start_time: 1_700_000_000,
            exit_code,
            end_time,
        };
        let mut procs = [p(7, "root", 0, 0), p(12345, "gfuser", 1_700_000_060, 3)];
        assert_eq!(
            ps_table(&procs, false, |_| true),
            "UID     PID    STIME  CMD\n\
             root    7      22:13  /bin/sleep 7\n\
             gfuser  12345  22:13  /bin/sleep 12345\n"
        );
        assert_eq!(
            ps_table(&procs, true, |p| p.owner == "gfuser"),
            "UID     PID    STIME  XTIME  XCODE  CMD\n\
             gfuser  12345  22:13  22:14  3      /bin/sleep 12345\n"
        );
        assert_eq!(
            ps_table(&procs[..1], true, |_| true),
            "UID   PID  STIME  XTIME  XCODE  CMD\nroot  7    22:13  -      -      /bin/sleep 7\n"
        );
        procs[0].command_line = "bash -c X='a\n\tb'\n".into();
        assert_eq!(
            ps_table(&procs[..1], false, |_| true),
            "UID   PID  STIME  CMD\nroot  7    22:13  bash -c X='a??b'\n"
        );
    }

    #[test]
    fn process_commands_take_govc_flags_and_leave_the_program_its_own() {
        #[derive(Debug, clap::Parser)]
        struct Top {
            #[command(subcommand)]
            cmd: GuestCmd,
        }
        use clap::Parser as _;
        let parse = |args: &[&str]| {
            let argv =
                std::iter::once("vmx-sim".to_string()).chain(args.iter().map(|s| s.to_string()));
            Top::try_parse_from(govc_flags(argv)).map(|t| t.cmd)
        };
        match parse(&[
            "guest.run",
            "-C",
            "/tmp",
            "-e",
            "A=1",
            "-e",
            "B=2",
            "ls",
            "-perm",
            "-C",
        ]) {
            Ok(GuestCmd::Run {
                dir,
                env,
                command,
                data,
                ..
            }) => {
                assert_eq!(dir, "/tmp");
                assert_eq!(env, ["A=1", "B=2"]);
                assert_eq!(command, ["ls", "-perm", "-C"]);
                assert_eq!(data, "");
            }
            other => panic!("{other:?}"),
        }
        match parse(&[
            "guest.ps", "-e", "-x", "-p", "0x10", "-p", "5", "-U", "root",
        ]) {
            Ok(GuestCmd::Ps {
                every,
                exit,
                wait,
                pids,
                uids,
                ..
            }) => {
                assert!(every && exit && !wait);
                assert_eq!(pids, [16, 5]);
                assert_eq!(uids, ["root"]);
            }
            other => panic!("{other:?}"),
        }
        match parse(&["guest.kill", "-p", "1", "-p", "2"]) {
            Ok(GuestCmd::Kill { pids, .. }) => assert_eq!(pids, [1, 2]),
            other => panic!("{other:?}"),
        }
        assert!(parse(&["guest.start"]).is_err());
        assert!(parse(&["guest.run"]).is_err());
        match parse(&[
            "http",
            "-X",
            "POST",
            "-d",
            "x",
            "-H",
            "A: b",
            "http://127.0.0.1:1/",
        ]) {
            Ok(GuestCmd::Http {
                method,
                data,
                headers,
                url,
                ..
            }) => {
                assert_eq!((method.as_str(), data.as_deref()), ("POST", Some("x")));
                assert_eq!(headers, ["A: b"]);
                assert_eq!(url, "http://127.0.0.1:1/");
            }
            other => panic!("{other:?}"),
        }
    }
}
