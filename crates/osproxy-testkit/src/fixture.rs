//! Test fixtures that read like the setup they describe: a typed builder
//! for osproxy configs (instead of hand-written TOML strings) and a client
//! that speaks for one principal, where one request is one line.

use std::fmt::Write as _;
use std::path::Path;

use bytes::Bytes;
use http::Method;
use serde_json::Value;

use crate::{Http, HttpResponse, ProxyInstance};

/// A principal's grant.
#[derive(Clone, Debug)]
pub enum Grant {
    /// `partitions = [...]`.
    Partitions(Vec<String>),
    /// `any_partition = true` (a gateway).
    Any,
    /// `operator = true`, `any_partition = true`.
    Operator,
}

/// Builds an osproxy config. Tokens are written to files in the directory
/// given to [`ConfigBuilder::new`], as operators would hold them.
#[derive(Debug)]
pub struct ConfigBuilder {
    dir: std::path::PathBuf,
    text: String,
}

impl ConfigBuilder {
    /// A config whose secrets live under `dir`.
    pub fn new(dir: &Path) -> Self {
        ConfigBuilder {
            dir: dir.to_path_buf(),
            text: String::new(),
        }
    }

    /// `[[clusters]]` with an id and a URL.
    pub fn cluster(mut self, id: &str, url: &str) -> Self {
        let _ = write!(self.text, "[[clusters]]\nid = {id:?}\nurl = {url:?}\n\n");
        self
    }

    /// `[passthrough]` to `cluster`, confined to `prefixes` when not empty.
    pub fn passthrough(mut self, cluster: &str, prefixes: &[&str]) -> Self {
        let _ = write!(self.text, "[passthrough]\ncluster = {cluster:?}\n");
        if !prefixes.is_empty() {
            let _ = writeln!(self.text, "indices = {prefixes:?}");
        }
        self.text.push('\n');
        self
    }

    /// `[[principals]]` named `name`, holding `token` (in a file).
    pub fn principal(mut self, name: &str, token: &str, grant: Grant) -> Self {
        let file = self.dir.join(format!("token-{name}"));
        let _ = std::fs::write(&file, token);
        let grant = match grant {
            Grant::Partitions(p) => format!("partitions = {p:?}"),
            Grant::Any => "any_partition = true".to_string(),
            Grant::Operator => "operator = true\nany_partition = true".to_string(),
        };
        let _ = write!(
            self.text,
            "[[principals]]\nname = {name:?}\ntoken_file = {:?}\n{grant}\n\n",
            file.display().to_string()
        );
        self
    }

    /// `[[indices]]`: a logical index whose default placement is the shared
    /// index `shared` on `cluster`.
    pub fn shared_index(mut self, name: &str, cluster: &str, shared: &str) -> Self {
        let _ = write!(
            self.text,
            "[[indices]]\nname = {name:?}\ndefault = {{ kind = \"shared\", cluster = {cluster:?}, index = {shared:?} }}\n\n"
        );
        self
    }

    /// `[[placements]]`: `partition` of `index` in its own index `own`.
    pub fn own_index(mut self, index: &str, partition: &str, cluster: &str, own: &str) -> Self {
        let _ = write!(
            self.text,
            "[[placements]]\nindex = {index:?}\npartition = {partition:?}\nplacement = {{ kind = \"index\", cluster = {cluster:?}, index = {own:?} }}\n\n"
        );
        self
    }

    /// Anything the builder has no method for yet, as TOML.
    pub fn raw(mut self, toml: &str) -> Self {
        self.text.push_str(toml);
        self.text.push('\n');
        self
    }

    /// The TOML text.
    pub fn toml(&self) -> &str {
        &self.text
    }

    /// Starts the real binary with this config and waits until it is ready
    /// (panicking with its log if it does not come up).
    pub fn start(self, binary: &Path) -> ProxyInstance {
        let proxy = ProxyInstance::start(binary, &self.text)
            .unwrap_or_else(|e| panic!("osproxy did not start: {e}\nconfig:\n{}", self.text));
        proxy
            .wait_ready(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        proxy
    }
}

/// A client that speaks for one principal to one osproxy instance. Each
/// call is one request; it panics naming the request if no answer came.
#[derive(Clone, Debug)]
pub struct As {
    base: String,
    auth: String,
    headers: Vec<(String, String)>,
    http: Http,
}

impl As {
    /// Speaks to `proxy` with bearer `token`.
    pub fn new(proxy: &ProxyInstance, token: &str) -> Self {
        Self::at(&proxy.url(), token)
    }

    /// Speaks to the listener at `base` (a data or an admin URL) with
    /// bearer `token`.
    pub fn at(base: &str, token: &str) -> Self {
        As {
            base: base.to_string(),
            auth: format!("Bearer {token}"),
            headers: Vec::new(),
            http: Http::new(),
        }
    }

    /// The same client, sending header `name: value` with every request
    /// (a gateway naming its partition, say).
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Any method, a JSON body, extra headers.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        self.raw(
            method,
            path,
            body.map(|b| Bytes::from(b.to_string())),
            headers,
        )
        .await
    }

    /// Any method, a body sent as given (NDJSON, bytes that are not JSON),
    /// extra headers.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        headers: &[(&str, &str)],
    ) -> HttpResponse {
        let mut all = vec![("authorization", self.auth.as_str())];
        all.extend(self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        all.extend_from_slice(headers);
        self.http
            .send_with(method.clone(), &format!("{}{path}", self.base), body, &all)
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    /// `GET path`.
    pub async fn get(&self, path: &str) -> HttpResponse {
        self.call(Method::GET, path, None, &[]).await
    }

    /// `PUT path` with a JSON body.
    pub async fn put(&self, path: &str, body: &Value) -> HttpResponse {
        self.call(Method::PUT, path, Some(body), &[]).await
    }

    /// `POST path` with a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> HttpResponse {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    /// `POST path` without a body.
    pub async fn post_empty(&self, path: &str) -> HttpResponse {
        self.call(Method::POST, path, None, &[]).await
    }

    /// `HEAD path`.
    pub async fn head(&self, path: &str) -> HttpResponse {
        self.call(Method::HEAD, path, None, &[]).await
    }

    /// `DELETE path`.
    pub async fn delete(&self, path: &str) -> HttpResponse {
        self.call(Method::DELETE, path, None, &[]).await
    }

    /// `DELETE path` with a JSON body (clearing scrolls and PITs).
    pub async fn delete_json(&self, path: &str, body: &Value) -> HttpResponse {
        self.call(Method::DELETE, path, Some(body), &[]).await
    }
}

/// Polls `check` every 50 ms until it holds, or panics after `timeout`
/// naming `what` — the one polling helper for async tests.
pub async fn eventually<F, Fut>(what: &str, timeout: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {timeout:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
