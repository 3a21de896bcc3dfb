//! `vmx-sim guest.*`: govc's guest file commands, their flags, output and messages, carried
//! out by `toolbox::sim::guestops` through a running simulator.

use clap::{Args, Subcommand};
use std::io::IsTerminal;
use std::path::Path;
use toolbox::sim::guestops::{
    parse_unix_date, AttributeChange, ControlSocket, GuestOps, GuestOpsError, Progress, Quiet,
    UploadAttributes,
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
}

/// govc takes its multi-letter flags with one dash (`-perm 0644`); clap wants two.
pub fn govc_flags(args: impl Iterator<Item = String>) -> Vec<String> {
    args.map(|a| {
        for flag in ["-perm", "-uid", "-gid"] {
            if a == flag || a.starts_with(&format!("{flag}=")) {
                return format!("-{a}");
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

/// Runs one guest command against the simulator in `dir`.
pub async fn run(dir: &Path, cmd: GuestCmd) -> Result<(), String> {
    let client = toolbox::sim::Client::connect(dir)
        .await
        .map_err(|e| format!("connecting to the simulator in {}: {e}", dir.display()))?;
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
            govc_flags(["-perm".into(), "0644".into(), "-f".into()].into_iter()),
            ["--perm", "0644", "-f"]
        );
    }
}
