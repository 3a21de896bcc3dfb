//! One VIX request in, the reply bytes out: `ToolsDaemonTcloReceiveVixCommand` and
//! `VixTools_ProcessVixCommand` (`services/plugins/vix/`), with authentication that is never
//! skipped and only name/password credentials.
//!
//! [`Server::handle_relayed`] blocks for as long as the operation takes (a login, a listing,
//! an HGFS packet); the agent runs it off its TCLO loop and answers when it returns.

use super::property::{PropertyId, PropertyList, Value};
use super::proto::{
    split_relayed, Command, CredentialError, Credentials, OpCode, Reply, Request, VixError,
};
use super::{Authenticator, OpResult, RunAs, UserIdentity};
use crate::config::GuestOperationsConfig;
use base64::Engine as _;
use std::sync::Arc;

/// The `[guestoperations]` per-operation names vmtoolsd knows (`VIX_TOOLS_CONFIG_API_*` in
/// `vixTools.c`; they are the vSphere API names). Configuration may name any of them.
pub const CONFIG_API_NAMES: &[&str] = &[
    "StartProgramInGuest",
    "ListProcessesInGuest",
    "TerminateProcessInGuest",
    "ReadEnvironmentVariableInGuest",
    "MakeDirectoryInGuest",
    "DeleteFileInGuest",
    "DeleteDirectoryInGuest",
    "MoveDirectoryInGuest",
    "MoveFileInGuest",
    "CreateTemporaryFileInGuest",
    "CreateTemporaryDirectoryInGuest",
    "ListFilesInGuest",
    "ChangeFileAttributesInGuest",
    "InitiateFileTransferFromGuest",
    "InitiateFileTransferToGuest",
    "ValidateCredentialsInGuest",
    "AcquireCredentialsInGuest",
    "ReleaseCredentialsInGuest",
    "AddGuestAlias",
    "RemoveGuestAlias",
    "RemoveGuestAliasByCert",
    "ListGuestAliases",
    "ListGuestMappedAliases",
    "CreateRegistryKeyInGuest",
    "ListRegistryKeysInGuest",
    "DeleteRegistryKeyInGuest",
    "SetRegistryValueInGuest",
    "ListRegistryValuesInGuest",
    "DeleteRegistryValueInGuest",
];

/// The capability the HGFS server plugin registers at `Capabilities_Register`
/// (`HgfsServerCapReg`, `services/plugins/hgfsServer/hgfsPlugin.c`; `toolbox` is
/// `TOOLS_DAEMON_NAME`): the VMX then sends HGFS to this process.
pub const HGFS_SERVER_CAPABILITY: &str = "tools.capability.hgfs_server toolbox 1";
/// The same capability withdrawn, sent when the service stops.
pub const HGFS_SERVER_CAPABILITY_OFF: &str = "tools.capability.hgfs_server toolbox 0";
/// `CAP_HOST_VERIFIED_SAML_TOKEN` (`lib/include/vmware/guestrpc/capabilities.h`): the one
/// capability the vix plugin registers (`VixCapabilitiesCb`, as `tools.capability.features
/// 37=1`). Not sent: this agent refuses SAML credentials, so it must not claim them.
pub const CAP_HOST_VERIFIED_SAML_TOKEN: u32 = 37;
/// The capability RPCs to send at `Capabilities_Register` for guest operations.
pub const CAPABILITIES: &[&str] = &[HGFS_SERVER_CAPABILITY];
/// `HGFS_SYNC_REQREP_CMD` (`lib/include/hgfs.h`): the TCLO command carrying HGFS packets.
pub const HGFS_TCLO_COMMAND: &str = "f";
/// The TCLO commands this module answers.
pub const TCLO_COMMANDS: &[&str] = &[
    super::proto::RELAYED_COMMAND,
    super::proto::GET_PROPERTIES_COMMAND,
];
/// `GUEST_OS_FAMILY_LINUX` (`lib/include/guest_os.h`).
pub const GUEST_OS_FAMILY_LINUX: i32 = 1;
/// `VIX_TOOLSFEATURE_SUPPORT_GET_HANDLE_STATE`: the tools API options vmtoolsd reports.
pub const TOOLS_FEATURE_GET_HANDLE_STATE: i32 = 0x0001;

/// The `[guestoperations]` name that switches `op` off, `None` when only the global switch
/// applies (`VixToolsCheckIfVixCommandEnabled`).
pub fn config_api_name(op: OpCode) -> Option<&'static str> {
    Some(match op {
        OpCode::LIST_PROCESSES | OpCode::LIST_PROCESSES_EX => "ListProcessesInGuest",
        OpCode::LIST_FILES => "ListFilesInGuest",
        OpCode::DELETE_GUEST_FILE | OpCode::DELETE_GUEST_FILE_EX => "DeleteFileInGuest",
        OpCode::DELETE_GUEST_DIRECTORY
        | OpCode::DELETE_GUEST_EMPTY_DIRECTORY
        | OpCode::DELETE_GUEST_DIRECTORY_EX => "DeleteDirectoryInGuest",
        OpCode::KILL_PROCESS | OpCode::TERMINATE_PROCESS => "TerminateProcessInGuest",
        OpCode::CREATE_DIRECTORY | OpCode::CREATE_DIRECTORY_EX => "MakeDirectoryInGuest",
        OpCode::MOVE_GUEST_FILE | OpCode::MOVE_GUEST_FILE_EX => "MoveFileInGuest",
        OpCode::MOVE_GUEST_DIRECTORY => "MoveDirectoryInGuest",
        OpCode::START_PROGRAM => "StartProgramInGuest",
        OpCode::CREATE_TEMPORARY_FILE | OpCode::CREATE_TEMPORARY_FILE_EX => {
            "CreateTemporaryFileInGuest"
        }
        OpCode::CREATE_TEMPORARY_DIRECTORY => "CreateTemporaryDirectoryInGuest",
        OpCode::READ_ENV_VARIABLES => "ReadEnvironmentVariableInGuest",
        OpCode::SET_GUEST_FILE_ATTRIBUTES => "ChangeFileAttributesInGuest",
        OpCode::INITIATE_FILE_TRANSFER_FROM_GUEST => "InitiateFileTransferFromGuest",
        OpCode::INITIATE_FILE_TRANSFER_TO_GUEST => "InitiateFileTransferToGuest",
        OpCode::VALIDATE_CREDENTIALS => "ValidateCredentialsInGuest",
        OpCode::ACQUIRE_CREDENTIALS => "AcquireCredentialsInGuest",
        OpCode::RELEASE_CREDENTIALS => "ReleaseCredentialsInGuest",
        OpCode::ADD_AUTH_ALIAS => "AddGuestAlias",
        OpCode::REMOVE_AUTH_ALIAS => "RemoveGuestAlias",
        OpCode::REMOVE_AUTH_ALIAS_BY_CERT => "RemoveGuestAliasByCert",
        OpCode::LIST_AUTH_PROVIDER_ALIASES => "ListGuestAliases",
        OpCode::LIST_AUTH_MAPPED_ALIASES => "ListGuestMappedAliases",
        OpCode::CREATE_REGISTRY_KEY => "CreateRegistryKeyInGuest",
        OpCode::LIST_REGISTRY_KEYS => "ListRegistryKeysInGuest",
        OpCode::DELETE_REGISTRY_KEY => "DeleteRegistryKeyInGuest",
        OpCode::SET_REGISTRY_VALUE => "SetRegistryValueInGuest",
        OpCode::LIST_REGISTRY_VALUES => "ListRegistryValuesInGuest",
        OpCode::DELETE_REGISTRY_VALUE => "DeleteRegistryValueInGuest",
        _ => return None,
    })
}

/// True when configuration switches `op` off. GetToolsState is always allowed.
pub fn is_disabled(config: &GuestOperationsConfig, op: OpCode) -> bool {
    op != OpCode::GET_TOOLS_STATE && config.is_disabled(config_api_name(op))
}

/// `VixToolsRewriteError`: for the pre-vSphere ops a failed login is reported as
/// `VIX_E_GUEST_USER_PERMISSIONS`, as old VIX clients expect. That list holds the HGFS packet
/// (op 84), so a transfer's bad credentials show as a permission error.
pub fn rewrite_error(op: OpCode, error: VixError) -> VixError {
    let legacy = matches!(
        op,
        OpCode::CHECK_USER_ACCOUNT
            | OpCode::LOGOUT_IN_GUEST
            | OpCode::GET_TOOLS_STATE
            | OpCode::LIST_PROCESSES
            | OpCode::LIST_DIRECTORY
            | OpCode::DELETE_GUEST_FILE
            | OpCode::DELETE_GUEST_REGISTRY_KEY
            | OpCode::DELETE_GUEST_DIRECTORY
            | OpCode::DELETE_GUEST_EMPTY_DIRECTORY
            | OpCode::REGISTRY_KEY_EXISTS
            | OpCode::GUEST_FILE_EXISTS
            | OpCode::DIRECTORY_EXISTS
            | OpCode::READ_REGISTRY
            | OpCode::WRITE_REGISTRY
            | OpCode::KILL_PROCESS
            | OpCode::CREATE_DIRECTORY
            | OpCode::MOVE_GUEST_FILE
            | OpCode::RUN_SCRIPT_IN_GUEST
            | OpCode::RUN_PROGRAM
            | OpCode::CREATE_TEMPORARY_FILE
            | OpCode::READ_VARIABLE
            | OpCode::WRITE_VARIABLE
            | OpCode::GET_FILE_INFO
            | OpCode::HGFS_SEND_PACKET
            | OpCode::GET_GUEST_NETWORKING_CONFIG
            | OpCode::LIST_FILESYSTEMS
            | OpCode::WAIT_FOR_TOOLS
            | OpCode::CAPTURE_SCREEN
    );
    if legacy && error == VixError::INVALID_LOGIN_CREDENTIALS {
        VixError::GUEST_USER_PERMISSIONS
    } else {
        error
    }
}

/// What GetToolsState reports about the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolsInfo {
    /// `VIX_PROPERTY_GUEST_OS_VERSION`: the full OS name (guest info's `os_full`).
    pub os_full: String,
    /// `VIX_PROPERTY_GUEST_OS_VERSION_SHORT`: the guest OS id (guest info's `os_short`).
    pub os_short: String,
    /// `VIX_PROPERTY_GUEST_NAME`: the host name.
    pub host_name: String,
    /// `VIX_PROPERTY_GUEST_TOOLS_PRODUCT_NAM`.
    pub product_name: String,
    /// `VIX_PROPERTY_GUEST_TOOLS_VERSION`.
    pub version: String,
    /// `VIX_PROPERTY_VM_GUEST_TEMP_DIR_PROPERTY`.
    pub temp_dir: String,
    /// `VIX_PROPERTY_GUEST_TOOLS_WORD_SIZE`.
    pub word_size: i32,
    /// Power scripts, as `[powerops]` names them (`None`: not reported).
    pub power_off_script: Option<String>,
    /// `VIX_PROPERTY_GUEST_POWER_ON_SCRIPT`.
    pub power_on_script: Option<String>,
    /// `VIX_PROPERTY_GUEST_RESUME_SCRIPT`.
    pub resume_script: Option<String>,
    /// `VIX_PROPERTY_GUEST_SUSPEND_SCRIPT`.
    pub suspend_script: Option<String>,
}

impl ToolsInfo {
    /// Info with this agent's product name and version and the system's temporary directory.
    pub fn new(host_name: &str, os_full: &str, os_short: &str) -> ToolsInfo {
        ToolsInfo {
            os_full: os_full.into(),
            os_short: os_short.into(),
            host_name: host_name.into(),
            product_name: "VMware Tools (toolbox)".into(),
            version: format!("12.5.0 (toolbox {})", env!("CARGO_PKG_VERSION")),
            temp_dir: std::env::temp_dir().to_string_lossy().into_owned(),
            word_size: (usize::BITS) as i32,
            power_off_script: None,
            power_on_script: None,
            resume_script: None,
            suspend_script: None,
        }
    }
}

/// The `*_ENABLED` properties in `VixToolsSetAPIEnabledProperties` order, with the config
/// name each is computed from and whether this agent carries the operation out.
const API_PROPERTIES: &[(PropertyId, &str, bool)] = &[
    (
        PropertyId::GUEST_START_PROGRAM_ENABLED,
        "StartProgramInGuest",
        true,
    ),
    (
        PropertyId::GUEST_LIST_PROCESSES_ENABLED,
        "ListProcessesInGuest",
        true,
    ),
    (
        PropertyId::GUEST_TERMINATE_PROCESS_ENABLED,
        "TerminateProcessInGuest",
        true,
    ),
    (
        PropertyId::GUEST_READ_ENVIRONMENT_VARIABLE_ENABLED,
        "ReadEnvironmentVariableInGuest",
        true,
    ),
    (
        PropertyId::GUEST_VALIDATE_CREDENTIALS_ENABLED,
        "ValidateCredentialsInGuest",
        false,
    ),
    (
        PropertyId::GUEST_ACQUIRE_CREDENTIALS_ENABLED,
        "AcquireCredentialsInGuest",
        false,
    ),
    (
        PropertyId::GUEST_RELEASE_CREDENTIALS_ENABLED,
        "ReleaseCredentialsInGuest",
        false,
    ),
    (
        PropertyId::GUEST_MAKE_DIRECTORY_ENABLED,
        "MakeDirectoryInGuest",
        true,
    ),
    (
        PropertyId::GUEST_DELETE_FILE_ENABLED,
        "DeleteFileInGuest",
        true,
    ),
    (
        PropertyId::GUEST_DELETE_DIRECTORY_ENABLED,
        "DeleteDirectoryInGuest",
        true,
    ),
    (
        PropertyId::GUEST_MOVE_DIRECTORY_ENABLED,
        "MoveDirectoryInGuest",
        true,
    ),
    (PropertyId::GUEST_MOVE_FILE_ENABLED, "MoveFileInGuest", true),
    (
        PropertyId::GUEST_CREATE_TEMP_FILE_ENABLED,
        "CreateTemporaryFileInGuest",
        true,
    ),
    (
        PropertyId::GUEST_CREATE_TEMP_DIRECTORY_ENABLED,
        "CreateTemporaryDirectoryInGuest",
        true,
    ),
    (
        PropertyId::GUEST_LIST_FILES_ENABLED,
        "ListFilesInGuest",
        true,
    ),
    (
        PropertyId::GUEST_CHANGE_FILE_ATTRIBUTES_ENABLED,
        "ChangeFileAttributesInGuest",
        true,
    ),
    (
        PropertyId::GUEST_INITIATE_FILE_TRANSFER_FROM_GUEST_ENABLED,
        "InitiateFileTransferFromGuest",
        true,
    ),
    (
        PropertyId::GUEST_INITIATE_FILE_TRANSFER_TO_GUEST_ENABLED,
        "InitiateFileTransferToGuest",
        true,
    ),
    (
        PropertyId::GUEST_ADD_AUTH_ALIAS_ENABLED,
        "AddGuestAlias",
        false,
    ),
    (
        PropertyId::GUEST_REMOVE_AUTH_ALIAS_ENABLED,
        "RemoveGuestAlias",
        false,
    ),
    (
        PropertyId::GUEST_LIST_AUTH_ALIASES_ENABLED,
        "ListGuestAliases",
        false,
    ),
    (
        PropertyId::GUEST_LIST_MAPPED_ALIASES_ENABLED,
        "ListGuestMappedAliases",
        false,
    ),
    (
        PropertyId::GUEST_CREATE_REGISTRY_KEY_ENABLED,
        "CreateRegistryKeyInGuest",
        false,
    ),
    (
        PropertyId::GUEST_LIST_REGISTRY_KEYS_ENABLED,
        "ListRegistryKeysInGuest",
        false,
    ),
    (
        PropertyId::GUEST_DELETE_REGISTRY_KEY_ENABLED,
        "DeleteRegistryKeyInGuest",
        false,
    ),
    (
        PropertyId::GUEST_SET_REGISTRY_VALUE_ENABLED,
        "SetRegistryValueInGuest",
        false,
    ),
    (
        PropertyId::GUEST_LIST_REGISTRY_VALUES_ENABLED,
        "ListRegistryValuesInGuest",
        false,
    ),
    (
        PropertyId::GUEST_DELETE_REGISTRY_VALUE_ENABLED,
        "DeleteRegistryValueInGuest",
        false,
    ),
    (
        PropertyId::GUEST_REMOVE_AUTH_ALIAS_BY_CERT_ENABLED,
        "RemoveGuestAliasByCert",
        false,
    ),
];

/// The property list of GetToolsState, in `VixTools_GetToolsPropertiesImpl` order.
///
/// The `*_ENABLED` booleans carry what vmtoolsd puts in them: whether the operation is
/// *disabled* (`VixToolsComputeEnabledProperty` returns `VixToolsGetAPIDisabledFromConf`), so
/// with nothing configured they are false. Operations this agent does not carry out
/// (acquire/release credentials, alias and registry operations) are reported disabled.
pub fn tools_state_properties(info: &ToolsInfo, config: &GuestOperationsConfig) -> PropertyList {
    let mut l = PropertyList::default();
    let s = |v: &str| Value::String(v.to_string());
    l.push(PropertyId::GUEST_OS_VERSION, s(&info.os_full));
    l.push(PropertyId::GUEST_OS_VERSION_SHORT, s(&info.os_short));
    l.push(PropertyId::GUEST_TOOLS_PRODUCT_NAM, s(&info.product_name));
    l.push(PropertyId::GUEST_TOOLS_VERSION, s(&info.version));
    l.push(PropertyId::GUEST_NAME, s(&info.host_name));
    l.push(
        PropertyId::GUEST_TOOLS_API_OPTIONS,
        Value::Int32(TOOLS_FEATURE_GET_HANDLE_STATE),
    );
    l.push(
        PropertyId::GUEST_OS_FAMILY,
        Value::Int32(GUEST_OS_FAMILY_LINUX),
    );
    l.push(PropertyId::GUEST_OS_PACKAGE_LIST, s(""));
    for (id, script) in [
        (PropertyId::GUEST_POWER_OFF_SCRIPT, &info.power_off_script),
        (PropertyId::GUEST_RESUME_SCRIPT, &info.resume_script),
        (PropertyId::GUEST_POWER_ON_SCRIPT, &info.power_on_script),
        (PropertyId::GUEST_SUSPEND_SCRIPT, &info.suspend_script),
    ] {
        if let Some(v) = script {
            l.push(id, s(v));
        }
    }
    l.push(PropertyId::GUEST_TEMP_DIR, s(&info.temp_dir));
    l.push(
        PropertyId::GUEST_TOOLS_WORD_SIZE,
        Value::Int32(info.word_size),
    );
    for &(id, name, carried_out) in API_PROPERTIES {
        let disabled = !carried_out || config.is_disabled(Some(name));
        l.push(id, Value::Bool(disabled));
    }
    l
}

/// The guest-operations command server.
#[derive(Clone)]
pub struct Server {
    config: GuestOperationsConfig,
    info: ToolsInfo,
    auth: Arc<dyn Authenticator>,
    run_as: Arc<dyn RunAs>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.config)
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// A server with its switches, what it reports, and how it logs in and runs operations.
    pub fn new(
        config: GuestOperationsConfig,
        info: ToolsInfo,
        auth: Arc<dyn Authenticator>,
        run_as: Arc<dyn RunAs>,
    ) -> Server {
        Server {
            config,
            info,
            auth,
            run_as,
        }
    }

    /// The base64 property list GetToolsState answers with.
    pub fn tools_state(&self) -> String {
        base64::engine::general_purpose::STANDARD
            .encode(tools_state_properties(&self.info, &self.config).encode())
    }

    /// The reply to `Vix_1_Get_ToolsProperties` (after TCLO's `OK `).
    pub fn handle_get_tools_properties(&self) -> Vec<u8> {
        super::proto::encode_tools_properties_reply(VixError::OK, 0, &self.tools_state())
    }

    /// The reply to `Vix_1_Relayed_Command <args>` (after TCLO's `OK `; vmtoolsd always
    /// answers this command with success and puts the VIX error in the text).
    pub fn handle_relayed(&self, args: &[u8]) -> Vec<u8> {
        match split_relayed(args) {
            Ok(r) => self.handle_message(r.message),
            Err(e) => Reply::error(e.vix_error(), 0).encode(false),
        }
    }

    /// The reply to one VIX request message.
    pub fn handle_message(&self, message: &[u8]) -> Vec<u8> {
        let request = match Request::parse(message) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e.error, "VIX request refused");
                let binary = e.header.is_some_and(|h| h.wants_binary());
                return Reply::error(e.error.vix_error(), 0).encode(binary);
            }
        };
        let op = request.header.op;
        let binary = request.header.wants_binary();
        let span = tracing::debug_span!("vix", op = %op, len = message.len());
        let _enter = span.enter();
        let result = self.process(&request);
        let error = rewrite_error(op, result.error);
        if !error.is_ok() {
            tracing::debug!(error = %error, errno = result.errno, "VIX command failed");
        }
        Reply {
            error,
            additional: result.errno,
            result: result.result,
        }
        .encode(binary)
    }

    fn process(&self, request: &Request<'_>) -> OpResult {
        let op = request.header.op;
        if is_disabled(&self.config, op) {
            tracing::info!(op = %op, "guest operation disabled by configuration");
            return OpResult::error(VixError::OPERATION_DISABLED, 0);
        }
        if op == OpCode::HGFS_SEND_PACKET {
            // The bulk of every transfer: the packet stays borrowed from the request.
            let packet = match super::proto::decode_hgfs_packet(request.body) {
                Ok(packet) => packet,
                Err(e) => return OpResult::error(e.vix_error(), 0),
            };
            return match self.login(request) {
                Ok(user) => self.run_as.hgfs_packet(&user, packet),
                Err(result) => result,
            };
        }
        let command = match Command::decode(op, request.body) {
            Ok(c) => c,
            Err(e) => return OpResult::error(e.vix_error(), 0),
        };
        if command == Command::GetToolsState {
            return OpResult::ok(self.tools_state());
        }
        let user = match self.login(request) {
            Ok(u) => u,
            Err(result) => return result,
        };
        if command == Command::ValidateCredentials {
            return OpResult::ok("");
        }
        self.run_as.run(&user, &command)
    }

    /// The request's credentials checked: the user, or the failed operation's result.
    fn login(&self, request: &Request<'_>) -> Result<UserIdentity, OpResult> {
        let credentials = match Credentials::decode(
            request.header.credential_type,
            request.credential,
        ) {
            Ok(c) => c,
            Err(e) => {
                if let CredentialError::Unsupported(t) = &e {
                    tracing::warn!(credential_type = %t, "guest operation with a refused credential type");
                }
                return Err(OpResult::error(e.vix_error(), 0));
            }
        };
        self.auth.login(&credentials).map_err(|e| {
            tracing::warn!(user = %credentials.name, reason = %e, "guest operation login failed");
            OpResult::error(e.vix_error(), 0)
        })
    }
}
