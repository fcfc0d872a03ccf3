//! Process lifecycle: SIGTERM and SIGINT drain in-flight requests (readiness
//! off, new connections refused, keep-alive connections closed after their
//! answer), cut what is still running at the deadline, and exit 0.

use std::net::TcpStream;
use std::time::Duration;

use http::Method;
use osproxy_testkit::Http;

use crate::common::{ready_proxy, wait_metric};

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let mut proxy = ready_proxy("[server]\ndrain_timeout = \"30s\"\n");
    // A real slow request: OpenSearch holds it for 3 s waiting for nodes
    // that never come, then answers 408 with timed_out.
    let url = format!(
        "{}/_cluster/health?wait_for_nodes=5&timeout=3s",
        proxy.url()
    );
    let slow = tokio::spawn(async move { Http::new().send(Method::GET, &url, None).await });
    wait_metric(
        &proxy,
        "osproxy_in_flight_requests",
        1.0,
        Duration::from_secs(5),
    )
    .await;

    proxy.sigterm();
    // New connections are refused once the listener closes.
    let addr = proxy.data_addr().to_string();
    let refused = tokio::task::spawn_blocking(move || {
        osproxy_testkit::wait_until(
            "the data listener refusing connections",
            Duration::from_secs(5),
            || match TcpStream::connect(&addr) {
                Ok(_) => Err("still accepting".to_string()),
                Err(_) => Ok(()),
            },
        )
    })
    .await;
    assert!(matches!(refused, Ok(Ok(()))), "{refused:?}");

    let answered = slow
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|e| panic!("in-flight request was cut: {e}"));
    assert_eq!(answered.status, 408, "{}", answered.text());
    assert_eq!(answered.json()["timed_out"], true);

    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("osproxy did not exit after draining"));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// SIGINT drains like SIGTERM: `/readyz` answers 503 while the in-flight
/// request finishes, the keep-alive connection that carried it is closed
/// after its answer (`connection: close`), and the process exits 0.
#[tokio::test(flavor = "multi_thread")]
async fn sigint_turns_readiness_off_and_closes_keep_alive_connections() {
    use std::io::{Read, Write};
    let mut proxy = ready_proxy("[server]\ndrain_timeout = \"30s\"\n");
    let addr = proxy.data_addr().to_string();
    // A keep-alive connection carrying a real slow request (5 s).
    let client = tokio::task::spawn_blocking(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(
            s,
            "GET /_cluster/health?wait_for_nodes=5&timeout=5s HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n"
        )
        .unwrap();
        let mut all = Vec::new();
        let _ = s.read_to_end(&mut all);
        String::from_utf8_lossy(&all).to_ascii_lowercase()
    });
    wait_metric(
        &proxy,
        "osproxy_in_flight_requests",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    proxy.signal(libc::SIGINT);
    // The signal is handled asynchronously: readiness turns off within a
    // moment, while the 5 s request is still in flight.
    let readyz = format!("{}/readyz", proxy.admin_url());
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let mut last = None;
    while std::time::Instant::now() < deadline {
        last = Http::new()
            .send(Method::GET, &readyz, None)
            .await
            .ok()
            .map(|r| r.status.as_u16());
        if last == Some(503) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(last, Some(503), "readiness while draining");
    // read_to_end returns only because the server closed the connection.
    let answer = client.await.unwrap();
    assert!(answer.starts_with("http/1.1 408"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let status = proxy
        .wait_exit(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("osproxy did not exit after SIGINT"));
    assert_eq!(status.code(), Some(0), "exit status {status}");
}

/// A request still running at the drain deadline is cut, and the process
/// exits 0 at the deadline instead of waiting for it.
#[tokio::test(flavor = "multi_thread")]
async fn the_drain_deadline_cuts_what_is_still_running() {
    let mut proxy = ready_proxy("[server]\ndrain_timeout = \"1s\"\n");
    let url = format!(
        "{}/_cluster/health?wait_for_nodes=5&timeout=8s",
        proxy.url()
    );
    let slow = tokio::spawn(async move { Http::new().send(Method::GET, &url, None).await });
    wait_metric(
        &proxy,
        "osproxy_in_flight_requests",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    let signalled = std::time::Instant::now();
    proxy.sigterm();
    let status = proxy
        .wait_exit(Duration::from_secs(6))
        .unwrap_or_else(|| panic!("osproxy did not exit at its drain deadline"));
    assert_eq!(status.code(), Some(0), "exit status {status}");
    assert!(
        signalled.elapsed() < Duration::from_secs(6),
        "exit took {:?}",
        signalled.elapsed()
    );
    let cut = slow.await.unwrap();
    assert!(
        cut.is_err(),
        "the 8 s request was answered instead of cut: {cut:?}"
    );
}

/// A second SIGTERM during the drain ends the process at once (exit 143),
/// without waiting for the drain deadline.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let mut proxy = ready_proxy("[server]\ndrain_timeout = \"30s\"\n");
    let url = format!(
        "{}/_cluster/health?wait_for_nodes=5&timeout=20s",
        proxy.url()
    );
    let slow = tokio::spawn(async move { Http::new().send(Method::GET, &url, None).await });
    wait_metric(
        &proxy,
        "osproxy_in_flight_requests",
        1.0,
        Duration::from_secs(5),
    )
    .await;
    proxy.sigterm();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Still draining (the request runs 20 s, the deadline is 30 s) ...
    assert!(proxy.wait_exit(Duration::from_millis(100)).is_none());
    let signalled = std::time::Instant::now();
    proxy.sigterm();
    let status = proxy
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("a second SIGTERM did not end the drain"));
    assert_eq!(status.code(), Some(143), "exit status {status}");
    assert!(signalled.elapsed() < Duration::from_secs(5));
    assert!(slow.await.unwrap().is_err(), "the running request is cut");
}
