//! The listener: plain HTTP on loopback, or TLS (rustls) anywhere; hyper HTTP/1.1 with a
//! header read timeout (slowloris), a TLS handshake timeout, a bound on open connections in
//! all and per client address, half-closed sockets still answered, hyper's own answers to
//! unparseable requests turned into JSON, and graceful shutdown that lets requests in flight
//! finish.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::extract::Peer;

/// Time a client has to send a request's headers (also an idle keep-alive's limit).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (request line and headers) read. Hyper itself refuses a URI over
/// 64 KiB with 414; the head may be a little larger, so that such a URI is read whole and gets
/// its (JSON) answer instead of a reset. Hyper refuses more than 100 headers with 431.
pub const MAX_HEAD: usize = 72 * 1024;
/// Time requests in flight get to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How many connections are served at once, in all and per client address.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Peers exempt from the per-address bound: trusted proxies carry many clients.
    pub exempt: Vec<IpNet>,
}

impl Limits {
    pub fn from_config(server: &crate::config::ServerConfig) -> Self {
        Limits {
            max_connections: server.max_connections,
            // More than max_connections per address would never bind: cap it there.
            max_connections_per_ip: server.max_connections_per_ip.min(server.max_connections),
            exempt: server.trusted_proxies.clone(),
        }
    }
}

/// Open connections per client address (the TCP peer: headers are not read yet).
#[derive(Debug)]
struct PerAddress {
    limit: usize,
    exempt: Vec<IpNet>,
    open: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection counted against its address; uncounted when dropped.
struct AddressSlot {
    table: Arc<PerAddress>,
    ip: IpAddr,
}

impl PerAddress {
    /// A slot for `ip`, `Some(None)` when it is exempt, `None` when it holds its limit.
    fn take(table: &Arc<Self>, ip: IpAddr) -> Option<Option<AddressSlot>> {
        let ip = ip.to_canonical();
        if table.exempt.iter().any(|n| n.contains(&ip)) {
            return Some(None);
        }
        let mut open = table.open.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(ip).or_insert(0);
        if *n >= table.limit {
            return None;
        }
        *n += 1;
        Some(Some(AddressSlot {
            table: table.clone(),
            ip,
        }))
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.table.open.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// The answer on plain HTTP to an address over its limit (TLS ones are closed unanswered: a
/// handshake is the work the limit saves).
fn too_many_from_address() -> Vec<u8> {
    let body = serde_json::json!({"error": {
        "code": "too_many_connections",
        "message": "too many open connections from this address",
    }})
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `router` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_address = Arc::new(PerAddress {
        limit: limits.max_connections_per_ip,
        exempt: limits.exempt,
        open: Mutex::new(HashMap::new()),
    });
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = stop.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and similar: back off instead of spinning.
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.changed() => break,
        };
        let Some(address_slot) = PerAddress::take(&per_address, peer.ip()) else {
            log::debug!("{} holds its max_connections_per_ip; closed", peer.ip());
            if tls.is_none() {
                let _ = stream.try_write(&too_many_from_address());
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            match tls {
                None => serve_conn(stream, peer, router, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => serve_conn(s, peer, router, watcher).await,
                        Ok(Err(e)) => log::debug!("TLS handshake with {peer} failed: {e}"),
                        Err(_) => log::debug!("TLS handshake with {peer} timed out"),
                    }
                }
            }
            drop(address_slot);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        log::warn!("some connections were still open after {DRAIN_TIMEOUT:?}; closing them");
    }
}

async fn serve_conn<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    watcher: hyper_util::server::graceful::Watcher,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(Peer(peer));
        router.clone().oneshot(req)
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(MAX_HEAD)
        // A client that sends its request and then shuts down its write side still gets the
        // answer (a login may have been processed).
        .half_close(true)
        .serve_connection(TokioIo::new(JsonErrors::new(io)), svc);
    if let Err(e) = watcher.watch(conn).await {
        log::debug!("connection from {peer} ended: {e}");
    }
}

/// Hyper answers a request it cannot parse by itself, before any service sees it: 400 (bad
/// method, URI, version or header: NUL, a negative or conflicting Content-Length, a TLS
/// ClientHello), 414 (URI over 64 KiB) or 431 (head over the buffer, more than 100 headers),
/// each with `content-length: 0`. This wrapper recognises that answer on its way out and
/// writes it as the API's JSON error instead. The router's own answers always carry
/// `x-content-type-options` (the access log sets it), so they are never touched.
struct JsonErrors<I> {
    inner: I,
    /// A replacement being written, and how many of hyper's bytes it stands for.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<I> JsonErrors<I> {
    fn new(inner: I) -> Self {
        JsonErrors {
            inner,
            pending: None,
        }
    }
}

/// The JSON version of hyper's automatic answer at the start of `buf`, and the length of that
/// answer; `None` for anything else.
fn json_error_for(buf: &[u8]) -> Option<(Vec<u8>, usize)> {
    let rest = buf.strip_prefix(b"HTTP/1.1 4")?;
    let head_len = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &buf[..head_len];
    let has = |needle: &[u8]| head.windows(needle.len()).any(|w| w == needle);
    if !has(b"\r\ncontent-length: 0\r\n") || has(b"x-content-type-options") {
        return None;
    }
    let (code, message) = match rest.get(..2)? {
        b"00" => (
            "bad_request",
            "the request is not valid HTTP/1.1 (a malformed request line or header)",
        ),
        b"14" => (
            "uri_too_long",
            "the request's URI is too long (at most 64 KiB)",
        ),
        b"31" => (
            "headers_too_large",
            "the request's head is too large (at most 72 KiB) or has more than 100 headers",
        ),
        _ => return None,
    };
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let mut out = Vec::with_capacity(head_len + body.len() + 160);
    for line in head[..head_len - 2].split_inclusive(|b| *b == b'\n') {
        if !line.starts_with(b"content-length:") && !line.starts_with(b"connection:") {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(
        format!(
            "content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\
             cache-control: no-store\r\nx-content-type-options: nosniff\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    );
    Some((out, head_len))
}

impl<I: AsyncRead + Unpin> AsyncRead for JsonErrors<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for JsonErrors<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            match json_error_for(buf) {
                Some((bytes, claimed)) => this.pending = Some((bytes, 0, claimed)),
                None => return Pin::new(&mut this.inner).poll_write(cx, buf),
            }
        }
        let Some((bytes, written, claimed)) = this.pending.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while *written < bytes.len() {
            let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
        }
        // Hyper offers the same bytes again until they are taken, so `claimed` fits `buf`.
        let claimed = (*claimed).min(buf.len());
        this.pending = None;
        Poll::Ready(Ok(claimed))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Binds the configured address with a clear error.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(addr).await.map_err(|e| {
        let hint = match e.kind() {
            std::io::ErrorKind::AddrInUse => {
                " (another process listens there; stop it or change server.listen)"
            }
            std::io::ErrorKind::PermissionDenied => " (ports below 1024 need CAP_NET_BIND_SERVICE)",
            _ => "",
        };
        format!("cannot listen on {addr}: {e}{hint}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypers_empty_answers_become_json() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: Thu, 01 Jan 2026 00:00:00 GMT\r\n\r\n";
        let (out, claimed) = json_error_for(hyper).unwrap();
        assert_eq!(claimed, hyper.len());
        let text = String::from_utf8(out).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ndate: Thu, 01 Jan 2026"), "{head}");
        assert!(!head.contains("content-length: 0"), "{head}");
        assert_eq!(head.matches("connection: close").count(), 1, "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())));
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["error"]["code"], "headers_too_large");
        // Followed by more bytes: only the answer is claimed.
        let mut more = hyper.to_vec();
        more.extend_from_slice(b"junk");
        assert_eq!(json_error_for(&more).unwrap().1, hyper.len());
    }

    #[test]
    fn the_routers_answers_are_left_alone() {
        for ours in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 9\r\n\r\n{\"a\":\"b\"}"[..],
            b"HTTP/1.1 404 Not Found\r\nx-content-type-options: nosniff\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Req",
        ] {
            assert!(json_error_for(ours).is_none());
        }
    }

    #[test]
    fn the_per_address_answer_is_well_formed() {
        let text = String::from_utf8(too_many_from_address()).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("content-length: {}\r\n", body.len())));
        assert!(serde_json::from_str::<serde_json::Value>(body).is_ok());
    }

    #[test]
    fn per_address_slots_are_counted_and_returned() {
        let table = Arc::new(PerAddress {
            limit: 2,
            exempt: vec!["10.0.0.1/32".parse().unwrap()],
            open: Mutex::new(HashMap::new()),
        });
        let ip: IpAddr = "10.0.0.9".parse().unwrap();
        let a = PerAddress::take(&table, ip).unwrap();
        let b = PerAddress::take(&table, "::ffff:10.0.0.9".parse().unwrap()).unwrap();
        assert!(
            PerAddress::take(&table, ip).is_none(),
            "the third is refused"
        );
        assert!(PerAddress::take(&table, "10.0.0.8".parse().unwrap()).is_some());
        drop(a);
        assert!(
            PerAddress::take(&table, ip).is_some(),
            "a closed one frees its slot"
        );
        drop(b);
        for _ in 0..5 {
            assert!(matches!(
                PerAddress::take(&table, "10.0.0.1".parse().unwrap()),
                Some(None)
            ));
        }
        assert!(table.open.lock().unwrap().is_empty());
    }
}
