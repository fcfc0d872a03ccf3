//! Bodies past the read limit, and answers that break off, are blamed on
//! the side that caused them: 413 before a byte of an announced oversized
//! body is read, 502 for a cluster that cuts its answer short.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

use http::Method;

use super::Fleet;
use crate::common::node;

#[test]
fn a_body_announced_past_the_limit_is_refused_at_once_with_413() {
    let f = Fleet::start(&node().url(), "lim");
    let mut conn = TcpStream::connect(f.proxy.data_addr()).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    // 200 MiB announced; only a few bytes ever sent.
    write!(
        conn,
        "PUT /orders/_doc/big HTTP/1.1\r\nhost: x\r\nauthorization: Bearer acme-token-0123456789\r\n\
         content-type: application/json\r\ncontent-length: 209715200\r\n\r\n{{\"a\":"
    )
    .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("}}") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("request_too_large"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(5), "{text}");
}

/// A fault a real OpenSearch cannot be asked for: a cluster that answers
/// its readiness probe, then cuts every other answer off mid-body.
fn cutting_upstream() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let mut head = [0u8; 4096];
            let n = conn.read(&mut head).unwrap_or(0);
            let probe = head[..n].starts_with(b"GET / ");
            let answer = if probe {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}"
                    .to_string()
            } else {
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"_id\":".to_string()
            };
            let _ = conn.write_all(answer.as_bytes());
            // Dropped: the connection closes with the body unfinished.
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread")]
async fn an_answer_cut_off_by_the_cluster_is_a_502_not_the_clients_fault() {
    let port = cutting_upstream();
    let f = Fleet::start(&format!("http://127.0.0.1:{port}"), "cut");
    // umbrella's orders live on the "dedicated" cluster: the cutting one.
    let r = f
        .call(
            "gateway",
            Method::GET,
            "/orders/_doc/u1",
            None,
            &[("x-osproxy-partition", "umbrella")],
        )
        .await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(
        r.json()["error"]["type"],
        "upstream_unavailable",
        "{}",
        r.text()
    );
    assert!(r.text().contains("broke off its answer"), "{}", r.text());
}
