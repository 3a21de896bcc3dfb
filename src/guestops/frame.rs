//! The agent ↔ helper wire format: length-prefixed frames on a Unix socketpair.
//!
//! A frame is a big-endian `u32` length followed by that many bytes; the first byte is the
//! service (agent → helper) or the status (helper → agent), the rest the payload. The first
//! request is always [`ServiceId::SETUP`] carrying the [`Setup`]; its reply carries the
//! helper's [`Report`] of the credentials it ended up with.

use super::{HelperSettings, ServiceId};
use std::io::{self, Read, Write};
use std::path::PathBuf;

/// Largest payload carried either way: above HGFS's large packet (522 240 bytes,
/// lib/include/hgfsProto.h) and a VIX request's bounded size, and small enough that a helper's
/// reply can be read into memory at once.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Largest frame: the payload plus its service or status byte.
pub const MAX_FRAME: usize = MAX_PAYLOAD + 1;
/// Most supplementary groups in a setup or report (Linux's NGROUPS_MAX).
pub const MAX_GROUPS: usize = 65_536;

/// Reply status: the handler ran; the payload is its answer.
pub const STATUS_OK: u8 = 0;
/// Reply status: no handler for that service in this helper.
pub const STATUS_UNKNOWN_SERVICE: u8 = 1;
/// Reply status: the helper could not become the user; the payload says why.
pub const STATUS_SETUP_FAILED: u8 = 2;
/// Reply status: as [`STATUS_OK`], and the helper holds state its user still needs (see
/// `HelperService::holds_state`), so it must not be stopped for being idle.
pub const STATUS_OK_HOLDING: u8 = 3;
/// Most per-service settings entries in a setup (one per service id).
pub const MAX_SETTINGS: usize = 256;

/// A frame that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// Reading or writing failed (including a timeout).
    #[error("helper socket: {0}")]
    Io(#[from] io::Error),
    /// The length field is above [`MAX_FRAME`].
    #[error("frame of {0} bytes is larger than the {MAX_FRAME}-byte limit")]
    TooLarge(u32),
    /// A frame without even its service or status byte.
    #[error("empty frame")]
    Empty,
    /// The peer closed the socket inside a frame.
    #[error("frame cut off after {got} of {want} bytes")]
    Truncated {
        /// Bytes read.
        got: usize,
        /// Bytes announced.
        want: usize,
    },
    /// A setup or report payload that does not decode.
    #[error("malformed {what}: {why}")]
    Malformed {
        /// Which message.
        what: &'static str,
        /// What is wrong.
        why: &'static str,
    },
}

/// Reads one frame: `Ok(None)` on a clean end of stream between frames.
///
/// The length and the tag come in one read and the payload in (usually) one more, read into
/// fresh capacity without zeroing it first: a 60 KiB HGFS packet costs two system calls.
pub fn read_frame(r: &mut impl Read) -> Result<Option<(u8, Vec<u8>)>, FrameError> {
    let mut head = [0u8; 5];
    let mut got = 0;
    // The length is checked as soon as its four bytes are in, before waiting for the tag: a
    // peer that sent a bad length and waits must get its error, not a reader waiting too.
    while got < head.len() {
        match r.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        }
        if got >= 4 {
            let want = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
            if want as usize > MAX_FRAME {
                return Err(FrameError::TooLarge(want));
            }
            if want == 0 {
                return Err(FrameError::Empty);
            }
        }
    }
    if got == 0 {
        return Ok(None);
    }
    if got < 4 {
        return Err(FrameError::Truncated { got, want: 4 });
    }
    let want = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    if got == 4 {
        return Err(FrameError::Truncated { got: 0, want });
    }
    // At most MAX_PAYLOAD: the length was checked against MAX_FRAME above.
    let mut payload = Vec::with_capacity(want - 1);
    loop {
        match r
            .by_ref()
            .take((want - 1 - payload.len()) as u64)
            .read_to_end(&mut payload)
        {
            Ok(_) => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if payload.len() < want - 1 {
        return Err(FrameError::Truncated {
            got: payload.len() + 1,
            want,
        });
    }
    Ok(Some((head[4], payload)))
}

/// Writes one frame of `tag` and `payload` (at most [`MAX_PAYLOAD`] bytes); see
/// [`write_frame_parts`].
pub fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> Result<(), FrameError> {
    write_frame_parts(w, tag, &[payload])
}

/// Writes one frame of `tag` and a payload made of `parts` (together at most [`MAX_PAYLOAD`]
/// bytes), gathered by `writev` rather than copied together, and in one call where the socket
/// takes it all: a header written apart would wake the reader once for the header and again
/// for the payload.
pub fn write_frame_parts(w: &mut impl Write, tag: u8, parts: &[&[u8]]) -> Result<(), FrameError> {
    let payload_len: usize = parts.iter().map(|p| p.len()).sum();
    if payload_len > MAX_PAYLOAD {
        return Err(FrameError::TooLarge(
            u32::try_from(payload_len + 1).unwrap_or(u32::MAX),
        ));
    }
    let len = (payload_len + 1) as u32;
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&len.to_be_bytes());
    head[4] = tag;
    let mut slices: Vec<&[u8]> = Vec::with_capacity(1 + parts.len());
    slices.push(&head);
    slices.extend(parts.iter().copied().filter(|p| !p.is_empty()));
    // The slice being written and how far into it.
    let (mut at, mut offset) = (0, 0);
    while at < slices.len() {
        let mut io: Vec<io::IoSlice<'_>> = Vec::with_capacity(slices.len() - at);
        io.push(io::IoSlice::new(&slices[at][offset..]));
        io.extend(slices[at + 1..].iter().map(|s| io::IoSlice::new(s)));
        match w.write_vectored(&io) {
            Ok(0) => return Err(FrameError::Io(io::ErrorKind::WriteZero.into())),
            Ok(mut n) => {
                while n > 0 && at < slices.len() {
                    let left = slices[at].len() - offset;
                    if n >= left {
                        n -= left;
                        at += 1;
                        offset = 0;
                    } else {
                        offset += n;
                        n = 0;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    w.flush()?;
    Ok(())
}

/// What the agent asks a new helper to become.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setup {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (the working directory, if the user may enter it).
    pub home: PathBuf,
    /// Whether the helper sets `PR_SET_NO_NEW_PRIVS`: then neither it nor any program it
    /// starts can gain privileges through set-user-ID files or file capabilities.
    pub no_new_privs: bool,
    /// What the services need of the agent's configuration.
    pub settings: HelperSettings,
}

/// The credentials a helper runs with after setup, as the kernel reports them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Real, effective and saved user ids.
    pub uids: [u32; 3],
    /// Real, effective and saved group ids.
    pub gids: [u32; 3],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Descriptors beyond 0–2 and the socket that were open when the helper started (their
    /// targets), which it could not close itself.
    pub stray_fds: Vec<String>,
}

/// Most stray descriptors named in a report.
const MAX_STRAYS: usize = 64;

struct Reader<'a> {
    data: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn bad(&self, why: &'static str) -> FrameError {
        FrameError::Malformed {
            what: self.what,
            why,
        }
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.data.len() < n {
            return Err(self.bad("shorter than its fields"));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u32(&mut self) -> Result<u32, FrameError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn count(&mut self, max: usize) -> Result<usize, FrameError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(self.bad("count above its limit"));
        }
        Ok(n)
    }
    fn ids(&mut self) -> Result<Vec<u32>, FrameError> {
        let n = self.count(MAX_GROUPS)?;
        if self.data.len() / 4 < n {
            return Err(self.bad("shorter than its group count"));
        }
        (0..n).map(|_| self.u32()).collect()
    }
    fn bytes(&mut self) -> Result<&'a [u8], FrameError> {
        let n = self.count(MAX_PAYLOAD)?;
        self.take(n)
    }
    fn end(&self) -> Result<(), FrameError> {
        if self.data.is_empty() {
            Ok(())
        } else {
            Err(self.bad("trailing bytes"))
        }
    }
}

fn put_ids(out: &mut Vec<u8>, ids: &[u32]) {
    out.extend_from_slice(&(ids.len() as u32).to_be_bytes());
    for id in ids {
        out.extend_from_slice(&id.to_be_bytes());
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_be_bytes());
    out.extend_from_slice(b);
}

impl Setup {
    /// The setup payload.
    pub fn encode(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        out.extend_from_slice(&self.uid.to_be_bytes());
        out.extend_from_slice(&self.gid.to_be_bytes());
        put_ids(&mut out, &self.groups);
        put_bytes(&mut out, self.home.as_os_str().as_bytes());
        out.push(u8::from(self.no_new_privs));
        let entries = self.settings.entries();
        out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        for (id, bytes) in entries {
            out.push(id.0);
            put_bytes(&mut out, bytes);
        }
        out
    }

    /// Decodes a setup payload.
    pub fn decode(data: &[u8]) -> Result<Setup, FrameError> {
        use std::os::unix::ffi::OsStrExt;
        let mut r = Reader {
            data,
            what: "helper setup",
        };
        let uid = r.u32()?;
        let gid = r.u32()?;
        let groups = r.ids()?;
        let home = PathBuf::from(std::ffi::OsStr::from_bytes(r.bytes()?));
        let no_new_privs = match r.take(1)?[0] {
            0 => false,
            1 => true,
            _ => return Err(r.bad("no_new_privs is neither 0 nor 1")),
        };
        let mut settings = HelperSettings::new();
        for _ in 0..r.count(MAX_SETTINGS)? {
            let id = ServiceId(r.take(1)?[0]);
            if settings.entries().iter().any(|(i, _)| *i == id) {
                return Err(r.bad("a service's settings given twice"));
            }
            settings = settings.with(id, r.bytes()?.to_vec());
        }
        r.end()?;
        Ok(Setup {
            uid,
            gid,
            groups,
            home,
            no_new_privs,
            settings,
        })
    }
}

impl Report {
    /// The report payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for id in self.uids.iter().chain(&self.gids) {
            out.extend_from_slice(&id.to_be_bytes());
        }
        put_ids(&mut out, &self.groups);
        let strays = &self.stray_fds[..self.stray_fds.len().min(MAX_STRAYS)];
        out.extend_from_slice(&(strays.len() as u32).to_be_bytes());
        for s in strays {
            put_bytes(&mut out, s.as_bytes());
        }
        out
    }

    /// Decodes a report payload.
    pub fn decode(data: &[u8]) -> Result<Report, FrameError> {
        let mut r = Reader {
            data,
            what: "helper report",
        };
        let uids = [r.u32()?, r.u32()?, r.u32()?];
        let gids = [r.u32()?, r.u32()?, r.u32()?];
        let groups = r.ids()?;
        let n = r.count(MAX_STRAYS)?;
        let mut stray_fds = Vec::with_capacity(n);
        for _ in 0..n {
            stray_fds.push(String::from_utf8_lossy(r.bytes()?).into_owned());
        }
        r.end()?;
        Ok(Report {
            uids,
            gids,
            groups,
            stray_fds,
        })
    }
}

/// The service byte of a request.
pub(crate) fn service_of(tag: u8) -> ServiceId {
    ServiceId(tag)
}

#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// Frames, setups and reports from arbitrary bytes: no panic, no allocation beyond the
    /// limits, and whatever decodes re-encodes to the same bytes.
    pub fn frames(data: &[u8]) {
        let mut cursor = io::Cursor::new(data);
        while let Ok(Some((tag, payload))) = read_frame(&mut cursor) {
            assert!(payload.len() <= MAX_PAYLOAD);
            let mut again = Vec::new();
            write_frame(&mut again, tag, &payload).expect("a decoded frame re-encodes");
            if let Ok(s) = Setup::decode(&payload) {
                assert_eq!(s.encode(), payload);
            }
            if let Ok(r) = Report::decode(&payload) {
                assert_eq!(Report::decode(&r.encode()).ok(), Some(r));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_limits_hold() {
        let mut buf = Vec::new();
        write_frame(&mut buf, 7, b"hello").unwrap();
        write_frame(&mut buf, 0, b"").unwrap();
        let mut c = io::Cursor::new(&buf);
        assert_eq!(read_frame(&mut c).unwrap(), Some((7, b"hello".to_vec())));
        assert_eq!(read_frame(&mut c).unwrap(), Some((0, vec![])));
        assert!(read_frame(&mut c).unwrap().is_none());

        let huge = ((MAX_FRAME + 1) as u32).to_be_bytes();
        assert!(matches!(
            read_frame(&mut io::Cursor::new(&huge)),
            Err(FrameError::TooLarge(_))
        ));
        assert!(matches!(
            read_frame(&mut io::Cursor::new(&[0, 0, 0, 0])),
            Err(FrameError::Empty)
        ));
        assert!(matches!(
            read_frame(&mut io::Cursor::new(&[0, 0, 0, 9, 1, 2])),
            Err(FrameError::Truncated { got: 2, want: 9 })
        ));
        assert!(matches!(
            read_frame(&mut io::Cursor::new(&[0, 0])),
            Err(FrameError::Truncated { got: 2, want: 4 })
        ));
        assert!(write_frame(&mut Vec::new(), 1, &vec![0; MAX_PAYLOAD + 1]).is_err());
    }

    /// Takes at most `step` bytes per call, of the first non-empty slice only.
    struct Trickle {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Trickle {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn parts_make_one_frame_however_the_writer_splits_them() {
        let parts: [&[u8]; 4] = [b"\x01", b"", b"abcdefgh", b"xyz"];
        for step in [1, 2, 3, 5, 7, 100] {
            let mut w = Trickle {
                out: Vec::new(),
                step,
                calls: 0,
            };
            write_frame_parts(&mut w, 9, &parts).unwrap();
            let mut c = io::Cursor::new(&w.out);
            assert_eq!(
                read_frame(&mut c).unwrap(),
                Some((9, b"\x01abcdefghxyz".to_vec())),
                "step {step}"
            );
            assert!(read_frame(&mut c).unwrap().is_none());
        }
        // A socket that takes everything gets a single call.
        let mut all = Vec::new();
        let mut sock = std::os::unix::net::UnixStream::pair().unwrap();
        write_frame_parts(&mut sock.0, 3, &parts).unwrap();
        drop(sock.0);
        sock.1.read_to_end(&mut all).unwrap();
        assert_eq!(&all[..5], &[0, 0, 0, 13, 3]);
        assert!(write_frame_parts(&mut Vec::new(), 1, &[&vec![0; MAX_PAYLOAD], b"x"]).is_err());
    }

    #[test]
    fn a_bad_length_is_refused_without_waiting_for_more() {
        /// Gives its bytes, then fails the test if asked again (a real peer would block).
        struct Once(Option<Vec<u8>>);
        impl Read for Once {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                let data = self.0.take().expect("read again after a bad length");
                buf[..data.len()].copy_from_slice(&data);
                Ok(data.len())
            }
        }
        assert!(matches!(
            read_frame(&mut Once(Some(u32::MAX.to_be_bytes().to_vec()))),
            Err(FrameError::TooLarge(u32::MAX))
        ));
        assert!(matches!(
            read_frame(&mut Once(Some(vec![0; 4]))),
            Err(FrameError::Empty)
        ));
    }

    #[test]
    fn group_count_is_checked_before_allocating() {
        let mut p = Vec::new();
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&1u32.to_be_bytes());
        p.extend_from_slice(&(MAX_GROUPS as u32).to_be_bytes());
        assert!(Setup::decode(&p).is_err());
        p.truncate(8);
        p.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(Setup::decode(&p).is_err());
    }

    #[test]
    fn settings_are_bounded_and_given_once() {
        let base = Setup {
            uid: 1,
            gid: 1,
            groups: vec![],
            home: PathBuf::from("/"),
            no_new_privs: true,
            settings: HelperSettings::new(),
        }
        .encode();
        let with_entries = |entries: &[(u8, &[u8])], count: u32| {
            let mut p = base[..base.len() - 4].to_vec();
            p.extend_from_slice(&count.to_be_bytes());
            for (id, b) in entries {
                p.push(*id);
                p.extend_from_slice(&(b.len() as u32).to_be_bytes());
                p.extend_from_slice(b);
            }
            p
        };
        let ok = Setup::decode(&with_entries(&[(4, b"x"), (1, b"")], 2)).unwrap();
        assert_eq!(ok.settings.get(ServiceId(4)), b"x");
        assert!(Setup::decode(&with_entries(&[(4, b""), (4, b"")], 2)).is_err());
        assert!(Setup::decode(&with_entries(&[], MAX_SETTINGS as u32 + 1)).is_err());
        let mut bad_flag = base.clone();
        let at = bad_flag.len() - 5;
        bad_flag[at] = 2;
        assert!(Setup::decode(&bad_flag).is_err());
    }

    proptest! {
        #[test]
        fn setup_and_report_round_trip(uid: u32, gid: u32, groups in proptest::collection::vec(any::<u32>(), 0..40),
                                       home in "[/a-z]{0,40}", strays in proptest::collection::vec("[ -~]{0,20}", 0..5),
                                       no_new_privs: bool,
                                       settings in proptest::collection::btree_map(any::<u8>(), proptest::collection::vec(any::<u8>(), 0..30), 0..4)) {
            let settings = settings.into_iter().fold(HelperSettings::new(), |s, (id, b)| s.with(ServiceId(id), b));
            let s = Setup { uid, gid, groups: groups.clone(), home: PathBuf::from(home), no_new_privs, settings };
            prop_assert_eq!(Setup::decode(&s.encode()).unwrap(), s);
            let r = Report { uids: [uid, gid, uid], gids: [gid, uid, gid], groups, stray_fds: strays };
            prop_assert_eq!(Report::decode(&r.encode()).unwrap(), r);
        }

        #[test]
        fn arbitrary_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            fuzzing::frames(&data);
            let _ = Setup::decode(&data);
            let _ = Report::decode(&data);
        }
    }
}
