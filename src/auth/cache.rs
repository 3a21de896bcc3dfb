//! Successful logins remembered for a short time. An entry holds an HMAC-SHA-256 tag of the
//! user name and password under a key drawn at random when the agent starts (never written
//! anywhere), the identity it resolved to, and the account files' [`AccountStamp`] at the time
//! of the check. A lookup hits only if the same name and password give the same tag (compared
//! in constant time), the entry is younger than the TTL and the account files are unchanged.
//! Any failed attempt for the user drops the entry (done by the caller).

use super::{AccountStamp, Credentials, UserIdentity};
use hmac::{KeyInit, Mac};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Most users remembered at once (a guest has few interactive accounts; this only bounds
/// memory).
pub const MAX_CACHED_USERS: usize = 256;

struct Entry {
    tag: Zeroizing<Vec<u8>>,
    identity: UserIdentity,
    stamp: AccountStamp,
    expires: Instant,
}

pub(crate) struct LoginCache {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
    entries: HashMap<String, Entry>,
}

impl LoginCache {
    pub(crate) fn new(ttl: Duration) -> LoginCache {
        let mut key = Zeroizing::new([0u8; 32]);
        let random = getrandom::fill(key.as_mut_slice()).is_ok();
        // Without randomness the cache is not safe to use: keep it off instead.
        let ttl = if random { ttl } else { Duration::ZERO };
        if !random {
            tracing::warn!("no system randomness: login cache disabled");
        }
        LoginCache {
            key,
            ttl,
            entries: HashMap::new(),
        }
    }

    fn mac(&self, creds: &Credentials) -> HmacSha256 {
        let mut mac = match HmacSha256::new_from_slice(self.key.as_slice()) {
            Ok(m) => m,
            // HMAC takes keys of any length; 32 bytes is always accepted.
            Err(_) => unreachable!("HMAC accepts a 32-byte key"),
        };
        // The name's length first, so that ("ab", "c") and ("a", "bc") differ.
        mac.update(&(creds.user.len() as u64).to_le_bytes());
        mac.update(creds.user.as_bytes());
        mac.update(creds.password.as_bytes());
        mac
    }

    pub(crate) fn lookup(
        &mut self,
        creds: &Credentials,
        stamp: &AccountStamp,
        now: Instant,
    ) -> Option<UserIdentity> {
        let entry = self.entries.get(&creds.user)?;
        if now >= entry.expires || entry.stamp != *stamp {
            self.entries.remove(&creds.user);
            return None;
        }
        self.mac(creds)
            .verify_slice(&entry.tag)
            .ok()
            .map(|()| entry.identity.clone())
    }

    pub(crate) fn insert(
        &mut self,
        creds: &Credentials,
        identity: UserIdentity,
        stamp: AccountStamp,
        now: Instant,
    ) {
        if self.ttl.is_zero() {
            return;
        }
        if !self.entries.contains_key(&creds.user) && self.entries.len() >= MAX_CACHED_USERS {
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= MAX_CACHED_USERS {
                if let Some(oldest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(u, _)| u.clone())
                {
                    self.entries.remove(&oldest);
                }
            }
        }
        let tag = Zeroizing::new(self.mac(creds).finalize().into_bytes().to_vec());
        self.entries.insert(
            creds.user.clone(),
            Entry {
                tag,
                identity,
                stamp,
                expires: now + self.ttl,
            },
        );
    }

    pub(crate) fn forget(&mut self, user: &str) {
        self.entries.remove(user);
    }
}

#[cfg(test)]
mod tests {
    use super::super::AccountFiles;
    use super::*;
    use std::path::PathBuf;

    fn identity() -> UserIdentity {
        UserIdentity {
            name: "u".into(),
            uid: 1,
            gid: 1,
            groups: vec![1],
            home: PathBuf::from("/"),
            shell: PathBuf::from("/bin/sh"),
        }
    }

    #[test]
    fn hit_only_for_the_same_password_unchanged_files_and_in_time() {
        let dir = tempfile::tempdir().unwrap();
        let files = AccountFiles::under(dir.path());
        let stamp = files.stamp();
        let mut c = LoginCache::new(Duration::from_secs(60));
        let t0 = Instant::now();
        let good = Credentials::new("u", "right");
        c.insert(&good, identity(), stamp.clone(), t0);
        assert_eq!(c.lookup(&good, &stamp, t0), Some(identity()));
        assert_eq!(c.lookup(&Credentials::new("u", "wrong"), &stamp, t0), None);
        assert_eq!(c.lookup(&Credentials::new("v", "right"), &stamp, t0), None);
        // A wrong password does not evict (the caller does when the real check fails).
        assert_eq!(c.lookup(&good, &stamp, t0), Some(identity()));
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(&files.shadow, "u:x:1::::::\n").unwrap();
        assert_eq!(c.lookup(&good, &files.stamp(), t0), None);
        // ... and the stale entry is gone even when the files come back the same.
        assert_eq!(c.lookup(&good, &stamp, t0), None);
        c.insert(&good, identity(), stamp.clone(), t0);
        assert_eq!(c.lookup(&good, &stamp, t0 + Duration::from_secs(60)), None);
    }

    #[test]
    fn zero_ttl_caches_nothing_and_size_is_bounded() {
        let stamp = AccountFiles::under(std::path::Path::new("/nonexistent")).stamp();
        let t0 = Instant::now();
        let mut off = LoginCache::new(Duration::ZERO);
        off.insert(&Credentials::new("u", "p"), identity(), stamp.clone(), t0);
        assert_eq!(off.lookup(&Credentials::new("u", "p"), &stamp, t0), None);
        let mut c = LoginCache::new(Duration::from_secs(60));
        for i in 0..MAX_CACHED_USERS + 10 {
            c.insert(
                &Credentials::new(format!("u{i}"), "p"),
                identity(),
                stamp.clone(),
                t0,
            );
        }
        assert_eq!(c.entries.len(), MAX_CACHED_USERS);
    }
}
