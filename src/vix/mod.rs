//! Guest operations: the VIX commands vSphere's GuestFileManager sends through the VMX as the
//! TCLO command `Vix_1_Relayed_Command`.
//!
//! - [`proto`] and [`property`]: the wire format, no I/O.
//! - [`server`]: one request in, the reply bytes out: framing, the `[guestoperations]`
//!   switches, credentials, then the op through the injected [`Authenticator`] and [`RunAs`].
//! - [`files`]: the file operations themselves, blocking, on the real file system, as the
//!   calling process's user. They are meant to run in a process that already has the
//!   authenticated user's uid, gid and groups (see [`RunAs`]), so nothing here switches ids.
//! - [`client`]: the host side (requests as the VMX builds them, replies decoded), for the
//!   simulator.
//!
//! Every operation but GetToolsState needs credentials, and only name/password credentials
//! are accepted: the root, console-user, ticket, shared-secret, SSPI and SAML types are refused
//! by value (CVE-2023-20867 was an authentication bypass through such types).

pub mod client;
pub mod feature;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod property;
pub mod proto;
pub mod server;

pub use proto::{Command, Credentials, OpCode, Reply, VixError};

/// Who a successful login is: the account's ids, groups, home and shell.
pub use crate::auth::UserIdentity;

/// Why a login failed. Every variant but [`AuthError::Backend`] answers
/// `VIX_E_INVALID_LOGIN_CREDENTIALS`, so the host cannot tell an unknown user from a wrong
/// password.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Unknown user or wrong password.
    #[error("invalid user name or password")]
    InvalidCredentials,
    /// The account is locked, expired or has no password.
    #[error("account may not log in")]
    AccountDisabled,
    /// Too many failed attempts; try later.
    #[error("too many failed logins")]
    RateLimited,
    /// The authentication backend itself failed.
    #[error("authentication backend failed: {0}")]
    Backend(String),
}

impl AuthError {
    /// The VIX error the reply carries.
    pub fn vix_error(&self) -> VixError {
        match self {
            AuthError::Backend(_) => VixError::FAIL,
            _ => VixError::INVALID_LOGIN_CREDENTIALS,
        }
    }
}

/// Checks credentials. Implemented by the authentication backends (PAM, shadow files, none).
pub trait Authenticator: Send + Sync {
    /// The account the credentials log in as, or why not.
    fn login(&self, credentials: &Credentials) -> Result<UserIdentity, AuthError>;
}

/// What an operation produced, before the reply framing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpResult {
    /// The VIX error.
    pub error: VixError,
    /// The system error behind it (`errno`), 0 if none.
    pub errno: u32,
    /// The result text or bytes.
    pub result: Vec<u8>,
}

impl OpResult {
    /// Success with a result.
    pub fn ok(result: impl Into<Vec<u8>>) -> OpResult {
        OpResult {
            error: VixError::OK,
            errno: 0,
            result: result.into(),
        }
    }

    /// A failure.
    pub fn error(error: VixError, errno: u32) -> OpResult {
        OpResult {
            error,
            errno,
            result: Vec::new(),
        }
    }
}

/// Runs an authenticated operation as its user. The production implementation hands the
/// command to a helper process that runs with the user's uid, gid and supplementary groups
/// (a threaded agent cannot switch ids for one thread only: glibc's `setresuid` changes every
/// thread), and which calls [`files::execute`] or the HGFS server there.
pub trait RunAs: Send + Sync {
    /// Carries out `command` as `user` (never [`Command::GetToolsState`] or
    /// [`Command::ValidateCredentials`], which the server answers itself).
    fn run(&self, user: &UserIdentity, command: &Command) -> OpResult;

    /// Passes an HGFS packet (the body of [`Command::HgfsPacket`]) to `user`'s HGFS server and
    /// returns the reply packet as the result. The packet is borrowed from the request: the
    /// hot path of every transfer copies it no more than it must.
    fn hgfs_packet(&self, user: &UserIdentity, packet: &[u8]) -> OpResult {
        self.run(
            user,
            &Command::HgfsPacket(proto::HgfsPacketRequest {
                timeout: 0,
                packet: packet.to_vec(),
            }),
        )
    }
}

/// An [`Authenticator`] with a fixed table of accounts, for tests and the simulator.
#[derive(Clone, Debug, Default)]
pub struct StaticAuthenticator {
    accounts: Vec<(String, proto::Secret, UserIdentity)>,
}

impl StaticAuthenticator {
    /// Adds an account.
    pub fn with(mut self, name: &str, password: &str, identity: UserIdentity) -> Self {
        self.accounts.push((
            name.to_string(),
            proto::Secret::new(password.to_string()),
            identity,
        ));
        self
    }
}

impl Authenticator for StaticAuthenticator {
    fn login(&self, credentials: &Credentials) -> Result<UserIdentity, AuthError> {
        self.accounts
            .iter()
            .find(|(name, password, _)| {
                *name == credentials.name && password.ct_eq(&credentials.password)
            })
            .map(|(_, _, id)| id.clone())
            .ok_or(AuthError::InvalidCredentials)
    }
}

/// A [`RunAs`] that runs file operations in this process, as this process's user, whoever
/// logged in; HGFS packets go to `hgfs`. For tests, the simulator, and an agent configured
/// without authentication.
pub struct InProcess<H> {
    hgfs: H,
}

impl<H> std::fmt::Debug for InProcess<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InProcess")
    }
}

impl<H: Fn(&[u8]) -> Vec<u8> + Send + Sync> InProcess<H> {
    /// File operations here, HGFS packets to `hgfs` (which returns the reply packet).
    pub fn new(hgfs: H) -> Self {
        InProcess { hgfs }
    }
}

impl<H: Fn(&[u8]) -> Vec<u8> + Send + Sync> RunAs for InProcess<H> {
    fn run(&self, _user: &UserIdentity, command: &Command) -> OpResult {
        match command {
            Command::HgfsPacket(p) => OpResult::ok((self.hgfs)(&p.packet)),
            other => files::execute(other),
        }
    }

    fn hgfs_packet(&self, _user: &UserIdentity, packet: &[u8]) -> OpResult {
        OpResult::ok((self.hgfs)(packet))
    }
}
