//! The guest operations feature: `Vix_1_Relayed_Command`, `Vix_1_Get_ToolsProperties` and the
//! HGFS `f` command, wired to authentication and the per-user helper processes.
//!
//! A request is answered later: the login (tens of milliseconds with yescrypt, seconds for a
//! wrong password under PAM) and the operation (file I/O in the user's helper) run on the
//! blocking pool, never on the TCLO loop.
//!
//! The `f` command carries HGFS packets from the VMX itself, without credentials, and is
//! served by the agent as its own user, at once on the TCLO loop, as vmtoolsd's hgfsServer
//! plugin serves it (`HgfsServerRpcDispatch`, services/plugins/hgfsServer/hgfsPlugin.c). No
//! login stands between the VMX and these packets, so a helper would only add two process
//! hops to each one; the VMX sends the next packet only after the reply, so the loop has
//! nothing else of the VMX's to do meanwhile.

use super::server::{Server, ToolsInfo, HGFS_SERVER_CAPABILITY, HGFS_TCLO_COMMAND};
use super::{AuthError, Authenticator, Credentials, OpResult, RunAs, UserIdentity, VixError};
use crate::auth;
use crate::config::Config;
use crate::dispatch::{Answer, Context, Feature, Registry, Reply};
use crate::guestops::files::{decode_result, encode_vix_request, TAG_HGFS};
use crate::guestops::{AccountWatch, HelperPool, HelperSettings, PoolConfig, ServiceId};
use crate::process;
use std::sync::{Arc, Mutex};
use toolbox_hgfs::archive::ArchiveFiles;
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

/// The HGFS server of the `f` command: made at the first packet, so an agent the VMX never
/// sends one to keeps no buffers for it.
#[derive(Default)]
struct TcloHgfs(Mutex<Option<toolbox_hgfs::Server>>);

impl TcloHgfs {
    /// The reply to one packet. vmtoolsd refuses an empty one with this text.
    fn serve(&self, packet: &[u8]) -> Reply {
        if packet.is_empty() {
            return Reply::error("1 argument required");
        }
        let mut server = self.0.lock().unwrap_or_else(|poisoned| {
            // A packet that panicked the server (a bug) may have left it half-changed: start
            // afresh, and the VMX's next packet on the old session gets the stale-session status.
            self.0.clear_poison();
            let mut server = poisoned.into_inner();
            *server = None;
            server
        });
        let server = server.get_or_insert_with(|| {
            let mut server = toolbox_hgfs::Server::new(toolbox_hgfs::ServerConfig::default());
            server.register_handler(Box::new(ArchiveFiles));
            server
        });
        Reply::ok(server.handle_packet(packet))
    }
}

/// The feature.
pub struct GuestOps {
    server: Server,
    tclo_hgfs: TcloHgfs,
}

impl std::fmt::Debug for GuestOps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestOps")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl GuestOps {
    /// The feature from the configuration; fails when the authentication backend cannot be set
    /// up (then guest operations stay off, as in vmtoolsd without its vix plugin).
    pub fn new(config: &Config) -> Result<Arc<GuestOps>, auth::AuthError> {
        let authenticator = Arc::new(auth::Authenticator::new(auth::AuthSettings {
            checker: auth::Checker::own_binary(),
            ..auth::AuthSettings::from(&config.auth)
        })?);
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
            tclo_hgfs: TcloHgfs::default(),
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

    fn hgfs(&self, packet: &[u8]) -> Answer {
        let _span = tracing::debug_span!("hgfs_tclo", len = packet.len()).entered();
        self.tclo_hgfs.serve(packet).into()
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
        r.binary_handler(HGFS_TCLO_COMMAND, move |_, packet| me.hgfs(packet));
        r.capability(HGFS_SERVER_CAPABILITY.as_bytes().to_vec());
    }
}
