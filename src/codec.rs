//! One bounded reader for the byte codecs of this crate (XDR NIC info, VIX requests).
//!
//! Every read returns `None` instead of indexing past the end, so a decoder cannot panic on
//! short input; each codec maps `None` to its own error naming the field it was reading. Counts
//! taken from the input are checked against the bytes left (`count`) before anything is
//! allocated for them.

/// A cursor over untrusted bytes.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
}

macro_rules! fixed {
    ($($name:ident: $ty:ty, $from:ident;)*) => {$(
        #[doc = concat!("A `", stringify!($ty), "` (", stringify!($from), ").")]
        pub fn $name(&mut self) -> Option<$ty> {
            self.array().map(<$ty>::$from)
        }
    )*};
}

impl<'a> Reader<'a> {
    /// Reads `buf` from its start.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Some(head)
    }

    /// The next `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N).and_then(|b| b.try_into().ok())
    }

    /// Skips `n` bytes.
    pub fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fixed! {
        u8: u8, from_le_bytes;
        u16_le: u16, from_le_bytes;
        u32_le: u32, from_le_bytes;
        u64_le: u64, from_le_bytes;
        i32_le: i32, from_le_bytes;
        i64_le: i64, from_le_bytes;
        u32_be: u32, from_be_bytes;
        i32_be: i32, from_be_bytes;
    }

    /// A count of items read from the input, each at least `item_min` bytes long: `None` when
    /// the rest of the input cannot hold that many, so no allocation follows a lying count.
    pub fn fits(&self, count: usize, item_min: usize) -> bool {
        count.saturating_mul(item_min.max(1)) <= self.buf.len()
    }

    /// Everything not read yet, consuming it.
    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    /// How many bytes are left.
    pub fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// True when everything was read.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fixed_fields_in_both_orders() {
        let mut r = Reader::new(&[1, 0, 0, 0, 0, 0, 0, 2, 9]);
        assert_eq!(r.u32_le(), Some(1));
        assert_eq!(r.u32_be(), Some(2));
        assert_eq!(r.remaining(), 1);
        assert_eq!(r.u32_le(), None, "a short read takes nothing");
        assert_eq!(r.u8(), Some(9));
        assert!(r.is_empty());
    }

    #[test]
    fn rejects_counts_the_input_cannot_hold() {
        let r = Reader::new(&[0; 8]);
        assert!(r.fits(2, 4));
        assert!(!r.fits(3, 4));
        assert!(!r.fits(usize::MAX, 2), "no overflow");
    }

    #[test]
    fn take_past_the_end_is_none() {
        let mut r = Reader::new(b"abc");
        assert_eq!(r.take(4), None);
        assert_eq!(r.take(3), Some(&b"abc"[..]));
        assert_eq!(r.take(0), Some(&b""[..]));
    }
}
