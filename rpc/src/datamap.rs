//! DataMap: the typed key/value serialization that frames guest RPC packets on vsock.
//!
//! Wire format (`lib/dataMap/dataMap.c`), all integers big-endian:
//!
//! ```text
//! u32 content length | entry*
//! entry  = i32 type | i32 field id | value
//! value  = INT64 (1):      u32 low word | u32 high word
//!          STRING (2):     i32 length (> 0) | bytes
//!          INT64LIST (3):  i32 count | INT64*
//!          STRINGLIST (4): i32 count | STRING*
//! ```
//!
//! An INT64 is two big-endian 32-bit words, low word first: that is how `EncodeInt64` writes it.
//! The reference decoder refuses strings of length 0, so an empty string cannot be sent.
//!
//! Entries come out in the reference's hash table order. For the small field ids used by guest
//! RPC packets (1..=26) that order is ascending: the table has 32 slots and djb2 of a
//! little-endian `i32` key `k` lands in slot `(5 + k) % 32` (`lib/hashMap/hashMap.c`). We always
//! encode in ascending id order.

use std::collections::BTreeMap;

/// Field types (`DMFieldType`, `lib/include/dataMap.h`).
#[allow(missing_docs)]
pub mod field_type {
    pub const INT64: i32 = 1;
    pub const STRING: i32 = 2;
    pub const INT64LIST: i32 = 3;
    pub const STRINGLIST: i32 = 4;
}

/// One value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    /// `DMFIELDTYPE_INT64`.
    Int64(i64),
    /// `DMFIELDTYPE_STRING`; bytes, not necessarily UTF-8, never empty on the wire.
    String(Vec<u8>),
    /// `DMFIELDTYPE_INT64LIST`.
    Int64List(Vec<i64>),
    /// `DMFIELDTYPE_STRINGLIST`.
    StringList(Vec<Vec<u8>>),
}

/// A decoded or to-be-encoded map, in ascending field id order.
pub type DataMap = BTreeMap<i32, Value>;

/// Why bytes are not a DataMap. Mirrors the reference's `DMERR_*` decode errors.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DataMapError {
    /// More bytes were needed (`DMERR_TRUNCATED_DATA`).
    #[error("datamap truncated: {what} needs {need} bytes, {left} left")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Bytes it needed.
        need: usize,
        /// Bytes there were.
        left: usize,
    },
    /// A field type the format does not have (`DMERR_UNKNOWN_TYPE`).
    #[error("datamap field {field}: unknown type {ty}")]
    UnknownType {
        /// Field id.
        field: i32,
        /// The type number read.
        ty: i32,
    },
    /// The same field id twice (`DMERR_DUPLICATED_FIELD_IDS`).
    #[error("datamap field {0} appears twice")]
    DuplicateField(i32),
    /// A length or count out of range (`DMERR_BAD_DATA`).
    #[error("datamap field {field}: bad {what} {value}")]
    BadLength {
        /// Field id.
        field: i32,
        /// Which length.
        what: &'static str,
        /// The value read.
        value: i64,
    },
    /// Bytes after the content the header announced.
    #[error("datamap has {0} bytes after its announced content")]
    TrailingBytes(usize),
    /// An empty string or a map too large for the format's 32-bit lengths.
    #[error("datamap cannot encode field {field}: {why}")]
    Unencodable {
        /// Field id.
        field: i32,
        /// Why.
        why: &'static str,
    },
}

/// Bounds-checked reader over untrusted bytes; never panics.
struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DataMapError> {
        if self.buf.len() < n {
            return Err(DataMapError::Truncated {
                what,
                need: n,
                left: self.buf.len(),
            });
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DataMapError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DataMapError> {
        let low = self.i32(what)? as u32;
        let high = self.i32(what)? as u32;
        Ok(((u64::from(high) << 32) | u64::from(low)) as i64)
    }

    fn string(&mut self, field: i32) -> Result<Vec<u8>, DataMapError> {
        let len = self.i32("string length")?;
        if len <= 0 {
            return Err(DataMapError::BadLength {
                field,
                what: "string length",
                value: len.into(),
            });
        }
        Ok(self.take(len as usize, "string")?.to_vec())
    }

    fn count(&mut self, field: i32, item_size: usize) -> Result<usize, DataMapError> {
        let n = self.i32("list count")?;
        // As the reference: a count that could not fit in what is left is refused before any
        // allocation, so a hostile count costs nothing.
        if n < 0 || n as usize > self.buf.len() / item_size {
            return Err(DataMapError::BadLength {
                field,
                what: "list count",
                value: n.into(),
            });
        }
        Ok(n as usize)
    }
}

/// Decodes a complete serialized map: the 4-byte length header and exactly that much content.
pub fn decode(buf: &[u8]) -> Result<DataMap, DataMapError> {
    let mut r = Reader { buf };
    let len = r.i32("content length")?;
    if len < 0 || len as usize > r.buf.len() {
        return Err(DataMapError::Truncated {
            what: "content",
            need: len.max(0) as usize,
            left: r.buf.len(),
        });
    }
    if r.buf.len() > len as usize {
        return Err(DataMapError::TrailingBytes(r.buf.len() - len as usize));
    }
    decode_content(r.buf)
}

/// Decodes map content without the length header.
pub fn decode_content(buf: &[u8]) -> Result<DataMap, DataMapError> {
    let mut r = Reader { buf };
    let mut map = DataMap::new();
    while !r.buf.is_empty() {
        let ty = r.i32("field type")?;
        let field = r.i32("field id")?;
        if !(field_type::INT64..=field_type::STRINGLIST).contains(&ty) {
            return Err(DataMapError::UnknownType { field, ty });
        }
        if map.contains_key(&field) {
            return Err(DataMapError::DuplicateField(field));
        }
        let value = match ty {
            field_type::INT64 => Value::Int64(r.i64("int64")?),
            field_type::STRING => Value::String(r.string(field)?),
            field_type::INT64LIST => {
                let n = r.count(field, 8)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(r.i64("int64")?);
                }
                Value::Int64List(list)
            }
            _ => {
                let n = r.count(field, 4)?;
                let mut list = Vec::with_capacity(n);
                for _ in 0..n {
                    list.push(r.string(field)?);
                }
                Value::StringList(list)
            }
        };
        map.insert(field, value);
    }
    Ok(map)
}

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i64(out: &mut Vec<u8>, v: i64) {
    put_i32(out, v as i32);
    put_i32(out, (v >> 32) as i32);
}

fn put_string(out: &mut Vec<u8>, field: i32, s: &[u8]) -> Result<(), DataMapError> {
    if s.is_empty() {
        return Err(DataMapError::Unencodable {
            field,
            why: "empty strings do not decode",
        });
    }
    let len = i32::try_from(s.len()).map_err(|_| DataMapError::Unencodable {
        field,
        why: "string longer than 2 GiB",
    })?;
    put_i32(out, len);
    out.extend_from_slice(s);
    Ok(())
}

fn len_i32(field: i32, n: usize) -> Result<i32, DataMapError> {
    i32::try_from(n).map_err(|_| DataMapError::Unencodable {
        field,
        why: "list too long",
    })
}

/// Encodes a map with its 4-byte length header.
pub fn encode(map: &DataMap) -> Result<Vec<u8>, DataMapError> {
    let mut out = vec![0u8; 4];
    for (&field, value) in map {
        match value {
            Value::Int64(v) => {
                put_i32(&mut out, field_type::INT64);
                put_i32(&mut out, field);
                put_i64(&mut out, *v);
            }
            Value::String(s) => {
                put_i32(&mut out, field_type::STRING);
                put_i32(&mut out, field);
                put_string(&mut out, field, s)?;
            }
            Value::Int64List(list) => {
                put_i32(&mut out, field_type::INT64LIST);
                put_i32(&mut out, field);
                put_i32(&mut out, len_i32(field, list.len())?);
                for v in list {
                    put_i64(&mut out, *v);
                }
            }
            Value::StringList(list) => {
                put_i32(&mut out, field_type::STRINGLIST);
                put_i32(&mut out, field);
                put_i32(&mut out, len_i32(field, list.len())?);
                for s in list {
                    put_string(&mut out, field, s)?;
                }
            }
        }
    }
    let content = len_i32(0, out.len() - 4)?;
    out[..4].copy_from_slice(&content.to_be_bytes());
    Ok(out)
}
