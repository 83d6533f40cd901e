//! A crowd of connections that never send anything cannot lock clients out: a silent
//! connection is held for `limits.head_timeout`, not `limits.idle_timeout`, and when
//! `limits.max_connections` are open the oldest silent one makes room for a new client.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::common::{DaemonProcess, PATIENCE};

#[test]
fn silent_connections_neither_lock_clients_out_nor_outstay_the_head_timeout() {
    let daemon = DaemonProcess::start_with(
        "[limits]\nmax_connections = 32\nhead_timeout = \"2s\"\nidle_timeout = \"10m\"\n",
    );
    let token = daemon.control();
    // More silent connections than the daemon may hold at once.
    let silent: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(daemon.addr).unwrap())
        .collect();
    // A client that speaks is served at once, on a new connection.
    let mut client = TcpStream::connect(daemon.addr).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    write!(
        client,
        "GET /api/health HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    client.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // Every silent connection ends: evicted for a newer one, or closed at head_timeout
    // (long before the 10-minute idle timeout), without an answer.
    for (i, mut stream) in silent.into_iter().enumerate() {
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        let mut buf = [0u8; 256];
        match stream.read(&mut buf) {
            Ok(0) => {}
            Ok(n) => panic!(
                "silent connection {i} got an answer: {}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("silent connection {i} was still open: {e}"),
        }
    }
    let metrics = daemon.get("/metrics", &token).text();
    let evicted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("orchestra_silent_connections_evicted_total "))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .expect("the eviction counter");
    assert!(
        evicted >= 9,
        "at least the 9 over the limit were evicted: {evicted}"
    );
}
