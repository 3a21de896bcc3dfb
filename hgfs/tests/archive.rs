//! Directory archives on real trees in temporary directories: round trips through our packer and
//! unpacker, interoperation with GNU tar both ways, path attacks, damaged streams.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use proptest::prelude::*;
use toolbox_hgfs::archive::{
    parse_archive_name, unpack, ArchiveError, ArchiveFormat, ArchiveQuery, ArchiveReader,
    ArchiveWriter, PackOptions, UnpackOptions, GO_TOOLBOX_TRAILER,
};

/// HGFS moves file data in requests of this size (61 440 bytes, what the VMX asks for).
const HGFS_CHUNK: usize = 61_440;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    File {
        mode: u32,
        mtime: i64,
        data: Vec<u8>,
    },
    Dir {
        mode: u32,
        mtime: i64,
    },
    Link {
        target: PathBuf,
        mtime: i64,
    },
}

/// Everything below `root` that an archive carries, keyed by relative path.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Node>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let relative = path.strip_prefix(root).unwrap().to_path_buf();
            let mode = meta.mode() & 0o7777;
            if meta.file_type().is_symlink() {
                out.insert(
                    relative,
                    Node::Link {
                        target: std::fs::read_link(&path).unwrap(),
                        mtime: meta.mtime(),
                    },
                );
            } else if meta.is_dir() {
                out.insert(
                    relative,
                    Node::Dir {
                        mode,
                        mtime: meta.mtime(),
                    },
                );
                walk(root, &path, out);
            } else {
                out.insert(
                    relative,
                    Node::File {
                        mode,
                        mtime: meta.mtime(),
                        data: std::fs::read(&path).unwrap(),
                    },
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn set_mtime(path: &Path, seconds: i64) {
    let time = rustix::fs::Timespec {
        tv_sec: seconds,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &rustix::fs::Timestamps {
            last_access: time,
            last_modification: time,
        },
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .unwrap();
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A tree with what archives get wrong: special modes, empty and read-only directories, symlinks
/// (relative, absolute, dangling), a hard link, a 120-level chain, names past 100 and 255 bytes.
fn rich_tree(root: &Path) {
    let file = |relative: &str, data: &[u8], mode: u32, mtime: i64| {
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        chmod(&path, mode);
        set_mtime(&path, mtime);
    };
    file("plain.txt", b"hello archive\n", 0o644, 1_600_000_000);
    file("empty", b"", 0o600, 1_600_000_001);
    file("tool", b"#!/bin/sh\necho hi\n", 0o755, 1_600_000_002);
    file("setuid", b"s", 0o4755, 1_600_000_003);
    file("setgid", b"g", 0o2711, 1_600_000_004);
    let big: Vec<u8> = (0..3_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    file("data/big.bin", &big, 0o640, 1_600_000_005);
    // Incompressible content between compressible files: the packer stores such runs.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let random: Vec<u8> = (0..700_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    file("data/random.bin", &random, 0o600, 1_600_000_009);
    file(
        "data/sequel.txt",
        &b"compressible text after random bytes\n".repeat(5000),
        0o644,
        1_600_000_010,
    );
    std::fs::create_dir_all(root.join("empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("sticky")).unwrap();
    chmod(&root.join("sticky"), 0o1777);
    file(
        "readonly/inside.txt",
        b"inside a read-only directory",
        0o444,
        1_600_000_006,
    );
    chmod(&root.join("readonly"), 0o555);
    std::os::unix::fs::symlink("plain.txt", root.join("rel-link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("abs-dangling")).unwrap();
    std::os::unix::fs::symlink("x".repeat(150), root.join("long-target-link")).unwrap();
    std::fs::hard_link(root.join("plain.txt"), root.join("data/hard.txt")).unwrap();
    let mut deep = root.join("deep");
    for level in 0..120 {
        deep.push(format!("l{level}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), b"120 levels down").unwrap();
    set_mtime(&deep.join("bottom.txt"), 1_600_000_011);
    let long_component = "n".repeat(200);
    let long_path = format!(
        "long/{long_component}/{long_component}/{}.txt",
        "f".repeat(120)
    );
    file(
        &long_path,
        b"a path of more than 255 bytes",
        0o644,
        1_600_000_007,
    );
    file(
        &format!("{}.txt", "m".repeat(150)),
        b"a name of more than 100 bytes",
        0o644,
        1_600_000_008,
    );
    // Directory times last: creating their contents moved them.
    for dir in ["empty-dir", "sticky", "readonly", "data", "long", "deep"] {
        set_mtime(&root.join(dir), 1_500_000_000);
    }
    for link in ["rel-link", "abs-dangling", "long-target-link"] {
        set_mtime(&root.join(link), 1_400_000_000);
    }
}

fn pack(dir: &Path, format: ArchiveFormat, trailer: bool) -> Vec<u8> {
    let mut options = PackOptions::new(format);
    options.go_toolbox_trailer = trailer;
    let mut reader = ArchiveReader::open(dir, options).unwrap();
    let mut out = Vec::new();
    let mut chunk = vec![0; HGFS_CHUNK];
    loop {
        let read = reader.read(&mut chunk).unwrap();
        if read == 0 {
            break;
        }
        out.extend_from_slice(&chunk[..read]);
        assert_eq!(reader.position(), out.len() as u64);
    }
    out
}

/// Feeds an archive in HGFS-sized writes, as the server would.
fn unpack_chunked(
    archive: &[u8],
    dir: &Path,
) -> Result<toolbox_hgfs::archive::UnpackSummary, ArchiveError> {
    let mut writer = ArchiveWriter::create(dir, UnpackOptions::default())?;
    for chunk in archive.chunks(HGFS_CHUNK) {
        writer.push(chunk)?;
    }
    writer.finish()
}

fn leftovers(dir: &Path) -> Vec<PathBuf> {
    snapshot(dir)
        .into_keys()
        .filter(|path| path.to_string_lossy().contains(".tbx-unpack"))
        .collect()
}

#[test]
fn tgz_round_trip_keeps_everything() {
    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    let archive = pack(source.path(), ArchiveFormat::TarGzip, false);
    assert_eq!(&archive[..3], &GO_TOOLBOX_TRAILER, "a gzip member");
    let target = tempfile::tempdir().unwrap();
    let summary = unpack_chunked(&archive, target.path()).unwrap();
    assert_eq!(snapshot(source.path()), snapshot(target.path()));
    assert_eq!(summary.hard_links, 1);
    assert!(summary.files >= 9, "{summary:?}");
    let plain = std::fs::metadata(target.path().join("plain.txt")).unwrap();
    let hard = std::fs::metadata(target.path().join("data/hard.txt")).unwrap();
    assert_eq!(plain.ino(), hard.ino(), "hard link kept as a link");
}

#[test]
fn tar_round_trip_keeps_everything() {
    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    let archive = pack(source.path(), ArchiveFormat::Tar, false);
    assert_eq!(archive.len() % 512, 0);
    let target = tempfile::tempdir().unwrap();
    unpack(archive.as_slice(), target.path(), UnpackOptions::default()).unwrap();
    assert_eq!(snapshot(source.path()), snapshot(target.path()));
}

#[test]
fn go_toolbox_trailer_is_appended_and_tolerated() {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("a"), b"a").unwrap();
    for format in [ArchiveFormat::Tar, ArchiveFormat::TarGzip] {
        let archive = pack(source.path(), format, true);
        assert_eq!(&archive[archive.len() - 3..], &GO_TOOLBOX_TRAILER);
        let target = tempfile::tempdir().unwrap();
        unpack_chunked(&archive, target.path()).unwrap();
        assert_eq!(std::fs::read(target.path().join("a")).unwrap(), b"a");
    }
}

#[test]
fn prefix_and_single_file() {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("one.log"), b"log line\n").unwrap();
    let mut options = PackOptions::new(ArchiveFormat::TarGzip);
    options.go_toolbox_trailer = false;
    options.prefix = b"logs/".to_vec();
    let mut archive = Vec::new();
    ArchiveReader::open(&source.path().join("one.log"), options)
        .unwrap()
        .read_to_end(&mut archive)
        .unwrap();
    let target = tempfile::tempdir().unwrap();
    unpack_chunked(&archive, target.path()).unwrap();
    assert_eq!(
        std::fs::read(target.path().join("logs/one.log")).unwrap(),
        b"log line\n"
    );
}

#[test]
fn query_forms() {
    let query = ArchiveQuery::parse("format=tgz&prefix=bar%2F").unwrap();
    assert_eq!(query.format, ArchiveFormat::TarGzip);
    assert_eq!(query.prefix, b"bar/");
    assert_eq!(ArchiveQuery::parse("").unwrap().format, ArchiveFormat::Tar);
    assert_eq!(
        ArchiveQuery::parse("format=tar").unwrap().format,
        ArchiveFormat::Tar
    );
    assert!(matches!(
        ArchiveQuery::parse("format=zip"),
        Err(ArchiveError::UnknownFormat(_))
    ));
    assert!(matches!(
        ArchiveQuery::parse("prefix=%zz"),
        Err(ArchiveError::BadQuery(_))
    ));

    let (path, query) = parse_archive_name("/archive:/var/log%20old?format=tgz&prefix=log%2F")
        .unwrap()
        .unwrap();
    assert_eq!(path, Path::new("/var/log old"));
    assert_eq!(query.format, ArchiveFormat::TarGzip);
    assert_eq!(query.prefix, b"log/");
    let (path, query) = parse_archive_name("archive:/tmp/a+b").unwrap().unwrap();
    assert_eq!(
        (path.as_path(), query.format),
        (Path::new("/tmp/a+b"), ArchiveFormat::Tar)
    );
    assert!(parse_archive_name("/var/log").unwrap().is_none());
    assert!(parse_archive_name("/archive:/x?format=rar").is_err());
}

fn have_gnu_tar() -> bool {
    Command::new("tar")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success())
}

#[test]
fn gnu_tar_reads_our_archive() {
    if !have_gnu_tar() {
        println!("SKIPPED: GNU tar not installed");
        return;
    }
    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("ours.tgz");
    std::fs::write(&file, pack(source.path(), ArchiveFormat::TarGzip, false)).unwrap();
    let listing = Command::new("tar")
        .arg("-tzvf")
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.contains("rwsr-xr-x"), "setuid shown: {listing}");
    assert!(listing.contains("rel-link -> plain.txt"), "{listing}");
    assert!(listing.contains(&"m".repeat(150)), "long name listed");
    let target = work.path().join("gnu-out");
    std::fs::create_dir(&target).unwrap();
    let extract = Command::new("tar")
        .args(["-xzf"])
        .arg(&file)
        .arg("-C")
        .arg(&target)
        .args(["--same-permissions"])
        .output()
        .unwrap();
    assert!(
        extract.status.success(),
        "{}",
        String::from_utf8_lossy(&extract.stderr)
    );
    assert_eq!(snapshot(source.path()), snapshot(&target));
}

#[test]
fn we_read_gnu_tar_archives() {
    if !have_gnu_tar() {
        println!("SKIPPED: GNU tar not installed");
        return;
    }
    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    for format in ["gnu", "pax", "ustar"] {
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("gnu.tgz");
        let mut command = Command::new("tar");
        command
            .arg(format!("--format={format}"))
            .arg("-czf")
            .arg(&file)
            .arg("-C")
            .arg(source.path())
            .arg(".");
        let made = command.output().unwrap();
        if format == "ustar" {
            // ustar cannot hold the 255+ byte names: GNU tar skips them with an error; compare
            // what it did store.
            let target = work.path().join("out");
            std::fs::create_dir(&target).unwrap();
            let error = unpack(
                std::fs::File::open(&file).unwrap(),
                &target,
                UnpackOptions::default(),
            );
            assert!(error.is_ok(), "{error:?}");
            assert!(target.join("deep").exists());
            continue;
        }
        assert!(
            made.status.success(),
            "{format}: {}",
            String::from_utf8_lossy(&made.stderr)
        );
        let target = work.path().join("out");
        std::fs::create_dir(&target).unwrap();
        let bytes = std::fs::read(&file).unwrap();
        unpack_chunked(&bytes, &target).unwrap_or_else(|error| panic!("{format}: {error}"));
        assert_eq!(snapshot(source.path()), snapshot(&target), "{format}");
    }
}

/// A raw GNU header with any name, for archives a well-behaved writer refuses to make.
fn raw_entry(out: &mut Vec<u8>, name: &[u8], kind: tar::EntryType, link: &[u8], data: &[u8]) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(0o644);
    header.set_size(data.len() as u64);
    header.set_mtime(1_600_000_000);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.name[..name.len()].copy_from_slice(name);
    gnu.linkname[..link.len()].copy_from_slice(link);
    header.set_cksum();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
}

fn finish_raw(mut out: Vec<u8>) -> Vec<u8> {
    out.resize(out.len() + 1024, 0);
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Target inside `outer`, so anything escaping it shows up beside it.
fn sandbox() -> (tempfile::TempDir, PathBuf) {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("target");
    std::fs::create_dir(&target).unwrap();
    (outer, target)
}

fn beside(outer: &Path) -> Vec<String> {
    let mut names: Vec<_> = std::fs::read_dir(outer)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn parent_components_are_refused() {
    for name in [&b"../x"[..], b"a/../../x", b"./../x"] {
        let (outer, target) = sandbox();
        let mut tar = Vec::new();
        raw_entry(&mut tar, b"ok.txt", tar::EntryType::Regular, b"", b"fine");
        raw_entry(&mut tar, name, tar::EntryType::Regular, b"", b"escaped");
        let archive = gzip(&finish_raw(tar));
        let error = unpack_chunked(&archive, &target).unwrap_err();
        assert!(matches!(error, ArchiveError::UnsafeEntry { .. }), "{error}");
        assert_eq!(beside(outer.path()), ["target"]);
        assert_eq!(
            std::fs::read(target.join("ok.txt")).unwrap(),
            b"fine",
            "entries before stay"
        );
        assert!(leftovers(&target).is_empty());
    }
}

#[test]
fn absolute_names_are_refused() {
    let (outer, target) = sandbox();
    let victim = outer.path().join("absolute-victim");
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        victim.as_os_str().as_encoded_bytes(),
        tar::EntryType::Regular,
        b"",
        b"x",
    );
    let error = unpack_chunked(&finish_raw(tar), &target).unwrap_err();
    assert!(
        matches!(
            error,
            ArchiveError::UnsafeEntry {
                reason: "absolute path",
                ..
            }
        ),
        "{error}"
    );
    assert!(!victim.exists());
    assert_eq!(beside(outer.path()), ["target"]);
}

#[test]
fn planted_symlink_is_never_written_through() {
    let (outer, target) = sandbox();
    let outside = outer.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        b"link",
        tar::EntryType::Symlink,
        outside.as_os_str().as_encoded_bytes(),
        b"",
    );
    raw_entry(
        &mut tar,
        b"link/file",
        tar::EntryType::Regular,
        b"",
        b"through the link",
    );
    let error = unpack_chunked(&gzip(&finish_raw(tar)), &target).unwrap_err();
    assert!(matches!(error, ArchiveError::UnsafeEntry { .. }), "{error}");
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written outside"
    );
    assert!(std::fs::symlink_metadata(target.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());

    // A symlink that was there before the unpack is no better.
    let (outer, target) = sandbox();
    let outside = outer.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, target.join("pre")).unwrap();
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        b"pre/sub/file",
        tar::EntryType::Regular,
        b"",
        b"x",
    );
    let error = unpack_chunked(&finish_raw(tar), &target).unwrap_err();
    assert!(matches!(error, ArchiveError::UnsafeEntry { .. }), "{error}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
}

#[test]
fn hard_links_must_stay_inside() {
    for link in [
        &b"/etc/shadow"[..],
        b"../outside-file",
        b"sub/../../outside-file",
    ] {
        let (outer, target) = sandbox();
        std::fs::write(outer.path().join("outside-file"), b"secret").unwrap();
        let mut tar = Vec::new();
        raw_entry(&mut tar, b"grab", tar::EntryType::Link, link, b"");
        let error = unpack_chunked(&finish_raw(tar), &target).unwrap_err();
        assert!(matches!(error, ArchiveError::UnsafeEntry { .. }), "{error}");
        assert!(!target.join("grab").exists());
    }
    // Nor through a symlink the archive made.
    let (outer, target) = sandbox();
    std::fs::write(outer.path().join("outside-file"), b"secret").unwrap();
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        b"up",
        tar::EntryType::Symlink,
        outer.path().as_os_str().as_encoded_bytes(),
        b"",
    );
    raw_entry(
        &mut tar,
        b"grab",
        tar::EntryType::Link,
        b"up/outside-file",
        b"",
    );
    let error = unpack_chunked(&finish_raw(tar), &target).unwrap_err();
    assert!(matches!(error, ArchiveError::UnsafeEntry { .. }), "{error}");
    assert!(!target.join("grab").exists());
}

#[test]
fn regular_file_replaces_symlink_of_the_same_name() {
    let (outer, target) = sandbox();
    let victim = outer.path().join("victim");
    std::fs::write(&victim, b"original").unwrap();
    let mut tar = Vec::new();
    raw_entry(
        &mut tar,
        b"same",
        tar::EntryType::Symlink,
        victim.as_os_str().as_encoded_bytes(),
        b"",
    );
    raw_entry(
        &mut tar,
        b"same",
        tar::EntryType::Regular,
        b"",
        b"replacement",
    );
    unpack_chunked(&finish_raw(tar), &target).unwrap();
    assert_eq!(
        std::fs::read(&victim).unwrap(),
        b"original",
        "the link's target untouched"
    );
    let meta = std::fs::symlink_metadata(target.join("same")).unwrap();
    assert!(meta.is_file());
    assert_eq!(std::fs::read(target.join("same")).unwrap(), b"replacement");
}

#[test]
fn old_style_directory_by_trailing_slash() {
    let target = tempfile::tempdir().unwrap();
    let mut tar = Vec::new();
    raw_entry(&mut tar, b"olddir/", tar::EntryType::Regular, b"", b"");
    raw_entry(
        &mut tar,
        b"olddir/f",
        tar::EntryType::Regular,
        b"",
        b"in it",
    );
    unpack_chunked(&finish_raw(tar), target.path()).unwrap();
    assert!(target.path().join("olddir").is_dir());
    assert_eq!(
        std::fs::read(target.path().join("olddir/f")).unwrap(),
        b"in it"
    );
}

fn damaged_fixture() -> (tempfile::TempDir, Vec<u8>) {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("a-small.txt"), b"small").unwrap();
    let big: Vec<u8> = (0..4_000_000u32)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    std::fs::create_dir(source.path().join("z")).unwrap();
    std::fs::write(source.path().join("z/big.bin"), &big).unwrap();
    let archive = pack(source.path(), ArchiveFormat::TarGzip, false);
    (source, archive)
}

#[test]
fn truncated_gzip_stops_cleanly() {
    let (_source, archive) = damaged_fixture();
    for cut in [archive.len() / 2, archive.len() - 4, 5] {
        let target = tempfile::tempdir().unwrap();
        let error = unpack_chunked(&archive[..cut], target.path()).unwrap_err();
        assert!(
            matches!(
                error,
                ArchiveError::Gzip(_) | ArchiveError::Truncated { .. }
            ),
            "{error}"
        );
        assert!(
            leftovers(target.path()).is_empty(),
            "{:?}",
            leftovers(target.path())
        );
        if cut == archive.len() / 2 {
            assert!(!target.path().join("z/big.bin").exists(), "no partial file");
        }
    }
}

#[test]
fn corrupt_gzip_stops_cleanly() {
    let (_source, archive) = damaged_fixture();
    let middle = archive.len() / 2;
    // (byte, xor?): set the region to the byte, or xor it with the byte.
    let damages = [(0xffu8, false), (0x5a, true), (0, false)];
    let mut inflate_failures = 0;
    for (value, xor) in damages {
        let mut corrupt = archive.clone();
        for byte in &mut corrupt[middle..middle + 64] {
            *byte = if xor { *byte ^ value } else { value };
        }
        let target = tempfile::tempdir().unwrap();
        let error = unpack_chunked(&corrupt, target.path()).unwrap_err();
        assert!(
            matches!(error, ArchiveError::Gzip(_) | ArchiveError::Corrupt { .. }),
            "{error}"
        );
        assert!(leftovers(target.path()).is_empty());
        // Damage that still inflates is only caught by the CRC at the end, after the file is in
        // place (documented); damage that breaks inflating must leave no partial file.
        if !error.to_string().contains("checksum") {
            inflate_failures += 1;
            assert!(
                !target.path().join("z/big.bin").exists(),
                "no partial file after: {error}"
            );
        }
    }
    assert!(inflate_failures > 0, "at least one damage breaks inflating");
}

#[test]
fn truncated_and_corrupt_plain_tar_stop_cleanly() {
    let (source, _) = damaged_fixture();
    let archive = pack(source.path(), ArchiveFormat::Tar, false);
    let target = tempfile::tempdir().unwrap();
    let error = unpack_chunked(&archive[..archive.len() / 2], target.path()).unwrap_err();
    assert!(matches!(error, ArchiveError::Truncated { .. }), "{error}");
    assert!(leftovers(target.path()).is_empty());
    assert!(!target.path().join("z/big.bin").exists());

    let mut corrupt = archive.clone();
    corrupt[520] ^= 0xff; // inside the second header? no: the first entry's data; hit a header instead
    corrupt[100] ^= 0x01; // the first header's mode field: checksum no longer matches
    let target = tempfile::tempdir().unwrap();
    let error = unpack_chunked(&corrupt, target.path()).unwrap_err();
    assert!(matches!(error, ArchiveError::Corrupt { .. }), "{error}");
    assert!(snapshot(target.path()).is_empty());

    let target = tempfile::tempdir().unwrap();
    let error = unpack_chunked(&archive[..archive.len() - 1024], target.path()).unwrap_err();
    assert!(
        matches!(error, ArchiveError::Truncated { .. }),
        "no end records: {error}"
    );
}

#[test]
fn oversized_long_name_is_refused_before_buffering() {
    let mut tar = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::GNULongName);
    header.set_size(1 << 40);
    header.as_gnu_mut().unwrap().name[..13].copy_from_slice(b"././@LongLink");
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    let target = tempfile::tempdir().unwrap();
    let error = unpack_chunked(&tar, target.path()).unwrap_err();
    assert!(matches!(error, ArchiveError::Corrupt { .. }), "{error}");
}

#[test]
fn dropped_writer_leaves_no_partial_file() {
    let (_source, archive) = damaged_fixture();
    let target = tempfile::tempdir().unwrap();
    let mut writer = ArchiveWriter::create(target.path(), UnpackOptions::default()).unwrap();
    writer.push(&archive[..archive.len() / 2]).unwrap();
    assert!(
        !leftovers(target.path()).is_empty(),
        "the big file is in progress"
    );
    drop(writer);
    assert!(leftovers(target.path()).is_empty());
    assert!(!target.path().join("z/big.bin").exists());
}

#[test]
fn dropping_the_reader_midway_stops_the_producer() {
    let (source, _) = damaged_fixture();
    let mut reader =
        ArchiveReader::open(source.path(), PackOptions::new(ArchiveFormat::TarGzip)).unwrap();
    let mut chunk = vec![0; HGFS_CHUNK];
    assert!(reader.read(&mut chunk).unwrap() > 0);
    drop(reader);
}

#[derive(Debug, Clone)]
enum Spec {
    File(Vec<u8>, u32),
    Dir(Vec<(String, Spec)>),
    Link(String),
}

fn spec_strategy() -> impl Strategy<Value = Vec<(String, Spec)>> {
    let name = "[a-z]{1,8}";
    let leaf = prop_oneof![
        (
            proptest::collection::vec(any::<u8>(), 0..3000),
            prop_oneof![Just(0o644u32), Just(0o600), Just(0o755), Just(0o4750)]
        )
            .prop_map(|(data, mode)| Spec::File(data, mode)),
        "[a-z./]{1,20}".prop_map(Spec::Link),
    ];
    let node = leaf.prop_recursive(3, 24, 4, move |inner| {
        proptest::collection::btree_map(name, inner, 0..4)
            .prop_map(|map| Spec::Dir(map.into_iter().collect()))
    });
    proptest::collection::btree_map(name, node, 0..6).prop_map(|map| map.into_iter().collect())
}

fn build(dir: &Path, entries: &[(String, Spec)]) {
    for (name, spec) in entries {
        let path = dir.join(name);
        match spec {
            Spec::File(data, mode) => {
                std::fs::write(&path, data).unwrap();
                chmod(&path, *mode);
                set_mtime(&path, 1_000_000_000 + data.len() as i64);
            }
            Spec::Dir(children) => {
                std::fs::create_dir(&path).unwrap();
                build(&path, children);
                set_mtime(&path, 1_234_567_890);
            }
            Spec::Link(target) => std::os::unix::fs::symlink(target, &path).unwrap(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    #[test]
    fn random_trees_round_trip(entries in spec_strategy(), gzip in any::<bool>()) {
        let source = tempfile::tempdir().unwrap();
        build(source.path(), &entries);
        let format = if gzip { ArchiveFormat::TarGzip } else { ArchiveFormat::Tar };
        let archive = pack(source.path(), format, false);
        let target = tempfile::tempdir().unwrap();
        unpack_chunked(&archive, target.path()).unwrap();
        prop_assert_eq!(snapshot(source.path()), snapshot(target.path()));
    }

    #[test]
    fn arbitrary_bytes_never_escape(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        toolbox_hgfs::archive::fuzzing::tar_stream(&data);
    }
}

/// The fuzz target's seeds unpack, and every single-byte damage of them is handled without a
/// panic or a write outside the target (what the fuzzer checks, on a fixed budget here).
#[test]
fn fuzz_seeds_unpack_and_their_mutants_stay_inside() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/tar_stream");
    let mut count = 0;
    for entry in std::fs::read_dir(&seeds).unwrap() {
        let seed = std::fs::read(entry.unwrap().path()).unwrap();
        let target = tempfile::tempdir().unwrap();
        unpack_chunked(&seed, target.path()).unwrap();
        assert_eq!(
            std::fs::read(target.path().join("dir/file.txt")).unwrap(),
            b"hello\n"
        );
        let step = (seed.len() / 200).max(1);
        for at in (0..seed.len().min(2048)).step_by(step) {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut mutant = seed.clone();
                mutant[at] ^= flip;
                toolbox_hgfs::archive::fuzzing::tar_stream(&mutant);
            }
        }
        count += 1;
    }
    assert_eq!(count, 2, "a tar and a tgz seed");
}

/// Go's `compress/gzip` + `archive/tar`, used the way govmomi's toolbox and govc use them (govc
/// drops the toolbox's 3-byte trailer; the toolbox writes with `tar.FileInfoHeader`, PAX for long
/// names, and appends the trailer).
const GO_INTEROP: &str = r#"// Reads a tar.gz the way govmomi's toolbox and govc do (compress/gzip + archive/tar), or writes
// one the way govmomi's archiveWrite does, to check interoperation.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

func main() {
	switch os.Args[1] {
	case "read":
		f, _ := os.Open(os.Args[2])
		var r io.Reader = f
		// govc's archiveReader: stop at a read ending in the gzip header bytes.
		data, _ := io.ReadAll(r)
		if bytes.HasSuffix(data, []byte{0x1f, 0x8b, 0x08}) {
			data = data[:len(data)-3]
		}
		gz, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			panic(err)
		}
		tr := tar.NewReader(gz)
		n, total := 0, int64(0)
		for {
			h, err := tr.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				panic(err)
			}
			c, err := io.Copy(io.Discard, tr)
			if err != nil {
				panic(err)
			}
			n++
			total += c
			if len(os.Args) > 3 {
				fmt.Printf("%c %o %d %s -> %s\n", h.Typeflag, h.Mode, h.Size, h.Name, h.Linkname)
			}
		}
		if _, err := io.Copy(io.Discard, gz); err != nil {
			panic(err)
		}
		fmt.Printf("go read %d entries, %d bytes OK\n", n, total)
	case "write":
		out, _ := os.Create(os.Args[3])
		gz := gzip.NewWriter(out)
		tw := tar.NewWriter(gz)
		dir := os.Args[2]
		filepath.Walk(dir, func(file string, fi os.FileInfo, err error) error {
			name := strings.TrimPrefix(strings.TrimPrefix(file, dir), "/")
			if name == "" {
				return nil
			}
			link := ""
			if fi.Mode()&os.ModeSymlink != 0 {
				link, _ = os.Readlink(file)
			}
			h, _ := tar.FileInfoHeader(fi, link)
			h.Name = name
			if h.Typeflag == tar.TypeDir {
				h.Name += "/"
			}
			tw.WriteHeader(h)
			if h.Typeflag == tar.TypeReg {
				f, _ := os.Open(file)
				io.Copy(tw, f)
				f.Close()
			}
			return nil
		})
		tw.Close()
		gz.Close()
		out.Write([]byte{0x1f, 0x8b, 0x08})
		out.Close()
	}
}
"#;

#[test]
fn go_archive_packages_interoperate() {
    if Command::new("go").arg("version").output().is_err() {
        println!("SKIPPED: Go not installed");
        return;
    }
    let work = tempfile::tempdir().unwrap();
    std::fs::write(work.path().join("main.go"), GO_INTEROP).unwrap();
    std::fs::write(work.path().join("go.mod"), "module gointerop\ngo 1.19\n").unwrap();
    let build = Command::new("go")
        .args(["build", "-o", "gointerop", "."])
        .current_dir(work.path())
        .env("GOFLAGS", "-mod=mod")
        .output()
        .unwrap();
    assert!(
        build.status.success(),
        "{}",
        String::from_utf8_lossy(&build.stderr)
    );
    let tool = work.path().join("gointerop");

    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    let ours = work.path().join("ours.tgz");
    std::fs::write(&ours, pack(source.path(), ArchiveFormat::TarGzip, true)).unwrap();
    let read = Command::new(&tool).arg("read").arg(&ours).output().unwrap();
    assert!(
        read.status.success(),
        "Go reads ours: {}",
        String::from_utf8_lossy(&read.stderr)
    );
    assert!(String::from_utf8_lossy(&read.stdout).contains("OK"));

    let theirs = work.path().join("go.tgz");
    let write = Command::new(&tool)
        .arg("write")
        .arg(source.path())
        .arg(&theirs)
        .output()
        .unwrap();
    assert!(
        write.status.success(),
        "{}",
        String::from_utf8_lossy(&write.stderr)
    );
    let target = tempfile::tempdir().unwrap();
    unpack_chunked(&std::fs::read(&theirs).unwrap(), target.path()).unwrap();
    // Go's writer stores directory times as they were when visited, before their contents:
    // compare what it carries.
    let strip = |tree: BTreeMap<PathBuf, Node>| -> BTreeMap<PathBuf, Node> {
        tree.into_iter()
            .map(|(path, node)| match node {
                Node::Dir { mode, .. } => (path, Node::Dir { mode, mtime: 0 }),
                other => (path, other),
            })
            .collect()
    };
    assert_same_tree(
        &strip(snapshot(source.path())),
        &strip(snapshot(target.path())),
    );
}

/// Names the first difference instead of printing megabytes of file data.
fn assert_same_tree(expected: &BTreeMap<PathBuf, Node>, actual: &BTreeMap<PathBuf, Node>) {
    let brief = |node: Option<&Node>| match node {
        Some(Node::File { mode, mtime, data }) => {
            format!("file {mode:o} {mtime} {} bytes", data.len())
        }
        other => format!("{other:?}"),
    };
    for path in expected.keys().chain(actual.keys()) {
        let (want, got) = (expected.get(path), actual.get(path));
        assert!(
            want == got,
            "{}: expected {}, got {}",
            path.display(),
            brief(want),
            brief(got)
        );
    }
}

/// The server keeps open archives in its handle table and may serve them from any thread.
#[test]
fn archive_handles_can_move_between_threads() {
    fn assert_send<T: Send + 'static>() {}
    assert_send::<ArchiveReader>();
    assert_send::<ArchiveWriter>();
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("f"), b"moved").unwrap();
    let reader =
        ArchiveReader::open(source.path(), PackOptions::new(ArchiveFormat::TarGzip)).unwrap();
    let archive = std::thread::spawn(move || {
        let mut reader = reader;
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        out
    })
    .join()
    .unwrap();
    let target = tempfile::tempdir().unwrap();
    unpack_chunked(&archive, target.path()).unwrap();
    assert_eq!(std::fs::read(target.path().join("f")).unwrap(), b"moved");
}

/// The process umask, read without changing it for longer than the two calls.
fn current_umask() -> u32 {
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
    nix::sys::stat::umask(old);
    old.bits()
}

#[test]
fn a_missing_target_is_created_whole_with_the_default_mode() {
    let source = tempfile::tempdir().unwrap();
    rich_tree(source.path());
    let archive = pack(source.path(), ArchiveFormat::TarGzip, false);
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("new");
    // Our packer writes no root entry: the new directory gets 0755 less the umask.
    unpack_chunked(&archive, &target).unwrap();
    assert_eq!(snapshot(source.path()), snapshot(&target));
    let mode = std::fs::metadata(&target).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755 & !current_umask());
    assert_eq!(beside(outer.path()), ["new"], "no temporary left beside it");
}

#[test]
fn a_missing_target_takes_the_root_entry_of_the_archive() {
    let mut tar = Vec::new();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_path("./").unwrap();
    header.set_mode(0o2750);
    header.set_mtime(1_500_000_000);
    header.set_size(0);
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    raw_entry(
        &mut tar,
        b"./inner/file",
        tar::EntryType::Regular,
        b"",
        b"data",
    );
    let archive = finish_raw(tar);
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("made");
    unpack_chunked(&archive, &target).unwrap();
    let meta = std::fs::metadata(&target).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o2750);
    assert_eq!(meta.mtime(), 1_500_000_000);
    assert_eq!(std::fs::read(target.join("inner/file")).unwrap(), b"data");

    // The same archive into an existing directory leaves that directory's own mode alone.
    let (_outer, existing) = sandbox();
    chmod(&existing, 0o1777);
    unpack_chunked(&archive, &existing).unwrap();
    assert_eq!(
        std::fs::metadata(&existing).unwrap().mode() & 0o7777,
        0o1777
    );
}

#[test]
fn a_failed_unpack_into_a_missing_target_leaves_nothing() {
    let (_source, archive) = damaged_fixture();
    // Truncated, corrupt and unsafe streams, and a writer dropped midway.
    let mut unsafe_tar = Vec::new();
    raw_entry(
        &mut unsafe_tar,
        b"ok.txt",
        tar::EntryType::Regular,
        b"",
        b"fine",
    );
    raw_entry(
        &mut unsafe_tar,
        b"../x",
        tar::EntryType::Regular,
        b"",
        b"out",
    );
    let mut corrupt = archive.clone();
    let middle = corrupt.len() / 2;
    corrupt[middle..middle + 64].fill(0xff);
    for stream in [
        archive[..archive.len() / 2].to_vec(),
        corrupt,
        finish_raw(unsafe_tar),
    ] {
        let outer = tempfile::tempdir().unwrap();
        let target = outer.path().join("new");
        unpack_chunked(&stream, &target).unwrap_err();
        assert_eq!(beside(outer.path()), Vec::<String>::new());
    }
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("new");
    let mut writer = ArchiveWriter::create(&target, UnpackOptions::default()).unwrap();
    writer.push(&archive[..archive.len() / 2]).unwrap();
    assert!(!target.exists(), "not visible before it is complete");
    drop(writer);
    assert_eq!(beside(outer.path()), Vec::<String>::new());
}

#[test]
fn a_directory_that_appears_meanwhile_is_not_replaced() {
    let source = tempfile::tempdir().unwrap();
    std::fs::write(source.path().join("f"), b"ours").unwrap();
    let archive = pack(source.path(), ArchiveFormat::Tar, false);
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("new");
    let mut writer = ArchiveWriter::create(&target, UnpackOptions::default()).unwrap();
    writer.push(&archive).unwrap();
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("theirs"), b"x").unwrap();
    let error = writer.finish().unwrap_err();
    assert!(error.to_string().contains("rename"), "{error}");
    assert_eq!(beside(outer.path()), ["new"]);
    assert_eq!(beside(&target), ["theirs"]);
}

#[test]
fn a_failed_deep_read_only_new_tree_is_removed() {
    // Deeper than any descriptor limit, with read-only directories applied before the end.
    let mut tar = Vec::new();
    let mut path = String::new();
    for _ in 0..3000 {
        path.push_str("d/");
    }
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_mode(0o555);
    header.set_mtime(1_600_000_000);
    header.set_size(0);
    let mut long = Vec::new();
    raw_entry(
        &mut long,
        b"././@LongLink",
        tar::EntryType::GNULongName,
        b"",
        format!("{path}\0").as_bytes(),
    );
    tar.extend_from_slice(&long);
    header.as_gnu_mut().unwrap().name[..2].copy_from_slice(b"d/");
    header.set_cksum();
    tar.extend_from_slice(header.as_bytes());
    raw_entry(&mut tar, b"top.txt", tar::EntryType::Regular, b"", b"x");
    let complete = finish_raw(tar.clone());
    // Truncated (no end records): stopped before any mode was applied.
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("new");
    let error = unpack_chunked(&tar, &target).unwrap_err();
    assert!(matches!(error, ArchiveError::Truncated { .. }), "{error}");
    assert_eq!(beside(outer.path()), Vec::<String>::new());
    // Complete, but the name is taken by the time it ends: the modes are already applied.
    let mut writer = ArchiveWriter::create(&target, UnpackOptions::default()).unwrap();
    writer.push(&complete).unwrap();
    std::fs::create_dir(&target).unwrap();
    writer.finish().unwrap_err();
    assert_eq!(beside(outer.path()), ["new"]);
    assert_eq!(beside(&target), Vec::<String>::new());
}

#[test]
fn a_target_whose_parent_is_missing_is_an_error_that_creates_nothing() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("no/such");
    let error = ArchiveWriter::create(&target, UnpackOptions::default()).unwrap_err();
    assert!(matches!(error, ArchiveError::Io { .. }), "{error}");
    assert_eq!(beside(outer.path()), Vec::<String>::new());
}
