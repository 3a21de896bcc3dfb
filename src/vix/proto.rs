//! The VIX guest-command wire format, no I/O: the `Vix_1_Relayed_Command` framing, the request
//! header, the bodies of the file operations, credentials, and the replies as vmtoolsd writes
//! them.
//!
//! Layouts are those of `lib/include/vixCommands.h` (every struct under `#pragma pack(1)`,
//! little-endian); validation follows `lib/foundryMsg/foundryMsg.c` (`VixMsg_ValidateMessage`,
//! `VixMsg_ValidateRequestMsg`, `VMAutomationMsgParserInit`, `__VMAutomationMsgParserGetString`);
//! the framing and the reply are those of `ToolsDaemonTcloReceiveVixCommand` in
//! `services/plugins/vix/foundryToolsDaemon.c`.

use crate::codec::Reader;
use base64::Engine as _;
use std::fmt;

/// `VIX_COMMAND_MAGIC_WORD`.
pub const MAGIC: u32 = 0xd00d_0001;
/// `VIX_COMMAND_MESSAGE_VERSION`: the only version vmtoolsd accepts.
pub const MESSAGE_VERSION: u16 = 5;
/// `VIX_COMMAND_MAX_REQUEST_SIZE`: a request's `totalMessageLength` never exceeds this, which
/// bounds every length field inside it.
pub const MAX_REQUEST_SIZE: usize = 65536;
/// `VIX_COMMAND_MAX_SIZE`: the bound on any message's `totalMessageLength`.
pub const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;
/// `sizeof(VixMsgHeader)`: 4 + 2 + 4 × 4 + 1.
pub const MSG_HEADER_SIZE: usize = 23;
/// `sizeof(VixCommandRequestHeader)`: the common header + 4 + 4 + 4 + 8 + 4 + 4.
pub const REQUEST_HEADER_SIZE: usize = 51;
/// `sizeof(VixCommandResponseHeader)`: the common header + 8 + 4 × 5.
pub const RESPONSE_HEADER_SIZE: usize = 51;
/// `sizeof(VixMsgAuthDataV1)`: nonce (8), sequence number (4), hash (32).
pub const AUTH_DATA_V1_SIZE: usize = 44;
/// `sizeof(VixCommandNamePassword)`: the two lengths before an obfuscated name/password.
pub const NAME_PASSWORD_HEADER_SIZE: usize = 8;
/// `VIX_BACKDOORCOMMAND_COMMAND`: the TCLO command that carries a VIX request.
pub const RELAYED_COMMAND: &str = "Vix_1_Relayed_Command";
/// `VIX_BACKDOORCOMMAND_GET_PROPERTIES`: the older TCLO query of the tools properties.
pub const GET_PROPERTIES_COMMAND: &str = "Vix_1_Get_ToolsProperties";
/// `GUESTMSG_MAX_IN_SIZE` (`lib/include/guest_msg_def.h`): the largest TCLO reply.
pub const GUESTMSG_MAX_IN_SIZE: usize = 64 * 1024;
/// The room a result has in a reply: vmtoolsd keeps `MAX64_DECIMAL_DIGITS * 2 + 2 + 1 + 10`
/// (53) bytes for the two error numbers, their spaces, the NUL and the RPC header.
pub const MAX_RESULT_SIZE: usize = GUESTMSG_MAX_IN_SIZE - 53;

macro_rules! wire_newtype {
    ($(#[$m:meta])* $name:ident($inner:ty) { $($(#[$cm:meta])* $c:ident = $v:expr,)* }) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub $inner);

        impl $name {
            $($(#[$cm])* pub const $c: $name = $name($v);)*

            /// The constant's name, when this value has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $($name::$c => Some(stringify!($c)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(n) => write!(f, "{n}({})", self.0),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(self, f)
            }
        }
    };
}

wire_newtype! {
    /// A VIX command (`VIX_COMMAND_*`, `lib/include/vixCommands.h`).
    OpCode(u32) {
        /// `VIX_COMMAND_RUN_PROGRAM`.
        RUN_PROGRAM = 4,
        /// `VIX_COMMAND_READ_REGISTRY`.
        READ_REGISTRY = 8,
        /// `VIX_COMMAND_WRITE_REGISTRY`.
        WRITE_REGISTRY = 10,
        /// `VIX_COMMAND_DELETE_GUEST_FILE`.
        DELETE_GUEST_FILE = 18,
        /// `VIX_COMMAND_GUEST_FILE_EXISTS`.
        GUEST_FILE_EXISTS = 19,
        /// `VIX_COMMAND_REGISTRY_KEY_EXISTS`.
        REGISTRY_KEY_EXISTS = 22,
        /// `VIX_COMMAND_WAIT_FOR_TOOLS`.
        WAIT_FOR_TOOLS = 38,
        /// `VIX_COMMAND_RUN_SCRIPT_IN_GUEST`.
        RUN_SCRIPT_IN_GUEST = 46,
        /// `VIX_COMMAND_CAPTURE_SCREEN`.
        CAPTURE_SCREEN = 58,
        /// `VIX_COMMAND_GET_TOOLS_STATE`.
        GET_TOOLS_STATE = 62,
        /// `VIX_COMMAND_DIRECTORY_EXISTS`.
        DIRECTORY_EXISTS = 70,
        /// `VIX_COMMAND_DELETE_GUEST_REGISTRY_KEY`.
        DELETE_GUEST_REGISTRY_KEY = 71,
        /// `VIX_COMMAND_DELETE_GUEST_DIRECTORY`.
        DELETE_GUEST_DIRECTORY = 72,
        /// `VIX_COMMAND_DELETE_GUEST_EMPTY_DIRECTORY`.
        DELETE_GUEST_EMPTY_DIRECTORY = 73,
        /// `VIX_COMMAND_CREATE_TEMPORARY_FILE`.
        CREATE_TEMPORARY_FILE = 74,
        /// `VIX_COMMAND_LIST_PROCESSES`.
        LIST_PROCESSES = 75,
        /// `VIX_COMMAND_MOVE_GUEST_FILE`.
        MOVE_GUEST_FILE = 76,
        /// `VIX_COMMAND_CREATE_DIRECTORY`.
        CREATE_DIRECTORY = 77,
        /// `VIX_COMMAND_CHECK_USER_ACCOUNT`.
        CHECK_USER_ACCOUNT = 78,
        /// `VIX_COMMAND_LIST_DIRECTORY`.
        LIST_DIRECTORY = 79,
        /// `VMXI_HGFS_SEND_PACKET_COMMAND`: an HGFS packet for the guest's HGFS server.
        HGFS_SEND_PACKET = 84,
        /// `VIX_COMMAND_KILL_PROCESS`.
        KILL_PROCESS = 85,
        /// `VIX_COMMAND_LOGOUT_IN_GUEST`.
        LOGOUT_IN_GUEST = 87,
        /// `VIX_COMMAND_READ_VARIABLE`.
        READ_VARIABLE = 88,
        /// `VIX_COMMAND_WRITE_VARIABLE`.
        WRITE_VARIABLE = 89,
        /// `VIX_COMMAND_GET_FILE_INFO`.
        GET_FILE_INFO = 94,
        /// `VIX_COMMAND_GET_GUEST_NETWORKING_CONFIG`.
        GET_GUEST_NETWORKING_CONFIG = 116,
        /// `VIX_COMMAND_SET_GUEST_NETWORKING_CONFIG`.
        SET_GUEST_NETWORKING_CONFIG = 117,
        /// `VIX_COMMAND_LIST_FILESYSTEMS`.
        LIST_FILESYSTEMS = 169,
        /// `VIX_COMMAND_LIST_FILES`.
        LIST_FILES = 177,
        /// `VIX_COMMAND_CREATE_DIRECTORY_EX`.
        CREATE_DIRECTORY_EX = 178,
        /// `VIX_COMMAND_MOVE_GUEST_FILE_EX`.
        MOVE_GUEST_FILE_EX = 179,
        /// `VIX_COMMAND_MOVE_GUEST_DIRECTORY`.
        MOVE_GUEST_DIRECTORY = 180,
        /// `VIX_COMMAND_CREATE_TEMPORARY_FILE_EX`.
        CREATE_TEMPORARY_FILE_EX = 181,
        /// `VIX_COMMAND_CREATE_TEMPORARY_DIRECTORY`.
        CREATE_TEMPORARY_DIRECTORY = 182,
        /// `VIX_COMMAND_SET_GUEST_FILE_ATTRIBUTES`.
        SET_GUEST_FILE_ATTRIBUTES = 183,
        /// `VIX_COMMAND_START_PROGRAM`.
        START_PROGRAM = 185,
        /// `VIX_COMMAND_LIST_PROCESSES_EX`.
        LIST_PROCESSES_EX = 186,
        /// `VIX_COMMAND_READ_ENV_VARIABLES`.
        READ_ENV_VARIABLES = 187,
        /// `VIX_COMMAND_INITIATE_FILE_TRANSFER_FROM_GUEST`.
        INITIATE_FILE_TRANSFER_FROM_GUEST = 188,
        /// `VIX_COMMAND_INITIATE_FILE_TRANSFER_TO_GUEST`.
        INITIATE_FILE_TRANSFER_TO_GUEST = 189,
        /// `VIX_COMMAND_ACQUIRE_CREDENTIALS`.
        ACQUIRE_CREDENTIALS = 190,
        /// `VIX_COMMAND_RELEASE_CREDENTIALS`.
        RELEASE_CREDENTIALS = 191,
        /// `VIX_COMMAND_VALIDATE_CREDENTIALS`.
        VALIDATE_CREDENTIALS = 192,
        /// `VIX_COMMAND_TERMINATE_PROCESS`.
        TERMINATE_PROCESS = 193,
        /// `VIX_COMMAND_DELETE_GUEST_FILE_EX`.
        DELETE_GUEST_FILE_EX = 194,
        /// `VIX_COMMAND_DELETE_GUEST_DIRECTORY_EX`.
        DELETE_GUEST_DIRECTORY_EX = 195,
        /// `VIX_COMMAND_ADD_AUTH_ALIAS`.
        ADD_AUTH_ALIAS = 197,
        /// `VIX_COMMAND_REMOVE_AUTH_ALIAS`.
        REMOVE_AUTH_ALIAS = 198,
        /// `VIX_COMMAND_LIST_AUTH_PROVIDER_ALIASES`.
        LIST_AUTH_PROVIDER_ALIASES = 199,
        /// `VIX_COMMAND_LIST_AUTH_MAPPED_ALIASES`.
        LIST_AUTH_MAPPED_ALIASES = 200,
        /// `VIX_COMMAND_CREATE_REGISTRY_KEY`.
        CREATE_REGISTRY_KEY = 201,
        /// `VIX_COMMAND_LIST_REGISTRY_KEYS`.
        LIST_REGISTRY_KEYS = 202,
        /// `VIX_COMMAND_DELETE_REGISTRY_KEY`.
        DELETE_REGISTRY_KEY = 203,
        /// `VIX_COMMAND_SET_REGISTRY_VALUE`.
        SET_REGISTRY_VALUE = 204,
        /// `VIX_COMMAND_LIST_REGISTRY_VALUES`.
        LIST_REGISTRY_VALUES = 205,
        /// `VIX_COMMAND_DELETE_REGISTRY_VALUE`.
        DELETE_REGISTRY_VALUE = 206,
        /// `VIX_COMMAND_REMOVE_AUTH_ALIAS_BY_CERT`.
        REMOVE_AUTH_ALIAS_BY_CERT = 207,
    }
}

wire_newtype! {
    /// A VIX error (`VixError`, a 64-bit value whose low 16 bits are the code;
    /// `lib/include/vix.h`, `lib/include/vixOpenSource.h`).
    VixError(u64) {
        /// `VIX_OK`.
        OK = 0,
        /// `VIX_E_FAIL`.
        FAIL = 1,
        /// `VIX_E_OUT_OF_MEMORY`.
        OUT_OF_MEMORY = 2,
        /// `VIX_E_INVALID_ARG`.
        INVALID_ARG = 3,
        /// `VIX_E_FILE_NOT_FOUND`.
        FILE_NOT_FOUND = 4,
        /// `VIX_E_OBJECT_IS_BUSY`.
        OBJECT_IS_BUSY = 5,
        /// `VIX_E_NOT_SUPPORTED`.
        NOT_SUPPORTED = 6,
        /// `VIX_E_FILE_ERROR`.
        FILE_ERROR = 7,
        /// `VIX_E_DISK_FULL`.
        DISK_FULL = 8,
        /// `VIX_E_FILE_ALREADY_EXISTS`.
        FILE_ALREADY_EXISTS = 12,
        /// `VIX_E_FILE_ACCESS_ERROR`.
        FILE_ACCESS_ERROR = 13,
        /// `VIX_E_FILE_TOO_BIG`.
        FILE_TOO_BIG = 21,
        /// `VIX_E_FILE_NAME_INVALID`.
        FILE_NAME_INVALID = 22,
        /// `VIX_E_ALREADY_EXISTS`.
        ALREADY_EXISTS = 23,
        /// `VIX_E_INVALID_UTF8_STRING`.
        INVALID_UTF8_STRING = 27,
        /// `VIX_E_AUTHENTICATION_FAIL`.
        AUTHENTICATION_FAIL = 35,
        /// `VIX_E_ARGUMENT_TOO_BIG`.
        ARGUMENT_TOO_BIG = 44,
        /// `VIX_E_OP_NOT_SUPPORTED_ON_GUEST`.
        OP_NOT_SUPPORTED_ON_GUEST = 3003,
        /// `VIX_E_GUEST_USER_PERMISSIONS`.
        GUEST_USER_PERMISSIONS = 3015,
        /// `VIX_E_UNRECOGNIZED_COMMAND_IN_GUEST`.
        UNRECOGNIZED_COMMAND_IN_GUEST = 3025,
        /// `VIX_E_TOO_MANY_LOGONS`.
        TOO_MANY_LOGONS = 3046,
        /// `VIX_E_INVALID_LOGIN_CREDENTIALS`: vSphere raises InvalidGuestLogin.
        INVALID_LOGIN_CREDENTIALS = 3050,
        /// `VIX_E_GUEST_AUTHTYPE_DISABLED`.
        GUEST_AUTHTYPE_DISABLED = 3051,
        /// `VIX_E_UNRECOGNIZED_PROPERTY`.
        UNRECOGNIZED_PROPERTY = 6000,
        /// `VIX_E_INVALID_SERIALIZED_DATA`.
        INVALID_SERIALIZED_DATA = 6004,
        /// `VIX_E_INVALID_MESSAGE_HEADER`.
        INVALID_MESSAGE_HEADER = 10000,
        /// `VIX_E_INVALID_MESSAGE_BODY`.
        INVALID_MESSAGE_BODY = 10001,
        /// `VIX_E_NOT_A_FILE`.
        NOT_A_FILE = 20001,
        /// `VIX_E_NOT_A_DIRECTORY`.
        NOT_A_DIRECTORY = 20002,
        /// `VIX_E_NO_SUCH_PROCESS`.
        NO_SUCH_PROCESS = 20003,
        /// `VIX_E_FILE_NAME_TOO_LONG`.
        FILE_NAME_TOO_LONG = 20004,
        /// `VIX_E_OPERATION_DISABLED`.
        OPERATION_DISABLED = 20005,
        /// `VIX_E_DIRECTORY_NOT_EMPTY`.
        DIRECTORY_NOT_EMPTY = 20006,
    }
}

impl VixError {
    /// True for `VIX_OK`.
    pub fn is_ok(self) -> bool {
        self == VixError::OK
    }
}

wire_newtype! {
    /// `userCredentialType` (`VIX_USER_CREDENTIAL_*`, `lib/include/vixCommands.h`).
    CredentialType(u32) {
        /// `VIX_USER_CREDENTIAL_NONE`.
        NONE = 0,
        /// `VIX_USER_CREDENTIAL_NAME_PASSWORD`.
        NAME_PASSWORD = 1,
        /// `VIX_USER_CREDENTIAL_ANONYMOUS`.
        ANONYMOUS = 2,
        /// `VIX_USER_CREDENTIAL_ROOT`.
        ROOT = 3,
        /// `VIX_USER_CREDENTIAL_NAME_PASSWORD_OBFUSCATED`.
        NAME_PASSWORD_OBFUSCATED = 4,
        /// `VIX_USER_CREDENTIAL_CONSOLE_USER`.
        CONSOLE_USER = 5,
        /// `VIX_USER_CREDENTIAL_HOST_CONFIG_SECRET`.
        HOST_CONFIG_SECRET = 6,
        /// `VIX_USER_CREDENTIAL_HOST_CONFIG_HASHED_SECRET`.
        HOST_CONFIG_HASHED_SECRET = 7,
        /// `VIX_USER_CREDENTIAL_NAMED_INTERACTIVE_USER`.
        NAMED_INTERACTIVE_USER = 8,
        /// `VIX_USER_CREDENTIAL_TICKETED_SESSION`.
        TICKETED_SESSION = 9,
        /// `VIX_USER_CREDENTIAL_SSPI`.
        SSPI = 10,
        /// `VIX_USER_CREDENTIAL_SAML_BEARER_TOKEN`.
        SAML_BEARER_TOKEN = 11,
        /// `VIX_USER_CREDENTIAL_SAML_BEARER_TOKEN_HOST_VERIFIED`.
        SAML_BEARER_TOKEN_HOST_VERIFIED = 12,
    }
}

/// `commonFlags` bits (`VixCommonCommandOptionValues`).
pub mod common_flags {
    /// `VIX_COMMAND_REQUEST`: set on every request.
    pub const REQUEST: u8 = 0x01;
    /// `VIX_COMMAND_REPORT_EVENT`.
    pub const REPORT_EVENT: u8 = 0x02;
    /// `VIX_COMMAND_FORWARD_TO_GUEST`.
    pub const FORWARD_TO_GUEST: u8 = 0x04;
    /// `VIX_COMMAND_GUEST_RETURNS_STRING`.
    pub const GUEST_RETURNS_STRING: u8 = 0x08;
    /// `VIX_COMMAND_GUEST_RETURNS_INTEGER_STRING`.
    pub const GUEST_RETURNS_INTEGER_STRING: u8 = 0x10;
    /// `VIX_COMMAND_GUEST_RETURNS_PROPERTY_LIST`.
    pub const GUEST_RETURNS_PROPERTY_LIST: u8 = 0x40;
    /// `VIX_COMMAND_GUEST_RETURNS_BINARY`: the reply carries `#` and raw bytes.
    pub const GUEST_RETURNS_BINARY: u8 = 0x80;
}

/// `requestFlags` bits.
pub mod request_flags {
    /// `VIX_REQUESTMSG_INCLUDES_AUTH_DATA_V1`: a `VixMsgAuthDataV1` follows the credential.
    pub const INCLUDES_AUTH_DATA_V1: u32 = 0x010;
    /// `VIX_REQUESTMSG_ESCAPE_XML_DATA`.
    pub const ESCAPE_XML_DATA: u32 = 0x040;
}

/// `VIX_FILE_ATTRIBUTE_SET_*` (`lib/include/vixOpenSource.h`): which fields of a
/// ChangeFileAttributes request (and of a transfer to the guest) apply.
pub mod attribute_options {
    /// `VIX_FILE_ATTRIBUTE_SET_ACCESS_DATE`.
    pub const SET_ACCESS_DATE: i32 = 0x0001;
    /// `VIX_FILE_ATTRIBUTE_SET_MODIFY_DATE`.
    pub const SET_MODIFY_DATE: i32 = 0x0002;
    /// `VIX_FILE_ATTRIBUTE_SET_READONLY` (Windows only).
    pub const SET_READONLY: i32 = 0x0004;
    /// `VIX_FILE_ATTRIBUTE_SET_HIDDEN` (Windows only).
    pub const SET_HIDDEN: i32 = 0x0008;
    /// `VIX_FILE_ATTRIBUTE_SET_UNIX_OWNERID`.
    pub const SET_UNIX_OWNERID: i32 = 0x0010;
    /// `VIX_FILE_ATTRIBUTE_SET_UNIX_GROUPID`.
    pub const SET_UNIX_GROUPID: i32 = 0x0020;
    /// `VIX_FILE_ATTRIBUTE_SET_UNIX_PERMISSIONS`.
    pub const SET_UNIX_PERMISSIONS: i32 = 0x0040;
}

/// `VIX_FILE_ATTRIBUTES_*`: the `<ft>` bits of a file's extended info.
pub mod file_type {
    /// `VIX_FILE_ATTRIBUTES_DIRECTORY`.
    pub const DIRECTORY: i32 = 0x0001;
    /// `VIX_FILE_ATTRIBUTES_SYMLINK`.
    pub const SYMLINK: i32 = 0x0002;
}

/// Why a message was refused; each maps to the VIX error vmtoolsd answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The header is malformed or inconsistent (`VIX_E_INVALID_MESSAGE_HEADER`).
    #[error("invalid VIX message header: {0}")]
    Header(&'static str),
    /// The body is shorter than its fields say, or a string is malformed
    /// (`VIX_E_INVALID_MESSAGE_BODY`).
    #[error("invalid VIX message body: {0}")]
    Body(&'static str),
    /// A string is not UTF-8 (`VIX_E_INVALID_UTF8_STRING`).
    #[error("a string in the VIX message is not UTF-8")]
    Utf8,
    /// A field has a value the operation refuses (`VIX_E_INVALID_ARG`).
    #[error("invalid VIX argument: {0}")]
    Argument(&'static str),
    /// The operation is not one this agent carries out (`VIX_E_UNRECOGNIZED_COMMAND_IN_GUEST`).
    #[error("unrecognized VIX command {0}")]
    UnknownOp(OpCode),
}

impl DecodeError {
    /// The VIX error the reply carries.
    pub fn vix_error(&self) -> VixError {
        match self {
            DecodeError::Header(_) => VixError::INVALID_MESSAGE_HEADER,
            DecodeError::Body(_) => VixError::INVALID_MESSAGE_BODY,
            DecodeError::Utf8 => VixError::INVALID_UTF8_STRING,
            DecodeError::Argument(_) => VixError::INVALID_ARG,
            DecodeError::UnknownOp(_) => VixError::UNRECOGNIZED_COMMAND_IN_GUEST,
        }
    }
}

/// The arguments of a `Vix_1_Relayed_Command` TCLO request, split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Relayed<'a> {
    /// The quoted request name the VMX sends first (it identifies the request).
    pub request_name: &'a [u8],
    /// The VIX message after the NUL.
    pub message: &'a [u8],
}

/// Splits the TCLO arguments (what follows `Vix_1_Relayed_Command `) into the quoted request
/// name and the binary VIX message. As `ToolsDaemonTcloGetQuotedString` does: skip to the
/// first `"`, read to the closing `"` (a backslash protects the next byte), then skip to the
/// first NUL; the message starts after it.
pub fn split_relayed(args: &[u8]) -> Result<Relayed<'_>, DecodeError> {
    let nul = args
        .iter()
        .position(|&b| b == 0)
        .ok_or(DecodeError::Header("no NUL before the VIX message"))?;
    let (text, message) = (&args[..nul], &args[nul + 1..]);
    let start = text
        .iter()
        .position(|&b| b == b'"')
        .map_or(text.len(), |i| i + 1);
    let quoted = &text[start..];
    let mut end = quoted.len();
    let mut i = 0;
    while i < quoted.len() {
        match quoted[i] {
            b'\\' if i + 1 < quoted.len() => i += 2,
            b'"' => {
                end = i;
                break;
            }
            _ => i += 1,
        }
    }
    Ok(Relayed {
        request_name: &quoted[..end],
        message,
    })
}

/// Builds the TCLO arguments [`split_relayed`] takes: `"<name>"`, a NUL, the message.
pub fn join_relayed(request_name: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(request_name.len() + 3 + message.len());
    out.push(b'"');
    out.extend_from_slice(request_name.as_bytes());
    out.push(b'"');
    out.push(0);
    out.extend_from_slice(message);
    out
}

/// `VixCommandRequestHeader`: the common `VixMsgHeader` and the request fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestHeader {
    /// `magic`.
    pub magic: u32,
    /// `messageVersion`.
    pub message_version: u16,
    /// `totalMessageLength`: header, body, credential (and auth data).
    pub total_length: u32,
    /// `headerLength`.
    pub header_length: u32,
    /// `bodyLength`.
    pub body_length: u32,
    /// `credentialLength`.
    pub credential_length: u32,
    /// `commonFlags`.
    pub common_flags: u8,
    /// `opCode`.
    pub op: OpCode,
    /// `requestFlags`.
    pub request_flags: u32,
    /// `timeOut`.
    pub timeout: u32,
    /// `cookie`.
    pub cookie: u64,
    /// `clientHandleId`.
    pub client_handle_id: u32,
    /// `userCredentialType`.
    pub credential_type: CredentialType,
}

impl RequestHeader {
    /// Reads the 51 header bytes; `None` when fewer are there.
    pub fn read(r: &mut Reader<'_>) -> Option<RequestHeader> {
        Some(RequestHeader {
            magic: r.u32_le()?,
            message_version: r.u16_le()?,
            total_length: r.u32_le()?,
            header_length: r.u32_le()?,
            body_length: r.u32_le()?,
            credential_length: r.u32_le()?,
            common_flags: r.u8()?,
            op: OpCode(r.u32_le()?),
            request_flags: r.u32_le()?,
            timeout: r.u32_le()?,
            cookie: r.u64_le()?,
            client_handle_id: r.u32_le()?,
            credential_type: CredentialType(r.u32_le()?),
        })
    }

    /// Appends the 51 header bytes.
    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.magic.to_le_bytes());
        out.extend_from_slice(&self.message_version.to_le_bytes());
        out.extend_from_slice(&self.total_length.to_le_bytes());
        out.extend_from_slice(&self.header_length.to_le_bytes());
        out.extend_from_slice(&self.body_length.to_le_bytes());
        out.extend_from_slice(&self.credential_length.to_le_bytes());
        out.push(self.common_flags);
        out.extend_from_slice(&self.op.0.to_le_bytes());
        out.extend_from_slice(&self.request_flags.to_le_bytes());
        out.extend_from_slice(&self.timeout.to_le_bytes());
        out.extend_from_slice(&self.cookie.to_le_bytes());
        out.extend_from_slice(&self.client_handle_id.to_le_bytes());
        out.extend_from_slice(&self.credential_type.0.to_le_bytes());
    }

    /// True when the reply must be binary (`#` and raw bytes).
    pub fn wants_binary(&self) -> bool {
        self.common_flags & common_flags::GUEST_RETURNS_BINARY != 0
    }
}

/// A request message, checked as vmtoolsd checks it, with its regions split out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    /// The header.
    pub header: RequestHeader,
    /// The body (the op's fixed fields and its strings).
    pub body: &'a [u8],
    /// The credential region.
    pub credential: &'a [u8],
    /// `VixMsgAuthDataV1`, when `requestFlags` says it is there.
    pub auth_data: Option<&'a [u8]>,
}

/// A request that could not be parsed: the error, and the header if it was readable (so the
/// reply can honour its binary flag, as vmtoolsd does once `VixMsg_ValidateMessage` passed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestError {
    /// What failed.
    pub error: DecodeError,
    /// The header, when the common checks passed.
    pub header: Option<RequestHeader>,
}

impl<'a> Request<'a> {
    /// Parses and validates a VIX request message.
    pub fn parse(msg: &'a [u8]) -> Result<Request<'a>, RequestError> {
        let bad = |e: &'static str| RequestError {
            error: DecodeError::Header(e),
            header: None,
        };
        let mut r = Reader::new(msg);
        let header = RequestHeader::read(&mut r).ok_or_else(|| bad("shorter than a header"))?;
        // VixMsg_ValidateMessage.
        let regions = u64::from(header.header_length)
            + u64::from(header.body_length)
            + u64::from(header.credential_length);
        if header.magic != MAGIC {
            return Err(bad("bad magic"));
        }
        if header.message_version != MESSAGE_VERSION {
            return Err(bad("unsupported message version"));
        }
        if (header.header_length as usize) < MSG_HEADER_SIZE
            || u64::from(header.total_length) < regions
            || header.total_length as usize > MAX_MESSAGE_SIZE
        {
            return Err(bad("inconsistent lengths"));
        }
        // From here on vmtoolsd has a request pointer and honours its flags.
        let bad = |e: &'static str| RequestError {
            error: DecodeError::Header(e),
            header: Some(header),
        };
        // VixMsg_ValidateRequestMsg and VMAutomationMsgParserInit.
        if header.total_length as usize > MAX_REQUEST_SIZE {
            return Err(bad("longer than VIX_COMMAND_MAX_REQUEST_SIZE"));
        }
        if header.common_flags & common_flags::REQUEST == 0 {
            return Err(bad("not a request"));
        }
        if header.header_length as usize != REQUEST_HEADER_SIZE {
            return Err(bad("unsupported header length"));
        }
        let with_auth = header.request_flags & request_flags::INCLUDES_AUTH_DATA_V1 != 0;
        let misc = if with_auth {
            AUTH_DATA_V1_SIZE as u64
        } else {
            0
        };
        if u64::from(header.total_length) != regions + misc {
            return Err(bad("total length does not match the regions"));
        }
        if msg.len() < header.total_length as usize {
            return Err(bad("message shorter than its total length"));
        }
        // Lengths are bounded by MAX_REQUEST_SIZE above, and the message holds them all.
        let body = r
            .take(header.body_length as usize)
            .ok_or_else(|| bad("body"))?;
        let credential = r
            .take(header.credential_length as usize)
            .ok_or_else(|| bad("credential"))?;
        let auth_data = if with_auth {
            Some(r.take(AUTH_DATA_V1_SIZE).ok_or_else(|| bad("auth data"))?)
        } else {
            None
        };
        Ok(Request {
            header,
            body,
            credential,
            auth_data,
        })
    }
}

/// Builds a complete request message as `VixMsg_AllocRequestMsg` lays it out: magic, version
/// 5, `VIX_COMMAND_REQUEST`, timeout `0xFFFFFFFF`, header + body + credential.
pub fn encode_request(
    op: OpCode,
    cookie: u64,
    common_flags: u8,
    credential_type: CredentialType,
    body: &[u8],
    credential: &[u8],
) -> Vec<u8> {
    let total = REQUEST_HEADER_SIZE + body.len() + credential.len();
    let header = RequestHeader {
        magic: MAGIC,
        message_version: MESSAGE_VERSION,
        total_length: total as u32,
        header_length: REQUEST_HEADER_SIZE as u32,
        body_length: body.len() as u32,
        credential_length: credential.len() as u32,
        common_flags: common_flags | self::common_flags::REQUEST,
        op,
        request_flags: 0,
        timeout: 0xFFFF_FFFF,
        cookie,
        client_handle_id: 0,
        credential_type,
    };
    let mut out = Vec::with_capacity(total);
    header.write(&mut out);
    out.extend_from_slice(body);
    out.extend_from_slice(credential);
    out
}

// ---------------------------------------------------------------------------------------------
// Request bodies.

/// ListFiles (`VixMsgListFilesRequest`); InitiateFileTransferFromGuest reuses its layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListFilesRequest {
    /// `fileOptions`.
    pub options: i32,
    /// The directory (or file) to list.
    pub path: String,
    /// The regular expression names must match (`None`: all).
    pub pattern: Option<String>,
    /// `index`: the first matching entry to return.
    pub index: i32,
    /// `maxResults`: at most this many entries (0: none, just the count).
    pub max_results: i32,
    /// `offset`: hostd's continuation after a truncated reply.
    pub offset: u64,
}

/// CreateDirectoryEx (`VixMsgCreateFileRequestEx`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateDirectoryRequest {
    /// `fileOptions`.
    pub options: i32,
    /// The directory to create.
    pub path: String,
    /// The serialized property list the VMX may append (unused by the guest).
    pub properties: Vec<u8>,
    /// `createParentDirectories`.
    pub create_parents: bool,
}

/// DeleteFileEx (`VixMsgSimpleFileRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteFileRequest {
    /// `fileOptions`.
    pub options: i32,
    /// The file to delete.
    pub path: String,
}

/// DeleteDirectoryEx (`VixMsgDeleteDirectoryRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeleteDirectoryRequest {
    /// `fileOptions`.
    pub options: i32,
    /// The directory to delete.
    pub path: String,
    /// The property list the VMX may append (unused by the guest).
    pub properties: Vec<u8>,
    /// `recursive`.
    pub recursive: bool,
}

/// MoveFileEx / MoveDirectory (`VixCommandRenameFileRequestEx`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoveRequest {
    /// `copyFileOptions`.
    pub options: i32,
    /// The source.
    pub old_path: String,
    /// The destination.
    pub new_path: String,
    /// The property list the VMX may append (unused by the guest).
    pub properties: Vec<u8>,
    /// `overwrite`.
    pub overwrite: bool,
}

/// CreateTemporaryFileEx / CreateTemporaryDirectory (`VixMsgCreateTempFileRequestEx`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CreateTempRequest {
    /// `options`.
    pub options: i32,
    /// The name's start.
    pub prefix: String,
    /// The name's end.
    pub suffix: String,
    /// Where (empty: the temporary directory).
    pub directory: String,
    /// The property list that follows the strings.
    pub properties: Vec<u8>,
}

/// ChangeFileAttributes (`VixMsgSetGuestFileAttributesRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetAttributesRequest {
    /// `fileOptions`: which fields apply ([`attribute_options`]).
    pub options: i32,
    /// `accessTime`, seconds since the epoch.
    pub access_time: i64,
    /// `modificationTime`, seconds since the epoch.
    pub modification_time: i64,
    /// `ownerId`.
    pub owner_id: i32,
    /// `groupId`.
    pub group_id: i32,
    /// `permissions`.
    pub permissions: i32,
    /// `hidden` (Windows).
    pub hidden: bool,
    /// `readOnly` (Windows).
    pub read_only: bool,
    /// The file.
    pub path: String,
}

/// InitiateFileTransferToGuest (`VixCommandInitiateFileTransferToGuestRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferToGuestRequest {
    /// `options`: the [`attribute_options`] the upload will set.
    pub options: i32,
    /// The destination.
    pub path: String,
    /// `overwrite`.
    pub overwrite: bool,
}

/// HGFS send packet (`VixCommandHgfsSendPacket`): the packet passes through to HGFS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HgfsPacketRequest {
    /// `timeout`.
    pub timeout: i32,
    /// The HGFS packet.
    pub packet: Vec<u8>,
}

/// StartProgram (`VixMsgStartProgramRequest`). String lengths on the wire count the NUL; an
/// empty string travels as length 0 (`VMAutomationRequestParserGetOptionalString`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartProgramRequest {
    /// `startMinimized` (meaningless on Linux, kept for the round trip).
    pub start_minimized: bool,
    /// The program: an absolute path as vSphere requires, or, by govmomi's convention, a bare
    /// name (a registered in-agent function or a program searched in `PATH`, with pipes).
    pub program: String,
    /// The arguments, one string the shell splits.
    pub arguments: String,
    /// The working directory; empty: the user's home.
    pub working_dir: String,
    /// `NAME=value` entries added to the user's environment.
    pub env: Vec<String>,
}

/// ListProcessesEx (`VixMsgListProcessesExRequest`): `key`/`offset` fetch further chunks of
/// a listing too large for one reply; `pids` filters (empty: every process).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListProcessesRequest {
    /// The cached listing being fetched (0: a new listing).
    pub key: u32,
    /// Where in the cached listing this chunk starts.
    pub offset: u32,
    /// The processes asked about.
    pub pids: Vec<u64>,
}

/// TerminateProcess (`VixCommandKillProcessRequest`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TerminateProcessRequest {
    /// The process.
    pub pid: u64,
    /// `options` (none defined).
    pub options: u32,
}

/// ReadEnvironmentVariables (`VixMsgReadEnvironmentVariablesRequest`); `names` empty: all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadEnvRequest {
    /// The variables asked for.
    pub names: Vec<String>,
}

/// A decoded command: the op and its body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// GetToolsState: no body, no credentials.
    GetToolsState,
    /// ListFiles.
    ListFiles(ListFilesRequest),
    /// CreateDirectoryEx.
    CreateDirectory(CreateDirectoryRequest),
    /// DeleteFileEx.
    DeleteFile(DeleteFileRequest),
    /// DeleteDirectoryEx.
    DeleteDirectory(DeleteDirectoryRequest),
    /// MoveFileEx.
    MoveFile(MoveRequest),
    /// MoveDirectory.
    MoveDirectory(MoveRequest),
    /// CreateTemporaryFileEx.
    CreateTemporaryFile(CreateTempRequest),
    /// CreateTemporaryDirectory.
    CreateTemporaryDirectory(CreateTempRequest),
    /// ChangeFileAttributes.
    SetAttributes(SetAttributesRequest),
    /// InitiateFileTransferFromGuest (the ListFiles layout; only the path is used).
    TransferFromGuest(ListFilesRequest),
    /// InitiateFileTransferToGuest.
    TransferToGuest(TransferToGuestRequest),
    /// HGFS send packet.
    HgfsPacket(HgfsPacketRequest),
    /// ValidateCredentials: a login and nothing else (`VixToolsValidateCredentials`).
    ValidateCredentials,
    /// StartProgram.
    StartProgram(StartProgramRequest),
    /// ListProcessesEx.
    ListProcesses(ListProcessesRequest),
    /// TerminateProcess.
    TerminateProcess(TerminateProcessRequest),
    /// ReadEnvironmentVariables.
    ReadEnvironmentVariables(ReadEnvRequest),
}

/// Fixed body sizes (the structs of `vixCommands.h` less the request header).
mod fixed {
    /// `VixMsgListFilesRequest`: 4 + 4 + 4 + 4 + 4 + 8.
    pub const LIST_FILES: usize = 28;
    /// `VixMsgCreateFileRequestEx`: 4 + 4 + 4 + 1.
    pub const CREATE_FILE_EX: usize = 13;
    /// `VixMsgSimpleFileRequest`: 4 + 4.
    pub const SIMPLE_FILE: usize = 8;
    /// `VixMsgDeleteDirectoryRequest`: 4 + 4 + 4 + 1.
    pub const DELETE_DIRECTORY: usize = 13;
    /// `VixCommandRenameFileRequestEx`: 4 + 4 + 4 + 4 + 1.
    pub const RENAME_EX: usize = 17;
    /// `VixMsgCreateTempFileRequestEx`: 4 × 5.
    pub const CREATE_TEMP_EX: usize = 20;
    /// `VixMsgSetGuestFileAttributesRequest`: 4 + 8 + 8 + 4 + 4 + 4 + 1 + 1 + 4.
    pub const SET_ATTRIBUTES: usize = 38;
    /// `VixCommandInitiateFileTransferToGuestRequest`: 4 + 4 + 1.
    pub const TRANSFER_TO_GUEST: usize = 9;
    /// `VixCommandHgfsSendPacket`: 4 + 4.
    pub const HGFS_SEND_PACKET: usize = 8;
    /// `VixMsgStartProgramRequest`: 1 + 4 × 5.
    pub const START_PROGRAM: usize = 21;
    /// `VixMsgListProcessesExRequest`: 4 × 3.
    pub const LIST_PROCESSES_EX: usize = 12;
    /// `VixCommandKillProcessRequest`: 8 + 4.
    pub const KILL_PROCESS: usize = 12;
    /// `VixMsgReadEnvironmentVariablesRequest`: 4 + 4.
    pub const READ_ENV: usize = 8;
}

/// `VMAutomationRequestParserGetOptionalString`: `len` counts the NUL; 0 is no string.
fn optional_string(r: &mut Reader<'_>, len: u32) -> Result<String, DecodeError> {
    if len == 0 {
        return Ok(String::new());
    }
    string(r, len - 1)
}

/// `VMAutomationRequestParserGetOptionalStrings`: `count` NUL-terminated strings filling
/// exactly `len` bytes. The count is checked against the bytes before anything is allocated
/// (every string takes at least its NUL).
fn optional_strings(r: &mut Reader<'_>, count: u32, len: u32) -> Result<Vec<String>, DecodeError> {
    if count == 0 && len == 0 {
        return Ok(Vec::new());
    }
    if count == 0 || u64::from(count) > u64::from(len) {
        return Err(DecodeError::Body("string count does not fit its length"));
    }
    let bytes = r
        .take(len as usize)
        .ok_or(DecodeError::Body("strings run past the body"))?;
    if bytes.last() != Some(&0) {
        return Err(DecodeError::Body("strings are not NUL-terminated"));
    }
    let parts: Vec<&[u8]> = bytes[..bytes.len() - 1].split(|b| *b == 0).collect();
    if parts.len() != count as usize {
        return Err(DecodeError::Body("string count does not match the strings"));
    }
    parts
        .into_iter()
        .map(|p| String::from_utf8(p.to_vec()).map_err(|_| DecodeError::Utf8))
        .collect()
}

fn encode_strings(b: &mut Vec<u8>, list: &[String]) -> (u32, u32) {
    let start = b.len();
    for v in list {
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    (list.len() as u32, (b.len() - start) as u32)
}

/// Reads what `__VMAutomationMsgParserGetString` reads: `len` bytes without a NUL, then the
/// NUL, valid UTF-8.
fn string(r: &mut Reader<'_>, len: u32) -> Result<String, DecodeError> {
    let bytes = r
        .take(len as usize)
        .ok_or(DecodeError::Body("string runs past the body"))?;
    if r.u8() != Some(0) {
        return Err(DecodeError::Body("string is not NUL-terminated"));
    }
    if bytes.contains(&0) {
        return Err(DecodeError::Body("string has trailing garbage"));
    }
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::Utf8)
}

fn properties(r: &mut Reader<'_>, len: u32) -> Result<Vec<u8>, DecodeError> {
    r.take(len as usize)
        .map(<[u8]>::to_vec)
        .ok_or(DecodeError::Body("property list runs past the body"))
}

fn need(r: &Reader<'_>, n: usize) -> Result<(), DecodeError> {
    if r.remaining() < n {
        Err(DecodeError::Header(
            "body shorter than the request's fixed part",
        ))
    } else {
        Ok(())
    }
}

fn non_empty(s: String) -> Result<String, DecodeError> {
    if s.is_empty() {
        Err(DecodeError::Argument("empty path"))
    } else {
        Ok(s)
    }
}

// Fixed fields are read after `need` checked they are all there, so a short read cannot
// happen; the `Body` fallback keeps that an error rather than a panic regardless.
const SHORT: DecodeError = DecodeError::Body("short fixed part");

/// The body of HgfsSendPacket (`VixCommandHgfsSendPacket`): the timeout and the packet, which
/// is borrowed, so the agent passes it on without copying it.
fn hgfs_packet_body<'a>(r: &mut Reader<'a>) -> Result<(i32, &'a [u8]), DecodeError> {
    need(r, fixed::HGFS_SEND_PACKET)?;
    let size = r.u32_le().ok_or(SHORT)?;
    let timeout = r.i32_le().ok_or(SHORT)?;
    if size == 0 {
        return Err(DecodeError::Argument("empty HGFS packet"));
    }
    let packet = r
        .take(size as usize)
        .ok_or(DecodeError::Body("HGFS packet runs past the body"))?;
    Ok((timeout, packet))
}

/// The HGFS packet of an HgfsSendPacket body, borrowed; the same checks as [`Command::decode`].
pub fn decode_hgfs_packet(body: &[u8]) -> Result<&[u8], DecodeError> {
    hgfs_packet_body(&mut Reader::new(body)).map(|(_, packet)| packet)
}

fn read_list_files(r: &mut Reader<'_>) -> Result<ListFilesRequest, DecodeError> {
    need(r, fixed::LIST_FILES)?;
    let options = r.i32_le().ok_or(SHORT)?;
    let path_len = r.u32_le().ok_or(SHORT)?;
    let pattern_len = r.u32_le().ok_or(SHORT)?;
    let index = r.i32_le().ok_or(SHORT)?;
    let max_results = r.i32_le().ok_or(SHORT)?;
    let offset = r.u64_le().ok_or(SHORT)?;
    let path = string(r, path_len)?;
    let pattern = if pattern_len > 0 {
        Some(string(r, pattern_len)?)
    } else {
        None
    };
    Ok(ListFilesRequest {
        options,
        path: non_empty(path)?,
        pattern,
        index,
        max_results,
        offset,
    })
}

impl Command {
    /// Decodes the body of `op`. Ops this agent does not carry out are
    /// [`DecodeError::UnknownOp`].
    pub fn decode(op: OpCode, body: &[u8]) -> Result<Command, DecodeError> {
        let mut r = Reader::new(body);
        let r = &mut r;
        Ok(match op {
            OpCode::GET_TOOLS_STATE => Command::GetToolsState,
            OpCode::VALIDATE_CREDENTIALS => Command::ValidateCredentials,
            OpCode::LIST_FILES => Command::ListFiles(read_list_files(r)?),
            OpCode::INITIATE_FILE_TRANSFER_FROM_GUEST => {
                Command::TransferFromGuest(read_list_files(r)?)
            }
            OpCode::CREATE_DIRECTORY_EX => {
                need(r, fixed::CREATE_FILE_EX)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let path_len = r.u32_le().ok_or(SHORT)?;
                let props_len = r.u32_le().ok_or(SHORT)?;
                let create_parents = r.u8().ok_or(SHORT)? != 0;
                let path = non_empty(string(r, path_len)?)?;
                Command::CreateDirectory(CreateDirectoryRequest {
                    options,
                    path,
                    properties: properties(r, props_len)?,
                    create_parents,
                })
            }
            OpCode::DELETE_GUEST_FILE_EX => {
                need(r, fixed::SIMPLE_FILE)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let path_len = r.u32_le().ok_or(SHORT)?;
                let path = non_empty(string(r, path_len)?)?;
                Command::DeleteFile(DeleteFileRequest { options, path })
            }
            OpCode::DELETE_GUEST_DIRECTORY_EX => {
                need(r, fixed::DELETE_DIRECTORY)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let path_len = r.u32_le().ok_or(SHORT)?;
                let props_len = r.u32_le().ok_or(SHORT)?;
                let recursive = r.u8().ok_or(SHORT)? != 0;
                let path = non_empty(string(r, path_len)?)?;
                Command::DeleteDirectory(DeleteDirectoryRequest {
                    options,
                    path,
                    properties: properties(r, props_len)?,
                    recursive,
                })
            }
            OpCode::MOVE_GUEST_FILE_EX | OpCode::MOVE_GUEST_DIRECTORY => {
                need(r, fixed::RENAME_EX)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let old_len = r.u32_le().ok_or(SHORT)?;
                let new_len = r.u32_le().ok_or(SHORT)?;
                let props_len = r.u32_le().ok_or(SHORT)?;
                let overwrite = r.u8().ok_or(SHORT)? != 0;
                let old_path = string(r, old_len)?;
                let new_path = string(r, new_len)?;
                if old_path.is_empty() || new_path.is_empty() {
                    return Err(DecodeError::Argument("empty path"));
                }
                let m = MoveRequest {
                    options,
                    old_path,
                    new_path,
                    properties: properties(r, props_len)?,
                    overwrite,
                };
                if op == OpCode::MOVE_GUEST_FILE_EX {
                    Command::MoveFile(m)
                } else {
                    Command::MoveDirectory(m)
                }
            }
            OpCode::CREATE_TEMPORARY_FILE_EX | OpCode::CREATE_TEMPORARY_DIRECTORY => {
                need(r, fixed::CREATE_TEMP_EX)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let prefix_len = r.u32_le().ok_or(SHORT)?;
                let suffix_len = r.u32_le().ok_or(SHORT)?;
                let dir_len = r.u32_le().ok_or(SHORT)?;
                let props_len = r.u32_le().ok_or(SHORT)?;
                // VixToolsGetTempFile wants the body to be exactly these parts.
                let expected = u64::from(prefix_len)
                    + u64::from(suffix_len)
                    + u64::from(dir_len)
                    + 3
                    + u64::from(props_len);
                if r.remaining() as u64 != expected {
                    return Err(DecodeError::Body("temporary-file request lengths"));
                }
                let t = CreateTempRequest {
                    options,
                    prefix: string(r, prefix_len)?,
                    suffix: string(r, suffix_len)?,
                    directory: string(r, dir_len)?,
                    properties: properties(r, props_len)?,
                };
                if op == OpCode::CREATE_TEMPORARY_FILE_EX {
                    Command::CreateTemporaryFile(t)
                } else {
                    Command::CreateTemporaryDirectory(t)
                }
            }
            OpCode::SET_GUEST_FILE_ATTRIBUTES => {
                need(r, fixed::SET_ATTRIBUTES)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let access_time = r.i64_le().ok_or(SHORT)?;
                let modification_time = r.i64_le().ok_or(SHORT)?;
                let owner_id = r.i32_le().ok_or(SHORT)?;
                let group_id = r.i32_le().ok_or(SHORT)?;
                let permissions = r.i32_le().ok_or(SHORT)?;
                let hidden = r.u8().ok_or(SHORT)? != 0;
                let read_only = r.u8().ok_or(SHORT)? != 0;
                let path_len = r.u32_le().ok_or(SHORT)?;
                let path = non_empty(string(r, path_len)?)?;
                Command::SetAttributes(SetAttributesRequest {
                    options,
                    access_time,
                    modification_time,
                    owner_id,
                    group_id,
                    permissions,
                    hidden,
                    read_only,
                    path,
                })
            }
            OpCode::INITIATE_FILE_TRANSFER_TO_GUEST => {
                need(r, fixed::TRANSFER_TO_GUEST)?;
                let options = r.i32_le().ok_or(SHORT)?;
                let path_len = r.u32_le().ok_or(SHORT)?;
                let overwrite = r.u8().ok_or(SHORT)? != 0;
                let path = non_empty(string(r, path_len)?)?;
                Command::TransferToGuest(TransferToGuestRequest {
                    options,
                    path,
                    overwrite,
                })
            }
            OpCode::HGFS_SEND_PACKET => {
                let (timeout, packet) = hgfs_packet_body(r)?;
                Command::HgfsPacket(HgfsPacketRequest {
                    timeout,
                    packet: packet.to_vec(),
                })
            }
            OpCode::START_PROGRAM => {
                need(r, fixed::START_PROGRAM)?;
                let start_minimized = r.u8().ok_or(SHORT)? != 0;
                let program_len = r.u32_le().ok_or(SHORT)?;
                let args_len = r.u32_le().ok_or(SHORT)?;
                let dir_len = r.u32_le().ok_or(SHORT)?;
                let env_count = r.u32_le().ok_or(SHORT)?;
                let env_len = r.u32_le().ok_or(SHORT)?;
                let program = optional_string(r, program_len)?;
                if program.is_empty() {
                    return Err(DecodeError::Argument("empty program path"));
                }
                Command::StartProgram(StartProgramRequest {
                    start_minimized,
                    program,
                    arguments: optional_string(r, args_len)?,
                    working_dir: optional_string(r, dir_len)?,
                    env: optional_strings(r, env_count, env_len)?,
                })
            }
            OpCode::LIST_PROCESSES_EX => {
                need(r, fixed::LIST_PROCESSES_EX)?;
                let key = r.u32_le().ok_or(SHORT)?;
                let offset = r.u32_le().ok_or(SHORT)?;
                let count = r.u32_le().ok_or(SHORT)?;
                // Bounded by the body before allocating: 8 bytes per pid must be there.
                if u64::from(count) * 8 > r.remaining() as u64 {
                    return Err(DecodeError::Body("pid list runs past the body"));
                }
                let pids = (0..count)
                    .map(|_| r.u64_le().ok_or(SHORT))
                    .collect::<Result<Vec<u64>, DecodeError>>()?;
                Command::ListProcesses(ListProcessesRequest { key, offset, pids })
            }
            OpCode::TERMINATE_PROCESS => {
                need(r, fixed::KILL_PROCESS)?;
                let pid = r.u64_le().ok_or(SHORT)?;
                let options = r.u32_le().ok_or(SHORT)?;
                Command::TerminateProcess(TerminateProcessRequest { pid, options })
            }
            OpCode::READ_ENV_VARIABLES => {
                need(r, fixed::READ_ENV)?;
                let count = r.u32_le().ok_or(SHORT)?;
                let len = r.u32_le().ok_or(SHORT)?;
                let names = optional_strings(r, count, len)?;
                Command::ReadEnvironmentVariables(ReadEnvRequest { names })
            }
            other => return Err(DecodeError::UnknownOp(other)),
        })
    }

    /// The op code this command travels under.
    pub fn op(&self) -> OpCode {
        match self {
            Command::GetToolsState => OpCode::GET_TOOLS_STATE,
            Command::ListFiles(_) => OpCode::LIST_FILES,
            Command::CreateDirectory(_) => OpCode::CREATE_DIRECTORY_EX,
            Command::DeleteFile(_) => OpCode::DELETE_GUEST_FILE_EX,
            Command::DeleteDirectory(_) => OpCode::DELETE_GUEST_DIRECTORY_EX,
            Command::MoveFile(_) => OpCode::MOVE_GUEST_FILE_EX,
            Command::MoveDirectory(_) => OpCode::MOVE_GUEST_DIRECTORY,
            Command::CreateTemporaryFile(_) => OpCode::CREATE_TEMPORARY_FILE_EX,
            Command::CreateTemporaryDirectory(_) => OpCode::CREATE_TEMPORARY_DIRECTORY,
            Command::SetAttributes(_) => OpCode::SET_GUEST_FILE_ATTRIBUTES,
            Command::TransferFromGuest(_) => OpCode::INITIATE_FILE_TRANSFER_FROM_GUEST,
            Command::TransferToGuest(_) => OpCode::INITIATE_FILE_TRANSFER_TO_GUEST,
            Command::HgfsPacket(_) => OpCode::HGFS_SEND_PACKET,
            Command::ValidateCredentials => OpCode::VALIDATE_CREDENTIALS,
            Command::StartProgram(_) => OpCode::START_PROGRAM,
            Command::ListProcesses(_) => OpCode::LIST_PROCESSES_EX,
            Command::TerminateProcess(_) => OpCode::TERMINATE_PROCESS,
            Command::ReadEnvironmentVariables(_) => OpCode::READ_ENV_VARIABLES,
        }
    }

    /// Encodes the body as the VMX lays it out (string lengths without the NUL, each string
    /// followed by its NUL). [`Command::decode`] of the result gives `self` back.
    pub fn encode_body(&self) -> Vec<u8> {
        let mut b = Vec::new();
        let s = |b: &mut Vec<u8>, v: &str| {
            b.extend_from_slice(v.as_bytes());
            b.push(0);
        };
        let len = |v: &str| (v.len() as u32).to_le_bytes();
        let list_files = |b: &mut Vec<u8>, l: &ListFilesRequest| {
            let pattern = l.pattern.as_deref().unwrap_or("");
            b.extend_from_slice(&l.options.to_le_bytes());
            b.extend_from_slice(&len(&l.path));
            b.extend_from_slice(&len(pattern));
            b.extend_from_slice(&l.index.to_le_bytes());
            b.extend_from_slice(&l.max_results.to_le_bytes());
            b.extend_from_slice(&l.offset.to_le_bytes());
            s(b, &l.path);
            if !pattern.is_empty() {
                s(b, pattern);
            }
        };
        match self {
            Command::GetToolsState | Command::ValidateCredentials => {}
            Command::ListFiles(l) | Command::TransferFromGuest(l) => list_files(&mut b, l),
            Command::CreateDirectory(c) => {
                b.extend_from_slice(&c.options.to_le_bytes());
                b.extend_from_slice(&len(&c.path));
                b.extend_from_slice(&(c.properties.len() as u32).to_le_bytes());
                b.push(u8::from(c.create_parents));
                s(&mut b, &c.path);
                b.extend_from_slice(&c.properties);
            }
            Command::DeleteFile(d) => {
                b.extend_from_slice(&d.options.to_le_bytes());
                b.extend_from_slice(&len(&d.path));
                s(&mut b, &d.path);
            }
            Command::DeleteDirectory(d) => {
                b.extend_from_slice(&d.options.to_le_bytes());
                b.extend_from_slice(&len(&d.path));
                b.extend_from_slice(&(d.properties.len() as u32).to_le_bytes());
                b.push(u8::from(d.recursive));
                s(&mut b, &d.path);
                b.extend_from_slice(&d.properties);
            }
            Command::MoveFile(m) | Command::MoveDirectory(m) => {
                b.extend_from_slice(&m.options.to_le_bytes());
                b.extend_from_slice(&len(&m.old_path));
                b.extend_from_slice(&len(&m.new_path));
                b.extend_from_slice(&(m.properties.len() as u32).to_le_bytes());
                b.push(u8::from(m.overwrite));
                s(&mut b, &m.old_path);
                s(&mut b, &m.new_path);
                b.extend_from_slice(&m.properties);
            }
            Command::CreateTemporaryFile(t) | Command::CreateTemporaryDirectory(t) => {
                b.extend_from_slice(&t.options.to_le_bytes());
                b.extend_from_slice(&len(&t.prefix));
                b.extend_from_slice(&len(&t.suffix));
                b.extend_from_slice(&len(&t.directory));
                b.extend_from_slice(&(t.properties.len() as u32).to_le_bytes());
                s(&mut b, &t.prefix);
                s(&mut b, &t.suffix);
                s(&mut b, &t.directory);
                b.extend_from_slice(&t.properties);
            }
            Command::SetAttributes(a) => {
                b.extend_from_slice(&a.options.to_le_bytes());
                b.extend_from_slice(&a.access_time.to_le_bytes());
                b.extend_from_slice(&a.modification_time.to_le_bytes());
                b.extend_from_slice(&a.owner_id.to_le_bytes());
                b.extend_from_slice(&a.group_id.to_le_bytes());
                b.extend_from_slice(&a.permissions.to_le_bytes());
                b.push(u8::from(a.hidden));
                b.push(u8::from(a.read_only));
                b.extend_from_slice(&len(&a.path));
                s(&mut b, &a.path);
            }
            Command::TransferToGuest(t) => {
                b.extend_from_slice(&t.options.to_le_bytes());
                b.extend_from_slice(&len(&t.path));
                b.push(u8::from(t.overwrite));
                s(&mut b, &t.path);
            }
            Command::HgfsPacket(h) => {
                b.extend_from_slice(&(h.packet.len() as u32).to_le_bytes());
                b.extend_from_slice(&h.timeout.to_le_bytes());
                b.extend_from_slice(&h.packet);
            }
            Command::StartProgram(p) => {
                let opt_len = |v: &str| if v.is_empty() { 0 } else { v.len() as u32 + 1 };
                let mut strings = Vec::new();
                for v in [&p.program, &p.arguments, &p.working_dir] {
                    if !v.is_empty() {
                        s(&mut strings, v);
                    }
                }
                let (env_count, env_len) = encode_strings(&mut strings, &p.env);
                b.push(u8::from(p.start_minimized));
                b.extend_from_slice(&opt_len(&p.program).to_le_bytes());
                b.extend_from_slice(&opt_len(&p.arguments).to_le_bytes());
                b.extend_from_slice(&opt_len(&p.working_dir).to_le_bytes());
                b.extend_from_slice(&env_count.to_le_bytes());
                b.extend_from_slice(&env_len.to_le_bytes());
                b.extend_from_slice(&strings);
            }
            Command::ListProcesses(l) => {
                b.extend_from_slice(&l.key.to_le_bytes());
                b.extend_from_slice(&l.offset.to_le_bytes());
                b.extend_from_slice(&(l.pids.len() as u32).to_le_bytes());
                for pid in &l.pids {
                    b.extend_from_slice(&pid.to_le_bytes());
                }
            }
            Command::TerminateProcess(t) => {
                b.extend_from_slice(&t.pid.to_le_bytes());
                b.extend_from_slice(&t.options.to_le_bytes());
            }
            Command::ReadEnvironmentVariables(e) => {
                let mut names = Vec::new();
                let (count, len) = encode_strings(&mut names, &e.names);
                b.extend_from_slice(&count.to_le_bytes());
                b.extend_from_slice(&len.to_le_bytes());
                b.extend_from_slice(&names);
            }
        }
        b
    }
}

// ---------------------------------------------------------------------------------------------
// Credentials.

/// A password, zeroed when dropped and never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: String) -> Secret {
        Secret(s)
    }

    /// The password, for the authenticator.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Equality whose time does not depend on where the two first differ.
    pub fn ct_eq(&self, other: &Secret) -> bool {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let diff = a
            .iter()
            .zip(b)
            .fold(a.len() ^ b.len(), |d, (x, y)| d | usize::from(x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        let mut bytes = std::mem::take(&mut self.0).into_bytes();
        bytes.fill(0);
        std::hint::black_box(&bytes);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// The credentials of a request, of the types this agent accepts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// How they travelled (`NAME_PASSWORD` or `NAME_PASSWORD_OBFUSCATED`; both carry the same
    /// encoding).
    pub kind: CredentialType,
    /// The user name.
    pub name: String,
    /// The password.
    pub password: Secret,
}

/// Why credentials were refused before any login was tried.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// A type this agent refuses: root, console user, tickets, shared secrets, SSPI, SAML
    /// (CVE-2023-20867 came through such types). vmtoolsd answers `VIX_E_NOT_SUPPORTED`.
    #[error("unsupported credential type {0}")]
    Unsupported(CredentialType),
    /// The credential region is not a well-formed name/password.
    #[error("malformed name/password credential: {0}")]
    Malformed(&'static str),
}

impl CredentialError {
    /// The VIX error the reply carries.
    pub fn vix_error(&self) -> VixError {
        match self {
            CredentialError::Unsupported(_) => VixError::NOT_SUPPORTED,
            CredentialError::Malformed(_) => VixError::INVALID_MESSAGE_BODY,
        }
    }
}

/// The characters `VixMsgEncodeBuffer` escapes after base64 (`\` then a digit); base64 never
/// produces them, but the decoder undoes them as vmtoolsd's does.
fn unescape_obfuscated(s: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let mut out = Vec::with_capacity(s.len());
    let mut it = s.iter();
    while let Some(&c) = it.next() {
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let plain = match it.next() {
            Some(b'1') => b'\\',
            Some(b'2') => b'\'',
            Some(b'3') => b'"',
            Some(b'4') => b' ',
            Some(b'5') => b'\r',
            Some(b'6') => b'\n',
            Some(b'7') => b'\t',
            _ => return Err(CredentialError::Malformed("bad escape")),
        };
        out.push(plain);
    }
    Ok(out)
}

impl Credentials {
    /// Decodes the credential region of a request of type `kind`
    /// (`VixToolsImpersonateUser`, `VixMsg_DeObfuscateNamePassword`): a
    /// `VixCommandNamePassword` (two lengths vmtoolsd ignores), then base64 of
    /// `name\0password\0`, NUL-terminated.
    pub fn decode(kind: CredentialType, region: &[u8]) -> Result<Credentials, CredentialError> {
        match kind {
            CredentialType::NAME_PASSWORD | CredentialType::NAME_PASSWORD_OBFUSCATED => {}
            other => return Err(CredentialError::Unsupported(other)),
        }
        let mut r = Reader::new(region);
        r.take(NAME_PASSWORD_HEADER_SIZE)
            .ok_or(CredentialError::Malformed("shorter than its lengths"))?;
        let text = r.rest();
        let nul = text
            .iter()
            .position(|&b| b == 0)
            .ok_or(CredentialError::Malformed("not NUL-terminated"))?;
        let encoded = unescape_obfuscated(&text[..nul])?;
        let packed = base64::engine::general_purpose::STANDARD
            .decode(&encoded)
            .map_err(|_| CredentialError::Malformed("not base64"))?;
        let packed = Secret::new(
            String::from_utf8(packed).map_err(|_| CredentialError::Malformed("not UTF-8"))?,
        );
        let mut parts = packed.expose().splitn(3, '\0');
        let name = parts
            .next()
            .ok_or(CredentialError::Malformed("no user name"))?;
        let password = parts
            .next()
            .ok_or(CredentialError::Malformed("no password"))?;
        if parts.next() != Some("") {
            return Err(CredentialError::Malformed("password not NUL-terminated"));
        }
        if name.is_empty() {
            return Err(CredentialError::Malformed("empty user name"));
        }
        Ok(Credentials {
            kind,
            name: name.to_string(),
            password: Secret::new(password.to_string()),
        })
    }

    /// Encodes the credential region as the VMX sends it: the two lengths, the base64 of
    /// `name\0password\0`, the NUL.
    pub fn encode(&self) -> Vec<u8> {
        let packed = Secret::new(format!("{}\0{}\0", self.name, self.password.expose()));
        let text = base64::engine::general_purpose::STANDARD.encode(packed.expose());
        let mut out = Vec::with_capacity(NAME_PASSWORD_HEADER_SIZE + text.len() + 1);
        out.extend_from_slice(&(self.name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(self.password.expose().len() as u32).to_le_bytes());
        out.extend_from_slice(text.as_bytes());
        out.push(0);
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Replies.

/// What a guest command answers: the VIX error, the system error (errno), the result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The VIX error.
    pub error: VixError,
    /// The additional error (vmtoolsd sends `errno`).
    pub additional: u32,
    /// The result: text, or binary when the request asked for it.
    pub result: Vec<u8>,
}

impl Reply {
    /// Success with a result.
    pub fn ok(result: impl Into<Vec<u8>>) -> Reply {
        Reply {
            error: VixError::OK,
            additional: 0,
            result: result.into(),
        }
    }

    /// A failure without a result.
    pub fn error(error: VixError, errno: u32) -> Reply {
        Reply {
            error,
            additional: errno,
            result: Vec::new(),
        }
    }

    /// The reply bytes after TCLO's `OK `, as `ToolsDaemonTcloReceiveVixCommand` writes them:
    /// `<error> <additional> `, then `#` and the raw result when `binary`, else the result up
    /// to its first NUL and a NUL.
    pub fn encode(&self, binary: bool) -> Vec<u8> {
        // vmtoolsd prints the 64-bit error with %lld and the 32-bit additional error with %d.
        let mut out = format!("{} {} ", self.error.0 as i64, self.additional as i32).into_bytes();
        if binary {
            out.push(b'#');
            out.extend_from_slice(&self.result);
        } else {
            let text = self
                .result
                .iter()
                .position(|&b| b == 0)
                .map_or(&self.result[..], |i| &self.result[..i]);
            out.extend_from_slice(text);
            out.push(0);
        }
        out
    }

    /// Parses reply bytes (without TCLO's `OK `). `binary` says what the request asked for.
    pub fn decode(bytes: &[u8], binary: bool) -> Result<Reply, DecodeError> {
        let bad = DecodeError::Body;
        let sp1 = bytes
            .iter()
            .position(|&b| b == b' ')
            .ok_or(bad("no error field"))?;
        let sp2 = bytes[sp1 + 1..]
            .iter()
            .position(|&b| b == b' ')
            .map(|i| sp1 + 1 + i)
            .ok_or(bad("no additional error field"))?;
        let number = |b: &[u8]| -> Result<i64, DecodeError> {
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
                .ok_or(bad("error field is not a number"))
        };
        let error = VixError(number(&bytes[..sp1])? as u64);
        let additional = number(&bytes[sp1 + 1..sp2])?;
        let additional =
            i32::try_from(additional).map_err(|_| bad("additional error out of range"))? as u32;
        let rest = &bytes[sp2 + 1..];
        let result = if binary {
            rest.strip_prefix(b"#")
                .ok_or(bad("binary reply without #"))?
        } else {
            let nul = rest
                .iter()
                .position(|&b| b == 0)
                .ok_or(bad("text reply without NUL"))?;
            if nul + 1 != rest.len() {
                return Err(bad("bytes after the text reply's NUL"));
            }
            &rest[..nul]
        };
        Ok(Reply {
            error,
            additional,
            result: result.to_vec(),
        })
    }
}

/// The reply to `Vix_1_Get_ToolsProperties` (`FoundryToolsDaemonGetToolsProperties`):
/// `<error> <errno> <base64 property list>`, no NUL added.
pub fn encode_tools_properties_reply(error: VixError, errno: u32, base64: &str) -> Vec<u8> {
    format!("{} {} {}", error.0 as i64, errno as i32, base64).into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_values_print_in_hex() {
        assert_eq!(OpCode(177).to_string(), "LIST_FILES(177)");
        assert_eq!(OpCode(0xabc).to_string(), "OpCode(0xabc)");
        assert_eq!(
            VixError(3050).to_string(),
            "INVALID_LOGIN_CREDENTIALS(3050)"
        );
        assert_eq!(CredentialType(77).to_string(), "CredentialType(0x4d)");
    }

    #[test]
    fn header_is_51_bytes_in_vixcommands_h_order() {
        let h = RequestHeader {
            magic: MAGIC,
            message_version: 5,
            total_length: 0x0102_0304,
            header_length: 51,
            body_length: 7,
            credential_length: 9,
            common_flags: 0x81,
            op: OpCode::LIST_FILES,
            request_flags: 0x10,
            timeout: 0xFFFF_FFFF,
            cookie: 0x1122_3344_5566_7788,
            client_handle_id: 0xAA,
            credential_type: CredentialType::NAME_PASSWORD,
        };
        let mut b = Vec::new();
        h.write(&mut b);
        assert_eq!(b.len(), REQUEST_HEADER_SIZE);
        // Offsets by hand from the packed structs: magic 0, messageVersion 4,
        // totalMessageLength 6, headerLength 10, bodyLength 14, credentialLength 18,
        // commonFlags 22, opCode 23, requestFlags 27, timeOut 31, cookie 35,
        // clientHandleId 43, userCredentialType 47.
        assert_eq!(&b[0..4], &[0x01, 0x00, 0x0d, 0xd0]);
        assert_eq!(&b[4..6], &[5, 0]);
        assert_eq!(&b[6..10], &[4, 3, 2, 1]);
        assert_eq!(b[10], 51);
        assert_eq!(b[14], 7);
        assert_eq!(b[18], 9);
        assert_eq!(b[22], 0x81);
        assert_eq!(b[23], 177);
        assert_eq!(b[27], 0x10);
        assert_eq!(&b[31..35], &[0xFF; 4]);
        assert_eq!(b[35], 0x88);
        assert_eq!(b[42], 0x11);
        assert_eq!(b[43], 0xAA);
        assert_eq!(b[47], 1);
        assert_eq!(RequestHeader::read(&mut Reader::new(&b)), Some(h));
    }

    #[test]
    fn relayed_framing() {
        let r = split_relayed(b"\"12 34\"\0\x01\x02\0").unwrap();
        assert_eq!(r.request_name, b"12 34");
        assert_eq!(r.message, b"\x01\x02\0");
        let r = split_relayed(b"\"a\\\"b\" junk\0M").unwrap();
        assert_eq!(r.request_name, b"a\\\"b");
        assert_eq!(r.message, b"M");
        assert_eq!(
            split_relayed(&join_relayed("x", b"msg")).unwrap(),
            Relayed {
                request_name: b"x",
                message: b"msg"
            }
        );
        assert!(split_relayed(b"\"no nul\"").is_err());
    }

    #[test]
    fn replies_as_vmtoolsd_writes_them() {
        let r = Reply {
            error: VixError::FILE_NOT_FOUND,
            additional: 2,
            result: b"abc\0def".to_vec(),
        };
        assert_eq!(r.encode(false), b"4 2 abc\0");
        assert_eq!(r.encode(true), b"4 2 #abc\0def");
        assert_eq!(
            Reply::decode(&r.encode(true), true).unwrap().result,
            b"abc\0def"
        );
        assert_eq!(Reply::decode(b"0 0 \0", false).unwrap(), Reply::ok(""));
        assert_eq!(
            Reply::error(VixError::FAIL, u32::MAX).encode(false),
            b"1 -1 \0"
        );
    }

    #[test]
    fn rejects_malformed_replies() {
        for bad in [&b""[..], b"0", b"0 0", b"x 0 \0", b"0 0 abc", b"0 0 a\0b"] {
            assert!(Reply::decode(bad, false).is_err(), "{bad:?}");
        }
        assert!(Reply::decode(b"0 0 abc", true).is_err());
    }

    #[test]
    fn credentials_round_trip_and_refuse_other_types() {
        let c = Credentials {
            kind: CredentialType::NAME_PASSWORD,
            name: "user".into(),
            password: Secret::new("pa ss\"".into()),
        };
        let region = c.encode();
        assert_eq!(
            Credentials::decode(CredentialType::NAME_PASSWORD, &region).unwrap(),
            c
        );
        for t in [0, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 0xFFFF_FFFF] {
            assert_eq!(
                Credentials::decode(CredentialType(t), &region),
                Err(CredentialError::Unsupported(CredentialType(t)))
            );
        }
        assert!(format!("{c:?}").contains("Secret(..)"));
        let s = |v: &str| Secret::new(v.into());
        assert!(s("pass").ct_eq(&s("pass")));
        assert!(
            !s("pass").ct_eq(&s("pasS")) && !s("pass").ct_eq(&s("pas")) && !s("").ct_eq(&s("x"))
        );
        assert!(!format!("{c:?}").contains("pa ss"));
    }

    #[test]
    fn rejects_malformed_credentials() {
        let t = CredentialType::NAME_PASSWORD;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let region = |text: &str| [&[0u8; 8][..], text.as_bytes(), b"\0"].concat();
        assert!(Credentials::decode(t, b"\0\0\0").is_err());
        assert!(Credentials::decode(t, &[0u8; 8]).is_err(), "no NUL");
        assert!(Credentials::decode(t, &region("!!!")).is_err());
        assert!(Credentials::decode(t, &region(&b64("user"))).is_err());
        assert!(Credentials::decode(t, &region(&b64("user\0pw"))).is_err());
        assert!(Credentials::decode(t, &region(&b64("\0pw\0"))).is_err());
        assert!(Credentials::decode(t, &region(&b64("u\0pw\0x"))).is_err());
        assert!(Credentials::decode(t, &region("\\9")).is_err());
        assert!(Credentials::decode(t, &region(&b64("u\0pw\0"))).is_ok());
    }
}
