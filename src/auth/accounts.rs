//! The local account files: `/etc/passwd`, `/etc/group`, `/etc/shadow` (passwd(5), group(5),
//! shadow(5)) and `/etc/shells`, parsed the way glibc's files backend reads them: one record a
//! line, `:`-separated, malformed lines skipped, the first match wins.

use super::{AuthError, UserIdentity};
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Largest account file read: far beyond any real one (a million accounts is ~64 MiB of
/// passwd), so a runaway file cannot make the agent allocate without bound.
pub const MAX_ACCOUNT_FILE: u64 = 64 << 20;
/// Most supplementary groups collected for one user (Linux's NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65_536;

/// Where the account files are; injectable so tests (and the `shadow` backend of an appliance
/// with an unusual layout) can point elsewhere.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountFiles {
    /// passwd(5).
    pub passwd: PathBuf,
    /// group(5).
    pub group: PathBuf,
    /// shadow(5).
    pub shadow: PathBuf,
    /// shells(5): when it exists, a login shell must be listed in it (as pam_shells, which
    /// vmtoolsd's PAM file requires); when it does not, shells are not checked.
    pub shells: PathBuf,
}

impl Default for AccountFiles {
    fn default() -> Self {
        AccountFiles::under(Path::new("/"))
    }
}

impl AccountFiles {
    /// The standard names below `root` (`root/etc/passwd`, ...).
    pub fn under(root: &Path) -> AccountFiles {
        AccountFiles {
            passwd: root.join("etc/passwd"),
            group: root.join("etc/group"),
            shadow: root.join("etc/shadow"),
            shells: root.join("etc/shells"),
        }
    }

    /// What the files look like now, to notice any change since.
    pub fn stamp(&self) -> AccountStamp {
        let one = |p: &Path| {
            std::fs::metadata(p).ok().map(|m| FileStamp {
                dev: m.dev(),
                ino: m.ino(),
                size: m.size(),
                mtime: (m.mtime(), m.mtime_nsec()),
                ctime: (m.ctime(), m.ctime_nsec()),
            })
        };
        AccountStamp([
            one(&self.passwd),
            one(&self.group),
            one(&self.shadow),
            one(&self.shells),
        ])
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// Device, inode, size, modification and change times of each account file. passwd(1),
/// chpasswd(8), usermod(8) and vipw(8) all write a new file and rename it into place, so any
/// account change gives a new inode; an in-place edit still moves mtime and ctime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountStamp([Option<FileStamp>; 4]);

/// One passwd(5) record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PasswdEntry {
    pub name: String,
    /// `x` when the hash is in shadow; otherwise a hash (old style) or a lock marker.
    pub password: Zeroizing<String>,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
    pub shell: PathBuf,
}

/// One shadow(5) record; day counts are days since 1970-01-01, `None` for an empty field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ShadowEntry {
    pub hash: Zeroizing<String>,
    pub last_change: Option<i64>,
    pub max_days: Option<i64>,
    pub inactive_days: Option<i64>,
    pub expire: Option<i64>,
}

pub(crate) fn read_file(path: &Path) -> Result<Zeroizing<String>, AuthError> {
    let err = |source| AuthError::Accounts {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_ACCOUNT_FILE + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_ACCOUNT_FILE {
        return Err(err(std::io::Error::other(format!(
            "larger than {MAX_ACCOUNT_FILE} bytes"
        ))));
    }
    Ok(text)
}

/// The records of a `:`-separated file, NIS compat lines (`+`/`-`) and comments skipped.
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with(['#', '+', '-']))
        .map(|l| l.split(':').collect())
}

pub(crate) fn parse_passwd(text: &str, name: &str) -> Option<PasswdEntry> {
    records(text)
        .filter(|f| f.len() == 7 && f[0] == name)
        .find_map(|f| {
            Some(PasswdEntry {
                name: f[0].to_string(),
                password: Zeroizing::new(f[1].to_string()),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: PathBuf::from(f[5]),
                shell: PathBuf::from(f[6]),
            })
        })
}

pub(crate) fn parse_shadow(text: &str, name: &str) -> Option<ShadowEntry> {
    let day = |s: &str| -> Option<Option<i64>> {
        if s.is_empty() {
            Some(None)
        } else {
            s.parse().ok().map(Some)
        }
    };
    records(text)
        .filter(|f| f.len() == 9 && f[0] == name)
        .find_map(|f| {
            Some(ShadowEntry {
                hash: Zeroizing::new(f[1].to_string()),
                last_change: day(f[2])?,
                max_days: day(f[4])?,
                inactive_days: day(f[6])?,
                expire: day(f[7])?,
            })
        })
}

/// The primary group followed by every group listing `name` as a member, without repeats.
pub(crate) fn parse_groups(text: &str, name: &str, primary: u32) -> Vec<u32> {
    let mut groups = vec![primary];
    for f in records(text).filter(|f| f.len() == 4) {
        if groups.len() >= MAX_GROUPS {
            break;
        }
        let Ok(gid) = f[2].parse::<u32>() else {
            continue;
        };
        if f[3].split(',').any(|m| m == name) && !groups.contains(&gid) {
            groups.push(gid);
        }
    }
    groups
}

/// Whether `shell` may log in: listed in the shells file, or that file absent.
pub(crate) fn shell_allowed(files: &AccountFiles, shell: &Path) -> Result<bool, AuthError> {
    match read_file(&files.shells) {
        Ok(text) => Ok(text
            .lines()
            .map(str::trim)
            .any(|l| !l.starts_with('#') && Path::new(l) == shell)),
        Err(AuthError::Accounts { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(true)
        }
        Err(e) => Err(e),
    }
}

/// The identity of `name` from the files alone (the `shadow` and `none` backends).
pub(crate) fn identity_from_files(
    files: &AccountFiles,
    name: &str,
) -> Result<Option<UserIdentity>, AuthError> {
    let passwd = read_file(&files.passwd)?;
    let Some(entry) = parse_passwd(&passwd, name) else {
        return Ok(None);
    };
    Ok(Some(identity_of(files, &entry)?))
}

pub(crate) fn identity_of(
    files: &AccountFiles,
    entry: &PasswdEntry,
) -> Result<UserIdentity, AuthError> {
    let groups = match read_file(&files.group) {
        Ok(text) => parse_groups(&text, &entry.name, entry.gid),
        // A system without a group file still has the primary group.
        Err(AuthError::Accounts { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            vec![entry.gid]
        }
        Err(e) => return Err(e),
    };
    Ok(UserIdentity {
        name: entry.name.clone(),
        uid: entry.uid,
        gid: entry.gid,
        groups,
        home: entry.home.clone(),
        shell: entry.shell.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\n\
        # comment\n\
        +nisuser:x:5:5::/:/bin/sh\n\
        broken:x:notanumber:1::/:/bin/sh\n\
        alice:x:1001:1001:Alice,,,:/home/alice:/bin/bash\n\
        alice:x:9:9:second alice ignored:/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nalice:x:1001:\nwheel:x:10:bob,alice\nstaff:x:50:alice\n\
        audio:x:29:bob\nbad:x:zz:alice\n";
    const SHADOW: &str = "alice:$6$salt$hash:19000:0:99999:7:::\nbob:!:19000::::::\n\
        carol:$y$x:0::::::\n";

    #[test]
    fn passwd_first_valid_match() {
        let a = parse_passwd(PASSWD, "alice").unwrap();
        assert_eq!((a.uid, a.gid), (1001, 1001));
        assert_eq!(a.home, Path::new("/home/alice"));
        assert_eq!(a.shell, Path::new("/bin/bash"));
        assert!(parse_passwd(PASSWD, "broken").is_none());
        assert!(parse_passwd(PASSWD, "nisuser").is_none());
        assert!(parse_passwd(PASSWD, "+nisuser").is_none());
        assert!(parse_passwd(PASSWD, "ali").is_none());
    }

    #[test]
    fn groups_primary_first_members_after() {
        assert_eq!(parse_groups(GROUP, "alice", 1001), vec![1001, 10, 50]);
        assert_eq!(parse_groups(GROUP, "bob", 100), vec![100, 10, 29]);
        assert_eq!(parse_groups(GROUP, "nobody", 65534), vec![65534]);
    }

    #[test]
    fn shadow_fields() {
        let a = parse_shadow(SHADOW, "alice").unwrap();
        assert_eq!(a.hash.as_str(), "$6$salt$hash");
        assert_eq!(
            (a.last_change, a.max_days, a.inactive_days, a.expire),
            (Some(19000), Some(99999), None, None)
        );
        assert_eq!(parse_shadow(SHADOW, "carol").unwrap().last_change, Some(0));
        assert!(parse_shadow(SHADOW, "dave").is_none());
    }

    #[test]
    fn stamp_changes_with_a_replaced_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = AccountFiles::under(dir.path());
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(&files.shadow, "a:x:1::::::\n").unwrap();
        let before = files.stamp();
        assert_eq!(before, files.stamp());
        let tmp = dir.path().join("etc/shadow+");
        std::fs::write(&tmp, "a:y:1::::::\n").unwrap();
        std::fs::rename(&tmp, &files.shadow).unwrap();
        assert_ne!(before, files.stamp());
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "[a-z0-9:,!$#+\\-\n]{0,300}", name in "[a-z]{1,3}") {
            let _ = parse_passwd(&text, &name);
            let _ = parse_shadow(&text, &name);
            let g = parse_groups(&text, &name, 7);
            prop_assert_eq!(g[0], 7);
        }
    }
}
