//! VIX property lists (`lib/foundryMsg/foundryPropertyListCommon.c`): a sequence of
//! `id (i32) | type (i32) | length (i32) | value`, little-endian, no padding.

use super::proto::DecodeError;
use crate::codec::Reader;
use std::fmt;

/// The header before each value: id, type, length.
pub const PROPERTY_HEADER_SIZE: usize = 12;
/// The largest serialized list decoded: one never exceeds the message that carries it.
pub const MAX_PROPERTY_LIST_SIZE: usize = super::proto::MAX_MESSAGE_SIZE;

/// `VIX_PROPERTYTYPE_*` (`lib/include/vixOpenSource.h`).
pub mod property_type {
    /// `VIX_PROPERTYTYPE_INTEGER`.
    pub const INTEGER: i32 = 1;
    /// `VIX_PROPERTYTYPE_STRING`.
    pub const STRING: i32 = 2;
    /// `VIX_PROPERTYTYPE_BOOL`.
    pub const BOOL: i32 = 3;
    /// `VIX_PROPERTYTYPE_HANDLE`: never serialized.
    pub const HANDLE: i32 = 4;
    /// `VIX_PROPERTYTYPE_INT64`.
    pub const INT64: i32 = 5;
    /// `VIX_PROPERTYTYPE_BLOB`.
    pub const BLOB: i32 = 6;
    /// `VIX_PROPERTYTYPE_POINTER`: refused on the wire.
    pub const POINTER: i32 = 7;
}

/// A property id (`VIX_PROPERTY_*`, `lib/include/vixOpenSource.h`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PropertyId(pub i32);

macro_rules! property_ids {
    ($($(#[$m:meta])* $c:ident = $v:expr,)*) => {
        impl PropertyId {
            $($(#[$m])* pub const $c: PropertyId = PropertyId($v);)*

            /// The constant's name, when the id has one.
            pub fn name(self) -> Option<&'static str> {
                match self {
                    $(PropertyId::$c => Some(stringify!($c)),)*
                    _ => None,
                }
            }
        }
    };
}

property_ids! {
    /// `VIX_PROPERTY_VM_GUEST_TEMP_DIR_PROPERTY`.
    GUEST_TEMP_DIR = 203,
    /// `VIX_PROPERTY_GUEST_TOOLS_VERSION`.
    GUEST_TOOLS_VERSION = 4500,
    /// `VIX_PROPERTY_GUEST_TOOLS_API_OPTIONS`.
    GUEST_TOOLS_API_OPTIONS = 4501,
    /// `VIX_PROPERTY_GUEST_OS_FAMILY`.
    GUEST_OS_FAMILY = 4502,
    /// `VIX_PROPERTY_GUEST_OS_VERSION`.
    GUEST_OS_VERSION = 4503,
    /// `VIX_PROPERTY_GUEST_OS_PACKAGE_LIST`.
    GUEST_OS_PACKAGE_LIST = 4504,
    /// `VIX_PROPERTY_GUEST_NAME`.
    GUEST_NAME = 4505,
    /// `VIX_PROPERTY_GUEST_POWER_OFF_SCRIPT`.
    GUEST_POWER_OFF_SCRIPT = 4506,
    /// `VIX_PROPERTY_GUEST_POWER_ON_SCRIPT`.
    GUEST_POWER_ON_SCRIPT = 4507,
    /// `VIX_PROPERTY_GUEST_RESUME_SCRIPT`.
    GUEST_RESUME_SCRIPT = 4508,
    /// `VIX_PROPERTY_GUEST_SUSPEND_SCRIPT`.
    GUEST_SUSPEND_SCRIPT = 4509,
    /// `VIX_PROPERTY_GUEST_TOOLS_PRODUCT_NAM`.
    GUEST_TOOLS_PRODUCT_NAM = 4511,
    /// `VIX_PROPERTY_GUEST_TOOLS_WORD_SIZE`.
    GUEST_TOOLS_WORD_SIZE = 4519,
    /// `VIX_PROPERTY_GUEST_OS_VERSION_SHORT`.
    GUEST_OS_VERSION_SHORT = 4520,
    /// `VIX_PROPERTY_GUEST_START_PROGRAM_ENABLED`.
    GUEST_START_PROGRAM_ENABLED = 4540,
    /// `VIX_PROPERTY_GUEST_LIST_PROCESSES_ENABLED`.
    GUEST_LIST_PROCESSES_ENABLED = 4541,
    /// `VIX_PROPERTY_GUEST_TERMINATE_PROCESS_ENABLED`.
    GUEST_TERMINATE_PROCESS_ENABLED = 4542,
    /// `VIX_PROPERTY_GUEST_READ_ENVIRONMENT_VARIABLE_ENABLED`.
    GUEST_READ_ENVIRONMENT_VARIABLE_ENABLED = 4543,
    /// `VIX_PROPERTY_GUEST_VALIDATE_CREDENTIALS_ENABLED`.
    GUEST_VALIDATE_CREDENTIALS_ENABLED = 4544,
    /// `VIX_PROPERTY_GUEST_ACQUIRE_CREDENTIALS_ENABLED`.
    GUEST_ACQUIRE_CREDENTIALS_ENABLED = 4545,
    /// `VIX_PROPERTY_GUEST_RELEASE_CREDENTIALS_ENABLED`.
    GUEST_RELEASE_CREDENTIALS_ENABLED = 4546,
    /// `VIX_PROPERTY_GUEST_MAKE_DIRECTORY_ENABLED`.
    GUEST_MAKE_DIRECTORY_ENABLED = 4547,
    /// `VIX_PROPERTY_GUEST_DELETE_FILE_ENABLED`.
    GUEST_DELETE_FILE_ENABLED = 4548,
    /// `VIX_PROPERTY_GUEST_DELETE_DIRECTORY_ENABLED`.
    GUEST_DELETE_DIRECTORY_ENABLED = 4549,
    /// `VIX_PROPERTY_GUEST_MOVE_DIRECTORY_ENABLED`.
    GUEST_MOVE_DIRECTORY_ENABLED = 4550,
    /// `VIX_PROPERTY_GUEST_MOVE_FILE_ENABLED`.
    GUEST_MOVE_FILE_ENABLED = 4551,
    /// `VIX_PROPERTY_GUEST_CREATE_TEMP_FILE_ENABLED`.
    GUEST_CREATE_TEMP_FILE_ENABLED = 4552,
    /// `VIX_PROPERTY_GUEST_CREATE_TEMP_DIRECTORY_ENABLED`.
    GUEST_CREATE_TEMP_DIRECTORY_ENABLED = 4553,
    /// `VIX_PROPERTY_GUEST_LIST_FILES_ENABLED`.
    GUEST_LIST_FILES_ENABLED = 4554,
    /// `VIX_PROPERTY_GUEST_CHANGE_FILE_ATTRIBUTES_ENABLED`.
    GUEST_CHANGE_FILE_ATTRIBUTES_ENABLED = 4555,
    /// `VIX_PROPERTY_GUEST_INITIATE_FILE_TRANSFER_FROM_GUEST_ENABLED`.
    GUEST_INITIATE_FILE_TRANSFER_FROM_GUEST_ENABLED = 4556,
    /// `VIX_PROPERTY_GUEST_INITIATE_FILE_TRANSFER_TO_GUEST_ENABLED`.
    GUEST_INITIATE_FILE_TRANSFER_TO_GUEST_ENABLED = 4557,
    /// `VIX_PROPERTY_GUEST_ADD_AUTH_ALIAS_ENABLED`.
    GUEST_ADD_AUTH_ALIAS_ENABLED = 4558,
    /// `VIX_PROPERTY_GUEST_REMOVE_AUTH_ALIAS_ENABLED`.
    GUEST_REMOVE_AUTH_ALIAS_ENABLED = 4559,
    /// `VIX_PROPERTY_GUEST_LIST_AUTH_ALIASES_ENABLED`.
    GUEST_LIST_AUTH_ALIASES_ENABLED = 4560,
    /// `VIX_PROPERTY_GUEST_LIST_MAPPED_ALIASES_ENABLED`.
    GUEST_LIST_MAPPED_ALIASES_ENABLED = 4561,
    /// `VIX_PROPERTY_GUEST_CREATE_REGISTRY_KEY_ENABLED`.
    GUEST_CREATE_REGISTRY_KEY_ENABLED = 4562,
    /// `VIX_PROPERTY_GUEST_LIST_REGISTRY_KEYS_ENABLED`.
    GUEST_LIST_REGISTRY_KEYS_ENABLED = 4563,
    /// `VIX_PROPERTY_GUEST_DELETE_REGISTRY_KEY_ENABLED`.
    GUEST_DELETE_REGISTRY_KEY_ENABLED = 4564,
    /// `VIX_PROPERTY_GUEST_SET_REGISTRY_VALUE_ENABLED`.
    GUEST_SET_REGISTRY_VALUE_ENABLED = 4565,
    /// `VIX_PROPERTY_GUEST_LIST_REGISTRY_VALUES_ENABLED`.
    GUEST_LIST_REGISTRY_VALUES_ENABLED = 4566,
    /// `VIX_PROPERTY_GUEST_DELETE_REGISTRY_VALUE_ENABLED`.
    GUEST_DELETE_REGISTRY_VALUE_ENABLED = 4567,
    /// `VIX_PROPERTY_GUEST_REMOVE_AUTH_ALIAS_BY_CERT_ENABLED`.
    GUEST_REMOVE_AUTH_ALIAS_BY_CERT_ENABLED = 4568,
}

impl fmt::Debug for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(n) => write!(f, "{n}({})", self.0),
            None => write!(f, "PropertyId({:#x})", self.0),
        }
    }
}

impl fmt::Display for PropertyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// A property's value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `VIX_PROPERTYTYPE_INTEGER`.
    Int32(i32),
    /// `VIX_PROPERTYTYPE_STRING`: UTF-8, serialized with its NUL.
    String(String),
    /// `VIX_PROPERTYTYPE_BOOL`: one byte.
    Bool(bool),
    /// `VIX_PROPERTYTYPE_INT64`.
    Int64(i64),
    /// `VIX_PROPERTYTYPE_BLOB`: at least one byte.
    Blob(Vec<u8>),
}

/// One property.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Property {
    /// Its id.
    pub id: PropertyId,
    /// Its value.
    pub value: Value,
}

/// A property list, in wire order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PropertyList(pub Vec<Property>);

/// Why a property list was refused (`VixPropertyListDeserializeImpl`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PropertyError {
    /// A length, type size or string is wrong (`VIX_E_INVALID_SERIALIZED_DATA`).
    #[error("invalid serialized property {id}: {what}")]
    Invalid {
        /// The property.
        id: PropertyId,
        /// What is wrong.
        what: &'static str,
    },
    /// A type the wire does not carry (`VIX_E_UNRECOGNIZED_PROPERTY`).
    #[error("property {id} has unrecognized type {kind}")]
    UnknownType {
        /// The property.
        id: PropertyId,
        /// The type.
        kind: i32,
    },
    /// Bytes after the last property too few for one.
    #[error("{0} trailing bytes after the property list")]
    Trailing(usize),
    /// Longer than any message can be.
    #[error("property list of {0} bytes is longer than a VIX message")]
    TooLong(usize),
}

impl PropertyError {
    /// The VIX error vmtoolsd answers with.
    pub fn vix_error(&self) -> super::proto::VixError {
        use super::proto::VixError;
        match self {
            PropertyError::UnknownType { .. } => VixError::UNRECOGNIZED_PROPERTY,
            _ => VixError::INVALID_SERIALIZED_DATA,
        }
    }
}

impl From<PropertyError> for DecodeError {
    fn from(_: PropertyError) -> DecodeError {
        DecodeError::Body("property list")
    }
}

impl PropertyList {
    /// Appends a property.
    pub fn push(&mut self, id: PropertyId, value: Value) {
        self.0.push(Property { id, value });
    }

    /// The first property with `id`.
    pub fn get(&self, id: PropertyId) -> Option<&Value> {
        self.0.iter().find(|p| p.id == id).map(|p| &p.value)
    }

    /// `VixPropertyList_Serialize`: each property's header and value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            let (kind, value): (i32, std::borrow::Cow<'_, [u8]>) = match &p.value {
                Value::Int32(v) => (property_type::INTEGER, v.to_le_bytes().to_vec().into()),
                Value::String(s) => {
                    let mut b = s.as_bytes().to_vec();
                    b.push(0);
                    (property_type::STRING, b.into())
                }
                Value::Bool(v) => (property_type::BOOL, vec![u8::from(*v)].into()),
                Value::Int64(v) => (property_type::INT64, v.to_le_bytes().to_vec().into()),
                Value::Blob(b) => (property_type::BLOB, b.as_slice().into()),
            };
            out.extend_from_slice(&p.id.0.to_le_bytes());
            out.extend_from_slice(&kind.to_le_bytes());
            out.extend_from_slice(&(value.len() as i32).to_le_bytes());
            out.extend_from_slice(&value);
        }
        out
    }

    /// `VixPropertyListDeserializeImpl`, stricter where it is lenient: bytes left over that
    /// cannot hold a property are refused rather than ignored, and strings may not hold a
    /// NUL before their last byte.
    pub fn decode(data: &[u8]) -> Result<PropertyList, PropertyError> {
        if data.len() > MAX_PROPERTY_LIST_SIZE {
            return Err(PropertyError::TooLong(data.len()));
        }
        let mut r = Reader::new(data);
        let mut list = Vec::new();
        while !r.is_empty() {
            if r.remaining() <= PROPERTY_HEADER_SIZE {
                return Err(PropertyError::Trailing(r.remaining()));
            }
            // Twelve bytes are there: the header reads cannot fail.
            let id = PropertyId(r.i32_le().unwrap_or_default());
            let kind = r.i32_le().unwrap_or_default();
            let len = r.i32_le().unwrap_or_default();
            let invalid = |what| PropertyError::Invalid { id, what };
            if len < 1 {
                return Err(invalid("length below 1"));
            }
            let bytes = r
                .take(len as usize)
                .ok_or(invalid("value runs past the list"))?;
            let fixed = |n: usize| -> Result<&[u8], PropertyError> {
                if bytes.len() == n {
                    Ok(bytes)
                } else {
                    Err(invalid("wrong size for its type"))
                }
            };
            let value = match kind {
                property_type::INTEGER => {
                    Value::Int32(i32::from_le_bytes(fixed(4)?.try_into().unwrap_or_default()))
                }
                property_type::BOOL => Value::Bool(fixed(1)?[0] != 0),
                property_type::INT64 => {
                    Value::Int64(i64::from_le_bytes(fixed(8)?.try_into().unwrap_or_default()))
                }
                property_type::STRING => {
                    let (last, text) = bytes.split_last().ok_or(invalid("empty string"))?;
                    if *last != 0 || text.contains(&0) {
                        return Err(invalid("string not NUL-terminated"));
                    }
                    Value::String(
                        String::from_utf8(text.to_vec())
                            .map_err(|_| invalid("string not UTF-8"))?,
                    )
                }
                property_type::BLOB => Value::Blob(bytes.to_vec()),
                other => return Err(PropertyError::UnknownType { id, kind: other }),
            };
            list.push(Property { id, value });
        }
        Ok(PropertyList(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_as_vixpropertylist_serialize() {
        let mut l = PropertyList::default();
        l.push(PropertyId::GUEST_NAME, Value::String("vm".into()));
        l.push(PropertyId::GUEST_LIST_FILES_ENABLED, Value::Bool(true));
        let b = l.encode();
        assert_eq!(
            b,
            [
                &4505i32.to_le_bytes()[..],
                &2i32.to_le_bytes(),
                &3i32.to_le_bytes(),
                b"vm\0",
                &4554i32.to_le_bytes(),
                &3i32.to_le_bytes(),
                &1i32.to_le_bytes(),
                &[1],
            ]
            .concat()
        );
        assert_eq!(PropertyList::decode(&b).unwrap(), l);
    }

    #[test]
    fn rejects_malformed_lists() {
        let header = |id: i32, kind: i32, len: i32| {
            [id.to_le_bytes(), kind.to_le_bytes(), len.to_le_bytes()].concat()
        };
        let cases: Vec<Vec<u8>> = vec![
            header(1, 1, 0),
            [header(1, 1, 3), vec![0; 3]].concat(),
            [header(1, 3, 2), vec![0; 2]].concat(),
            [header(1, 2, 2), b"ab".to_vec()].concat(),
            [header(1, 2, 3), b"a\0\0".to_vec()].concat(),
            [header(1, 2, 2), vec![0xff, 0]].concat(),
            [header(1, 7, 1), vec![0]].concat(),
            [header(1, 4, 1), vec![0]].concat(),
            [header(1, 6, 5), vec![0; 4]].concat(),
            [header(1, 6, 1), vec![0], vec![0; 5]].concat(),
            header(1, 6, -1),
        ];
        for c in cases {
            assert!(PropertyList::decode(&c).is_err(), "{c:?}");
        }
        assert_eq!(PropertyList::decode(&[]).unwrap(), PropertyList::default());
    }
}
