//! A small TCP fault proxy for the end-to-end suite: edgeauth talks to the real Keycloak through
//! it, and a test turns faults on and off while connections are open, as a WAN does.
//!
//! - [`Fault::Pass`]: bytes flow both ways.
//! - [`Fault::Latency`]: each chunk from Keycloak is delivered that much later than it arrived
//!   (a delay line, like toxiproxy's latency toxic: chunks arriving together are not delayed
//!   cumulatively).
//! - [`Fault::BlackHole`]: new connections are accepted and everything sent on any connection is
//!   swallowed; nothing comes back and nothing is closed, like a dropped route.
//!
//! Loopback only; a connection's threads end when either side closes or the proxy is dropped.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    Pass,
    Latency(Duration),
    BlackHole,
}

struct Shared {
    fault: Mutex<Fault>,
    stop: AtomicBool,
    /// Bytes edgeauth sent towards Keycloak (including swallowed ones).
    bytes_in: AtomicU64,
    connections: AtomicU64,
}

impl Shared {
    fn fault(&self) -> Fault {
        *self.fault.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

const POLL: Duration = Duration::from_millis(100);

impl FaultProxy {
    /// Listens on a free loopback port and forwards to `upstream` (host:port).
    pub fn start(upstream: &str) -> Self {
        let upstream: SocketAddr = upstream.parse().expect("upstream host:port");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared {
            fault: Mutex::new(Fault::Pass),
            stop: AtomicBool::new(false),
            bytes_in: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        });
        let s = shared.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = conn else { continue };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let s = s.clone();
                std::thread::spawn(move || serve(client, upstream, s));
            }
        });
        FaultProxy { addr, shared }
    }

    /// The proxy's `http://127.0.0.1:PORT` base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set(&self, fault: Fault) {
        *self.shared.fault.lock().unwrap_or_else(|e| e.into_inner()) = fault;
    }

    pub fn bytes_in(&self) -> u64 {
        self.shared.bytes_in.load(Ordering::SeqCst)
    }

    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve(client: TcpStream, upstream: SocketAddr, s: Arc<Shared>) {
    if s.fault() == Fault::BlackHole {
        swallow(client, &s);
        return;
    }
    let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(2)) else {
        return; // the client sees the connection closed, as with a stopped upstream
    };
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let up = {
        let s = s.clone();
        std::thread::spawn(move || pump(client, server, &s, true))
    };
    pump(s2, c2, &s, false);
    let _ = up.join();
}

/// Reads and drops everything until the peer closes or the proxy stops.
fn swallow(mut client: TcpStream, s: &Shared) {
    let _ = client.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 8192];
    while !s.stop.load(Ordering::SeqCst) {
        match client.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                s.bytes_in.fetch_add(n as u64, Ordering::SeqCst);
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// Copies `from` to `to` through a delay line, applying the fault of the moment to each chunk.
/// `towards_keycloak` is the request direction (counted; never delayed).
fn pump(mut from: TcpStream, mut to: TcpStream, s: &Shared, towards_keycloak: bool) {
    let _ = from.set_read_timeout(Some(POLL));
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = std::thread::spawn(move || {
        for (due, chunk) in rx {
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            if to.write_all(&chunk).is_err() {
                break;
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
    let mut buf = [0u8; 16384];
    while !s.stop.load(Ordering::SeqCst) {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if towards_keycloak {
                    s.bytes_in.fetch_add(n as u64, Ordering::SeqCst);
                }
                let due = match s.fault() {
                    Fault::BlackHole => continue,
                    Fault::Pass => Instant::now(),
                    Fault::Latency(d) if !towards_keycloak => Instant::now() + d,
                    Fault::Latency(_) => Instant::now(),
                };
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => break,
        }
    }
    drop(tx);
    let _ = writer.join();
}
