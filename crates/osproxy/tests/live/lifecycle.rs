//! Process lifecycle: SIGTERM drains in-flight requests, refuses new
//! connections, and exits 0.

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
