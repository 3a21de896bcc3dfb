//! Guest-process figures, each beside a same-run reference:
//! StartProgram → exit of /bin/true (reference: std spawn of /bin/true, and of sh -c),
//! ListProcessesEx over many processes (time, reply size; reference: `ps -eo pid,user,args`),
//! process-I/O throughput through the HGFS file handler (reference: reading the pipe directly),
//! HTTP round trips per second and bytes per second (reference: direct requests to the same
//! server over a kept-alive connection).
//!
//! `PROCESS_BENCH_PROCS` sets how many extra processes the listing runs over (default 2000).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use toolbox::process::config::HttpConfig;
use toolbox::process::http::{round_trip_function, ROUND_TRIP};
use toolbox::process::{proclist, FunctionRegistry, ManagerConfig, ProcessFiles, ProcessManager};
use toolbox::vix::proto::{ListProcessesRequest, StartProgramRequest, MAX_RESULT_SIZE};
use toolbox_hgfs::proto::OpenFlags;
use toolbox_hgfs::{Access, FileHandler, OpenIntent};

const BODY: usize = 8 * 1024 * 1024;

fn req(program: &str, arguments: &str) -> StartProgramRequest {
    StartProgramRequest {
        start_minimized: false,
        program: program.into(),
        arguments: arguments.into(),
        working_dir: String::new(),
        env: Vec::new(),
    }
}

fn per_op(d: Duration, n: usize) -> String {
    format!("{:8.1} µs/op", d.as_secs_f64() * 1e6 / n as f64)
}

fn serve<S: Read + Write>(stream: S) {
    let mut r = BufReader::new(stream);
    let big = vec![b'z'; BODY];
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h.trim().is_empty() {
                break;
            }
        }
        let body: &[u8] = if path == "/large" { &big } else { b"hello" };
        let out = r.get_mut();
        // One write per response: a head and a body in separate segments would wait on
        // the peer's delayed ACK.
        let mut response =
            format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        response.extend_from_slice(body);
        if out.write_all(&response).is_err() {
            return;
        }
    }
}

fn read_response(r: &mut BufReader<TcpStream>) -> usize {
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        let h = h.trim().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).unwrap();
    len
}

fn drain(files: &ProcessFiles, pid: i64, buf_size: usize) -> usize {
    let intent = OpenIntent {
        access: Access::Read,
        flags: OpenFlags::OPEN,
        create_mode: None,
    };
    let mut f = files
        .open(&PathBuf::from(format!("/proc/{pid}/stdout")), &intent)
        .unwrap();
    let mut buf = vec![0u8; buf_size];
    let mut total = 0;
    loop {
        match f.read_at(0, &mut buf) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
    }
    total
}

fn round_trip(m: &Arc<ProcessManager>, target: &str, request: &[u8]) -> usize {
    let files = ProcessFiles::new(m.clone());
    let pid = m.start(&req(ROUND_TRIP, target)).unwrap();
    let intent = OpenIntent {
        access: Access::Write,
        flags: OpenFlags::OPEN,
        create_mode: None,
    };
    let mut stdin = files
        .open(&PathBuf::from(format!("/proc/{pid}/stdin")), &intent)
        .unwrap();
    let mut done = 0;
    while done < request.len() {
        done += stdin.write_at(None, &request[done..]).unwrap();
    }
    stdin.close().unwrap();
    let n = drain(&files, pid, 522_240);
    m.wait(pid, Duration::from_secs(30)).unwrap();
    n
}

fn main() {
    let manager = ProcessManager::new(
        ManagerConfig::default(),
        FunctionRegistry::new().with(ROUND_TRIP, round_trip_function(HttpConfig::default())),
    );

    // StartProgram to exit.
    const STARTS: usize = 300;
    let t = Instant::now();
    for _ in 0..STARTS {
        let pid = manager.start(&req("/bin/true", "")).unwrap();
        manager.wait(pid, Duration::from_secs(10)).unwrap();
    }
    let ours = t.elapsed();
    let t = Instant::now();
    for _ in 0..STARTS {
        std::process::Command::new("/bin/true").status().unwrap();
    }
    let direct = t.elapsed();
    let t = Instant::now();
    for _ in 0..STARTS {
        std::process::Command::new("/bin/sh")
            .args(["-c", "'/bin/true'"])
            .status()
            .unwrap();
    }
    let shell = t.elapsed();
    println!(
        "StartProgram→exit /bin/true: {}   (std spawn /bin/true {}, std spawn sh -c {})",
        per_op(ours, STARTS),
        per_op(direct, STARTS),
        per_op(shell, STARTS)
    );

    // ListProcessesEx over many processes.
    let extra: usize = std::env::var("PROCESS_BENCH_PROCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let mut sleepers: Vec<std::process::Child> = (0..extra)
        .filter_map(|_| std::process::Command::new("sleep").arg("600").spawn().ok())
        .collect();
    let count = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|s| s.parse::<u32>().is_ok())
        })
        .count();
    let mut cache = proclist::ListingCache::new();
    let t = Instant::now();
    let mut bytes = 0;
    let mut chunks = 0;
    let mut key = 0;
    let mut offset = 0u32;
    loop {
        let reply = proclist::list_processes(
            &mut cache,
            &manager,
            &ListProcessesRequest {
                key,
                offset,
                pids: Vec::new(),
            },
            MAX_RESULT_SIZE,
        )
        .unwrap();
        chunks += 1;
        bytes += reply.len();
        let c = toolbox::vix::client::parse_process_chunk(&reply).unwrap();
        if let Some(k) = c.key {
            key = k;
        }
        offset += c.data.len() as u32;
        if c.left_to_send.unwrap_or(0) == 0 {
            break;
        }
    }
    let listing = t.elapsed();
    let t = Instant::now();
    let ps = std::process::Command::new("ps")
        .args(["-eo", "pid,user,lstart,args"])
        .output();
    let ps_time = t.elapsed();
    println!(
        "ListProcessesEx of {count} processes: {:.1} ms, {bytes} bytes in {chunks} replies   (ps -eo pid,user,lstart,args {})",
        listing.as_secs_f64() * 1e3,
        match ps {
            Ok(o) => format!("{:.1} ms, {} bytes", ps_time.as_secs_f64() * 1e3, o.stdout.len()),
            Err(e) => format!("unavailable: {e}"),
        }
    );
    for s in &mut sleepers {
        let _ = s.kill();
    }
    for mut s in sleepers {
        let _ = s.wait();
    }

    // Process I/O.
    const IO_BYTES: usize = 512 * 1024 * 1024;
    let files = ProcessFiles::new(manager.clone());
    let t = Instant::now();
    let pid = manager
        .start(&req("head", &format!("-c {IO_BYTES} /dev/zero")))
        .unwrap();
    let got = drain(&files, pid, 522_240);
    let ours = t.elapsed();
    assert_eq!(got, IO_BYTES);
    let t = Instant::now();
    let mut child = std::process::Command::new("head")
        .args(["-c", &IO_BYTES.to_string(), "/dev/zero"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 522_240];
    let mut total = 0;
    loop {
        let n = out.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n;
    }
    child.wait().unwrap();
    let direct = t.elapsed();
    assert_eq!(total, IO_BYTES);
    let mbs = |d: Duration| IO_BYTES as f64 / d.as_secs_f64() / 1e6;
    println!(
        "process I/O (stdout, 522240-byte reads): {:.0} MB/s   (direct pipe read {:.0} MB/s)",
        mbs(ours),
        mbs(direct)
    );

    // HTTP.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = s.set_nodelay(true);
            std::thread::spawn(move || serve(s));
        }
    });
    const ONE_SHOT: usize = 100;
    let get = b"GET /hello HTTP/1.1\r\nHost: b\r\n\r\n";
    let t = Instant::now();
    for _ in 0..ONE_SHOT {
        round_trip(&manager, &addr, get);
    }
    let one_shot = t.elapsed();
    const PIPELINED: usize = 1000;
    let many: Vec<u8> = get.repeat(PIPELINED);
    let t = Instant::now();
    round_trip(&manager, &addr, &many);
    let pipelined = t.elapsed();
    let t = Instant::now();
    let stream = TcpStream::connect(&addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut w = stream;
    for _ in 0..PIPELINED {
        w.write_all(get).unwrap();
        read_response(&mut reader);
    }
    let direct = t.elapsed();
    let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64();
    println!(
        "HTTP round trips: {:.0}/s one request per function, {:.0}/s kept alive   (direct kept-alive {:.0}/s)",
        rate(ONE_SHOT, one_shot),
        rate(PIPELINED, pipelined),
        rate(PIPELINED, direct)
    );
    const LARGE_ROUNDS: usize = 8;
    let large = b"GET /large HTTP/1.1\r\nHost: b\r\n\r\n".repeat(LARGE_ROUNDS);
    let t = Instant::now();
    let n = round_trip(&manager, &addr, &large);
    let ours = t.elapsed();
    let t = Instant::now();
    let mut got = 0;
    for _ in 0..LARGE_ROUNDS {
        w.write_all(b"GET /large HTTP/1.1\r\nHost: b\r\n\r\n")
            .unwrap();
        got += read_response(&mut reader);
    }
    let direct = t.elapsed();
    println!(
        "HTTP bytes: {:.0} MB/s through the round trip   (direct {:.0} MB/s)",
        n as f64 / ours.as_secs_f64() / 1e6,
        got as f64 / direct.as_secs_f64() / 1e6
    );
}
