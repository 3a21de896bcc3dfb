//! Where the memory-hungry part of a login runs: a yescrypt verification needs 16 MiB (N = 4096,
//! r = 32, Debian's default cost), pam_unix's the same inside libcrypt. Run in the agent, that
//! block would stay the agent's peak RSS for the rest of its life, three times what it needs to
//! serve a whole 1 GiB transfer. So the agent hands the check to a short-lived child, its own
//! binary run again (`/proc/self/exe __auth-check`), which takes the request on stdin, answers
//! on stdout and exits: the memory goes with it. A check happens only when the login cache
//! misses, and costs a spawn (about a millisecond) beside tens of milliseconds of hashing.
//!
//! Only the check itself moves: the account files are read, the account rules applied, the
//! failed logins counted and the successful ones cached in the agent, as before.
//!
//! Request: a tag byte, then fields, each a u32 LE length and its bytes: [`TAG_HASH`] with the
//! crypt(3) hash and the password; [`TAG_PAM`] with the service, the user and the password.
//! Reply: [`REPLY_OK`]; [`REPLY_DENIED`], the reason's code byte and a text field;
//! [`REPLY_SYSTEM`] and a text field.

use super::{AuthError, DenyReason};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};
use zeroize::Zeroizing;

/// The hidden subcommand the child runs.
pub const CHECK_SUBCOMMAND: &str = "__auth-check";

/// Verify a crypt(3) hash.
const TAG_HASH: u8 = b'H';
/// Run `pam_authenticate` and `pam_acct_mgmt`.
const TAG_PAM: u8 = b'P';
const REPLY_OK: u8 = 0;
const REPLY_DENIED: u8 = 1;
const REPLY_SYSTEM: u8 = 2;

/// Longest request the child reads: three fields, none near this (passwords are at most
/// [`super::MAX_PASSWORD_LEN`]).
const MAX_REQUEST: usize = 16 * 1024;
/// Longest reply the agent reads.
const MAX_REPLY: usize = 8 * 1024;

/// Where checks run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Checker {
    /// In the calling process (library users and unit tests).
    #[default]
    InProcess,
    /// In a child: `program args...`, the subcommand among the args.
    Child {
        /// The agent's binary.
        program: PathBuf,
        /// Its arguments.
        args: Vec<OsString>,
    },
}

impl Checker {
    /// `/proc/self/exe __auth-check`: the very binary that runs, even if an upgrade has
    /// replaced its file since.
    pub fn own_binary() -> Checker {
        Checker::Child {
            program: PathBuf::from("/proc/self/exe"),
            args: vec![CHECK_SUBCOMMAND.into()],
        }
    }
}

/// One check.
#[derive(Debug)]
pub(crate) enum Check<'a> {
    /// The password against a crypt(3) hash.
    Hash { hash: &'a str, password: &'a [u8] },
    /// The password through PAM.
    #[cfg_attr(not(feature = "pam"), allow(dead_code))]
    Pam {
        service: &'a str,
        user: &'a str,
        password: &'a str,
    },
}

/// Why a check did not pass.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The credentials do not log in.
    Denied(DenyReason),
    /// The check could not be made (PAM failed, the child failed).
    System(String),
}

impl Failure {
    /// As the backend reports it for `user`.
    pub(crate) fn into_auth_error(self, user: &str, service: Option<&str>) -> AuthError {
        match (self, service) {
            (Failure::Denied(reason), _) => AuthError::Denied {
                user: user.to_string(),
                reason,
            },
            (Failure::System(message), Some(service)) => AuthError::PamSystem {
                service: service.to_string(),
                user: user.to_string(),
                message,
            },
            (Failure::System(message), None) => AuthError::Checker(message),
        }
    }
}

impl Check<'_> {
    /// Makes the check where `checker` says. A child that cannot be started is reported once
    /// in the log and the check made in process: a login must not fail for want of `/proc`.
    pub(crate) fn run(&self, checker: &Checker) -> Result<(), Failure> {
        match checker {
            Checker::InProcess => self.run_here(),
            Checker::Child { program, args } => match self.run_in_child(program, args) {
                Ok(verdict) => verdict,
                Err(ChildError::Spawn(e)) => {
                    static WARNED: std::sync::Once = std::sync::Once::new();
                    WARNED.call_once(|| {
                        tracing::warn!(program = %program.display(), error = %e,
                            "cannot start the password check process; checking in the agent");
                    });
                    self.run_here()
                }
                Err(ChildError::Failed(why)) => Err(Failure::System(format!(
                    "password check process {}: {why}",
                    program.display()
                ))),
            },
        }
    }

    fn run_here(&self) -> Result<(), Failure> {
        match self {
            Check::Hash { hash, password } => {
                super::shadow::verify_hash(password, hash).map_err(Failure::Denied)
            }
            #[cfg(feature = "pam")]
            Check::Pam {
                service,
                user,
                password,
            } => super::pam::authenticate(service, user, password),
            #[cfg(not(feature = "pam"))]
            Check::Pam { .. } => Err(Failure::System(
                "this build has no PAM (built without the `pam` feature)".into(),
            )),
        }
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::new());
        let fields: Vec<&[u8]> = match self {
            Check::Hash { hash, password } => {
                out.push(TAG_HASH);
                vec![hash.as_bytes(), password]
            }
            Check::Pam {
                service,
                user,
                password,
            } => {
                out.push(TAG_PAM);
                vec![service.as_bytes(), user.as_bytes(), password.as_bytes()]
            }
        };
        for f in fields {
            put_field(&mut out, f);
        }
        out
    }

    fn run_in_child(
        &self,
        program: &std::path::Path,
        args: &[OsString],
    ) -> Result<Result<(), Failure>, ChildError> {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(ChildError::Spawn)?;
        let request = self.encode();
        let written = child
            .stdin
            .take()
            .map(|mut stdin| stdin.write_all(&request))
            .unwrap_or(Ok(()));
        let mut reply = Vec::new();
        let read = child
            .stdout
            .take()
            .map(|out| out.take(MAX_REPLY as u64 + 1).read_to_end(&mut reply))
            .unwrap_or(Ok(0));
        let status = child
            .wait()
            .map_err(|e| ChildError::Failed(format!("waiting: {e}")))?;
        written.map_err(|e| ChildError::Failed(format!("sending the request: {e}")))?;
        read.map_err(|e| ChildError::Failed(format!("reading the verdict: {e}")))?;
        if !status.success() {
            return Err(ChildError::Failed(format!("ended with {status}")));
        }
        decode_reply(&reply).map_err(|why| ChildError::Failed(why.to_string()))
    }
}

#[derive(Debug)]
enum ChildError {
    Spawn(std::io::Error),
    Failed(String),
}

fn put_field(out: &mut Vec<u8>, field: &[u8]) {
    // Fields are bounded by the caller (names, hashes, passwords of at most 4 KiB).
    out.extend_from_slice(&(field.len() as u32).to_le_bytes());
    out.extend_from_slice(field);
}

/// Splits `n` length-prefixed fields off `bytes`, all of it.
fn take_fields(mut bytes: &[u8], n: usize) -> Result<Vec<&[u8]>, &'static str> {
    let mut fields = Vec::with_capacity(n);
    for _ in 0..n {
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or("truncated field length")?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err("field longer than the bytes left");
        }
        let (field, rest) = rest.split_at(len);
        fields.push(field);
        bytes = rest;
    }
    if !bytes.is_empty() {
        return Err("bytes after the last field");
    }
    Ok(fields)
}

fn text(field: &[u8]) -> Result<&str, &'static str> {
    std::str::from_utf8(field).map_err(|_| "text field not UTF-8")
}

/// The check a request asks for.
fn decode_request(bytes: &[u8]) -> Result<Check<'_>, &'static str> {
    let (&tag, rest) = bytes.split_first().ok_or("empty request")?;
    match tag {
        TAG_HASH => {
            let f = take_fields(rest, 2)?;
            Ok(Check::Hash {
                hash: text(f[0])?,
                password: f[1],
            })
        }
        TAG_PAM => {
            let f = take_fields(rest, 3)?;
            Ok(Check::Pam {
                service: text(f[0])?,
                user: text(f[1])?,
                password: text(f[2])?,
            })
        }
        _ => Err("unknown request tag"),
    }
}

/// Reason codes on the wire; the texts go along for the reasons that carry one.
fn reason_code(r: &DenyReason) -> (u8, &str) {
    match r {
        DenyReason::UnknownUser => (1, ""),
        DenyReason::MalformedName => (2, ""),
        DenyReason::MalformedPassword => (3, ""),
        DenyReason::WrongPassword => (4, ""),
        DenyReason::Locked => (5, ""),
        DenyReason::NoPassword => (6, ""),
        DenyReason::AccountExpired => (7, ""),
        DenyReason::PasswordExpired => (8, ""),
        DenyReason::UnsupportedHash(s) => (9, s),
        DenyReason::MalformedHash => (10, ""),
        DenyReason::ShellNotAllowed(_) => (11, ""),
        DenyReason::Pam(s) => (12, s),
    }
}

fn reason_of(code: u8, text: &str) -> Result<DenyReason, &'static str> {
    Ok(match code {
        1 => DenyReason::UnknownUser,
        2 => DenyReason::MalformedName,
        3 => DenyReason::MalformedPassword,
        4 => DenyReason::WrongPassword,
        5 => DenyReason::Locked,
        6 => DenyReason::NoPassword,
        7 => DenyReason::AccountExpired,
        8 => DenyReason::PasswordExpired,
        9 => DenyReason::UnsupportedHash(text.to_string()),
        10 => DenyReason::MalformedHash,
        12 => DenyReason::Pam(text.to_string()),
        // A check never refuses for the shell: that rule is the agent's.
        _ => return Err("unknown refusal reason"),
    })
}

fn encode_reply(verdict: &Result<(), Failure>) -> Vec<u8> {
    let mut out = Vec::new();
    match verdict {
        Ok(()) => out.push(REPLY_OK),
        Err(Failure::Denied(reason)) => {
            let (code, text) = reason_code(reason);
            out.extend_from_slice(&[REPLY_DENIED, code]);
            put_field(&mut out, truncated(text));
        }
        Err(Failure::System(message)) => {
            out.push(REPLY_SYSTEM);
            put_field(&mut out, truncated(message));
        }
    }
    out
}

/// A text that fits a reply.
fn truncated(s: &str) -> &[u8] {
    let mut end = s.len().min(MAX_REPLY / 2);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s.as_bytes()[..end]
}

fn decode_reply(bytes: &[u8]) -> Result<Result<(), Failure>, &'static str> {
    if bytes.len() > MAX_REPLY {
        return Err("verdict too long");
    }
    let (&status, rest) = bytes.split_first().ok_or("no verdict")?;
    match status {
        REPLY_OK if rest.is_empty() => Ok(Ok(())),
        REPLY_DENIED => {
            let (&code, rest) = rest.split_first().ok_or("truncated refusal")?;
            let f = take_fields(rest, 1)?;
            Ok(Err(Failure::Denied(reason_of(code, text(f[0])?)?)))
        }
        REPLY_SYSTEM => {
            let f = take_fields(rest, 1)?;
            Ok(Err(Failure::System(text(f[0])?.to_string())))
        }
        _ => Err("unknown verdict"),
    }
}

/// What `toolbox __auth-check` runs: one check from stdin, its verdict on stdout. Fails,
/// with nothing on stdout, on a request it cannot read (the agent then reports the check as
/// failed).
pub fn serve_check() -> ExitCode {
    let mut request = Zeroizing::new(Vec::new());
    let read = std::io::stdin()
        .lock()
        .take(MAX_REQUEST as u64 + 1)
        .read_to_end(&mut request);
    if read.is_err() || request.len() > MAX_REQUEST {
        return ExitCode::from(2);
    }
    let Ok(check) = decode_request(&request) else {
        return ExitCode::from(2);
    };
    let reply = encode_reply(&check.run_here());
    match std::io::stdout().lock().write_all(&reply) {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::from(2),
    }
}

/// Decodes arbitrary bytes as the child and the agent read them.
pub fn fuzz_decode(data: &[u8]) {
    if let Ok(check) = decode_request(data) {
        let _ = check.encode();
    }
    let _ = decode_reply(data);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reasons() -> impl Strategy<Value = DenyReason> {
        prop_oneof![
            Just(DenyReason::UnknownUser),
            Just(DenyReason::WrongPassword),
            Just(DenyReason::Locked),
            Just(DenyReason::AccountExpired),
            Just(DenyReason::PasswordExpired),
            Just(DenyReason::MalformedHash),
            "[ -~]{0,40}".prop_map(DenyReason::UnsupportedHash),
            "\\PC{0,40}".prop_map(DenyReason::Pam),
        ]
    }

    proptest! {
        #[test]
        fn requests_round_trip(hash in "\\PC{0,80}", password in proptest::collection::vec(any::<u8>(), 0..64)) {
            let check = Check::Hash { hash: &hash, password: &password };
            let wire = check.encode();
            match decode_request(&wire).unwrap() {
                Check::Hash { hash: h, password: p } => {
                    prop_assert_eq!(h, hash.as_str());
                    prop_assert_eq!(p, &password[..]);
                }
                other => prop_assert!(false, "decoded as {:?}", other),
            }
            let pam = Check::Pam { service: "toolbox", user: &hash, password: "pw" };
            let wire = pam.encode();
            let user = match decode_request(&wire) {
                Ok(Check::Pam { user, .. }) => Some(user),
                _ => None,
            };
            prop_assert_eq!(user, Some(hash.as_str()));
        }

        #[test]
        fn verdicts_round_trip(reason in reasons(), message in "\\PC{0,80}") {
            for verdict in [Ok(()), Err(Failure::Denied(reason.clone())), Err(Failure::System(message.clone()))] {
                let wire = encode_reply(&verdict);
                prop_assert_eq!(decode_reply(&wire).unwrap(), verdict);
            }
        }

        #[test]
        fn any_bytes_are_refused_or_read_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            fuzz_decode(&bytes);
        }
    }

    #[test]
    fn malformed_requests_and_replies_are_refused() {
        assert!(decode_request(b"").is_err());
        assert!(decode_request(b"X\0\0\0\0").is_err());
        // A length beyond the bytes left, and bytes after the last field.
        assert!(decode_request(b"H\xff\xff\xff\xff").is_err());
        assert!(decode_request(b"H\0\0\0\0\0\0\0\0!").is_err());
        assert!(decode_reply(b"").is_err());
        assert!(decode_reply(b"\0extra").is_err());
        assert!(
            decode_reply(b"\x01\x0b\0\0\0\0").is_err(),
            "the shell rule is the agent's"
        );
        assert!(decode_reply(&vec![2; MAX_REPLY + 1]).is_err());
    }

    #[test]
    fn a_missing_program_falls_back_to_checking_in_process() {
        let checker = Checker::Child {
            program: "/nonexistent/toolbox".into(),
            args: vec![],
        };
        let check = Check::Hash {
            hash: "$6$",
            password: b"pw",
        };
        assert_eq!(
            check.run(&checker),
            Err(Failure::Denied(DenyReason::MalformedHash))
        );
    }

    #[test]
    fn a_child_that_answers_nothing_is_a_failed_check_not_a_login() {
        let checker = Checker::Child {
            program: "/bin/true".into(),
            args: vec![],
        };
        let check = Check::Hash {
            hash: "$6$",
            password: b"pw",
        };
        assert!(matches!(check.run(&checker), Err(Failure::System(_))));
    }
}
