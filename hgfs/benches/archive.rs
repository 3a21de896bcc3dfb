//! Directory archive figures (a benchmark, not a test): `cargo bench -p toolbox-hgfs --bench archive`.
//!
//! The tree: `TOOLBOX_BENCH_TREE=DIR` (an existing tree), or `GEN_TREE=PATH` to the project's
//! shared tree generator (a Python script, run into a temporary directory). Prints, each beside
//! GNU tar in the same run:
//! * tar.gz download: input MB/s of our packer read in 61 440-byte chunks (the HGFS request size)
//!   and of `tar -czf`, and the size of our output over theirs;
//! * unpack: MB/s of compressed input for our unpacker fed in 61 440-byte writes and for
//!   `tar -xzf`, both on the archive GNU tar made;
//! * the CPU seconds (user + system) each side spent per run, which the machine's load distorts
//!   less than wall time;
//! * the peak RSS of our side (each run is a child process; its VmHWM).
//!
//! Outputs of all rounds are kept until the end: deleting 200 MiB between rounds makes the next
//! round's file creation wait on the file system's discards.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use toolbox_hgfs::archive::{
    ArchiveFormat, ArchiveReader, ArchiveWriter, PackOptions, UnpackOptions,
};

const HGFS_CHUNK: usize = 61_440;
const ROUNDS: usize = 3;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("child-pack") => return child_pack(&args[2..]),
        Some("child-unpack") => return child_unpack(&args[2..]),
        _ => {}
    }
    let scratch = tempfile::tempdir().expect("temporary directory");
    let Some(tree) = bench_tree(scratch.path()) else {
        println!(
            "SKIPPED: archive bench needs a tree: set TOOLBOX_BENCH_TREE=DIR, or GEN_TREE=PATH to the \
             tree generator script (run with python3 into a temporary directory)"
        );
        return;
    };
    let input_bytes = tree_bytes(&tree);
    println!(
        "tree {}: {:.1} MiB in regular files; {ROUNDS} rounds, best and median shown",
        tree.display(),
        input_bytes as f64 / (1 << 20) as f64
    );

    let gnu_archive = scratch.path().join("gnu.tgz");
    let ours_archive = scratch.path().join("ours.tgz");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut pack_lines = Vec::new();
    let mut gnu_pack = Vec::new();
    let mut gnu_pack_cpu = Vec::new();
    let mut ours_pack: Vec<(usize, Vec<Duration>, u64, Vec<f64>)> = Vec::new();
    let worker_counts: Vec<usize> = if cores > 1 {
        vec![1, cores.min(4)]
    } else {
        vec![1]
    };
    for _ in 0..ROUNDS {
        let (start, cpu) = (Instant::now(), children_cpu());
        let status = Command::new("tar")
            .arg("-czf")
            .arg(&gnu_archive)
            .arg("-C")
            .arg(&tree)
            .arg(".")
            .status()
            .expect("run GNU tar");
        assert!(status.success(), "tar -czf failed");
        gnu_pack.push(start.elapsed());
        gnu_pack_cpu.push(children_cpu() - cpu);
        for &workers in &worker_counts {
            let cpu = children_cpu();
            let (elapsed, rss) = run_child(&[
                "child-pack",
                &tree.to_string_lossy(),
                &ours_archive.to_string_lossy(),
                &workers.to_string(),
            ]);
            let used = children_cpu() - cpu;
            match ours_pack.iter_mut().find(|(w, ..)| *w == workers) {
                Some((_, times, peak, cpus)) => {
                    times.push(elapsed);
                    *peak = (*peak).max(rss);
                    cpus.push(used);
                }
                None => ours_pack.push((workers, vec![elapsed], rss, vec![used])),
            }
        }
    }
    let gnu_size = std::fs::metadata(&gnu_archive)
        .map(|m| m.len())
        .unwrap_or(0);
    let ours_size = std::fs::metadata(&ours_archive)
        .map(|m| m.len())
        .unwrap_or(0);
    let (gnu_best, gnu_median) = rates(input_bytes, &gnu_pack);
    pack_lines.push(format!(
        "tar.gz download  GNU tar -czf:              best {gnu_best:7.1} MB/s  median {gnu_median:7.1} MB/s  \
         CPU {:5.2} s  {gnu_size} bytes",
        median_of(&gnu_pack_cpu)
    ));
    for (workers, times, rss, cpus) in &ours_pack {
        let (best, median) = rates(input_bytes, times);
        pack_lines.push(format!(
            "tar.gz download  ours, {workers} deflate worker(s):  best {best:7.1} MB/s  median {median:7.1} MB/s  \
             CPU {:5.2} s  ({:.2}x GNU by median)  peak RSS {:.1} MB",
            median_of(cpus),
            median / gnu_median,
            *rss as f64 / 1e6
        ));
    }
    pack_lines.push(format!(
        "tar.gz size      ours {ours_size} bytes = {:.3}x GNU tar -czf",
        ours_size as f64 / gnu_size as f64
    ));
    for line in &pack_lines {
        println!("{line}");
    }

    let compressed = gnu_size;
    let mut gnu_unpack = Vec::new();
    let mut ours_unpack = Vec::new();
    let (mut gnu_unpack_cpu, mut ours_unpack_cpu) = (Vec::new(), Vec::new());
    let mut unpack_rss = 0;
    for round in 0..ROUNDS {
        let gnu_dir = scratch.path().join(format!("gnu-out-{round}"));
        std::fs::create_dir(&gnu_dir).expect("mkdir");
        let (start, cpu) = (Instant::now(), children_cpu());
        let status = Command::new("tar")
            .arg("-xzf")
            .arg(&gnu_archive)
            .arg("-C")
            .arg(&gnu_dir)
            .status()
            .expect("run GNU tar");
        assert!(status.success(), "tar -xzf failed");
        gnu_unpack.push(start.elapsed());
        gnu_unpack_cpu.push(children_cpu() - cpu);

        let ours_dir = scratch.path().join(format!("ours-out-{round}"));
        std::fs::create_dir(&ours_dir).expect("mkdir");
        let cpu = children_cpu();
        let (elapsed, rss) = run_child(&[
            "child-unpack",
            &gnu_archive.to_string_lossy(),
            &ours_dir.to_string_lossy(),
        ]);
        ours_unpack.push(elapsed);
        ours_unpack_cpu.push(children_cpu() - cpu);
        unpack_rss = unpack_rss.max(rss);
        if round + 1 == ROUNDS {
            assert_eq!(
                tree_bytes(&ours_dir),
                input_bytes,
                "our unpack restored every byte"
            );
        }
    }
    let (gnu_best, gnu_median) = rates(compressed, &gnu_unpack);
    let (best, median) = rates(compressed, &ours_unpack);
    println!(
        "unpack (compressed input)  GNU tar -xzf:  best {gnu_best:7.1} MB/s  median {gnu_median:7.1} MB/s  CPU {:5.2} s",
        median_of(&gnu_unpack_cpu)
    );
    println!(
        "unpack (compressed input)  ours:          best {best:7.1} MB/s  median {median:7.1} MB/s  \
         CPU {:5.2} s  ({:.2}x GNU by median)  peak RSS {:.1} MB",
        median_of(&ours_unpack_cpu),
        median / gnu_median,
        unpack_rss as f64 / 1e6
    );
}

fn bench_tree(scratch: &Path) -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("TOOLBOX_BENCH_TREE") {
        return Some(PathBuf::from(dir));
    }
    let generator = std::env::var_os("GEN_TREE")?;
    let tree = scratch.join("tree");
    let status = Command::new("python3")
        .arg(&generator)
        .arg(&tree)
        .status()
        .expect("run python3");
    assert!(status.success(), "tree generator failed");
    Some(tree)
}

fn tree_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).expect("read tree") {
        let entry = entry.expect("tree entry");
        let meta = entry.path().symlink_metadata().expect("stat");
        if meta.is_dir() {
            total += tree_bytes(&entry.path());
        } else if meta.is_file() {
            total += meta.len();
        }
    }
    total
}

/// User + system seconds of the children waited for so far (fields cutime and cstime of
/// /proc/self/stat, in clock ticks of 1/100 s: the kernel's USER_HZ on Linux).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name in parentheses, which may itself contain spaces.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let ticks = |index: usize| {
        fields
            .get(index)
            .and_then(|field| field.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // cutime and cstime are fields 16 and 17 of the line: the 14th and 15th after the name.
    (ticks(13) + ticks(14)) / 100.0
}

fn median_of(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

/// (best, median) in MB/s.
fn rates(bytes: u64, times: &[Duration]) -> (f64, f64) {
    let mut sorted: Vec<f64> = times
        .iter()
        .map(|time| bytes as f64 / time.as_secs_f64() / 1e6)
        .collect();
    sorted.sort_by(f64::total_cmp);
    (sorted[sorted.len() - 1], sorted[sorted.len() / 2])
}

/// Runs this binary as a child; returns its wall time and peak RSS in bytes.
fn run_child(args: &[&str]) -> (Duration, u64) {
    let exe = std::env::current_exe().expect("own path");
    let start = Instant::now();
    let out = Command::new(exe).args(args).output().expect("run child");
    let elapsed = start.elapsed();
    assert!(
        out.status.success(),
        "child {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let rss_kib: u64 = text
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    (elapsed, rss_kib * 1024)
}

fn print_peak_rss() {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(line) = status.lines().find(|line| line.starts_with("VmHWM:")) {
        println!("{line}");
    }
}

fn child_pack(args: &[String]) {
    let mut options = PackOptions::new(ArchiveFormat::TarGzip);
    options.workers = args[2].parse().expect("workers");
    options.go_toolbox_trailer = false;
    let mut reader = ArchiveReader::open(Path::new(&args[0]), options).expect("open tree");
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&args[1]).expect("create"),
    );
    let mut chunk = vec![0; HGFS_CHUNK];
    loop {
        let read = reader.read(&mut chunk).expect("read archive");
        if read == 0 {
            break;
        }
        out.write_all(&chunk[..read]).expect("write");
    }
    out.flush().expect("flush");
    print_peak_rss();
}

fn child_unpack(args: &[String]) {
    let mut input = std::fs::File::open(&args[0]).expect("open archive");
    let mut writer =
        ArchiveWriter::create(Path::new(&args[1]), UnpackOptions::default()).expect("target");
    let mut chunk = vec![0; HGFS_CHUNK];
    loop {
        let read = input.read(&mut chunk).expect("read archive");
        if read == 0 {
            break;
        }
        writer.push(&chunk[..read]).expect("unpack");
    }
    writer.finish().expect("finish");
    print_peak_rss();
}
