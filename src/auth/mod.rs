//! Authentication of guest-operation requests: who the VMX says is asking, checked against the
//! guest's own accounts before anything runs as that user.
//!
//! Backends ([`BackendKind`]): `pam` (the system's policy, dynamic builds with the `pam` feature),
//! `shadow` (reads `/etc/passwd`, `/etc/group` and `/etc/shadow` itself, for the static build
//! where neither PAM modules nor NSS can be loaded) and `none` (trusts the user name; only when
//! configured, logged as a warning). Only name/password credentials are accepted: the legacy
//! root, console-user, ticket and SAML types are refused (vmtoolsd's CVE-2023-20867 came from
//! honouring one of them).
//!
//! [`Authenticator::authenticate`] adds what a single PAM or crypt(3) check lacks: failed logins
//! are rate-limited per user and globally ([`RateLimits`]), and successful logins are remembered
//! for a short time ([`AuthSettings::cache_ttl`]) so that a file transfer's hundreds of requests
//! do not each pay a yescrypt verification. See SECURITY.md for what the cache trades.

mod accounts;
mod cache;
mod checker;
mod limiter;
#[cfg(feature = "pam")]
mod pam;
mod shadow;

pub use accounts::{AccountFiles, AccountStamp};
#[doc(hidden)]
pub use checker::fuzz_decode as fuzz_check_messages;
pub use checker::{serve_check, Checker, CHECK_SUBCOMMAND};
pub use limiter::RateLimits;

use std::fmt;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// A user name and password as the VMX sent them (already de-obfuscated).
#[derive(Clone)]
pub struct Credentials {
    /// The guest user name.
    pub user: String,
    /// The password; wiped from memory when dropped.
    pub password: Zeroizing<String>,
}

impl Credentials {
    /// Credentials from a name and a password.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials {
            user: user.into(),
            password: Zeroizing::new(password.into()),
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The kind of credentials a VIX request carries (`userCredentialType` of the request header).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CredentialType(pub u32);

// lib/include/vixCommands.h, VIX_USER_CREDENTIAL_*
impl CredentialType {
    /// No credentials.
    pub const NONE: CredentialType = CredentialType(0);
    /// Plain name and password.
    pub const NAME_PASSWORD: CredentialType = CredentialType(1);
    /// Anonymous.
    pub const ANONYMOUS: CredentialType = CredentialType(2);
    /// "Run as root" without a password (legacy).
    pub const ROOT: CredentialType = CredentialType(3);
    /// Name and password, base64-obfuscated on the wire.
    pub const NAME_PASSWORD_OBFUSCATED: CredentialType = CredentialType(4);
    /// Whoever is logged in at the console (legacy).
    pub const CONSOLE_USER: CredentialType = CredentialType(5);
    /// A secret from the VM's configuration.
    pub const HOST_CONFIG_SECRET: CredentialType = CredentialType(6);
    /// A hashed secret from the VM's configuration.
    pub const HOST_CONFIG_HASHED_SECRET: CredentialType = CredentialType(7);
    /// The interactive desktop user, named.
    pub const NAMED_INTERACTIVE_USER: CredentialType = CredentialType(8);
    /// A ticket from an earlier login.
    pub const TICKETED_SESSION: CredentialType = CredentialType(9);
    /// Windows SSPI.
    pub const SSPI: CredentialType = CredentialType(10);
    /// A SAML bearer token (VGAuth).
    pub const SAML_BEARER_TOKEN: CredentialType = CredentialType(11);
    /// A SAML bearer token the host verified.
    pub const SAML_BEARER_TOKEN_HOST_VERIFIED: CredentialType = CredentialType(12);

    /// Whether this agent authenticates this kind at all: only name/password, plain or
    /// obfuscated. Everything else is refused rather than half-implemented.
    pub fn is_accepted(self) -> bool {
        self == CredentialType::NAME_PASSWORD || self == CredentialType::NAME_PASSWORD_OBFUSCATED
    }

    fn name(self) -> Option<&'static str> {
        Some(match self {
            CredentialType::NONE => "none",
            CredentialType::NAME_PASSWORD => "name-password",
            CredentialType::ANONYMOUS => "anonymous",
            CredentialType::ROOT => "root",
            CredentialType::NAME_PASSWORD_OBFUSCATED => "name-password-obfuscated",
            CredentialType::CONSOLE_USER => "console-user",
            CredentialType::HOST_CONFIG_SECRET => "host-config-secret",
            CredentialType::HOST_CONFIG_HASHED_SECRET => "host-config-hashed-secret",
            CredentialType::NAMED_INTERACTIVE_USER => "named-interactive-user",
            CredentialType::TICKETED_SESSION => "ticketed-session",
            CredentialType::SSPI => "sspi",
            CredentialType::SAML_BEARER_TOKEN => "saml-bearer-token",
            CredentialType::SAML_BEARER_TOKEN_HOST_VERIFIED => "saml-bearer-token-host-verified",
            _ => return None,
        })
    }
}

impl fmt::Display for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n} ({})", self.0),
            None => write!(f, "unknown (0x{:x})", self.0),
        }
    }
}

impl fmt::Debug for CredentialType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CredentialType({self})")
    }
}

/// Who an authenticated request runs as: what the helper process takes on before it serves.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UserIdentity {
    /// Login name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary group ids (the primary one included, as `initgroups(3)` sets them).
    pub groups: Vec<u32>,
    /// Home directory.
    pub home: PathBuf,
    /// Login shell.
    pub shell: PathBuf,
}

/// Which backend checks passwords.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// The system's PAM stack (service [`AuthSettings::pam_service`]).
    Pam,
    /// `/etc/passwd`, `/etc/group`, `/etc/shadow` read directly.
    Shadow,
    /// No password check at all: the named user's identity is taken as is.
    None,
}

impl BackendKind {
    /// `pam` when this build has PAM, `shadow` otherwise.
    pub fn build_default() -> BackendKind {
        if cfg!(feature = "pam") {
            BackendKind::Pam
        } else {
            BackendKind::Shadow
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Pam => "pam",
            BackendKind::Shadow => "shadow",
            BackendKind::None => "none",
        })
    }
}

/// Why a login was refused. Logged; the requester only learns that it failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// No such account.
    #[error("unknown user")]
    UnknownUser,
    /// The name cannot be an account name (empty, too long, `:`, control characters).
    #[error("malformed user name")]
    MalformedName,
    /// The password cannot be a password (NUL byte, longer than [`MAX_PASSWORD_LEN`]).
    #[error("malformed password")]
    MalformedPassword,
    /// The password does not match.
    #[error("wrong password")]
    WrongPassword,
    /// The hash is locked (`!` or `*`).
    #[error("account locked")]
    Locked,
    /// No password is set; a remote login without one is never allowed.
    #[error("account has no password")]
    NoPassword,
    /// Past the shadow expiry date, or inactive too long after the password expired.
    #[error("account expired")]
    AccountExpired,
    /// The password is past its maximum age or must be changed first.
    #[error("password expired or must be changed")]
    PasswordExpired,
    /// A hash scheme this build cannot verify (DES, MD5, bcrypt, ...).
    #[error("unsupported password hash scheme {0:?}")]
    UnsupportedHash(String),
    /// The hash does not parse.
    #[error("malformed password hash")]
    MalformedHash,
    /// The login shell is not listed in the shells file.
    #[error("login shell {0:?} not listed in the shells file")]
    ShellNotAllowed(PathBuf),
    /// PAM said no.
    #[error("PAM: {0}")]
    Pam(String),
}

/// What went wrong authenticating a request.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The credentials do not log in (see [`AuthError::is_invalid_login`]).
    #[error("login as {user:?} refused: {reason}")]
    Denied {
        /// The requested user.
        user: String,
        /// Why (for the log only).
        reason: DenyReason,
    },
    /// A credential type other than name/password.
    #[error("credential type {0} is not accepted: only name/password logins are")]
    UnsupportedCredentialType(CredentialType),
    /// Too many failed logins recently.
    #[error(
        "login as {user:?} refused: too many failed logins ({scope}); retry in {retry_after:?}"
    )]
    RateLimited {
        /// The requested user.
        user: String,
        /// `"for this user"` or `"in total"`.
        scope: &'static str,
        /// When the next attempt may be checked.
        retry_after: Duration,
    },
    /// An account file could not be read.
    #[error("reading {path}: {source}")]
    Accounts {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// PAM itself failed (not a refusal).
    #[error("PAM service {service:?} failed for {user:?}: {message}")]
    PamSystem {
        /// The PAM service name.
        service: String,
        /// The requested user.
        user: String,
        /// PAM's message.
        message: String,
    },
    /// The password check process failed (not a refusal).
    #[error("{0}")]
    Checker(String),
    /// The configuration asks for something this build lacks.
    #[error("auth backend {0} is not available in this build (built without the `pam` feature)")]
    BackendUnavailable(BackendKind),
}

impl AuthError {
    /// Whether the requester should be told "invalid login" (VIX_E_INVALID_LOGIN_CREDENTIALS):
    /// every refusal, rate limit included, looks the same from outside so that it tells
    /// nothing about which accounts exist or why.
    pub fn is_invalid_login(&self) -> bool {
        matches!(
            self,
            AuthError::Denied { .. } | AuthError::RateLimited { .. }
        )
    }
}

/// Longest user name accepted (LOGIN_NAME_MAX on Linux is 256 with the NUL).
pub const MAX_USER_LEN: usize = 255;
/// Longest password accepted: far above any real one, and it bounds the hashing work an
/// attacker can ask for per attempt.
pub const MAX_PASSWORD_LEN: usize = 4096;
/// How long a successful login is remembered by default.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);
/// The PAM service name used by default (`/etc/pam.d/toolbox`; see `dist/pam.d/toolbox`).
pub const DEFAULT_PAM_SERVICE: &str = "toolbox";

/// How an [`Authenticator`] is set up.
#[derive(Clone, Debug)]
pub struct AuthSettings {
    /// The backend.
    pub backend: BackendKind,
    /// PAM service name for the `pam` backend.
    pub pam_service: String,
    /// Where the account files are (the `shadow` and `none` backends read them; every backend
    /// watches them to drop cached logins when an account changes).
    pub files: AccountFiles,
    /// How long a successful login is remembered; zero turns the cache off.
    pub cache_ttl: Duration,
    /// Failed-login limits.
    pub limits: RateLimits,
    /// Where passwords are verified: the agent checks in a child of its own, so the 16 MiB a
    /// yescrypt check takes never becomes the agent's peak RSS.
    pub checker: Checker,
}

impl Default for AuthSettings {
    fn default() -> Self {
        AuthSettings {
            backend: BackendKind::build_default(),
            pam_service: DEFAULT_PAM_SERVICE.into(),
            files: AccountFiles::default(),
            cache_ttl: DEFAULT_CACHE_TTL,
            limits: RateLimits::default(),
            checker: Checker::InProcess,
        }
    }
}

impl From<&crate::config::AuthConfig> for AuthSettings {
    fn from(c: &crate::config::AuthConfig) -> Self {
        AuthSettings {
            backend: c.backend,
            pam_service: c.pam_service.clone(),
            files: AccountFiles {
                passwd: c.passwd_file.clone(),
                group: c.group_file.clone(),
                shadow: c.shadow_file.clone(),
                shells: c.shells_file.clone(),
            },
            cache_ttl: Duration::from_secs(c.cache_secs),
            limits: RateLimits::default(),
            checker: Checker::InProcess,
        }
    }
}

struct State {
    limiter: limiter::Limiter,
    cache: cache::LoginCache,
    /// Users whose password is being verified right now: a second request for the same user
    /// waits for that verdict instead of verifying in parallel (which would both multiply an
    /// attacker's guesses and waste a yescrypt run on the same correct password).
    in_flight: Vec<String>,
}

/// Checks credentials; shared by every request (`&self`, internally locked).
pub struct Authenticator {
    settings: AuthSettings,
    state: Mutex<State>,
    verdict: Condvar,
    backend_checks: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("backend", &self.settings.backend)
            .field("cache_ttl", &self.settings.cache_ttl)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator; warns in the log when the backend checks nothing.
    pub fn new(settings: AuthSettings) -> Result<Authenticator, AuthError> {
        if settings.backend == BackendKind::Pam && !cfg!(feature = "pam") {
            return Err(AuthError::BackendUnavailable(BackendKind::Pam));
        }
        if settings.backend == BackendKind::None {
            tracing::warn!(
                "auth backend \"none\": guest operations run as whichever user the request names, \
                 WITHOUT checking any password"
            );
        }
        let state = State {
            limiter: limiter::Limiter::new(settings.limits.clone()),
            cache: cache::LoginCache::new(settings.cache_ttl),
            in_flight: Vec::new(),
        };
        Ok(Authenticator {
            settings,
            state: Mutex::new(state),
            verdict: Condvar::new(),
            backend_checks: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// The backend in use.
    pub fn backend(&self) -> BackendKind {
        self.settings.backend
    }

    /// How many logins went to the backend (the rest were answered from the cache, refused
    /// by the rate limits or malformed).
    pub fn backend_checks(&self) -> u64 {
        self.backend_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// `name`'s identity as it stands now, without any password check: from the account
    /// files for the `shadow` and `none` backends, from NSS for `pam`. `None` when the
    /// account no longer exists. The helper pool uses it to retire helpers whose account
    /// changed.
    pub fn resolve(&self, name: &str) -> Result<Option<UserIdentity>, AuthError> {
        match self.settings.backend {
            #[cfg(feature = "pam")]
            BackendKind::Pam => match pam::identity_from_nss(&self.settings.pam_service, name) {
                Ok(id) => Ok(Some(id)),
                Err(AuthError::Denied { .. }) => Ok(None),
                Err(e) => Err(e),
            },
            _ => accounts::identity_from_files(&self.settings.files, name),
        }
    }

    /// The account files watched for changes.
    pub fn account_files(&self) -> &AccountFiles {
        &self.settings.files
    }

    /// Forgets any remembered login of `user` (e.g. when the agent learns the account changed
    /// by other means than the account files).
    pub fn forget_user(&self, user: &str) {
        self.lock().cache.forget(user);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters, not invariants, half-updated.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `creds` of credential type `kind` and returns whom they log in as.
    ///
    /// Blocking: a real check takes tens of milliseconds (yescrypt) or, for a wrong password
    /// under PAM, seconds (pam_unix's failure delay). Call it from a blocking pool.
    pub fn authenticate(
        &self,
        kind: CredentialType,
        creds: &Credentials,
    ) -> Result<UserIdentity, AuthError> {
        let span = tracing::debug_span!("authenticate", user = %creds.user, backend = %self.settings.backend);
        let _enter = span.enter();
        if !kind.is_accepted() {
            tracing::warn!(credential_type = %kind, "refused: credential type not accepted");
            return Err(AuthError::UnsupportedCredentialType(kind));
        }
        let user = creds.user.as_str();
        let deny = |reason| AuthError::Denied {
            user: user.to_string(),
            reason,
        };
        if let Err(reason) = validate_shape(creds) {
            tracing::warn!(%reason, "login refused");
            return Err(deny(reason));
        }
        if self.settings.backend == BackendKind::None {
            // Nothing to guess, so nothing to limit or cache: only the account must exist.
            return match accounts::identity_from_files(&self.settings.files, user)? {
                Some(id) => Ok(id),
                None => Err(deny(DenyReason::UnknownUser)),
            };
        }
        // Taken before the check: if the files change while it runs, the cached entry is
        // already stale the next time it is looked at.
        let stamp = self.settings.files.stamp();
        let mut state = self.lock();
        loop {
            if let Some(id) = state.cache.lookup(creds, &stamp, Instant::now()) {
                tracing::debug!("login cache hit");
                return Ok(id);
            }
            if !state.in_flight.iter().any(|u| u == user) {
                break;
            }
            state = self.verdict.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if let Err(retry_after) = state.limiter.check(user, Instant::now()) {
            let (scope, retry_after) = retry_after;
            tracing::warn!(scope, ?retry_after, "login refused: rate limited");
            return Err(AuthError::RateLimited {
                user: user.to_string(),
                scope,
                retry_after,
            });
        }
        state.in_flight.push(user.to_string());
        drop(state);
        // Clears the in-flight mark and wakes the waiters however the check ends, a panic
        // in a backend included (waiters would otherwise sleep for ever).
        let in_flight = InFlight { auth: self, user };

        self.backend_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let verdict = self.check(creds);

        let mut state = self.lock();
        match &verdict {
            Ok(id) => {
                state.limiter.record_success(user);
                state.cache.insert(creds, id.clone(), stamp, Instant::now());
                tracing::info!(uid = id.uid, "login accepted");
            }
            Err(e) => {
                state.cache.forget(user);
                if matches!(e, AuthError::Denied { .. }) {
                    state.limiter.record_failure(user, Instant::now());
                }
                tracing::warn!(error = %e, "login refused");
            }
        }
        drop(state);
        drop(in_flight);
        verdict
    }

    /// The backend's own check, uncached.
    fn check(&self, creds: &Credentials) -> Result<UserIdentity, AuthError> {
        let user = creds.user.as_str();
        match self.settings.backend {
            BackendKind::Shadow => {
                shadow::login(&self.settings.files, creds, &self.settings.checker)
            }
            #[cfg(feature = "pam")]
            BackendKind::Pam => {
                pam::login(&self.settings.pam_service, creds, &self.settings.checker)
            }
            #[cfg(not(feature = "pam"))]
            BackendKind::Pam => Err(AuthError::BackendUnavailable(BackendKind::Pam)),
            BackendKind::None => accounts::identity_from_files(&self.settings.files, user)?
                .ok_or_else(|| AuthError::Denied {
                    user: user.to_string(),
                    reason: DenyReason::UnknownUser,
                }),
        }
    }
}

struct InFlight<'a> {
    auth: &'a Authenticator,
    user: &'a str,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.auth.lock().in_flight.retain(|u| u != self.user);
        self.auth.verdict.notify_all();
    }
}

/// Refuses names and passwords no account can have before any backend sees them (PAM modules
/// and the file parsers both assume NUL-free, colon-free text).
fn validate_shape(creds: &Credentials) -> Result<(), DenyReason> {
    let name = creds.user.as_str();
    if name.is_empty()
        || name.len() > MAX_USER_LEN
        || name.starts_with(['+', '-'])
        || name.chars().any(|c| c == ':' || c == ',' || c.is_control())
    {
        return Err(DenyReason::MalformedName);
    }
    if creds.password.len() > MAX_PASSWORD_LEN || creds.password.contains('\0') {
        return Err(DenyReason::MalformedPassword);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_name_password_types_are_accepted() {
        for t in 0..=20u32 {
            let kind = CredentialType(t);
            assert_eq!(kind.is_accepted(), t == 1 || t == 4, "{kind}");
        }
        assert_eq!(CredentialType(0x77).to_string(), "unknown (0x77)");
        assert_eq!(CredentialType::ROOT.to_string(), "root (3)");
    }

    #[test]
    fn debug_never_shows_the_password() {
        let c = Credentials::new("alice", "s3cret-pw");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn malformed_names_and_passwords_are_refused_before_any_backend() {
        for name in ["", "a:b", "+nis", "-x", "a\nb", "a,b", &"x".repeat(256)] {
            assert_eq!(
                validate_shape(&Credentials::new(name, "pw")),
                Err(DenyReason::MalformedName),
                "{name:?}"
            );
        }
        assert_eq!(
            validate_shape(&Credentials::new("u", "a\0b")),
            Err(DenyReason::MalformedPassword)
        );
        assert_eq!(
            validate_shape(&Credentials::new("u", "p".repeat(MAX_PASSWORD_LEN + 1))),
            Err(DenyReason::MalformedPassword)
        );
        assert_eq!(
            validate_shape(&Credentials::new("tbx-user_1.x", "pw")),
            Ok(())
        );
    }
}
