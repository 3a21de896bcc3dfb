//! `http.RoundTrip` against a real HTTP/1.1 server this test runs on the loopback and on a
//! Unix socket: GET, POST with a body, chunked responses, a large body, keep-alive, a dead
//! target (502), a slow one (504), a target the configuration does not allow (403).
//!
//! The server is written on std sockets by hand, so the agent's hyper is checked against an
//! independent implementation.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use toolbox::process::config::HttpConfig;
use toolbox::process::http::{round_trip_function, ROUND_TRIP};
use toolbox::process::{FunctionRegistry, ManagerConfig, ProcessFiles, ProcessManager};
use toolbox::vix::proto::StartProgramRequest;
use toolbox_hgfs::proto::OpenFlags;
use toolbox_hgfs::{Access, FileHandler, OpenIntent};

const LARGE: usize = 8 * 1024 * 1024;

fn serve_connection<S: Read + Write>(stream: S) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, path) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut length = 0usize;
        let mut close = false;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end().to_ascii_lowercase();
            if h.is_empty() {
                break;
            }
            if let Some(v) = h.strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            if h == "connection: close" {
                close = true;
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let out = reader.get_mut();
        let ok = |out: &mut S, body: &[u8]| {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Method: {method}\r\n\r\n",
                body.len()
            );
            out.write_all(head.as_bytes())?;
            out.write_all(body)
        };
        let r = match path.as_str() {
            "/hello" => ok(out, b"hello"),
            "/echo" => ok(out, &body),
            "/large" => ok(out, &vec![b'z'; LARGE]),
            "/chunked" => (|| {
                out.write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")?;
                for part in ["first,", "second,", "third"] {
                    out.write_all(format!("{:x}\r\n{part}\r\n", part.len()).as_bytes())?;
                    out.flush()?;
                }
                out.write_all(b"0\r\n\r\n")
            })(),
            "/slow" => {
                std::thread::sleep(Duration::from_secs(3));
                ok(out, b"late")
            }
            _ => out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
        };
        if r.is_err() || close {
            return;
        }
    }
}

struct Servers {
    tcp: String,
    unix: PathBuf,
    connections: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

fn servers() -> Servers {
    let dir = tempfile::tempdir().unwrap();
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap().to_string();
    let unix_path = dir.path().join("http.sock");
    let unix = UnixListener::bind(&unix_path).unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let c = connections.clone();
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            c.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || serve_connection(s));
        }
    });
    std::thread::spawn(move || {
        for s in unix.incoming().flatten() {
            std::thread::spawn(move || serve_connection(s));
        }
    });
    Servers {
        tcp: addr,
        unix: unix_path,
        connections,
        _dir: dir,
    }
}

fn manager(unix: &Path) -> Arc<ProcessManager> {
    let config = HttpConfig {
        unix_sockets: vec![unix.to_path_buf()],
        timeout_secs: 1,
        ..HttpConfig::default()
    };
    ProcessManager::new(
        ManagerConfig::default(),
        FunctionRegistry::new().with(ROUND_TRIP, round_trip_function(config)),
    )
}

/// Sends `request` through the round trip to `target`; the raw stdout and the exit code.
fn round_trip(m: &Arc<ProcessManager>, target: &str, request: &[u8]) -> (Vec<u8>, i32) {
    let files = ProcessFiles::new(m.clone());
    let pid = m
        .start(&StartProgramRequest {
            start_minimized: false,
            program: ROUND_TRIP.into(),
            arguments: target.into(),
            working_dir: String::new(),
            env: Vec::new(),
        })
        .unwrap();
    let intent = |access| OpenIntent {
        access,
        flags: OpenFlags::OPEN,
        create_mode: None,
    };
    let path = |s: &str| PathBuf::from(format!("/proc/{pid}/{s}"));
    let writer = {
        let files = files.clone();
        let request = request.to_vec();
        let stdin = path("stdin");
        std::thread::spawn(move || {
            let mut f = files.open(&stdin, &intent(Access::Write)).unwrap();
            let mut done = 0;
            while done < request.len() {
                done += f.write_at(None, &request[done..]).unwrap();
            }
            f.close().unwrap();
        })
    };
    let mut out = Vec::new();
    let mut f = files.open(&path("stdout"), &intent(Access::Read)).unwrap();
    let mut buf = vec![0u8; 65536];
    loop {
        match f.read_at(0, &mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("stdout: {e}"),
        }
    }
    writer.join().unwrap();
    let code = m.wait(pid, Duration::from_secs(30)).expect("ended");
    (out, code)
}

/// Splits raw HTTP/1.1 responses: (status, lower-case head, decoded body) each.
fn responses(mut raw: &[u8]) -> Vec<(u16, String, Vec<u8>)> {
    let mut out = Vec::new();
    while !raw.is_empty() {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("end of head");
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        raw = &raw[end + 4..];
        let status: u16 = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        let mut body = Vec::new();
        if head.contains("transfer-encoding: chunked") {
            loop {
                let eol = raw.windows(2).position(|w| w == b"\r\n").unwrap();
                let size =
                    usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap().trim(), 16)
                        .unwrap();
                raw = &raw[eol + 2..];
                if size == 0 {
                    raw = &raw[2..];
                    break;
                }
                body.extend_from_slice(&raw[..size]);
                raw = &raw[size + 2..];
            }
        } else {
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            body.extend_from_slice(&raw[..len]);
            raw = &raw[len..];
        }
        out.push((status, head, body));
    }
    out
}

#[test]
fn get_post_chunked_and_large_over_tcp() {
    let s = servers();
    let m = manager(&s.unix);
    let (raw, code) = round_trip(
        &m,
        &s.tcp,
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let r = responses(&raw);
    assert_eq!(code, 0);
    assert_eq!((r[0].0, r[0].2.as_slice()), (200, &b"hello"[..]));
    assert!(r[0].1.contains("x-method: get"));

    let body = b"posted body \x00 with binary \xff";
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let (raw, code) = round_trip(&m, &s.tcp, &req);
    let r = responses(&raw);
    assert_eq!(code, 0);
    assert_eq!(r[0].2, body);
    assert!(r[0].1.contains("x-method: post"));

    let (raw, _) = round_trip(
        &m,
        &s.tcp,
        b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let r = responses(&raw);
    assert_eq!(r[0].0, 200);
    assert!(r[0].1.contains("transfer-encoding: chunked"));
    assert_eq!(r[0].2, b"first,second,third");

    let (raw, _) = round_trip(
        &m,
        &s.tcp,
        b"GET /large HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    let r = responses(&raw);
    assert_eq!(r[0].2.len(), LARGE);
    assert!(r[0].2.iter().all(|b| *b == b'z'));
}

#[test]
fn keep_alive_reuses_one_connection() {
    let s = servers();
    let m = manager(&s.unix);
    let before = s.connections.load(Ordering::SeqCst);
    let (raw, code) = round_trip(
        &m,
        &s.tcp,
        b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\nPOST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET /hello HTTP/1.1\r\nHost: x\r\n\r\n",
    );
    assert_eq!(code, 0);
    let r = responses(&raw);
    assert_eq!(r.len(), 3, "{}", String::from_utf8_lossy(&raw));
    assert_eq!(r[0].2, b"hello");
    assert_eq!(r[1].2, b"abc");
    assert_eq!(r[2].2, b"hello");
    assert_eq!(s.connections.load(Ordering::SeqCst) - before, 1);
}

#[test]
fn unix_socket_target() {
    let s = servers();
    let m = manager(&s.unix);
    let target = format!("unix:{}", s.unix.display());
    let (raw, code) = round_trip(
        &m,
        &target,
        b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(code, 0);
    assert_eq!(responses(&raw)[0].2, b"hello");
}

#[test]
fn dead_slow_and_forbidden_targets() {
    let s = servers();
    let m = manager(&s.unix);
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let req = b"GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let (raw, code) = round_trip(&m, &dead, req);
    assert_eq!(responses(&raw)[0].0, 502);
    assert_eq!(code, 1);

    let (raw, code) = round_trip(
        &m,
        &s.tcp,
        b"GET /slow HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(responses(&raw)[0].0, 504);
    assert_eq!(code, 1);

    let (raw, code) = round_trip(&m, "192.0.2.1:80", req);
    assert_eq!(responses(&raw)[0].0, 403);
    assert_eq!(code, 1);
    let (raw, _) = round_trip(&m, "unix:/run/not-listed.sock", req);
    assert_eq!(responses(&raw)[0].0, 403);
}
