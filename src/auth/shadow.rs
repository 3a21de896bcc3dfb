//! The `shadow` backend: the password checked against `/etc/shadow` in process, with the
//! account rules pam_unix applies (locked hashes, expiry, password aging) and the shell rule of
//! vmtoolsd's PAM file (pam_shells).

use super::accounts::{self, AccountFiles, ShadowEntry};
use super::checker::{Check, Checker, Failure};
use super::{AuthError, Credentials, DenyReason, UserIdentity};
pub(crate) use password_hash_verify::verify_hash;
use std::time::{SystemTime, UNIX_EPOCH};

/// A yescrypt hash of a random password nobody knows: unknown and locked accounts are checked
/// against it so that they take as long to refuse as a wrong password and the time taken
/// tells nothing about which accounts exist. (`mkpasswd -m yescrypt`, Debian's default cost.)
const DUMMY_HASH: &str =
    "$y$j9T$K8CVsd1iEEpPoke28vfCW0$zpd.RcYI6LLQcjLfExUWWoMXu1aeNeKLSW51VE5/ZE6";

const SECONDS_PER_DAY: u64 = 86_400;

pub(crate) fn login(
    files: &AccountFiles,
    creds: &Credentials,
    checker: &Checker,
) -> Result<UserIdentity, AuthError> {
    let user = creds.user.as_str();
    let deny = |reason| AuthError::Denied {
        user: user.to_string(),
        reason,
    };
    // The hash work, where the checker runs it: a refusal is the reason, a failed check an
    // error of its own.
    let check_hash = |password: &[u8], hash: &str| -> Result<Result<(), DenyReason>, AuthError> {
        match (Check::Hash { hash, password }).run(checker) {
            Ok(()) => Ok(Ok(())),
            Err(Failure::Denied(reason)) => Ok(Err(reason)),
            Err(failure) => Err(failure.into_auth_error(user, None)),
        }
    };
    let passwd = accounts::read_file(&files.passwd)?;
    let Some(entry) = accounts::parse_passwd(&passwd, user) else {
        let _ = check_hash(creds.password.as_bytes(), DUMMY_HASH)?;
        return Err(deny(DenyReason::UnknownUser));
    };
    let shadow_text = accounts::read_file(&files.shadow)?;
    let shadow = accounts::parse_shadow(&shadow_text, user);
    // An old-style hash in passwd itself counts when there is no shadow record (as pam_unix).
    let shadow = match shadow {
        Some(s) => s,
        None if entry.password.as_str() != "x" => ShadowEntry {
            hash: entry.password.clone(),
            last_change: None,
            max_days: None,
            inactive_days: None,
            expire: None,
        },
        None => {
            let _ = check_hash(creds.password.as_bytes(), DUMMY_HASH)?;
            return Err(deny(DenyReason::UnknownUser));
        }
    };
    if let Err(reason) = usable_hash(&shadow.hash) {
        let _ = check_hash(creds.password.as_bytes(), DUMMY_HASH)?;
        return Err(deny(reason));
    }
    check_hash(creds.password.as_bytes(), &shadow.hash)?.map_err(deny)?;
    // Account rules only after the password: a wrong password never learns that the account
    // is expired.
    check_aging(&shadow, today()).map_err(deny)?;
    if !accounts::shell_allowed(files, &entry.shell)? {
        return Err(deny(DenyReason::ShellNotAllowed(entry.shell.clone())));
    }
    accounts::identity_of(files, &entry)
}

fn usable_hash(hash: &str) -> Result<(), DenyReason> {
    if hash.starts_with(['!', '*']) {
        Err(DenyReason::Locked)
    } else if hash.is_empty() {
        Err(DenyReason::NoPassword)
    } else {
        Ok(())
    }
}

fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / SECONDS_PER_DAY) as i64
}

/// shadow(5)'s aging rules as pam_unix applies them (modules/pam_unix/passverify.c,
/// check_shadow_expiry): past `expire` the account is dead; `last_change` 0 means the password
/// must be changed first; past `last_change + max` the password has expired (a remote login
/// cannot change it), and past that plus `inactive` the account is expired as well.
fn check_aging(s: &ShadowEntry, today: i64) -> Result<(), DenyReason> {
    if let Some(expire) = s.expire {
        if today >= expire {
            return Err(DenyReason::AccountExpired);
        }
    }
    let Some(last) = s.last_change else {
        return Ok(());
    };
    if last == 0 {
        return Err(DenyReason::PasswordExpired);
    }
    if let Some(max) = s.max_days {
        if max >= 0 {
            let age = today.saturating_sub(last);
            if let Some(inactive) = s.inactive_days {
                if inactive >= 0 && age > max.saturating_add(inactive) {
                    return Err(DenyReason::AccountExpired);
                }
            }
            if age > max {
                return Err(DenyReason::PasswordExpired);
            }
        }
    }
    Ok(())
}

/// crypt(3) hash strings verified by RustCrypto's crates, constant-time compares inside.
mod password_hash_verify {
    use super::DenyReason;
    use sha_crypt::{PasswordHashRef as ShaHash, ShaCrypt};
    use yescrypt::{PasswordHashRef as YesHash, PasswordVerifier, Yescrypt};

    /// Checks `password` against a crypt(3) string: yescrypt (`$y$`), sha512-crypt (`$6$`)
    /// and sha256-crypt (`$5$`). DES, MD5 (`$1$`), bcrypt (`$2b$`) and gost-yescrypt are not
    /// verified: refused as unsupported rather than guessed at.
    pub(crate) fn verify_hash(password: &[u8], hash: &str) -> Result<(), DenyReason> {
        let outcome = if hash.starts_with("$y$") {
            let parsed = YesHash::new(hash).map_err(|_| DenyReason::MalformedHash)?;
            Yescrypt::default().verify_password(password, parsed)
        } else if hash.starts_with("$6$") || hash.starts_with("$5$") {
            let parsed = ShaHash::new(hash).map_err(|_| DenyReason::MalformedHash)?;
            ShaCrypt::default().verify_password(password, parsed)
        } else {
            let scheme = match hash.strip_prefix('$').and_then(|h| h.split_once('$')) {
                Some((id, _)) => format!("${id}$"),
                None => "DES".to_string(),
            };
            return Err(DenyReason::UnsupportedHash(scheme));
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(password_hash::Error::PasswordInvalid) => Err(DenyReason::WrongPassword),
            Err(_) => Err(DenyReason::MalformedHash),
        }
    }

    use yescrypt::password_hash;
}

#[cfg(test)]
mod tests {
    use super::*;
    use zeroize::Zeroizing;

    fn entry(
        last: Option<i64>,
        max: Option<i64>,
        inactive: Option<i64>,
        expire: Option<i64>,
    ) -> ShadowEntry {
        ShadowEntry {
            hash: Zeroizing::new(String::new()),
            last_change: last,
            max_days: max,
            inactive_days: inactive,
            expire,
        }
    }

    #[test]
    fn aging_rules() {
        let today = 20_000;
        assert_eq!(check_aging(&entry(None, None, None, None), today), Ok(()));
        assert_eq!(
            check_aging(&entry(Some(19_990), Some(99_999), None, None), today),
            Ok(())
        );
        assert_eq!(
            check_aging(&entry(Some(19_000), None, None, Some(today)), today),
            Err(DenyReason::AccountExpired)
        );
        assert_eq!(
            check_aging(&entry(Some(19_000), None, None, Some(today + 1)), today),
            Ok(())
        );
        assert_eq!(
            check_aging(&entry(Some(0), None, None, None), today),
            Err(DenyReason::PasswordExpired)
        );
        assert_eq!(
            check_aging(&entry(Some(today - 31), Some(30), None, None), today),
            Err(DenyReason::PasswordExpired)
        );
        assert_eq!(
            check_aging(&entry(Some(today - 30), Some(30), None, None), today),
            Ok(())
        );
        assert_eq!(
            check_aging(&entry(Some(today - 50), Some(30), Some(10), None), today),
            Err(DenyReason::AccountExpired)
        );
        assert_eq!(
            check_aging(&entry(Some(today - 35), Some(30), Some(10), None), today),
            Err(DenyReason::PasswordExpired)
        );
        // -1 written out means "no limit", as an empty field.
        assert_eq!(
            check_aging(&entry(Some(1), Some(-1), Some(-1), None), today),
            Ok(())
        );
    }

    #[test]
    fn locked_and_empty_hashes() {
        assert_eq!(usable_hash("!$6$abc$def"), Err(DenyReason::Locked));
        assert_eq!(usable_hash("*"), Err(DenyReason::Locked));
        assert_eq!(usable_hash("!"), Err(DenyReason::Locked));
        assert_eq!(usable_hash(""), Err(DenyReason::NoPassword));
        assert_eq!(usable_hash("$y$j9T$a$b"), Ok(()));
    }

    #[test]
    fn hash_schemes() {
        // The dummy hash is a real yescrypt hash: a wrong password is "wrong", not "malformed".
        assert_eq!(
            verify_hash(b"guess", DUMMY_HASH),
            Err(DenyReason::WrongPassword)
        );
        assert_eq!(
            verify_hash(b"pw", "$1$salt$qJH7.N4xYta3aEG/dfqo/0"),
            Err(DenyReason::UnsupportedHash("$1$".into()))
        );
        assert_eq!(
            verify_hash(b"pw", "$2b$05$abcdefghijklmnopqrstuu"),
            Err(DenyReason::UnsupportedHash("$2b$".into()))
        );
        assert_eq!(
            verify_hash(b"pw", "abJnggxhB/yWI"),
            Err(DenyReason::UnsupportedHash("DES".into()))
        );
        assert_eq!(verify_hash(b"pw", "$6$"), Err(DenyReason::MalformedHash));
        assert_eq!(verify_hash(b"pw", "$y$zz$"), Err(DenyReason::MalformedHash));
    }
}
