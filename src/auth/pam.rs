//! The `pam` backend: `pam_authenticate` then `pam_acct_mgmt` under the configured service
//! (vmtoolsd does the same under "vmtoolsd", lib/auth/authPosix.c), through `pam-client`'s safe
//! wrapper. The conversation answers the module's prompts with the request's name and password
//! and nothing else; the identity then comes from NSS (`getpwnam_r`, `getgrouplist`), so
//! directory accounts (SSSD, LDAP) work as they do for a shell login.
//!
//! `pam_setcred` and sessions are not used: they would act on the agent's own process (which
//! stays root), not on the helper that runs the user's operations.

use super::checker::{Check, Checker, Failure};
use super::{AuthError, Credentials, DenyReason, UserIdentity};
use nix::unistd::{getgrouplist, User};
use pam_client::{ConversationHandler, ErrorCode, Flag};
use std::ffi::{CStr, CString};
use zeroize::Zeroizing;

struct PasswordConversation {
    user: String,
    password: Zeroizing<String>,
}

impl ConversationHandler for PasswordConversation {
    fn prompt_echo_on(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        CString::new(self.user.as_str()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn prompt_echo_off(&mut self, _prompt: &CStr) -> Result<CString, ErrorCode> {
        // libpam copies the answer and wipes its own copy after use; this one is dropped by
        // the caller straight away.
        CString::new(self.password.as_str()).map_err(|_| ErrorCode::CONV_ERR)
    }

    fn text_info(&mut self, msg: &CStr) {
        tracing::debug!(message = %msg.to_string_lossy(), "PAM info");
    }

    fn error_msg(&mut self, msg: &CStr) {
        tracing::debug!(message = %msg.to_string_lossy(), "PAM error message");
    }
}

/// Logs `creds` in under `service` (the PAM part where `checker` runs it) and looks the account
/// up.
pub(crate) fn login(
    service: &str,
    creds: &Credentials,
    checker: &Checker,
) -> Result<UserIdentity, AuthError> {
    let user = creds.user.as_str();
    let check = Check::Pam {
        service,
        user,
        password: creds.password.as_str(),
    };
    check
        .run(checker)
        .map_err(|f| f.into_auth_error(user, Some(service)))?;
    identity_from_nss(service, user)
}

/// `pam_authenticate` then `pam_acct_mgmt`.
pub(crate) fn authenticate(service: &str, user: &str, password: &str) -> Result<(), Failure> {
    let system = |message: String| Failure::System(message);
    let conversation = PasswordConversation {
        user: user.to_string(),
        password: Zeroizing::new(password.to_string()),
    };
    let mut context = pam_client::Context::new(service, Some(user), conversation)
        .map_err(|e| system(e.to_string()))?;
    let flags = Flag::SILENT | Flag::DISALLOW_NULL_AUTHTOK;
    let verdict = context
        .authenticate(flags)
        .and_then(|()| context.acct_mgmt(flags));
    if let Err(e) = verdict {
        let reason = match e.code() {
            ErrorCode::AUTH_ERR
            | ErrorCode::USER_UNKNOWN
            | ErrorCode::MAXTRIES
            | ErrorCode::CRED_INSUFFICIENT
            | ErrorCode::AUTHINFO_UNAVAIL
            | ErrorCode::PERM_DENIED => DenyReason::Pam(e.to_string()),
            ErrorCode::ACCT_EXPIRED => DenyReason::AccountExpired,
            ErrorCode::NEW_AUTHTOK_REQD | ErrorCode::AUTHTOK_EXPIRED => DenyReason::PasswordExpired,
            _ => return Err(system(e.to_string())),
        };
        return Err(Failure::Denied(reason));
    }
    Ok(())
}

pub(crate) fn identity_from_nss(service: &str, name: &str) -> Result<UserIdentity, AuthError> {
    let system = |message: String| AuthError::PamSystem {
        service: service.to_string(),
        user: name.to_string(),
        message,
    };
    let entry = User::from_name(name)
        .map_err(|e| system(format!("looking up the account after PAM accepted it: {e}")))?
        .ok_or_else(|| AuthError::Denied {
            user: name.to_string(),
            reason: DenyReason::UnknownUser,
        })?;
    let cname = CString::new(name).map_err(|_| AuthError::Denied {
        user: name.to_string(),
        reason: DenyReason::MalformedName,
    })?;
    let mut groups: Vec<u32> = vec![entry.gid.as_raw()];
    for g in getgrouplist(&cname, entry.gid).map_err(|e| system(format!("getgrouplist: {e}")))? {
        if !groups.contains(&g.as_raw()) {
            groups.push(g.as_raw());
        }
    }
    Ok(UserIdentity {
        name: entry.name,
        uid: entry.uid.as_raw(),
        gid: entry.gid.as_raw(),
        groups,
        home: entry.dir,
        shell: entry.shell,
    })
}
