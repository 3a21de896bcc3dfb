//! The guest operations feature: `Vix_1_Relayed_Command`, `Vix_1_Get_ToolsProperties` and the
//! HGFS `f` command, wired to authentication and the per-user helper processes.
//!
//! A request is answered later: the login (tens of milliseconds with yescrypt, seconds for a
//! wrong password under PAM) and the operation (file I/O in the user's helper) run on the
//! blocking pool, never on the TCLO loop. The `f` command carries HGFS packets from the VMX
//! itself, without credentials, as vmtoolsd's hgfsServer plugin takes them: they run in a
//! helper of the agent's own user.

use super::server::{Server, ToolsInfo, HGFS_SERVER_CAPABILITY, HGFS_TCLO_COMMAND};
use super::{AuthError, Authenticator, Credentials, OpResult, RunAs, UserIdentity, VixError};
use crate::auth;
use crate::config::Config;
use crate::dispatch::{Answer, Context, Feature, Registry, Reply};
use crate::guestops::files::{decode_result, encode_hgfs_request, encode_vix_request, TAG_HGFS};
use crate::guestops::{AccountWatch, HelperPool, HelperSettings, PoolConfig, ServiceId};
use crate::process;
use std::sync::Arc;
use tracing::warn;

/// Checks VIX credentials with the configured backend.
struct Logins(Arc<auth::Authenticator>);

impl Authenticator for Logins {
    fn login(&self, c: &Credentials) -> Result<UserIdentity, AuthError> {
        let creds = auth::Credentials::new(c.name.clone(), c.password.expose().to_string());
        self.0
            .authenticate(auth::CredentialType(c.kind.0), &creds)
            .map_err(|e| {
                if e.is_invalid_login() {
                    AuthError::InvalidCredentials
                } else {
                    AuthError::Backend(e.to_string())
                }
            })
    }
}

/// Runs operations in the user's helper process: process operations in its process service,
/// everything else in its file service.
struct InHelper(Arc<HelperPool>);

impl RunAs for InHelper {
    fn run(&self, user: &UserIdentity, command: &super::Command) -> OpResult {
        if let super::Command::HgfsPacket(p) = command {
            return self.hgfs_packet(user, &p.packet);
        }
        let outcome = if process::is_process_op(command.op()) {
            self.0
                .call(
                    user,
                    process::PROCESS_SERVICE,
                    &process::encode_call(command),
                )
                .map(|reply| decode_result(&reply))
        } else {
            self.0
                .call(user, ServiceId::FILES, &encode_vix_request(command))
                .map(|reply| decode_result(&reply))
        };
        outcome.unwrap_or_else(|e| {
            warn!(user = %user.name, error = %e, "guest operation helper failed");
            OpResult::error(VixError::FAIL, 0)
        })
    }

    /// Op 84, every 61 440 bytes of a transfer: the bare packet goes to the helper, behind
    /// its tag and straight from the request, and the bare reply packet comes back; no VIX
    /// body is built or parsed for it on either side.
    fn hgfs_packet(&self, user: &UserIdentity, packet: &[u8]) -> OpResult {
        match self
            .0
            .call_parts(user, ServiceId::FILES, &[&[TAG_HGFS], packet])
        {
            Ok(reply) => OpResult::ok(reply),
            Err(e) => {
                warn!(user = %user.name, error = %e, "guest operation helper failed");
                OpResult::error(VixError::FAIL, 0)
            }
        }
    }
}

/// The feature.
pub struct GuestOps {
    server: Server,
    pool: Arc<HelperPool>,
    /// Whom `f` packets run as: the agent's own user.
    agent_user: UserIdentity,
}

impl std::fmt::Debug for GuestOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestOps")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

/// The agent's own account, for HGFS packets the VMX sends without credentials: from the
/// account files, else the process's own ids.
fn agent_identity(authenticator: &auth::Authenticator) -> UserIdentity {
    let uid = nix::unistd::geteuid().as_raw();
    if let Ok(Some(id)) = authenticator.identity_of_uid(uid) {
        return id;
    }
    let gid = nix::unistd::getegid().as_raw();
    UserIdentity {
        name: format!("uid {uid}"),
        uid,
        gid,
        groups: vec![gid],
        home: "/".into(),
        shell: "/bin/sh".into(),
    }
}

impl GuestOps {
    /// The feature from the configuration; fails when the authentication backend cannot be set
    /// up (then guest operations stay off, as in vmtoolsd without its vix plugin).
    pub fn new(config: &Config) -> Result<Arc<GuestOps>, auth::AuthError> {
        let authenticator = Arc::new(auth::Authenticator::new(auth::AuthSettings::from(
            &config.auth,
        ))?);
        let agent_user = agent_identity(&authenticator);
        let resolver = authenticator.clone();
        let pool = Arc::new(HelperPool::new(PoolConfig {
            account_watch: Some(AccountWatch {
                files: authenticator.account_files().clone(),
                resolve: Arc::new(move |name: &str| resolver.resolve(name).ok().flatten()),
            }),
            no_new_privs: config.process.no_new_privileges
                || super::server::is_disabled(
                    &config.guestoperations,
                    super::OpCode::START_PROGRAM,
                ),
            settings: HelperSettings::new()
                .with(process::PROCESS_SERVICE, config.process.to_settings()),
            ..PoolConfig::default()
        }));
        // Only the names are wanted: no disks.
        let snap = crate::guestinfo::gather(&crate::guestinfo::NicFilter::default(), false);
        let server = Server::new(
            config.guestoperations.clone(),
            ToolsInfo::new(&snap.host_name, &snap.os_full, &snap.os_short),
            Arc::new(Logins(authenticator)),
            Arc::new(InHelper(pool.clone())),
        );
        Ok(Arc::new(GuestOps {
            server,
            pool,
            agent_user,
        }))
    }

    fn relayed(&self, ctx: &Context, args: &[u8]) -> Answer {
        let server = self.server.clone();
        let args = args.to_vec();
        let ctx = ctx.clone();
        Answer::later_reply(async move {
            match ctx.blocking(move || server.handle_relayed(&args)).await {
                Ok(reply) => Reply::ok(reply),
                Err(e) => Reply::error(e.to_string()),
            }
        })
    }

    fn hgfs(&self, ctx: &Context, packet: &[u8]) -> Answer {
        let user = self.agent_user.clone();
        let pool = self.pool.clone();
        let request = encode_hgfs_request(packet);
        let ctx = ctx.clone();
        Answer::later_reply(async move {
            match ctx
                .blocking(move || pool.call(&user, ServiceId::FILES, &request))
                .await
            {
                Ok(Ok(reply)) => Reply::ok(reply),
                Ok(Err(e)) => {
                    warn!(error = %e, "HGFS helper failed");
                    Reply::error("HGFS server failed")
                }
                Err(e) => Reply::error(e.to_string()),
            }
        })
    }
}

impl Feature for GuestOps {
    fn register(self: Arc<Self>, r: &mut Registry) {
        let me = self.clone();
        r.binary_handler(super::proto::RELAYED_COMMAND, move |ctx, args| {
            me.relayed(ctx, args)
        });
        let me = self.clone();
        r.handler(super::proto::GET_PROPERTIES_COMMAND, move |_, _| {
            Reply::ok(me.server.handle_get_tools_properties()).into()
        });
        let me = self;
        r.binary_handler(HGFS_TCLO_COMMAND, move |ctx, packet| me.hgfs(ctx, packet));
        r.capability(HGFS_SERVER_CAPABILITY.as_bytes().to_vec());
    }
}
