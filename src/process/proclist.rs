//! ListProcessesEx as vmtoolsd answers it: every process of the guest read from `/proc`
//! (lib/procMgr/procMgrPosix.c, `ProcMgr_ListProcesses`), the programs this helper started
//! first with their exit codes and end times, each as one `<proc>` element
//! (`VixToolsPrintProcInfoEx`, services/plugins/vix/vixTools.c), and a listing larger than
//! one reply cached under a key and handed out in chunks (`VixToolsListProcessesEx`).

use super::manager::ProcessManager;
use crate::vix::files::escape_xml;
use crate::vix::proto::{ListProcessesRequest, VixError, MAX_RESULT_SIZE};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a chunked listing is kept for the host to fetch the rest
/// (`SECONDS_UNTIL_LISTPROC_CACHE_CLEANUP`, vixTools.c: 10 minutes).
pub const LISTING_CACHE_TIME: Duration = Duration::from_secs(10 * 60);

/// Chunked listings kept at once; the oldest goes first. vmtoolsd keeps any number until its
/// timer fires; a host that never fetches the rest must not grow the helper.
pub const MAX_CACHED_LISTINGS: usize = 8;

/// Room vmtoolsd keeps for the first chunk's header: its format string with its NUL and 3
/// numbers of up to 10 digits.
const FIRST_HEADER_ROOM: usize =
    "<key>%u</key><totalSize>%d</totalSize><leftToSend>%d</leftToSend>".len() + 1 + 3 * 10;

/// Room for a later chunk's header: format, NUL, one number.
const LATER_HEADER_ROOM: usize = "<leftToSend>%d</leftToSend>".len() + 1 + 10;

/// One process as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcInfo {
    /// Pid.
    pub pid: i64,
    /// `<cmd>`: the program's name.
    pub name: String,
    /// `<name>`: the command line.
    pub command_line: String,
    /// `<user>`: owner name, or the uid when it has none.
    pub owner: String,
    /// `<start>`: seconds since the epoch.
    pub start_time: i64,
    /// `<eCode>`.
    pub exit_code: i32,
    /// `<eTime>`: 0 while running.
    pub end_time: i64,
}

/// `/etc/passwd` names by uid (read directly: the static build has no NSS).
fn user_names() -> HashMap<u32, String> {
    let Ok(text) = std::fs::read_to_string("/etc/passwd") else {
        return HashMap::new();
    };
    let mut names = HashMap::new();
    for line in text.lines() {
        let mut f = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            names.entry(uid).or_insert_with(|| name.to_string());
        }
    }
    names
}

/// What is needed to turn `/proc/<pid>/stat`'s start ticks into a time.
#[derive(Clone, Copy, Debug)]
struct Clock {
    boot_time: i64,
    ticks_per_second: i64,
}

fn clock() -> Clock {
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
        })
        .unwrap_or(0);
    let ticks_per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .map_or(100, i64::from);
    Clock {
        boot_time,
        ticks_per_second,
    }
}

/// Reads one `/proc/<pid>`; `None` when it vanished meanwhile or is unreadable.
fn read_proc(dir: &Path, pid: i64, names: &HashMap<u32, String>, clock: Clock) -> Option<ProcInfo> {
    let meta = std::fs::metadata(dir).ok()?;
    let stat = std::fs::read(dir.join("stat")).ok()?;
    // The comm field is in parentheses and may hold anything, ')' included: the fields
    // after it start past the last ')'.
    let close = stat.iter().rposition(|b| *b == b')')?;
    let after = std::str::from_utf8(stat.get(close + 2..)?).ok()?;
    // starttime is field 22; `after` starts at field 3.
    let start_ticks: i64 = after.split_ascii_whitespace().nth(19)?.parse().ok()?;
    let raw = std::fs::read(dir.join("cmdline")).unwrap_or_default();
    let (name, command_line) = if raw.is_empty() {
        // Kernel threads and zombies: the name from `status`, as ProcMgr does.
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let n = status
            .lines()
            .find_map(|l| l.strip_prefix("Name:"))
            .map(|n| n.trim().to_string())
            .unwrap_or_default();
        (n.clone(), n)
    } else {
        let argv0 = raw.split(|b| *b == 0).next().unwrap_or_default();
        let argv0 = String::from_utf8_lossy(argv0);
        let name = if argv0.starts_with('/') {
            argv0.rsplit('/').next().unwrap_or_default().to_string()
        } else {
            argv0.into_owned()
        };
        let joined: Vec<u8> = raw
            .strip_suffix(b"\0")
            .unwrap_or(&raw)
            .iter()
            .map(|b| if *b == 0 { b' ' } else { *b })
            .collect();
        let line = String::from_utf8_lossy(&joined)
            .trim_end_matches(' ')
            .to_string();
        (name, line)
    };
    let uid = meta.uid();
    Some(ProcInfo {
        pid,
        name,
        command_line,
        owner: names.get(&uid).cloned().unwrap_or_else(|| uid.to_string()),
        start_time: clock.boot_time + start_ticks / clock.ticks_per_second,
        exit_code: 0,
        end_time: 0,
    })
}

fn proc_pids() -> Vec<i64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<i64> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    pids
}

/// The guest's processes from `/proc` (`pids` empty: all of them, else those of `pids`
/// that exist).
pub fn system_processes(pids: &[i64]) -> Vec<ProcInfo> {
    let names = user_names();
    let clock = clock();
    let wanted = if pids.is_empty() {
        proc_pids()
    } else {
        pids.to_vec()
    };
    wanted
        .into_iter()
        .filter(|p| *p > 0)
        .filter_map(|pid| read_proc(Path::new(&format!("/proc/{pid}")), pid, &names, clock))
        .collect()
}

/// Appends one `<proc>` element as `VixToolsPrintProcInfoEx` prints it.
pub fn format_entry(out: &mut String, p: &ProcInfo) {
    let _ = write!(
        out,
        "<proc><cmd>{}</cmd><name>{}</name><pid>{}</pid><user>{}</user><start>{}</start>\
         <eCode>{}</eCode><eTime>{}</eTime></proc>",
        escape_xml(p.name.as_bytes()),
        escape_xml(p.command_line.as_bytes()),
        p.pid,
        escape_xml(p.owner.as_bytes()),
        p.start_time,
        p.exit_code,
        p.end_time
    );
}

/// The whole listing: the programs the manager started first (with exit codes), then the
/// rest of `/proc`, each pid once; with `pids`, only those, in the order asked.
pub fn listing(manager: &ProcessManager, pids: &[u64]) -> String {
    let started: Vec<ProcInfo> = manager
        .list()
        .into_iter()
        .map(|r| ProcInfo {
            pid: r.pid,
            name: r.name,
            command_line: r.command_line,
            owner: r.owner,
            start_time: r.start_time,
            exit_code: r.exit.map_or(0, |(c, _)| c),
            end_time: r.exit.map_or(0, |(_, t)| t),
        })
        .collect();
    let mut out = String::new();
    let wanted: Vec<i64> = pids.iter().filter_map(|p| i64::try_from(*p).ok()).collect();
    let is_started = |pid: i64| started.iter().any(|s| s.pid == pid);
    if wanted.is_empty() {
        for p in &started {
            format_entry(&mut out, p);
        }
        for p in system_processes(&[]) {
            if !is_started(p.pid) {
                format_entry(&mut out, &p);
            }
        }
    } else {
        for pid in &wanted {
            if let Some(p) = started.iter().find(|s| s.pid == *pid) {
                format_entry(&mut out, p);
            }
        }
        let rest: Vec<i64> = wanted.iter().copied().filter(|p| !is_started(*p)).collect();
        if !rest.is_empty() {
            for p in system_processes(&rest) {
                format_entry(&mut out, &p);
            }
        }
    }
    out
}

/// Listings too large for one reply, waiting for the host to fetch their other chunks. One
/// cache per helper, so a key only ever serves the user it was made for (vmtoolsd checks
/// the euid for the same reason).
#[derive(Debug, Default)]
pub struct ListingCache {
    listings: HashMap<u32, (Vec<u8>, Instant)>,
    next_key: u32,
}

impl ListingCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// Listings held now.
    pub fn len(&self) -> usize {
        self.listings.len()
    }

    /// True when none is held.
    pub fn is_empty(&self) -> bool {
        self.listings.is_empty()
    }

    fn expire(&mut self) {
        self.listings
            .retain(|_, (_, made)| made.elapsed() < LISTING_CACHE_TIME);
        while self.listings.len() >= MAX_CACHED_LISTINGS {
            let oldest = self
                .listings
                .iter()
                .min_by_key(|(_, (_, made))| *made)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => self.listings.remove(&k),
                None => break,
            };
        }
    }

    fn store(&mut self, listing: Vec<u8>) -> u32 {
        self.expire();
        self.next_key = self.next_key.wrapping_add(1).max(1);
        while self.listings.contains_key(&self.next_key) {
            self.next_key = self.next_key.wrapping_add(1).max(1);
        }
        self.listings
            .insert(self.next_key, (listing, Instant::now()));
        self.next_key
    }
}

/// Answers one ListProcessesEx request: the listing if it fits `max_result` bytes
/// ([`MAX_RESULT_SIZE`] on the wire), else its first chunk with `<key>`, `<totalSize>` and
/// `<leftToSend>`, and on later requests (`key`, `offset`) the next chunks with
/// `<leftToSend>`. The last chunk drops the cached listing.
pub fn list_processes(
    cache: &mut ListingCache,
    manager: &ProcessManager,
    req: &ListProcessesRequest,
    max_result: usize,
) -> Result<Vec<u8>, VixError> {
    let max_result = max_result.min(MAX_RESULT_SIZE);
    let key = if req.key == 0 {
        let full = listing(manager, &req.pids).into_bytes();
        if full.len() + FIRST_HEADER_ROOM <= max_result {
            return Ok(full);
        }
        cache.store(full)
    } else {
        req.key
    };
    let Some((full, _)) = cache.listings.get(&key) else {
        return Err(VixError::FAIL);
    };
    let offset = req.offset as usize;
    if offset > full.len() {
        return Err(VixError::FAIL);
    }
    let first = req.key == 0 || offset == 0;
    let room = max_result.saturating_sub(if first {
        FIRST_HEADER_ROOM
    } else {
        LATER_HEADER_ROOM
    });
    let left = full.len() - offset;
    let now = left.min(room.max(1));
    let left_after = left - now;
    let mut out = if first {
        format!(
            "<key>{key}</key><totalSize>{}</totalSize><leftToSend>{left_after}</leftToSend>",
            full.len()
        )
    } else {
        format!("<leftToSend>{left_after}</leftToSend>")
    }
    .into_bytes();
    out.extend_from_slice(&full[offset..offset + now]);
    if left_after == 0 {
        cache.listings.remove(&key);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_is_escaped_as_vmtoolsd() {
        let mut s = String::new();
        format_entry(
            &mut s,
            &ProcInfo {
                pid: 7,
                name: "a<b".into(),
                command_line: "a<b '%'".into(),
                owner: "root".into(),
                start_time: 10,
                exit_code: 3,
                end_time: 11,
            },
        );
        assert_eq!(
            s,
            "<proc><cmd>a%3Cb</cmd><name>a%3Cb %27%25%27</name><pid>7</pid><user>root</user>\
             <start>10</start><eCode>3</eCode><eTime>11</eTime></proc>"
        );
    }

    #[test]
    fn own_process_is_listed_from_proc() {
        let me = i64::from(std::process::id());
        let list = system_processes(&[me]);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].pid, me);
        assert!(list[0].start_time > 1_000_000_000, "{list:?}");
    }
}
