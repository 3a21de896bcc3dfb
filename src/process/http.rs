//! The `http.RoundTrip` function (govmomi toolbox/process/process.go, `NewRoundTrip`): the
//! host writes HTTP/1.1 requests to the function's standard input, the function forwards
//! each to the target its argument names and writes the responses to standard output.
//!
//! Unlike govmomi, which copies raw bytes to a TCP connection, the requests are parsed with
//! hyper, so limits apply per request: a body above [`HttpConfig::max_request_bytes`] is
//! refused (413), a response body is cut at [`HttpConfig::max_response_bytes`], a target that
//! cannot be reached answers 502 and one that does not answer in time 504. Targets: `IP:port`
//! on the loopback (`allow_loopback`; `localhost:port` is 127.0.0.1), `IP:port` listed in
//! `allow_hosts`, and `unix:/path` for a socket listed in `unix_sockets`; anything else, a
//! host name included (never resolved), is 403. Several requests
//! in a row (keep-alive, pipelining) reuse one connection to the target.
//!
//! It runs on the function's thread in a current-thread tokio runtime of its own, so nothing
//! of it touches the agent's loop.

use super::config::HttpConfig;
use super::functions::FunctionContext;
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::unix::pipe;
use tokio::sync::Mutex;

/// The program name that starts the round trip.
pub const ROUND_TRIP: &str = "http.RoundTrip";

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Body = BoxBody<Bytes, BoxError>;

/// Where requests go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A TCP address.
    Tcp(SocketAddr),
    /// A Unix socket.
    Unix(PathBuf),
}

/// Why a target is refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    /// Not `host:port` or `unix:/path`.
    #[error("target {0:?} is neither host:port nor unix:/path")]
    Malformed(String),
    /// Not allowed by `[process.http]`.
    #[error("target {0:?} is not allowed by [process.http]")]
    NotAllowed(String),
    /// A host name: targets are addresses (`localhost` aside), never resolved.
    #[error("target {0:?} names a host; give an address (names are not resolved)")]
    NotAnAddress(String),
}

/// Checks the function's argument against the configuration.
pub fn resolve_target(arg: &str, config: &HttpConfig) -> Result<Target, TargetError> {
    let arg = arg.trim();
    if let Some(path) = arg.strip_prefix("unix:") {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(TargetError::Malformed(arg.to_string()));
        }
        return if config.unix_sockets.contains(&path) {
            Ok(Target::Unix(path))
        } else {
            Err(TargetError::NotAllowed(arg.to_string()))
        };
    }
    // Addresses only: a name other than localhost is not resolved, so what the configuration
    // allows is exactly what is reached (no DNS answer can move a target), and the static
    // binary carries no resolver.
    let addr = match arg.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            let Some((host, port)) = arg.rsplit_once(':') else {
                return Err(TargetError::Malformed(arg.to_string()));
            };
            let Ok(port) = port.parse::<u16>() else {
                return Err(TargetError::Malformed(arg.to_string()));
            };
            if !host.eq_ignore_ascii_case("localhost") {
                return Err(TargetError::NotAnAddress(arg.to_string()));
            }
            // localhost is pinned to the loopback address rather than resolved.
            SocketAddr::from(([127, 0, 0, 1], port))
        }
    };
    let listed = config
        .allow_hosts
        .iter()
        .any(|h| h.parse::<SocketAddr>() == Ok(addr));
    if listed || (config.allow_loopback && addr.ip().is_loopback()) {
        Ok(Target::Tcp(addr))
    } else {
        Err(TargetError::NotAllowed(arg.to_string()))
    }
}

/// Standard input and output as one duplex stream for hyper.
struct Stdio {
    rx: pipe::Receiver,
    tx: pipe::Sender,
}

impl AsyncRead for Stdio {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.rx).poll_read(cx, buf)
    }
}

impl AsyncWrite for Stdio {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.tx).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tx).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.tx).poll_shutdown(cx)
    }
}

fn plain(status: StatusCode, message: String) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(message + "\n"))
            .map_err(|never| match never {})
            .boxed(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

struct Forwarder {
    target: Result<Target, TargetError>,
    config: HttpConfig,
    upstream: Mutex<Option<hyper::client::conn::http1::SendRequest<Body>>>,
    failed: AtomicBool,
}

enum Failure {
    Unreachable(String),
    TimedOut(String),
}

impl Forwarder {
    async fn connect(
        &self,
        target: &Target,
    ) -> Result<hyper::client::conn::http1::SendRequest<Body>, Failure> {
        let limit = self.config.connect_timeout();
        macro_rules! handshake {
            ($stream:expr) => {{
                let io = TokioIo::new($stream);
                let (sender, conn) = hyper::client::conn::http1::handshake(io)
                    .await
                    .map_err(|e| Failure::Unreachable(format!("handshake: {e}")))?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                sender
            }};
        }
        Ok(match target {
            Target::Tcp(addr) => {
                let stream = tokio::time::timeout(limit, tokio::net::TcpStream::connect(addr))
                    .await
                    .map_err(|_| Failure::TimedOut(format!("connecting to {addr}")))?
                    .map_err(|e| Failure::Unreachable(format!("connecting to {addr}: {e}")))?;
                let _ = stream.set_nodelay(true);
                handshake!(stream)
            }
            Target::Unix(path) => {
                let stream = tokio::time::timeout(limit, tokio::net::UnixStream::connect(path))
                    .await
                    .map_err(|_| Failure::TimedOut(format!("connecting to {}", path.display())))?
                    .map_err(|e| {
                        Failure::Unreachable(format!("connecting to {}: {e}", path.display()))
                    })?;
                handshake!(stream)
            }
        })
    }

    async fn forward(&self, req: Request<Incoming>) -> Response<Body> {
        let target = match &self.target {
            Ok(t) => t.clone(),
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                return plain(StatusCode::FORBIDDEN, e.to_string());
            }
        };
        let declared = req
            .headers()
            .get(hyper::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.config.max_request_bytes) {
            self.failed.store(true, Ordering::Relaxed);
            return plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body above {} bytes", self.config.max_request_bytes),
            );
        }
        let (mut parts, body) = req.into_parts();
        // Origin form towards the target, whatever form the host used.
        if parts.uri.scheme().is_some() {
            if let Some(pq) = parts.uri.path_and_query() {
                if let Ok(uri) = pq.as_str().parse() {
                    parts.uri = uri;
                }
            }
        }
        let limit = usize::try_from(self.config.max_request_bytes).unwrap_or(usize::MAX);
        let body: Body = Limited::new(body, limit).boxed();
        let req = Request::from_parts(parts, body);
        match self.send(&target, req).await {
            Ok(resp) => {
                let limit = usize::try_from(self.config.max_response_bytes).unwrap_or(usize::MAX);
                resp.map(|b| Limited::new(b, limit).boxed())
            }
            Err(Failure::Unreachable(why)) => {
                self.failed.store(true, Ordering::Relaxed);
                plain(StatusCode::BAD_GATEWAY, why)
            }
            Err(Failure::TimedOut(why)) => {
                self.failed.store(true, Ordering::Relaxed);
                plain(StatusCode::GATEWAY_TIMEOUT, why)
            }
        }
    }

    async fn send(
        &self,
        target: &Target,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, Failure> {
        let mut upstream = self.upstream.lock().await;
        let reusable = match upstream.as_mut() {
            Some(s) => !s.is_closed() && s.ready().await.is_ok(),
            None => false,
        };
        if !reusable {
            *upstream = Some(self.connect(target).await?);
        }
        let Some(sender) = upstream.as_mut() else {
            return Err(Failure::Unreachable("no connection".into()));
        };
        match tokio::time::timeout(self.config.timeout(), sender.send_request(req)).await {
            Err(_) => {
                *upstream = None;
                Err(Failure::TimedOut(format!(
                    "no response within {} s",
                    self.config.timeout_secs
                )))
            }
            Ok(Err(e)) => {
                *upstream = None;
                Err(Failure::Unreachable(format!("request failed: {e}")))
            }
            Ok(Ok(resp)) => Ok(resp),
        }
    }
}

/// Runs the round trip on `ctx`'s streams; the function's exit code (0: every request got
/// its target's response; 1: some got a 4xx/5xx of the agent's own or the stream broke).
pub fn round_trip(ctx: FunctionContext, config: &HttpConfig) -> i32 {
    let FunctionContext {
        arguments,
        stdin,
        stdout,
        mut stderr,
        mut cancel,
        ..
    } = ctx;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(stderr, "http.RoundTrip: runtime: {e}");
            return 1;
        }
    };
    let target = resolve_target(&arguments, config);
    if let Err(e) = &target {
        let _ = writeln!(stderr, "http.RoundTrip: {e}");
    }
    let forwarder = Arc::new(Forwarder {
        target,
        config: config.clone(),
        upstream: Mutex::new(None),
        failed: AtomicBool::new(false),
    });
    let outcome = runtime.block_on(async {
        let io = Stdio {
            rx: pipe::Receiver::from_file(stdin)?,
            tx: pipe::Sender::from_file(stdout)?,
        };
        let f = forwarder.clone();
        let service = hyper::service::service_fn(move |req| {
            let f = f.clone();
            async move { Ok::<_, std::convert::Infallible>(f.forward(req).await) }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .half_close(true)
            .serve_connection(TokioIo::new(io), service);
        tokio::select! {
            r = conn => r.map_err(std::io::Error::other),
            () = cancel.cancelled() => Err(std::io::Error::other("killed")),
        }
    });
    match outcome {
        Ok(()) if !forwarder.failed.load(Ordering::Relaxed) => 0,
        Ok(()) => 1,
        Err(e) => {
            let _ = writeln!(stderr, "http.RoundTrip: {e}");
            1
        }
    }
}

/// The registry entry: `registry.with(ROUND_TRIP, round_trip_function(config))`.
pub fn round_trip_function(config: HttpConfig) -> impl Fn(FunctionContext) -> i32 + Send + Sync {
    move |ctx| round_trip(ctx, &config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_follow_the_configuration() {
        let tcp = |a: &str| Ok(Target::Tcp(a.parse().unwrap()));
        let mut c = HttpConfig::default();
        assert_eq!(resolve_target("127.0.0.1:80", &c), tcp("127.0.0.1:80"));
        assert_eq!(resolve_target("localhost:8080", &c), tcp("127.0.0.1:8080"));
        assert_eq!(resolve_target("LocalHost:8080", &c), tcp("127.0.0.1:8080"));
        assert_eq!(resolve_target("[::1]:80", &c), tcp("[::1]:80"));
        assert!(matches!(
            resolve_target("10.0.0.1:80", &c),
            Err(TargetError::NotAllowed(_))
        ));
        assert!(matches!(
            resolve_target("unix:/run/docker.sock", &c),
            Err(TargetError::NotAllowed(_))
        ));
        assert!(matches!(
            resolve_target("nonsense", &c),
            Err(TargetError::Malformed(_))
        ));
        assert!(matches!(
            resolve_target("localhost:99999", &c),
            Err(TargetError::Malformed(_))
        ));
        c.unix_sockets.push("/run/docker.sock".into());
        c.allow_hosts.push("10.0.0.1:80".into());
        c.allow_hosts.push("db.internal:5432".into());
        c.allow_loopback = false;
        assert_eq!(
            resolve_target("unix:/run/docker.sock", &c),
            Ok(Target::Unix("/run/docker.sock".into()))
        );
        assert_eq!(resolve_target("10.0.0.1:80", &c), tcp("10.0.0.1:80"));
        assert!(matches!(
            resolve_target("db.internal:5432", &c),
            Err(TargetError::NotAnAddress(_))
        ));
        assert!(resolve_target("127.0.0.1:80", &c).is_err());
    }
}
