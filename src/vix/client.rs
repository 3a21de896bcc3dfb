//! The host side, for the simulator: requests built as the VMX relays them, replies decoded
//! into what govc shows.

use super::property::{PropertyError, PropertyList};
use super::proto::{
    common_flags, encode_request, join_relayed, Command, CredentialType, Credentials, DecodeError,
    Reply, Secret, VixError, RELAYED_COMMAND,
};
use base64::Engine as _;

/// Why a reply could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The reply framing.
    #[error("VIX reply: {0}")]
    Reply(#[from] DecodeError),
    /// The GetToolsState property list.
    #[error("tools state: {0}")]
    Properties(#[from] PropertyError),
    /// The GetToolsState text is not base64.
    #[error("tools state is not base64")]
    Base64,
    /// A file listing or file info element.
    #[error("file info: {0}")]
    FileInfo(&'static str),
    /// A process listing, pid or environment reply.
    #[error("process reply: {0}")]
    Process(&'static str),
}

/// Name/password credentials, as `-l user:pass` gives them.
pub fn login(name: &str, password: &str) -> Credentials {
    Credentials {
        kind: CredentialType::NAME_PASSWORD,
        name: name.to_string(),
        password: Secret::new(password.to_string()),
    }
}

/// True when the VMX asks for a binary reply to `command` (HGFS packets are binary).
pub fn wants_binary(command: &Command) -> bool {
    matches!(command, Command::HgfsPacket(_))
}

/// The VIX request message for `command`.
pub fn request(command: &Command, credentials: Option<&Credentials>, cookie: u64) -> Vec<u8> {
    let flags = if wants_binary(command) {
        common_flags::GUEST_RETURNS_BINARY
    } else {
        0
    };
    let (kind, region) = match credentials {
        Some(c) => (c.kind, c.encode()),
        None => (CredentialType::NONE, Vec::new()),
    };
    encode_request(
        command.op(),
        cookie,
        flags,
        kind,
        &command.encode_body(),
        &region,
    )
}

/// The whole TCLO request: `Vix_1_Relayed_Command "<cookie>"`, a NUL, the message.
pub fn relayed_request(
    command: &Command,
    credentials: Option<&Credentials>,
    cookie: u64,
) -> Vec<u8> {
    let mut out = format!("{RELAYED_COMMAND} ").into_bytes();
    out.extend_from_slice(&join_relayed(
        &cookie.to_string(),
        &request(command, credentials, cookie),
    ));
    out
}

/// Decodes the reply to `command` (the bytes after TCLO's `OK `).
pub fn parse_reply(command: &Command, bytes: &[u8]) -> Result<Reply, ClientError> {
    Ok(Reply::decode(bytes, wants_binary(command))?)
}

/// The GetToolsState result: base64 of a property list.
pub fn parse_tools_state(result: &[u8]) -> Result<PropertyList, ClientError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(result)
        .map_err(|_| ClientError::Base64)?;
    Ok(PropertyList::decode(&raw)?)
}

/// One `<fxi>` element.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// `<Name>`, unescaped (raw bytes: a Linux name need not be UTF-8).
    pub name: Vec<u8>,
    /// `<ft>`: `VIX_FILE_ATTRIBUTES_*`.
    pub file_type: i32,
    /// `<fs>`.
    pub size: u64,
    /// `<mt>`, seconds.
    pub mtime: u64,
    /// `<at>`, seconds.
    pub atime: u64,
    /// `<uid>`.
    pub uid: i32,
    /// `<gid>`.
    pub gid: i32,
    /// `<perm>`: `st_mode`.
    pub perm: u32,
    /// `<slt>`, unescaped.
    pub symlink_target: Vec<u8>,
}

/// A ListFiles reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFilesPage {
    /// The reply was cut short; ask again with `offset` = entries received so far.
    pub truncated: bool,
    /// `<rem>`: matching entries after this page.
    pub remaining: u64,
    /// The entries.
    pub files: Vec<FileInfo>,
}

/// Undoes `VixToolsEscapeXMLString` (`%XX`).
pub fn unescape_xml(s: &str) -> Result<Vec<u8>, ClientError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or(ClientError::FileInfo("bad % escape"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn element<'a>(s: &'a str, tag: &str) -> Result<(&'a str, &'a str), ClientError> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let rest = s
        .strip_prefix(open.as_str())
        .ok_or(ClientError::FileInfo("missing element"))?;
    let end = rest
        .find(close.as_str())
        .ok_or(ClientError::FileInfo("unclosed element"))?;
    Ok((&rest[..end], &rest[end + close.len()..]))
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, ClientError> {
    s.parse().map_err(|_| ClientError::FileInfo("not a number"))
}

fn parse_fxi(s: &str) -> Result<(FileInfo, &str), ClientError> {
    let (body, rest) = element(s, "fxi")?;
    let (name, b) = element(body, "Name")?;
    let (ft, b) = element(b, "ft")?;
    let (fs, b) = element(b, "fs")?;
    let (mt, b) = element(b, "mt")?;
    let (at, b) = element(b, "at")?;
    let (uid, b) = element(b, "uid")?;
    let (gid, b) = element(b, "gid")?;
    let (perm, b) = element(b, "perm")?;
    let (slt, b) = element(b, "slt")?;
    if !b.is_empty() {
        return Err(ClientError::FileInfo("extra content in <fxi>"));
    }
    Ok((
        FileInfo {
            name: unescape_xml(name)?,
            file_type: number(ft)?,
            size: number(fs)?,
            mtime: number(mt)?,
            atime: number(at)?,
            uid: number(uid)?,
            gid: number(gid)?,
            perm: number::<i32>(perm)? as u32,
            symlink_target: unescape_xml(slt)?,
        },
        rest,
    ))
}

/// The one `<fxi>` of an InitiateFileTransferFromGuest reply.
pub fn parse_file_info(result: &[u8]) -> Result<FileInfo, ClientError> {
    let s = std::str::from_utf8(result).map_err(|_| ClientError::FileInfo("not UTF-8"))?;
    let (info, rest) = parse_fxi(s)?;
    if !rest.is_empty() {
        return Err(ClientError::FileInfo("trailing bytes"));
    }
    Ok(info)
}

/// A ListFiles reply: vmtoolsd's `"0 <rem>N</rem><fxi>..."`, or govmomi's toolbox's form
/// without the truncation flag.
pub fn parse_list_files(result: &[u8]) -> Result<ListFilesPage, ClientError> {
    let s = std::str::from_utf8(result).map_err(|_| ClientError::FileInfo("not UTF-8"))?;
    let (truncated, s) = match s.as_bytes() {
        [b'0', b' ', ..] => (false, &s[2..]),
        [b'1', b' ', ..] => (true, &s[2..]),
        _ => (false, s),
    };
    let (rem, mut s) = element(s, "rem")?;
    let remaining = number(rem)?;
    let mut files = Vec::new();
    while !s.is_empty() {
        let (f, rest) = parse_fxi(s)?;
        files.push(f);
        s = rest;
    }
    Ok(ListFilesPage {
        truncated,
        remaining,
        files,
    })
}

/// `units.FileSize` as govc prints sizes: bytes below 1 KiB, else one decimal and a unit
/// letter.
pub fn human_size(n: u64) -> String {
    const UNITS: [(u64, &str); 6] = [
        (1 << 60, "E"),
        (1 << 50, "P"),
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (size, unit) in UNITS {
        if n >= size {
            return format!("{:.1}{unit}", n as f32 / size as f32);
        }
    }
    n.to_string()
}

/// Seconds since the epoch as Go's `"Jan 2 15:04 2006"`, in UTC.
pub fn govc_time(secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{} {day} {:02}:{:02} {year}",
        MONTHS[(month - 1) as usize],
        rem / 3600,
        rem % 3600 / 60
    )
}

/// One line of `govc guest.ls` (`-s`: the path only), fields separated by tabs as govc's
/// tabwriter gets them: mode, uid, gid, size, modification time, path (` -> target` for a
/// link).
pub fn ls_line(f: &FileInfo, simple: bool) -> String {
    let name = String::from_utf8_lossy(&f.name);
    if simple {
        return name.into_owned();
    }
    let (kind, size) = if f.file_type & super::proto::file_type::DIRECTORY != 0 {
        // govc shows 4092 for a directory whose size the guest left at 0.
        ('d', if f.size == 0 { 4092 } else { f.size })
    } else if f.file_type & super::proto::file_type::SYMLINK != 0 {
        ('l', f.size)
    } else {
        ('-', f.size)
    };
    let mut perm = String::with_capacity(9);
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        perm.push(if f.perm & (0o400 >> i) != 0 { c } else { '-' });
    }
    let mut line = format!(
        "{kind}{perm}\t{}\t{}\t{}\t{}\t{name}",
        f.uid,
        f.gid,
        human_size(size),
        govc_time(f.mtime as i64)
    );
    if !f.symlink_target.is_empty() {
        line.push_str(" -> ");
        line.push_str(&String::from_utf8_lossy(&f.symlink_target));
    }
    line
}

/// The vSphere fault a VIX error becomes and the message govc prints for it
/// (`govc: <message>`), for a request about `path`.
pub fn fault_message(error: VixError, path: &str) -> String {
    match error {
        VixError::OK => String::new(),
        VixError::FILE_NOT_FOUND => format!("File {path} was not found"),
        VixError::FILE_ALREADY_EXISTS | VixError::ALREADY_EXISTS => {
            format!(
                "Cannot complete the operation because the file or folder {path} already exists"
            )
        }
        VixError::INVALID_LOGIN_CREDENTIALS => {
            "Failed to authenticate with the guest operating system using the supplied credentials."
                .into()
        }
        VixError::GUEST_USER_PERMISSIONS | VixError::FILE_ACCESS_ERROR => {
            format!("Insufficient permissions in guest operating system to access {path}.")
        }
        VixError::NOT_A_FILE => format!("{path} is not a file"),
        VixError::NOT_A_DIRECTORY => format!("{path} is not a directory"),
        VixError::DIRECTORY_NOT_EMPTY => format!("The directory {path} is not empty"),
        VixError::OPERATION_DISABLED => "Operation is disabled by guest".into(),
        VixError::UNRECOGNIZED_COMMAND_IN_GUEST | VixError::NOT_SUPPORTED => {
            "The guest operating system does not support the operation.".into()
        }
        VixError::INVALID_ARG => "A specified parameter was not correct".into(),
        VixError::FILE_NAME_TOO_LONG | VixError::FILE_NAME_INVALID => {
            format!("Invalid file or folder name {path}")
        }
        VixError::DISK_FULL => format!("There is not enough space on the file system for {path}"),
        other => format!(
            "A general system error occurred: vix error codes = ({}, 0).",
            other.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_list_files_forms() {
        let fxi = "<fxi><Name>a%3Cb</Name><ft>2</ft><fs>0</fs><mt>5</mt><at>6</at><uid>0</uid>\
                   <gid>0</gid><perm>41471</perm><slt>t%25</slt></fxi>";
        for (text, truncated) in [
            (format!("1 <rem>7</rem>{fxi}"), true),
            (format!("0 <rem>7</rem>{fxi}"), false),
            (format!("<rem>7</rem>{fxi}"), false),
        ] {
            let page = parse_list_files(text.as_bytes()).unwrap();
            assert_eq!((page.truncated, page.remaining), (truncated, 7));
            assert_eq!(page.files[0].name, b"a<b");
            assert_eq!(page.files[0].symlink_target, b"t%");
            assert_eq!(page.files[0].perm, 0o120777);
        }
        for bad in [
            "0 <rem>x</rem>",
            "<rem>1</rem><fxi>",
            "<rem>1</rem><fxi><Name>%G0</Name>",
        ] {
            assert!(parse_list_files(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn ls_lines_as_govc_prints_them() {
        assert_eq!(govc_time(0), "Jan 1 00:00 1970");
        assert_eq!(govc_time(1_700_000_000), "Nov 14 22:13 2023");
        assert_eq!(govc_time(951_782_400), "Feb 29 00:00 2000");
        assert_eq!(human_size(1023), "1023");
        assert_eq!(human_size(1536), "1.5K");
        assert_eq!(human_size(3 << 30), "3.0G");
        let f = FileInfo {
            name: b"/tmp/l".to_vec(),
            file_type: 2,
            size: 0,
            mtime: 0,
            atime: 0,
            uid: 1,
            gid: 2,
            perm: 0o120755,
            symlink_target: b"x".to_vec(),
        };
        assert_eq!(
            ls_line(&f, false),
            "lrwxr-xr-x\t1\t2\t0\tJan 1 00:00 1970\t/tmp/l -> x"
        );
        assert_eq!(ls_line(&f, true), "/tmp/l");
    }

    #[test]
    fn govc_messages_name_the_path() {
        assert_eq!(
            fault_message(VixError::FILE_NOT_FOUND, "/x"),
            "File /x was not found"
        );
        assert!(fault_message(VixError(9999), "/x").contains("(9999, 0)"));
    }
}

// ---------------------------------------------------------------------------------------------
// Processes (govc guest.start, guest.ps, guest.kill, guest.getenv, guest.run).

/// StartProgram as govc's `guest.start` sends it: `env` entries are `NAME=value`.
pub fn start_program(program: &str, arguments: &str, working_dir: &str, env: &[String]) -> Command {
    Command::StartProgram(super::proto::StartProgramRequest {
        start_minimized: false,
        program: program.to_string(),
        arguments: arguments.to_string(),
        working_dir: working_dir.to_string(),
        env: env.to_vec(),
    })
}

/// ListProcessesEx: `key` 0 and `offset` 0 for a new listing, then the first chunk's key
/// and the bytes received so far for each further chunk; `pids` as `guest.ps -p`.
pub fn list_processes(key: u32, offset: u32, pids: &[u64]) -> Command {
    Command::ListProcesses(super::proto::ListProcessesRequest {
        key,
        offset,
        pids: pids.to_vec(),
    })
}

/// TerminateProcess, as `guest.kill -p PID`.
pub fn terminate_process(pid: u64) -> Command {
    Command::TerminateProcess(super::proto::TerminateProcessRequest { pid, options: 0 })
}

/// ReadEnvironmentVariables, as `guest.getenv [NAME...]` (none: all).
pub fn read_environment(names: &[String]) -> Command {
    Command::ReadEnvironmentVariables(super::proto::ReadEnvRequest {
        names: names.to_vec(),
    })
}

/// The pid in a StartProgram result (decimal text).
pub fn parse_pid(result: &[u8]) -> Result<i64, ClientError> {
    let text = std::str::from_utf8(result).map_err(|_| ClientError::Process("pid is not text"))?;
    text.trim_end_matches('\0')
        .trim()
        .parse()
        .map_err(|_| ClientError::Process("pid is not a number"))
}

/// One `<proc>` of a ListProcessesEx result, unescaped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessInfo {
    /// `<cmd>`: the program's name.
    pub name: String,
    /// `<name>`: the full command line.
    pub command_line: String,
    /// `<pid>`.
    pub pid: i64,
    /// `<user>`.
    pub owner: String,
    /// `<start>`: seconds since the epoch.
    pub start_time: i64,
    /// `<eCode>`.
    pub exit_code: i32,
    /// `<eTime>`: 0 while running.
    pub end_time: i64,
}

/// One chunk of a ListProcessesEx reply: the header vmtoolsd puts in front of a listing too
/// large for one reply (`<key>`, `<totalSize>` on the first chunk, `<leftToSend>` on each),
/// and the listing bytes it carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessListChunk {
    /// The key to ask for the next chunk with (first chunk only).
    pub key: Option<u32>,
    /// Size of the whole listing (first chunk only).
    pub total_size: Option<u32>,
    /// Bytes still to fetch after this chunk (`None`: the listing fit one reply).
    pub left_to_send: Option<u32>,
    /// The listing bytes of this chunk.
    pub data: Vec<u8>,
}

fn leading_tag<'a>(s: &'a [u8], tag: &str) -> Option<(&'a [u8], &'a [u8])> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let rest = s.strip_prefix(open.as_bytes())?;
    let end = rest
        .windows(close.len())
        .position(|w| w == close.as_bytes())?;
    Some((&rest[..end], &rest[end + close.len()..]))
}

fn proc_number<T: std::str::FromStr>(b: &[u8]) -> Result<T, ClientError> {
    std::str::from_utf8(b)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(ClientError::Process("bad number"))
}

/// Splits one ListProcessesEx result into its chunk header and data.
pub fn parse_process_chunk(result: &[u8]) -> Result<ProcessListChunk, ClientError> {
    let mut rest = result.strip_suffix(b"\0").unwrap_or(result);
    let mut chunk = ProcessListChunk {
        key: None,
        total_size: None,
        left_to_send: None,
        data: Vec::new(),
    };
    if let Some((key, after)) = leading_tag(rest, "key") {
        chunk.key = Some(proc_number(key)?);
        let (total, after) =
            leading_tag(after, "totalSize").ok_or(ClientError::Process("no <totalSize>"))?;
        chunk.total_size = Some(proc_number(total)?);
        rest = after;
    }
    if let Some((left, after)) = leading_tag(rest, "leftToSend") {
        chunk.left_to_send = Some(proc_number(left)?);
        rest = after;
    } else if chunk.key.is_some() {
        return Err(ClientError::Process("no <leftToSend>"));
    }
    chunk.data = rest.to_vec();
    Ok(chunk)
}

fn text(b: &[u8]) -> Result<String, ClientError> {
    let raw = std::str::from_utf8(b).map_err(|_| ClientError::Process("not UTF-8"))?;
    String::from_utf8(unescape_xml(raw)?).map_err(|_| ClientError::Process("not UTF-8"))
}

/// The `<proc>` entries of a whole listing (all chunks joined).
pub fn parse_process_list(listing: &[u8]) -> Result<Vec<ProcessInfo>, ClientError> {
    let mut rest = listing.strip_suffix(b"\0").unwrap_or(listing);
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (entry, after) =
            leading_tag(rest, "proc").ok_or(ClientError::Process("expected <proc>"))?;
        rest = after;
        let (name, e) = match leading_tag(entry, "cmd") {
            Some((cmd, e)) => (text(cmd)?, e),
            None => (String::new(), entry),
        };
        let (command_line, e) = leading_tag(e, "name").ok_or(ClientError::Process("<name>"))?;
        let (pid, e) = leading_tag(e, "pid").ok_or(ClientError::Process("<pid>"))?;
        let (owner, e) = leading_tag(e, "user").ok_or(ClientError::Process("<user>"))?;
        let (start, e) = leading_tag(e, "start").ok_or(ClientError::Process("<start>"))?;
        let (code, e) = leading_tag(e, "eCode").ok_or(ClientError::Process("<eCode>"))?;
        let (end, _) = leading_tag(e, "eTime").ok_or(ClientError::Process("<eTime>"))?;
        out.push(ProcessInfo {
            name,
            command_line: text(command_line)?,
            pid: proc_number(pid)?,
            owner: text(owner)?,
            start_time: proc_number(start)?,
            exit_code: proc_number(code)?,
            end_time: proc_number(end)?,
        });
    }
    Ok(out)
}

/// The `<ev>NAME=value</ev>` entries of a ReadEnvironmentVariables result, unescaped.
pub fn parse_env(result: &[u8]) -> Result<Vec<String>, ClientError> {
    let mut rest = result.strip_suffix(b"\0").unwrap_or(result);
    let mut out = Vec::new();
    while !rest.is_empty() {
        let (ev, after) = leading_tag(rest, "ev").ok_or(ClientError::Process("expected <ev>"))?;
        out.push(text(ev)?);
        rest = after;
    }
    Ok(out)
}

/// The message govc prints for a VIX error of a process command about `pid`: the process
/// forms of [`fault_message`]'s file messages.
pub fn process_fault_message(error: VixError, pid: i64) -> String {
    match error {
        VixError::NO_SUCH_PROCESS => format!("Process {pid} was not found"),
        VixError::GUEST_USER_PERMISSIONS => {
            format!("Insufficient permissions in guest operating system to access process {pid}.")
        }
        other => fault_message(other, &format!("process {pid}")),
    }
}

/// The columns `govc guest.ps` prints for one process (cli/vm/guest/ps.go: owner, pid,
/// start as `15:04` UTC, command line; tab-separated before govc's tabwriter aligns them).
pub fn ps_line(p: &ProcessInfo) -> String {
    let minutes = p.start_time.rem_euclid(86_400) / 60;
    format!(
        "{}\t{}\t{:02}:{:02}\t{}",
        p.owner,
        p.pid,
        minutes / 60,
        minutes % 60,
        p.command_line.trim()
    )
}
