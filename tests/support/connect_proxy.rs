//! A tiny HTTP CONNECT proxy for tests of `keycloak.proxy` and the proxy variables: it tunnels
//! to whatever edgeauth asks for, except that names it was given map to local addresses, so a
//! Keycloak host that only the proxy can resolve (`keycloak.invalid`) reaches the fake.
//! It records each CONNECT target. Loopback only; threads end with their connections.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

pub struct ConnectProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl ConnectProxy {
    /// Listens on a free loopback port; a CONNECT to `name:port` for a `(name, addr)` of
    /// `hosts` goes to `addr`, any other target is connected as given.
    pub fn start(hosts: Vec<(String, SocketAddr)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the CONNECT proxy");
        let addr = listener.local_addr().expect("proxy address");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let hosts = Arc::new(hosts);
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (s, hosts) = (s.clone(), hosts.clone());
                std::thread::spawn(move || serve(conn, &hosts, &s));
            }
        });
        ConnectProxy { addr, seen, stop }
    }

    /// `http://127.0.0.1:PORT`, for `keycloak.proxy` or a proxy variable.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The CONNECT targets asked for so far (`host:port`).
    pub fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.addr); // wakes the accept loop
    }
}

fn serve(mut client: TcpStream, hosts: &[(String, SocketAddr)], seen: &Mutex<Vec<String>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte) {
            Ok(1) if head.len() < 8192 => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut words = head.split_whitespace();
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client.write_all(b"HTTP/1.1 405 Method Not Allowed\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    seen.lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(target.to_owned());
    let mapped = target.rsplit_once(':').and_then(|(name, port)| {
        hosts
            .iter()
            .find(|(h, a)| h == name && a.port().to_string() == port)
            .map(|(_, a)| *a)
    });
    let upstream = match mapped {
        Some(a) => TcpStream::connect(a),
        None => TcpStream::connect(target),
    };
    let Ok(upstream) = upstream else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n");
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .is_err()
    {
        return;
    }
    let (Ok(mut c2), Ok(mut u2)) = (client.try_clone(), upstream.try_clone()) else {
        return;
    };
    let up = std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut u2);
        let _ = u2.shutdown(Shutdown::Write);
    });
    let (mut u, mut c) = (upstream, client);
    let _ = std::io::copy(&mut u, &mut c);
    let _ = c.shutdown(Shutdown::Write);
    let _ = up.join();
}
