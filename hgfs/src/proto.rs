//! The HGFS wire format: packet headers, status codes, opcodes and the request and reply
//! layouts the server speaks. No I/O here: every decoder works on a borrowed packet through
//! [`Reader`], which never reads past the bytes it was given.
//!
//! All integers are little-endian and every struct is packed (`#pragma pack(1)` in
//! `lib/include/hgfsProto.h`), except `HgfsDirEntry`, whose natural alignment the search
//! reply reproduces.

use std::fmt;

/// Size of the session-era packet header (`HgfsHeader`, lib/include/hgfsProto.h).
pub const HEADER_SIZE: usize = 52;
/// Size of the legacy request/reply prefix (`HgfsRequest` / `HgfsReply`: id and op/status).
pub const LEGACY_HEADER_SIZE: usize = 8;
/// `HGFS_HEADER_VERSION_1`, the only header version defined (lib/include/hgfsProto.h).
pub const HEADER_VERSION: u8 = 1;
/// `HGFS_PACKET_MAX`: the packet size every client can take (lib/include/hgfs.h).
pub const PACKET_MAX: u32 = 6144;
/// `HGFS_LARGE_PACKET_MAX`: 127 pages of I/O plus 2 KiB of headers (lib/include/hgfs.h).
pub const LARGE_PACKET_MAX: u32 = 4096 * 127 + 2048;
/// `HGFS_INVALID_HANDLE` (lib/include/hgfsProto.h).
pub const INVALID_HANDLE: u32 = u32::MAX;

/// `HGFS_PACKET_FLAG_REQUEST`.
pub const PACKET_FLAG_REQUEST: u32 = 1 << 0;
/// `HGFS_PACKET_FLAG_REPLY`.
pub const PACKET_FLAG_REPLY: u32 = 1 << 1;

/// `HGFS_SESSION_MAXPACKETSIZE_VALID`: the create-session reply's packet size is meant.
pub const SESSION_MAX_PACKET_SIZE_VALID: u32 = 1 << 0;
/// `HGFS_OP_CAPFLAG_IS_SUPPORTED`.
pub const CAPFLAG_IS_SUPPORTED: u32 = 1 << 0;

/// `HGFS_FILE_NAME_USE_FILE_DESC`: a V3 name carries a handle (`fid`) instead of a name.
pub const FILE_NAME_USE_FILE_DESC: u32 = 1 << 0;
/// `HGFS_ATTR_HINT_USE_FILE_DESC`: a V2 getattr/setattr names its file by handle.
pub const ATTR_HINT_USE_FILE_DESC: u64 = 1 << 2;
/// `HGFS_RENAME_HINT_NO_REPLACE_EXISTING`.
pub const RENAME_HINT_NO_REPLACE_EXISTING: u64 = 1 << 2;
/// `HGFS_WRITE_APPEND`.
pub const WRITE_APPEND: u8 = 1;

/// Open access modes (`HgfsOpenMode`, lib/include/hgfs.h); the bits above
/// [`OPEN_MODE_ACCMODES`] are flags such as `HGFS_OPEN_SEQUENTIAL`.
pub const OPEN_MODE_READ_ONLY: u32 = 0;
/// `HGFS_OPEN_MODE_WRITE_ONLY`.
pub const OPEN_MODE_WRITE_ONLY: u32 = 1;
/// `HGFS_OPEN_MODE_READ_WRITE`.
pub const OPEN_MODE_READ_WRITE: u32 = 2;
/// `HGFS_OPEN_MODE_ACCMODES`: the mask of the access mode proper.
pub const OPEN_MODE_ACCMODES: u32 = 3;

/// `HGFS_OPEN_VALID_*` bits of an open V3 request's mask (lib/include/hgfsProto.h).
/// `HGFS_OPEN_VALID_MODE`: the open's `mode` field is set.
pub const OPEN_VALID_MODE: u64 = 1 << 0;
/// `HGFS_OPEN_VALID_FLAGS`: the open's `flags` field is set.
pub const OPEN_VALID_FLAGS: u64 = 1 << 1;
/// `HGFS_OPEN_VALID_FILE_NAME`: the open names a file; vmtoolsd's server refuses an open
/// without it (lib/hgfsServer/hgfsServerParameters.c).
pub const OPEN_VALID_FILE_NAME: u64 = 1 << 11;
/// `HGFS_OPEN_VALID_SPECIAL_PERMS`.
pub const OPEN_VALID_SPECIAL_PERMS: u64 = 1 << 2;
/// `HGFS_OPEN_VALID_OWNER_PERMS`.
pub const OPEN_VALID_OWNER_PERMS: u64 = 1 << 3;
/// `HGFS_OPEN_VALID_GROUP_PERMS`.
pub const OPEN_VALID_GROUP_PERMS: u64 = 1 << 4;
/// `HGFS_OPEN_VALID_OTHER_PERMS`.
pub const OPEN_VALID_OTHER_PERMS: u64 = 1 << 5;

/// `HGFS_CREATE_DIR_VALID_*` bits of a create-dir V3 request's mask.
pub const CREATE_DIR_VALID_SPECIAL_PERMS: u64 = 1 << 0;
/// `HGFS_CREATE_DIR_VALID_OWNER_PERMS`.
pub const CREATE_DIR_VALID_OWNER_PERMS: u64 = 1 << 1;
/// `HGFS_CREATE_DIR_VALID_GROUP_PERMS`.
pub const CREATE_DIR_VALID_GROUP_PERMS: u64 = 1 << 2;
/// `HGFS_CREATE_DIR_VALID_OTHER_PERMS`.
pub const CREATE_DIR_VALID_OTHER_PERMS: u64 = 1 << 3;

/// `HGFS_ATTR_VALID_*` bits of [`AttrV2::mask`] (lib/include/hgfsProto.h).
pub mod attr_valid {
    /// File type.
    pub const TYPE: u64 = 1 << 0;
    /// Size.
    pub const SIZE: u64 = 1 << 1;
    /// Creation time.
    pub const CREATE_TIME: u64 = 1 << 2;
    /// Access time.
    pub const ACCESS_TIME: u64 = 1 << 3;
    /// Write time.
    pub const WRITE_TIME: u64 = 1 << 4;
    /// Attribute change time.
    pub const CHANGE_TIME: u64 = 1 << 5;
    /// setuid/setgid/sticky bits.
    pub const SPECIAL_PERMS: u64 = 1 << 6;
    /// Owner permission bits.
    pub const OWNER_PERMS: u64 = 1 << 7;
    /// Group permission bits.
    pub const GROUP_PERMS: u64 = 1 << 8;
    /// Other permission bits.
    pub const OTHER_PERMS: u64 = 1 << 9;
    /// Windows attribute flags.
    pub const FLAGS: u64 = 1 << 10;
    /// Allocation size.
    pub const ALLOCATION_SIZE: u64 = 1 << 11;
    /// Owner uid.
    pub const USER_ID: u64 = 1 << 12;
    /// Group gid.
    pub const GROUP_ID: u64 = 1 << 13;
    /// Inode number.
    pub const FILE_ID: u64 = 1 << 14;
    /// Device number.
    pub const VOLUME_ID: u64 = 1 << 15;
    /// Permissions in effect for the caller.
    pub const EFFECTIVE_PERMS: u64 = 1 << 17;
}

/// `HgfsFileType` (lib/include/hgfs.h).
pub const FILE_TYPE_REGULAR: u32 = 0;
/// `HGFS_FILE_TYPE_DIRECTORY`.
pub const FILE_TYPE_DIRECTORY: u32 = 1;
/// `HGFS_FILE_TYPE_SYMLINK`.
pub const FILE_TYPE_SYMLINK: u32 = 2;

/// The share name govmomi's toolbox puts in front of every absolute guest path
/// (`serverPolicyRootShareName`, toolbox/hgfs/protocol.go).
pub const ROOT_SHARE: &[u8] = b"root";

macro_rules! wire_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$cmeta:meta])* $konst:ident = $value:expr,)* }) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub u32);

        impl $name {
            $($(#[$cmeta])* pub const $konst: Self = Self($value);)*

            /// The constant's name as the reference headers spell it, if this value has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(Self::$konst => Some(stringify!($konst)),)*
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.name() {
                    Some(name) => f.write_str(name),
                    None => write!(f, "{}({:#x})", stringify!($name), self.0),
                }
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }

        impl Wire for $name {
            fn decode(r: &mut Reader<'_>) -> Option<Self> {
                r.u32().map(Self)
            }
            fn encode(&self, out: &mut Vec<u8>) {
                self.0.encode(out)
            }
        }
    };
}

wire_enum! {
    /// `HgfsOp` (lib/include/hgfsProto.h): consecutive from 0, plus the new-header marker.
    Op {
        /// Open (V1).
        OPEN = 0,
        /// Read (V1).
        READ = 1,
        /// Write (V1).
        WRITE = 2,
        /// Close (V1).
        CLOSE = 3,
        /// Search open (V1).
        SEARCH_OPEN = 4,
        /// Search read (V1).
        SEARCH_READ = 5,
        /// Search close (V1).
        SEARCH_CLOSE = 6,
        /// Getattr (V1).
        GETATTR = 7,
        /// Setattr (V1).
        SETATTR = 8,
        /// Create directory (V1).
        CREATE_DIR = 9,
        /// Delete file (V1).
        DELETE_FILE = 10,
        /// Delete directory (V1).
        DELETE_DIR = 11,
        /// Rename (V1).
        RENAME = 12,
        /// Query volume info (V1).
        QUERY_VOLUME_INFO = 13,
        /// Open (V2).
        OPEN_V2 = 14,
        /// Getattr (V2).
        GETATTR_V2 = 15,
        /// Setattr (V2).
        SETATTR_V2 = 16,
        /// Search read (V2).
        SEARCH_READ_V2 = 17,
        /// Create symlink (V2).
        CREATE_SYMLINK = 18,
        /// Server lock change (V2).
        SERVER_LOCK_CHANGE = 19,
        /// Create directory (V2).
        CREATE_DIR_V2 = 20,
        /// Delete file (V2).
        DELETE_FILE_V2 = 21,
        /// Delete directory (V2).
        DELETE_DIR_V2 = 22,
        /// Rename (V2).
        RENAME_V2 = 23,
        /// Open (V3).
        OPEN_V3 = 24,
        /// Read (V3).
        READ_V3 = 25,
        /// Write (V3).
        WRITE_V3 = 26,
        /// Close (V3).
        CLOSE_V3 = 27,
        /// Search open (V3).
        SEARCH_OPEN_V3 = 28,
        /// Search read (V3).
        SEARCH_READ_V3 = 29,
        /// Search close (V3).
        SEARCH_CLOSE_V3 = 30,
        /// Getattr (V3).
        GETATTR_V3 = 31,
        /// Setattr (V3).
        SETATTR_V3 = 32,
        /// Create directory (V3).
        CREATE_DIR_V3 = 33,
        /// Delete file (V3).
        DELETE_FILE_V3 = 34,
        /// Delete directory (V3).
        DELETE_DIR_V3 = 35,
        /// Rename (V3).
        RENAME_V3 = 36,
        /// Query volume info (V3).
        QUERY_VOLUME_INFO_V3 = 37,
        /// Create symlink (V3).
        CREATE_SYMLINK_V3 = 38,
        /// Server lock change (V3).
        SERVER_LOCK_CHANGE_V3 = 39,
        /// Write a Win32 stream (V3).
        WRITE_WIN32_STREAM_V3 = 40,
        /// Create session (V4).
        CREATE_SESSION_V4 = 41,
        /// Destroy session (V4).
        DESTROY_SESSION_V4 = 42,
        /// Fast read (V4).
        READ_FAST_V4 = 43,
        /// Fast write (V4).
        WRITE_FAST_V4 = 44,
        /// Set watch (V4).
        SET_WATCH_V4 = 45,
        /// Remove watch (V4).
        REMOVE_WATCH_V4 = 46,
        /// Notify (V4).
        NOTIFY_V4 = 47,
        /// Search read (V4).
        SEARCH_READ_V4 = 48,
        /// Open (V4).
        OPEN_V4 = 49,
        /// Enumerate streams (V4).
        ENUMERATE_STREAMS_V4 = 50,
        /// Getattr (V4).
        GETATTR_V4 = 51,
        /// Setattr (V4).
        SETATTR_V4 = 52,
        /// Delete (V4).
        DELETE_V4 = 53,
        /// Link/move (V4).
        LINKMOVE_V4 = 54,
        /// Filesystem control (V4).
        FSCTL_V4 = 55,
        /// Access check (V4).
        ACCESS_CHECK_V4 = 56,
        /// Fsync (V4).
        FSYNC_V4 = 57,
        /// Query volume info (V4).
        QUERY_VOLUME_INFO_V4 = 58,
        /// Oplock acquire (V4).
        OPLOCK_ACQUIRE_V4 = 59,
        /// Oplock break (V4).
        OPLOCK_BREAK_V4 = 60,
        /// Byte-range lock (V4).
        LOCK_BYTE_RANGE_V4 = 61,
        /// Byte-range unlock (V4).
        UNLOCK_BYTE_RANGE_V4 = 62,
        /// Query extended attributes (V4).
        QUERY_EAS_V4 = 63,
        /// Set extended attributes (V4).
        SET_EAS_V4 = 64,
        /// Marks a packet that starts with the session-era `HgfsHeader`.
        NEW_HEADER = 0xff,
    }
}

impl Op {
    /// V1 and V2 requests and replies start with their own 8-byte `HgfsRequest` /
    /// `HgfsReply` even inside a session-era packet; V3 and later ones do not.
    pub fn has_legacy_prefix(self) -> bool {
        self.0 < Op::OPEN_V3.0
    }
}

wire_enum! {
    /// `HgfsStatus` (lib/include/hgfs.h).
    Status {
        /// Success.
        SUCCESS = 0,
        /// No such file or directory.
        NO_SUCH_FILE_OR_DIR = 1,
        /// Unknown handle.
        INVALID_HANDLE = 2,
        /// Operation not permitted.
        OPERATION_NOT_PERMITTED = 3,
        /// File exists.
        FILE_EXISTS = 4,
        /// Not a directory.
        NOT_DIRECTORY = 5,
        /// Directory not empty.
        DIR_NOT_EMPTY = 6,
        /// Malformed request.
        PROTOCOL_ERROR = 7,
        /// Access denied.
        ACCESS_DENIED = 8,
        /// Invalid name.
        INVALID_NAME = 9,
        /// Any other error.
        GENERIC_ERROR = 10,
        /// Sharing violation.
        SHARING_VIOLATION = 11,
        /// No space left.
        NO_SPACE = 12,
        /// Operation not supported.
        OPERATION_NOT_SUPPORTED = 13,
        /// Name too long.
        NAME_TOO_LONG = 14,
        /// Invalid parameter.
        INVALID_PARAMETER = 15,
        /// Cross-device operation.
        NOT_SAME_DEVICE = 16,
        /// Unknown or destroyed session.
        STALE_SESSION = 17,
        /// Too many sessions.
        TOO_MANY_SESSIONS = 18,
        /// Transport error.
        TRANSPORT_ERROR = 19,
    }
}

wire_enum! {
    /// `HgfsOpenFlags` (lib/include/hgfsProto.h): what to do when the file does or does
    /// not exist.
    OpenFlags {
        /// Open an existing file; fail if missing.
        OPEN = 0,
        /// Truncate an existing file; fail if missing.
        OPEN_EMPTY = 1,
        /// Open, creating if missing.
        OPEN_CREATE = 2,
        /// Create; fail if it exists.
        OPEN_CREATE_SAFE = 3,
        /// Create, or truncate if it exists.
        OPEN_CREATE_EMPTY = 4,
    }
}

/// Why a packet or request could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The bytes end before the structure does.
    #[error("{what}: truncated ({have} bytes)")]
    Truncated {
        /// The structure being decoded.
        what: &'static str,
        /// How many bytes there were.
        have: usize,
    },
    /// The header's sizes contradict each other or the packet.
    #[error("header: packet size {packet_size}, header size {header_size}, {have} bytes received")]
    BadSizes {
        /// `packetSize` as sent.
        packet_size: u32,
        /// `headerSize` as sent.
        header_size: u32,
        /// Bytes actually received.
        have: usize,
    },
    /// A header version below 1.
    #[error("header: version {0} unsupported")]
    BadVersion(u8),
    /// Header flags that are neither request nor reply.
    #[error("header: flags {0:#x} mark neither a request nor a reply")]
    BadFlags(u32),
    /// A legacy packet with an opcode that needs the session-era header.
    #[error("legacy packet with opcode {0}, which needs the session header")]
    LegacyOpcode(Op),
}

/// A bounded cursor over untrusted bytes: every read either fits or yields `None`.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next `n` bytes, or `None` (consuming nothing) if fewer remain.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.rest.len() {
            return None;
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Some(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    /// A little-endian `u8`.
    pub fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|b| b[0])
    }

    /// A little-endian `u32`.
    pub fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    /// A little-endian `u64`.
    pub fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    /// The bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// How many bytes remain.
    pub fn remaining(&self) -> usize {
        self.rest.len()
    }
}

/// A fixed wire layout: decoded through a [`Reader`], encoded by appending.
pub trait Wire: Sized {
    /// Reads one value; `None` if the bytes run out (or a length points past them).
    fn decode(r: &mut Reader<'_>) -> Option<Self>;
    /// Appends the encoding.
    fn encode(&self, out: &mut Vec<u8>);
}

impl Wire for u8 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        r.u8()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(*self)
    }
}

impl Wire for u32 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        r.u32()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}

impl Wire for u64 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        r.u64()
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes())
    }
}

/// Decodes a whole `T` from `bytes`, naming `T` in the error. Trailing bytes are allowed:
/// names are followed by a NUL the length does not count, and clients pad.
pub fn decode<T: Wire>(bytes: &[u8]) -> Result<T, ProtoError> {
    T::decode(&mut Reader::new(bytes)).ok_or(ProtoError::Truncated {
        what: short_type_name::<T>(),
        have: bytes.len(),
    })
}

/// Encodes `value` into a fresh vector.
pub fn encode<T: Wire>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    value.encode(&mut out);
    out
}

fn short_type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    full.rsplit("::").next().unwrap_or(full)
}

macro_rules! wire_struct {
    ($(#[$meta:meta])* pub struct $name:ident { $($(#[$fmeta:meta])* pub $field:ident : $ty:ty,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Default)]
        pub struct $name { $($(#[$fmeta])* pub $field: $ty,)* }

        impl Wire for $name {
            #[allow(unused_variables)]
            fn decode(r: &mut Reader<'_>) -> Option<Self> {
                Some(Self { $($field: Wire::decode(r)?,)* })
            }
            #[allow(unused_variables)]
            fn encode(&self, out: &mut Vec<u8>) {
                $(self.$field.encode(out);)*
            }
        }
    };
}

/// The session-era packet header (`HgfsHeader`, lib/include/hgfsProto.h).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Header {
    /// Header version (1).
    pub version: u8,
    /// Reserved bytes after the version.
    pub reserved1: [u8; 3],
    /// Always [`Op::NEW_HEADER`]: where a legacy packet has its opcode.
    pub dummy: Op,
    /// Header plus payload, in bytes.
    pub packet_size: u32,
    /// Header size, in bytes.
    pub header_size: u32,
    /// The requester's id, echoed in the reply.
    pub request_id: u32,
    /// The operation.
    pub op: Op,
    /// Reply status.
    pub status: Status,
    /// `PACKET_FLAG_*`.
    pub flags: u32,
    /// Generic field; replies carry the status here too, as hgfsServer does.
    pub information: u32,
    /// The session the request belongs to.
    pub session_id: u64,
    /// Reserved.
    pub reserved: u64,
}

impl Wire for Header {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            version: r.u8()?,
            reserved1: r.array()?,
            dummy: Op::decode(r)?,
            packet_size: r.u32()?,
            header_size: r.u32()?,
            request_id: r.u32()?,
            op: Op::decode(r)?,
            status: Status::decode(r)?,
            flags: r.u32()?,
            information: r.u32()?,
            session_id: r.u64()?,
            reserved: r.u64()?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.version);
        out.extend_from_slice(&self.reserved1);
        self.dummy.encode(out);
        self.packet_size.encode(out);
        self.header_size.encode(out);
        self.request_id.encode(out);
        self.op.encode(out);
        self.status.encode(out);
        self.flags.encode(out);
        self.information.encode(out);
        self.session_id.encode(out);
        self.reserved.encode(out);
    }
}

/// How a request was framed, which decides how its reply is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// Session-era `HgfsHeader`.
    Session {
        /// The session named in the header.
        session_id: u64,
    },
    /// The legacy `HgfsRequest` prefix (no session).
    Legacy,
}

/// A request's routing facts, from whichever header it came with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Header kind.
    pub framing: Framing,
    /// The requester's id.
    pub request_id: u32,
    /// The operation.
    pub op: Op,
}

/// Splits a request packet into its routing facts and the operation's arguments, checking
/// the header's sizes against the bytes received (`HgfsUnpackPacketParams`,
/// lib/hgfsServer/hgfsServerParameters.c). For V1/V2 operations the arguments still start
/// with the 8-byte legacy prefix, as their structs in hgfsProto.h do.
pub fn parse_request(packet: &[u8]) -> Result<(RequestInfo, &[u8]), ProtoError> {
    let mut r = Reader::new(packet);
    let (id, op) = match (r.u32(), r.u32()) {
        (Some(id), Some(op)) => (id, Op(op)),
        _ => {
            return Err(ProtoError::Truncated {
                what: "HgfsRequest",
                have: packet.len(),
            })
        }
    };
    if op == Op::NEW_HEADER {
        let header: Header = decode(packet)?;
        let bad_sizes = ProtoError::BadSizes {
            packet_size: header.packet_size,
            header_size: header.header_size,
            have: packet.len(),
        };
        let packet_size = usize::try_from(header.packet_size).map_err(|_| bad_sizes.clone())?;
        let header_size = usize::try_from(header.header_size).map_err(|_| bad_sizes.clone())?;
        // hgfsServer accepts a header size below its own struct's; then the payload would
        // overlap the header, which no client sends, so it is refused here.
        if packet_size > packet.len() || header_size > packet_size || header_size < HEADER_SIZE {
            return Err(bad_sizes);
        }
        if header.version < HEADER_VERSION {
            return Err(ProtoError::BadVersion(header.version));
        }
        // Version 1 clients left flags uninitialised, so they are only checked above it.
        if header.version > HEADER_VERSION
            && header.flags != 0
            && header.flags & (PACKET_FLAG_REQUEST | PACKET_FLAG_REPLY) == 0
        {
            return Err(ProtoError::BadFlags(header.flags));
        }
        let info = RequestInfo {
            framing: Framing::Session {
                session_id: header.session_id,
            },
            request_id: header.request_id,
            op: header.op,
        };
        let args = packet.get(header_size..packet_size).ok_or(bad_sizes)?;
        return Ok((info, args));
    }
    let info = RequestInfo {
        framing: Framing::Legacy,
        request_id: id,
        op,
    };
    if op.has_legacy_prefix() {
        Ok((info, packet))
    } else if op.0 < Op::CREATE_SESSION_V4.0 {
        Ok((info, r.rest()))
    } else {
        Err(ProtoError::LegacyOpcode(op))
    }
}

/// Writes the reply framing for `info` around a payload: [`begin_reply`] reserves the
/// header, the caller appends the payload, [`finish_reply`] fills the sizes and status in.
/// Returns the offset at which the payload starts.
pub fn begin_reply(out: &mut Vec<u8>, info: &RequestInfo) -> usize {
    out.clear();
    match info.framing {
        Framing::Session { .. } => out.resize(HEADER_SIZE, 0),
        Framing::Legacy => out.resize(LEGACY_HEADER_SIZE, 0),
    }
    if info.framing != Framing::Legacy && info.op.has_legacy_prefix() {
        // The V1/V2 reply structs embed an `HgfsReply`, which both reference servers leave
        // zeroed inside a session-era packet.
        out.resize(HEADER_SIZE + LEGACY_HEADER_SIZE, 0);
    }
    out.len()
}

/// Completes a reply started by [`begin_reply`]. A failed request keeps no payload.
pub fn finish_reply(out: &mut Vec<u8>, info: &RequestInfo, status: Status) {
    if status != Status::SUCCESS {
        out.truncate(match info.framing {
            Framing::Session { .. } => HEADER_SIZE,
            Framing::Legacy => LEGACY_HEADER_SIZE,
        });
    }
    let len = out.len();
    write_reply_header(out, info, status, len);
}

/// Writes the reply framing into the start of `out` for a packet of `packet_len` bytes,
/// whose payload may lie in another buffer (reads place their data directly).
pub fn write_reply_header(out: &mut [u8], info: &RequestInfo, status: Status, packet_len: usize) {
    match info.framing {
        Framing::Session { session_id } => {
            let header = Header {
                version: HEADER_VERSION,
                dummy: Op::NEW_HEADER,
                packet_size: u32::try_from(packet_len).unwrap_or(u32::MAX),
                header_size: HEADER_SIZE as u32,
                request_id: info.request_id,
                op: info.op,
                status,
                flags: PACKET_FLAG_REPLY,
                information: status.0,
                session_id,
                ..Header::default()
            };
            let mut head = Vec::with_capacity(HEADER_SIZE);
            header.encode(&mut head);
            out[..HEADER_SIZE].copy_from_slice(&head);
        }
        Framing::Legacy => {
            out[..4].copy_from_slice(&info.request_id.to_le_bytes());
            out[4..8].copy_from_slice(&status.0.to_le_bytes());
        }
    }
}

/// A request packet with the session-era header, as a client builds it.
pub fn encode_request(request_id: u32, op: Op, session_id: u64, args: &[u8]) -> Vec<u8> {
    let header = Header {
        version: HEADER_VERSION,
        dummy: Op::NEW_HEADER,
        packet_size: u32::try_from(HEADER_SIZE + args.len()).unwrap_or(u32::MAX),
        header_size: HEADER_SIZE as u32,
        request_id,
        op,
        flags: PACKET_FLAG_REQUEST,
        session_id,
        ..Header::default()
    };
    let mut out = Vec::with_capacity(HEADER_SIZE + args.len());
    header.encode(&mut out);
    out.extend_from_slice(args);
    out
}

/// A reply packet as a client receives it: the header and the payload it frames.
pub fn parse_reply(packet: &[u8]) -> Result<(Header, &[u8]), ProtoError> {
    let header: Header = decode(packet)?;
    let bad_sizes = ProtoError::BadSizes {
        packet_size: header.packet_size,
        header_size: header.header_size,
        have: packet.len(),
    };
    let end = usize::try_from(header.packet_size).map_err(|_| bad_sizes.clone())?;
    let start = usize::try_from(header.header_size).map_err(|_| bad_sizes.clone())?;
    if start < HEADER_SIZE {
        return Err(bad_sizes);
    }
    let payload = packet.get(start..end).ok_or(bad_sizes)?;
    Ok((header, payload))
}

/// The 8-byte prefix of V1/V2 requests and replies (`HgfsRequest` / `HgfsReply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LegacyPrefix {
    /// Request id.
    pub id: u32,
    /// Opcode (requests) or status (replies).
    pub value: u32,
}

impl Wire for LegacyPrefix {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            id: r.u32()?,
            value: r.u32()?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.id.encode(out);
        self.value.encode(out);
    }
}

/// `HgfsFileName`: a length and that many bytes of a cross-platform name (components
/// separated by NUL; the first names the share).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileName {
    /// The name's bytes, without the terminating NUL.
    pub name: Vec<u8>,
}

impl Wire for FileName {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let len = usize::try_from(r.u32()?).ok()?;
        let name = r.take(len)?.to_vec();
        Some(Self { name })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (self.name.len() as u32).encode(out);
        encode_name_bytes(&self.name, out);
    }
}

/// govmomi writes a name without its NUL, except that an empty name is one NUL byte: the
/// C struct's `char name[1]` must be present for the size checks.
fn encode_name_bytes(name: &[u8], out: &mut Vec<u8>) {
    if name.is_empty() {
        out.push(0);
    } else {
        out.extend_from_slice(name);
    }
}

/// `HgfsFileNameV3`: a name that may instead refer to an open handle.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileNameV3 {
    /// `FILE_NAME_*` flags.
    pub flags: u32,
    /// `HgfsCaseType`.
    pub case_type: u32,
    /// The handle meant when `flags` has [`FILE_NAME_USE_FILE_DESC`].
    pub fid: u32,
    /// The name's bytes, without the terminating NUL.
    pub name: Vec<u8>,
}

impl Wire for FileNameV3 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let len = usize::try_from(r.u32()?).ok()?;
        let flags = r.u32()?;
        let case_type = r.u32()?;
        let fid = r.u32()?;
        let name = r.take(len)?.to_vec();
        Some(Self {
            flags,
            case_type,
            fid,
            name,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (self.name.len() as u32).encode(out);
        self.flags.encode(out);
        self.case_type.encode(out);
        self.fid.encode(out);
        encode_name_bytes(&self.name, out);
    }
}

impl FileNameV3 {
    /// The handle this name refers to, if it refers to one.
    pub fn handle(&self) -> Option<u32> {
        (self.flags & FILE_NAME_USE_FILE_DESC != 0).then_some(self.fid)
    }
}

/// Why a cross-platform name does not name a guest path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The first component is not the root share.
    #[error("name is not in the root share")]
    UnknownShare,
}

/// The cross-platform name for an absolute guest path, as govmomi's `FileName.FromString`
/// builds it: the root share, then the path's components, NUL-separated.
pub fn path_to_cp_name(path: &[u8]) -> Vec<u8> {
    let trimmed = path.strip_prefix(b"/").unwrap_or(path);
    let mut out = ROOT_SHARE.to_vec();
    for component in trimmed.split(|&b| b == b'/') {
        out.push(0);
        out.extend_from_slice(component);
    }
    out
}

/// The absolute guest path a cross-platform name denotes (govmomi's `FileName.Path`):
/// components of the root share joined with `/`. `..` is kept: names are absolute within
/// the root share, where the kernel resolves it as a shell would.
pub fn cp_name_to_path(name: &[u8]) -> Result<Vec<u8>, NameError> {
    let mut components = name.split(|&b| b == 0);
    if components.next() != Some(ROOT_SHARE) {
        return Err(NameError::UnknownShare);
    }
    let mut path = Vec::with_capacity(name.len());
    for component in components {
        path.push(b'/');
        path.extend_from_slice(component);
    }
    if path.is_empty() {
        path.push(b'/');
    }
    Ok(path)
}

/// `HgfsCapability` (`HgfsOpCapability`): an operation and its `CAPFLAG_*` flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capability {
    /// The operation.
    pub op: Op,
    /// `CAPFLAG_*`.
    pub flags: u32,
}

impl Wire for Capability {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        Some(Self {
            op: Op::decode(r)?,
            flags: r.u32()?,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.op.encode(out);
        self.flags.encode(out);
    }
}

/// Size of one encoded [`Capability`].
const CAPABILITY_SIZE: usize = 8;

fn decode_capabilities(r: &mut Reader<'_>, count: u32) -> Option<Vec<Capability>> {
    let count = usize::try_from(count).ok()?;
    // Bound the allocation by what the packet can actually hold before trusting the count.
    if count > r.remaining() / CAPABILITY_SIZE {
        return None;
    }
    (0..count).map(|_| Capability::decode(r)).collect()
}

/// `HgfsRequestCreateSessionV4`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestCreateSessionV4 {
    /// The largest packet the host will send or take.
    pub max_packet_size: u32,
    /// `HgfsSessionFlags`.
    pub flags: u32,
    /// Reserved.
    pub reserved: u32,
    /// The host's capabilities.
    pub capabilities: Vec<Capability>,
}

impl Wire for RequestCreateSessionV4 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let count = r.u32()?;
        let max_packet_size = r.u32()?;
        let flags = r.u32()?;
        let reserved = r.u32()?;
        let capabilities = decode_capabilities(r, count)?;
        Some(Self {
            max_packet_size,
            flags,
            reserved,
            capabilities,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (self.capabilities.len() as u32).encode(out);
        self.max_packet_size.encode(out);
        self.flags.encode(out);
        self.reserved.encode(out);
        self.capabilities.iter().for_each(|c| c.encode(out));
    }
}

/// `HgfsReplyCreateSessionV4`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplyCreateSessionV4 {
    /// The new session.
    pub session_id: u64,
    /// The negotiated packet size.
    pub max_packet_size: u32,
    /// Offset of an `HgfsIdentity`, 0 for none.
    pub identity_offset: u32,
    /// `HgfsSessionFlags`.
    pub flags: u32,
    /// Reserved.
    pub reserved: u32,
    /// The server's capabilities.
    pub capabilities: Vec<Capability>,
}

impl Wire for ReplyCreateSessionV4 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let session_id = r.u64()?;
        let count = r.u32()?;
        let max_packet_size = r.u32()?;
        let identity_offset = r.u32()?;
        let flags = r.u32()?;
        let reserved = r.u32()?;
        let capabilities = decode_capabilities(r, count)?;
        Some(Self {
            session_id,
            max_packet_size,
            identity_offset,
            flags,
            reserved,
            capabilities,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.session_id.encode(out);
        (self.capabilities.len() as u32).encode(out);
        self.max_packet_size.encode(out);
        self.identity_offset.encode(out);
        self.flags.encode(out);
        self.reserved.encode(out);
        self.capabilities.iter().for_each(|c| c.encode(out));
    }
}

wire_struct! {
    /// `HgfsRequestDestroySessionV4` and `HgfsReplyDestroySessionV4`, also every V3
    /// reply that is only a reserved word (close, search close, setattr, create dir,
    /// delete, rename).
    pub struct Reserved {
        /// Reserved.
        pub reserved: u64,
    }
}

wire_struct! {
    /// `HgfsAttrV2`: 104 bytes of attributes; [`AttrV2::mask`] says which are meant.
    pub struct AttrV2 {
        /// `attr_valid::*` bits.
        pub mask: u64,
        /// `FILE_TYPE_*`.
        pub file_type: u32,
        /// Size in bytes.
        pub size: u64,
        /// Creation time (NT time; Linux reports the write time).
        pub creation_time: u64,
        /// Access time (NT time).
        pub access_time: u64,
        /// Write time (NT time).
        pub write_time: u64,
        /// Attribute change time (NT time).
        pub attr_change_time: u64,
        /// setuid/setgid/sticky as 4/2/1.
        pub special_perms: u8,
        /// Owner rwx as 4/2/1.
        pub owner_perms: u8,
        /// Group rwx.
        pub group_perms: u8,
        /// Other rwx.
        pub other_perms: u8,
        /// `HGFS_ATTR_*` flags.
        pub attr_flags: u64,
        /// Bytes allocated on disk.
        pub allocation_size: u64,
        /// Owner uid.
        pub user_id: u32,
        /// Group gid.
        pub group_id: u32,
        /// Inode number.
        pub host_file_id: u64,
        /// Device number.
        pub volume_id: u32,
        /// Permissions in effect for the caller.
        pub effective_perms: u32,
        /// Reserved.
        pub reserved2: u64,
    }
}

/// Encoded size of [`AttrV2`].
pub const ATTR_V2_SIZE: usize = 104;

wire_struct! {
    /// `HgfsRequestOpen` after its legacy prefix.
    pub struct RequestOpen {
        /// `OPEN_MODE_*`.
        pub mode: u32,
        /// What to do if the file exists or not.
        pub flags: OpenFlags,
        /// Permissions for a new file, owner bits only (4/2/1).
        pub permissions: u8,
        /// The file.
        pub file_name: FileName,
    }
}

wire_struct! {
    /// `HgfsReplyOpen` after its legacy prefix.
    pub struct ReplyOpen {
        /// The new handle.
        pub handle: u32,
    }
}

wire_struct! {
    /// `HgfsRequestClose` after its legacy prefix.
    pub struct RequestClose {
        /// The handle to close.
        pub handle: u32,
    }
}

wire_struct! {
    /// `HgfsRequestOpenV3`.
    pub struct RequestOpenV3 {
        /// `OPEN_VALID_*` bits.
        pub mask: u64,
        /// `OPEN_MODE_*` plus mode flags.
        pub mode: u32,
        /// What to do if the file exists or not.
        pub flags: OpenFlags,
        /// setuid/setgid/sticky for a new file.
        pub special_perms: u8,
        /// Owner permissions for a new file.
        pub owner_perms: u8,
        /// Group permissions for a new file.
        pub group_perms: u8,
        /// Other permissions for a new file.
        pub other_perms: u8,
        /// Windows attributes for a new file.
        pub attr_flags: u64,
        /// Bytes to preallocate.
        pub allocation_size: u64,
        /// Windows access mask.
        pub desired_access: u32,
        /// Windows share mode.
        pub share_access: u32,
        /// `HgfsLockType` wanted.
        pub desired_lock: u32,
        /// Reserved.
        pub reserved1: u64,
        /// Reserved.
        pub reserved2: u64,
        /// The file.
        pub file_name: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsReplyOpenV3`.
    pub struct ReplyOpenV3 {
        /// The new handle.
        pub handle: u32,
        /// `HgfsLockType` granted.
        pub acquired_lock: u32,
        /// `HGFS_OPEN_REPLY_*`.
        pub flags: u32,
        /// Reserved.
        pub reserved: u32,
    }
}

wire_struct! {
    /// `HgfsRequestReadV3`.
    pub struct RequestReadV3 {
        /// The open file.
        pub handle: u32,
        /// Where to read.
        pub offset: u64,
        /// How many bytes are wanted.
        pub required_size: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

wire_struct! {
    /// `HgfsReplyReadV3` before its data.
    pub struct ReplyReadV3Head {
        /// How many data bytes follow.
        pub actual_size: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

/// Encoded size of [`ReplyReadV3Head`].
pub const REPLY_READ_V3_HEAD_SIZE: usize = 12;

wire_struct! {
    /// `HgfsRequestWriteV3` before its data.
    pub struct RequestWriteV3Head {
        /// The open file.
        pub handle: u32,
        /// `WRITE_APPEND` or 0.
        pub flags: u8,
        /// Where to write.
        pub offset: u64,
        /// How many data bytes follow.
        pub required_size: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

/// Splits a write V3 request into its fields and the data, which must be all there.
pub fn decode_write_v3(args: &[u8]) -> Result<(RequestWriteV3Head, &[u8]), ProtoError> {
    let mut r = Reader::new(args);
    let truncated = ProtoError::Truncated {
        what: "RequestWriteV3",
        have: args.len(),
    };
    let head = RequestWriteV3Head::decode(&mut r).ok_or(truncated.clone())?;
    let len = usize::try_from(head.required_size).map_err(|_| truncated.clone())?;
    let data = r.take(len).ok_or(truncated)?;
    Ok((head, data))
}

/// Encodes a write V3 request for `data` (the size field follows the data).
pub fn encode_write_v3(handle: u32, flags: u8, offset: u64, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(25 + data.len());
    RequestWriteV3Head {
        handle,
        flags,
        offset,
        required_size: data.len() as u32,
        reserved: 0,
    }
    .encode(&mut out);
    out.extend_from_slice(data);
    out
}

/// Splits a read V3 reply payload into its fields and the data.
pub fn decode_read_v3_reply(payload: &[u8]) -> Result<(ReplyReadV3Head, &[u8]), ProtoError> {
    let mut r = Reader::new(payload);
    let truncated = ProtoError::Truncated {
        what: "ReplyReadV3",
        have: payload.len(),
    };
    let head = ReplyReadV3Head::decode(&mut r).ok_or(truncated.clone())?;
    let len = usize::try_from(head.actual_size).map_err(|_| truncated.clone())?;
    let data = r.take(len).ok_or(truncated)?;
    Ok((head, data))
}

wire_struct! {
    /// `HgfsReplyWriteV3`.
    pub struct ReplyWriteV3 {
        /// Bytes written.
        pub actual_size: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

wire_struct! {
    /// `HgfsRequestCloseV3`.
    pub struct RequestCloseV3 {
        /// The handle to close.
        pub handle: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

wire_struct! {
    /// `HgfsRequestGetattrV2` after its legacy prefix.
    pub struct RequestGetattrV2 {
        /// `ATTR_HINT_*`.
        pub hints: u64,
        /// The file, when `hints` has [`ATTR_HINT_USE_FILE_DESC`].
        pub handle: u32,
        /// The file otherwise.
        pub file_name: FileName,
    }
}

wire_struct! {
    /// `HgfsReplyGetattrV2` after its legacy prefix.
    pub struct ReplyGetattrV2 {
        /// The attributes.
        pub attr: AttrV2,
        /// A symlink's target (empty otherwise).
        pub symlink_target: FileName,
    }
}

wire_struct! {
    /// `HgfsRequestSetattrV2` after its legacy prefix.
    pub struct RequestSetattrV2 {
        /// `ATTR_HINT_*`.
        pub hints: u64,
        /// The attributes to set; the mask says which.
        pub attr: AttrV2,
        /// The file, when `hints` has [`ATTR_HINT_USE_FILE_DESC`].
        pub handle: u32,
        /// The file otherwise.
        pub file_name: FileName,
    }
}

wire_struct! {
    /// `HgfsRequestGetattrV3`.
    pub struct RequestGetattrV3 {
        /// `ATTR_HINT_*`.
        pub hints: u64,
        /// Reserved.
        pub reserved: u64,
        /// The file.
        pub file_name: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsReplyGetattrV3`.
    pub struct ReplyGetattrV3 {
        /// The attributes.
        pub attr: AttrV2,
        /// Reserved.
        pub reserved: u64,
        /// A symlink's target (empty otherwise).
        pub symlink_target: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsRequestSetattrV3`.
    pub struct RequestSetattrV3 {
        /// `ATTR_HINT_*`.
        pub hints: u64,
        /// The attributes to set; the mask says which.
        pub attr: AttrV2,
        /// Reserved.
        pub reserved: u64,
        /// The file.
        pub file_name: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsRequestSearchOpenV3`.
    pub struct RequestSearchOpenV3 {
        /// Reserved.
        pub reserved: u64,
        /// The directory.
        pub dir_name: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsReplySearchOpenV3`.
    pub struct ReplySearchOpenV3 {
        /// The search handle.
        pub search: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

wire_struct! {
    /// `HgfsRequestSearchReadV3`.
    pub struct RequestSearchReadV3 {
        /// The search handle.
        pub search: u32,
        /// Index of the entry wanted.
        pub offset: u32,
        /// Reserved for multi-entry reads.
        pub flags: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

wire_struct! {
    /// `HgfsRequestSearchCloseV3`.
    pub struct RequestSearchCloseV3 {
        /// The search handle.
        pub search: u32,
        /// Reserved.
        pub reserved: u64,
    }
}

/// One directory entry of a search read V3 reply.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DirEntry {
    /// The entry's attributes.
    pub attr: AttrV2,
    /// The entry's name (one component); empty means "no entry at this offset".
    pub name: Vec<u8>,
}

/// `HgfsDirEntry` is not packed: a `u32`, the packed 104-byte attributes and the packed
/// 17-byte `HgfsFileNameV3` make 125 bytes, padded to 128 by the `u32`'s alignment.
pub const DIR_ENTRY_SIZE: usize = 128;
/// `offsetof(HgfsReplySearchReadV3, payload)`: count and reserved.
pub const REPLY_SEARCH_READ_V3_HEAD: usize = 16;

/// Encodes a search read V3 reply as hgfsServer sizes it: the 17-byte reply struct (whose
/// `payload[1]` the entry overlaps) and one `HgfsDirEntry` counted as its full struct size
/// plus the name (`HgfsPackSearchReadReplyRecord`). `None` encodes the end of the listing:
/// a count of 0 and an empty entry, so clients that look at either stop.
pub fn encode_search_read_v3(entry: Option<&DirEntry>, out: &mut Vec<u8>) {
    let start = out.len();
    u64::from(entry.is_some()).encode(out);
    0u64.encode(out);
    let entry_start = out.len();
    0u32.encode(out); // nextEntry: single-entry replies have none
    let empty = DirEntry::default();
    let entry = entry.unwrap_or(&empty);
    if entry.name.is_empty() {
        AttrV2::default().encode(out);
    } else {
        entry.attr.encode(out);
    }
    FileNameV3 {
        name: entry.name.clone(),
        ..FileNameV3::default()
    }
    .encode(out);
    // FileNameV3::encode wrote the name without its NUL (or one NUL when empty); the
    // entry's declared size covers the NUL and the padding.
    let entry_len = DIR_ENTRY_SIZE + entry.name.len();
    out.resize(entry_start + entry_len, 0);
    out.resize(start + REPLY_SEARCH_READ_V3_HEAD + 1 + entry_len, 0);
}

/// Decodes a search read V3 reply: `None` at the end of the listing.
pub fn decode_search_read_v3(payload: &[u8]) -> Result<Option<DirEntry>, ProtoError> {
    let truncated = ProtoError::Truncated {
        what: "ReplySearchReadV3",
        have: payload.len(),
    };
    let mut r = Reader::new(payload);
    let count = r.u64().ok_or(truncated.clone())?;
    r.u64().ok_or(truncated.clone())?;
    let _next = r.u32().ok_or(truncated.clone())?;
    let attr = AttrV2::decode(&mut r).ok_or(truncated.clone())?;
    let name = FileNameV3::decode(&mut r).ok_or(truncated)?;
    if count == 0 || name.name.is_empty() {
        return Ok(None);
    }
    Ok(Some(DirEntry {
        attr,
        name: name.name,
    }))
}

wire_struct! {
    /// `HgfsRequestCreateDirV3`.
    pub struct RequestCreateDirV3 {
        /// `CREATE_DIR_VALID_*` bits.
        pub mask: u64,
        /// setuid/setgid/sticky.
        pub special_perms: u8,
        /// Owner permissions.
        pub owner_perms: u8,
        /// Group permissions.
        pub group_perms: u8,
        /// Other permissions.
        pub other_perms: u8,
        /// Windows attributes.
        pub file_attr: u64,
        /// The directory.
        pub file_name: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsRequestDeleteV3`, for files and directories alike.
    pub struct RequestDeleteV3 {
        /// `HGFS_DELETE_HINT_*`.
        pub hints: u64,
        /// Reserved.
        pub reserved: u64,
        /// The file or directory.
        pub file_name: FileNameV3,
    }
}

/// `HgfsRequestRenameV3`. The new name starts right after the old name's terminating NUL
/// (`HgfsUnpackRenamePayloadV3`, lib/hgfsServer/hgfsServerParameters.c), so here that
/// NUL is required, not optional as after a name that ends a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestRenameV3 {
    /// `RENAME_HINT_*`.
    pub hints: u64,
    /// Reserved.
    pub reserved: u64,
    /// The existing name.
    pub old_name: FileNameV3,
    /// The new name.
    pub new_name: FileNameV3,
}

impl Wire for RequestRenameV3 {
    fn decode(r: &mut Reader<'_>) -> Option<Self> {
        let hints = r.u64()?;
        let reserved = r.u64()?;
        let old_name = FileNameV3::decode(r)?;
        r.take(1)?;
        let new_name = FileNameV3::decode(r)?;
        Some(Self {
            hints,
            reserved,
            old_name,
            new_name,
        })
    }
    fn encode(&self, out: &mut Vec<u8>) {
        self.hints.encode(out);
        self.reserved.encode(out);
        self.old_name.encode(out);
        if !self.old_name.name.is_empty() {
            // An empty name's encoding already ends in its NUL.
            out.push(0);
        }
        self.new_name.encode(out);
    }
}

wire_struct! {
    /// `HgfsRequestQueryVolumeV3`.
    pub struct RequestQueryVolumeV3 {
        /// Reserved.
        pub reserved: u64,
        /// A path on the volume.
        pub file_name: FileNameV3,
    }
}

wire_struct! {
    /// `HgfsReplyQueryVolumeV3`.
    pub struct ReplyQueryVolumeV3 {
        /// Bytes available to the caller.
        pub free_bytes: u64,
        /// Volume size.
        pub total_bytes: u64,
        /// Reserved.
        pub reserved: u64,
    }
}

/// Seconds between 1601-01-01 and 1970-01-01 in 100 ns units (`UNIX_EPOCH`,
/// lib/hgfs/hgfsUtil.c).
const NT_UNIX_EPOCH: u64 = ((369 * 365) + 89) * 24 * 3600 * 10_000_000;

/// Unix time to NT time (100 ns since 1601), as `HgfsConvertToNtTime` does.
pub fn nt_time(secs: i64, nanos: u32) -> u64 {
    let ticks = i128::from(secs) * 10_000_000 + i128::from(nanos / 100) + i128::from(NT_UNIX_EPOCH);
    u64::try_from(ticks.max(0)).unwrap_or(u64::MAX)
}

/// NT time to Unix seconds and nanoseconds (`HgfsConvertFromNtTime`); times before 1970
/// become the epoch, as there.
pub fn unix_time(nt: u64) -> (i64, u32) {
    let since = nt.saturating_sub(NT_UNIX_EPOCH);
    let secs = i64::try_from(since / 10_000_000).unwrap_or(i64::MAX);
    (secs, ((since % 10_000_000) * 100) as u32)
}
