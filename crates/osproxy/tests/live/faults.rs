//! Upstream faults become OpenSearch-shaped errors; a client that goes away
//! mid-stream leaves nothing behind.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use osproxy_testkit::{free_port, Http};

use crate::common::{metric, proxy_to, wait_metric};

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_a_retryable_502() {
    let port = free_port().unwrap_or_else(|e| panic!("{e}"));
    let proxy = proxy_to(&format!("http://127.0.0.1:{port}"), "");
    let r = Http::new()
        .send_with(
            Method::GET,
            &format!("{}/any/_search", proxy.url()),
            None,
            &[("x-request-id", "down-1")],
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 502, "{}", r.text());
    let e = r.json();
    assert_eq!(e["status"], 502);
    assert_eq!(e["error"]["type"], "upstream_unavailable");
    assert_eq!(e["error"]["osproxy"]["retryable"], true);
    assert_eq!(e["error"]["osproxy"]["request_id"], "down-1");
    assert!(
        e["error"]["reason"]
            .as_str()
            .is_some_and(|s| s.contains("cluster main")),
        "{e}"
    );
    // Not ready while the only cluster never answered.
    let ready = Http::new()
        .send(Method::GET, &format!("{}/readyz", proxy.admin_url()), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ready.status, 503);
    assert!(
        ready.text().contains("cluster main has not answered"),
        "{}",
        ready.text()
    );
}

/// Fault injection a real OpenSearch cannot be asked for: a peer that
/// accepts connections and reads requests but never answers.
fn hung_upstream() -> (u16, std::thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let handle = std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming().take(8).flatten() {
            held.push(conn);
        }
    });
    (port, handle)
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_upstream_is_a_504_at_the_deadline() {
    let (port, _peer) = hung_upstream();
    let proxy = proxy_to(
        &format!("http://127.0.0.1:{port}"),
        "[upstream]\nrequest_timeout = \"1s\"\n",
    );
    let http = Http::new();
    let started = Instant::now();
    let r = http
        .send(Method::GET, &format!("{}/idx/_doc/1", proxy.url()), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let waited = started.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    let e = r.json();
    assert_eq!(e["error"]["type"], "upstream_timeout");
    assert_eq!(
        e["error"]["osproxy"]["retryable"], true,
        "a GET may be retried"
    );
    assert!(
        waited >= Duration::from_millis(900),
        "answered before the deadline: {waited:?}"
    );
    // A non-idempotent request that timed out may have been applied.
    let r = http
        .send(
            Method::POST,
            &format!("{}/idx/_doc", proxy.url()),
            Some("{}"),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["osproxy"]["retryable"], false);
}

/// Fault injection: an upstream streaming an endless chunked body, which
/// reports when its peer (the proxy) closes the connection.
fn endless_upstream() -> (u16, mpsc::Receiver<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let (closed_tx, closed_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let closed = closed_tx.clone();
            std::thread::spawn(move || serve_endless(conn, closed));
        }
    });
    (port, closed_rx)
}

/// A request's head as a peer reads it (`None` if the connection ends
/// first).
fn read_head(conn: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = [0u8; 4096];
    let mut head = Vec::new();
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

fn serve_endless(mut conn: TcpStream, closed: mpsc::Sender<()>) {
    let Some(head) = read_head(&mut conn) else {
        return;
    };
    if head.starts_with(b"GET / ") {
        // The readiness probe.
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}");
        return;
    }
    if conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n").is_err() {
        return;
    }
    let chunk = format!("{:x}\r\n{}\r\n", 65536, "a".repeat(65536));
    loop {
        if conn.write_all(chunk.as_bytes()).is_err() {
            let _ = closed.send(());
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn client_disconnect_mid_stream_releases_everything() {
    let (port, closed) = endless_upstream();
    let proxy = proxy_to(&format!("http://127.0.0.1:{port}"), "");
    proxy
        .wait_ready(Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e}"));

    let mut client = TcpStream::connect(proxy.data_addr()).unwrap_or_else(|e| panic!("{e}"));
    client
        .write_all(b"GET /big/_search HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap_or_else(|e| panic!("{e}"));
    let mut got = 0usize;
    let mut buf = vec![0u8; 65536];
    while got < 4 * 1024 * 1024 {
        match client.read(&mut buf) {
            Ok(0) | Err(_) => panic!("stream ended early after {got} bytes"),
            Ok(n) => got += n,
        }
    }
    let in_flight = metric(&proxy, "osproxy_in_flight_requests").await;
    assert_eq!(in_flight, Some(1.0));
    drop(client);

    // The proxy closes its upstream connection instead of pooling a
    // half-read one or reading on forever.
    closed
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the upstream connection stayed open after the client left"));
    wait_metric(
        &proxy,
        "osproxy_in_flight_requests",
        0.0,
        Duration::from_secs(10),
    )
    .await;
}

/// A tenancy write is sent upstream as a PUT even when the client's was a
/// POST (an auto-id document becomes `PUT _create/{minted id}`): when it
/// times out it may still be applied, so it is not retryable — a retry
/// would mint a second document.
#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_tenancy_write_is_not_retryable() {
    use osproxy_testkit::{As, ConfigBuilder, Grant, ProxyInstance};
    let (port, _peer) = hung_upstream();
    let dir = tempfile::tempdir().unwrap();
    let token = "faults-acme-token-0123456789";
    let proxy = ProxyInstance::start(
        std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")),
        ConfigBuilder::new(dir.path())
            .cluster("main", &format!("http://127.0.0.1:{port}"))
            .principal("acme", token, Grant::Partitions(vec!["acme".into()]))
            .shared_index("orders", "main", "orders-shared")
            .raw("[upstream]\nrequest_timeout = \"1s\"\n")
            .toml(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let acme = As::new(&proxy, token);
    for (method, path) in [
        (Method::POST, "/orders/_doc"),
        (Method::PUT, "/orders/_doc/1"),
    ] {
        let r = acme
            .call(
                method.clone(),
                path,
                Some(&serde_json::json!({"n": 1})),
                &[],
            )
            .await;
        assert_eq!(r.status, 504, "{method} {path}: {}", r.text());
        assert_eq!(
            r.json()["error"]["osproxy"]["retryable"],
            false,
            "{method} {path}: a write that timed out may have been applied"
        );
    }
}

/// Fault injection a real OpenSearch cannot be asked for at a chosen
/// moment: a peer that answers each request on a keep-alive connection
/// (no `connection: close`) and then closes that connection a moment
/// later, as a cluster or load balancer closing idle connections does. It
/// counts the connections it accepted and the request heads it read.
fn closing_upstream() -> (u16, Arc<AtomicUsize>, Arc<std::sync::Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
    let accepted = Arc::new(AtomicUsize::new(0));
    let heads = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (count, seen) = (accepted.clone(), heads.clone());
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            let seen = seen.clone();
            std::thread::spawn(move || {
                let Some(head) = read_head(&mut conn) else {
                    return;
                };
                let text = String::from_utf8_lossy(&head).into_owned();
                let line = text.lines().next().unwrap_or_default().to_string();
                if let Ok(mut s) = seen.lock() {
                    s.push(line.clone());
                }
                let body = format!("{{\"line\":{line:?}}}");
                let _ = conn.write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                );
                std::thread::sleep(Duration::from_millis(50));
                // Closed without a word, as an idle timeout closes it.
            });
        }
    });
    (port, accepted, heads)
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_the_cluster_closed_while_idle_are_not_used_again() {
    let (port, accepted, heads) = closing_upstream();
    let proxy = proxy_to(
        &format!("http://127.0.0.1:{port}"),
        "[server]\nworkers = 1\n",
    );
    let http = Http::new();
    for (i, method) in [Method::GET, Method::POST, Method::PUT, Method::GET]
        .into_iter()
        .enumerate()
    {
        let path = format!("/idx/_doc/{i}");
        let r = http
            .send(
                method.clone(),
                &format!("{}{path}", proxy.url()),
                Some("{}"),
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // Each answer is its own request's (never a neighbour's on a
        // reused connection), and none is an error: a connection the
        // cluster closed is found out before a request is given to it.
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        assert_eq!(
            r.json()["line"],
            format!("{method} {path} HTTP/1.1"),
            "request {i}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let seen = heads.lock().map(|s| s.clone()).unwrap_or_default();
    let requests: Vec<&String> = seen.iter().filter(|l| l.contains("/idx/")).collect();
    assert_eq!(requests.len(), 4, "each request sent once: {seen:?}");
    assert!(
        accepted.load(Ordering::SeqCst) >= 4,
        "a closed connection was reused: {seen:?}"
    );
}
