//! Tenancy through the real binary against real OpenSearch nodes: each
//! placement kind, checked by reading the physical indices directly, and
//! tenants that cannot reach each other. The fixtures live here; the tests
//! are split by topic.

use http::Method;
use osproxy_testkit::{As, Http, HttpResponse, ProxyInstance};
use serde_json::Value;

use crate::common::node;

mod admin;
mod bulk;
mod compressed;
mod cursors;
mod documents;
mod limits;
mod multi;
mod quotas;
mod refusals;

pub(super) const TOKENS: [(&str, &str); 5] = [
    ("acme-svc", "acme-token-0123456789"),
    ("globex-svc", "globex-token-0123456789"),
    ("multi-svc", "multi-token-0123456789"),
    ("gateway", "gateway-token-0123456789"),
    ("ops", "ops-token-0123456789"),
];

pub(super) struct Fleet {
    pub(super) proxy: ProxyInstance,
    pub(super) http: Http,
    pub(super) _dir: tempfile::TempDir,
}

impl Fleet {
    /// `tag` keeps each test's physical indices apart on the shared node.
    pub(super) fn start(dedicated_url: &str, tag: &str) -> Fleet {
        Fleet::start_with(dedicated_url, tag, "")
    }

    /// [`Fleet::start`] with more configuration (`extra`, TOML appended).
    pub(super) fn start_with(dedicated_url: &str, tag: &str, extra: &str) -> Fleet {
        let dir = tempfile::tempdir().unwrap();
        let mut principals = String::new();
        for (name, token) in TOKENS {
            let file = dir.path().join(name);
            std::fs::write(&file, token).unwrap();
            let grants = match name {
                "acme-svc" => "partitions = [\"acme\"]",
                "globex-svc" => "partitions = [\"globex\"]",
                "multi-svc" => "partitions = [\"acme\", \"initech\"]",
                "ops" => "operator = true\nany_partition = true",
                _ => "any_partition = true",
            };
            principals.push_str(&format!(
                "[[principals]]\nname = \"{name}\"\ntoken_file = \"{}\"\n{grants}\n\n",
                file.display()
            ));
        }
        let config = format!(
            "[[clusters]]\nid = \"main\"\nurl = \"{}\"\n\n[[clusters]]\nid = \"dedicated\"\nurl = \"{dedicated_url}\"\n\n{principals}\
             [[indices]]\nname = \"orders\"\nid = \"{{partition}}:{{id}}\"\nfield = \"_tenant\"\n\
             default = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-shared\" }}\n\
             mappings = {{ properties = {{ title = {{ type = \"text\" }} }} }}\n\n\
             [[indices]]\nname = \"invoices\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-invoices\" }}\n\n\
             [[indices]]\nname = \"events\"\npartition = {{ body = \"tenant_id\" }}\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-events\" }}\n\n\
             [[indices]]\nname = \"tickets\"\npartition = {{ header = \"x-tenant\" }}\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"t-{tag}-tickets\" }}\n\n\
             [[placements]]\nindex = \"events\"\npartition = \"initech\"\nplacement = {{ kind = \"index\", cluster = \"main\", index = \"t-{tag}-events-initech\" }}\n\n\
             [[placements]]\nindex = \"orders\"\npartition = \"initech\"\nplacement = {{ kind = \"index\", cluster = \"main\", index = \"t-{tag}-initech\" }}\n\n\
             [[placements]]\nindex = \"orders\"\npartition = \"umbrella\"\nplacement = {{ kind = \"cluster\", cluster = \"dedicated\" }}\n\n{extra}",
            node().url()
        );
        let proxy =
            ProxyInstance::start(std::path::Path::new(env!("CARGO_BIN_EXE_osproxy")), &config)
                .unwrap();
        proxy
            .wait_ready(std::time::Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
        Fleet {
            proxy,
            http: Http::new(),
            _dir: dir,
        }
    }

    /// A client speaking for principal `who` (a name in [`TOKENS`]).
    pub(super) fn client(&self, who: &str) -> As {
        As::new(&self.proxy, token(who))
    }

    /// A `_bulk` (refreshed) of `body` as principal `who`.
    pub(super) async fn bulk_as(&self, who: &str, body: impl Into<bytes::Bytes>) -> HttpResponse {
        self.client(who)
            .raw(
                Method::POST,
                "/_bulk?refresh=true",
                Some(body.into()),
                &[("content-type", "application/x-ndjson")],
            )
            .await
    }

    /// The gateway acting for `partition` (named in `x-osproxy-partition`).
    pub(super) fn gateway_for(&self, partition: &str) -> As {
        self.client("gateway")
            .with("x-osproxy-partition", partition)
    }

    pub(super) async fn call(
        &self,
        who: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, &str)],
    ) -> HttpResponse {
        let token = format!("Bearer {}", token(who));
        let mut headers = vec![("authorization", token.as_str())];
        headers.extend_from_slice(extra);
        self.http
            .send_with(
                method,
                &format!("{}{path}", self.proxy.url()),
                body.map(|b| b.to_string().into()),
                &headers,
            )
            .await
            .unwrap()
    }
}

/// The token of principal `who` (a name in [`TOKENS`]).
pub(super) fn token(who: &str) -> &'static str {
    TOKENS
        .iter()
        .find(|(n, _)| *n == who)
        .map(|(_, t)| *t)
        .unwrap_or_else(|| panic!("no principal {who}"))
}

/// `GET path` straight on the shared node.
pub(super) async fn on_node(path: &str) -> HttpResponse {
    direct(&node().url(), Method::GET, path).await
}

/// The uuid of `index`, straight on the shared node.
pub(super) async fn index_uuid(index: &str) -> String {
    on_node(&format!("/{index}/_settings")).await.json()[index]["settings"]["index"]["uuid"]
        .as_str()
        .unwrap()
        .to_string()
}

pub(super) async fn direct(base: &str, method: Method, path: &str) -> HttpResponse {
    Http::new()
        .send(method, &format!("{base}{path}"), None)
        .await
        .unwrap()
}

pub(super) fn ndjson(lines: &[Value]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}
