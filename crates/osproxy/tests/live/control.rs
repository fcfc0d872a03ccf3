//! The fleet control plane on a real etcd with several real instances:
//! propagation, outages, compaction, malformed values, compare-and-swap
//! races, lease expiry and fail-fast start-up.
//!
//! Every test starts its own etcd (some stop it). Where one instance must
//! lose its connection while etcd and the other instances carry on, it
//! reaches etcd through a `Relay` (a TCP forwarder the test can cut): a
//! real etcd cannot drop one client on demand.

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::Method;
use osproxy_testkit::{eventually, free_port, Etcd, Http, HttpResponse, ProxyInstance, Relay};
use serde_json::{json, Value};

use crate::common::{metric, node};

pub(crate) const ACME: &str = "acme-token-0123456789";
pub(crate) const GLOBEX: &str = "globex-token-0123456789";
pub(crate) const OPS: &str = "ops-token-0123456789";

fn binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_osproxy"))
}

pub(crate) struct EtcdFleet {
    pub(crate) etcd: Etcd,
    pub(crate) instances: Vec<ProxyInstance>,
    /// The relay the last instance reaches etcd through, when asked for.
    relay: Option<Relay>,
    tag: String,
    /// The extra TOML every instance's config ends with.
    extra: String,
    http: Http,
    pub(crate) dir: tempfile::TempDir,
}

impl EtcdFleet {
    /// `n` instances on one etcd; with `relay`, the last one goes through
    /// a cuttable relay.
    fn start(tag: &str, n: usize, relay: bool) -> EtcdFleet {
        Self::start_with(tag, n, relay, "")
    }

    /// Like [`EtcdFleet::start`] with `extra` TOML in every instance's config.
    pub(crate) fn start_with(tag: &str, n: usize, relay: bool, extra: &str) -> EtcdFleet {
        let etcd = Etcd::start().unwrap();
        let relay = relay.then(|| Relay::start(&etcd.addr()).unwrap());
        let mut fleet = EtcdFleet {
            etcd,
            instances: Vec::new(),
            relay,
            tag: tag.to_string(),
            extra: extra.to_string(),
            http: Http::new(),
            dir: tempfile::tempdir().unwrap(),
        };
        for i in 0..n {
            let endpoint = match (&fleet.relay, i + 1 == n) {
                (Some(r), true) => r.endpoint(),
                _ => fleet.etcd.endpoint(),
            };
            let p = fleet.launch(i, &endpoint, extra);
            fleet.instances.push(p);
        }
        for p in &fleet.instances {
            p.wait_ready(Duration::from_secs(60))
                .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
        }
        fleet
    }

    /// Kills instance `i` (SIGKILL: no drain, its lease left to expire) and
    /// starts it again with the same config and instance id.
    pub(crate) fn kill_and_restart(&mut self, i: usize) {
        self.instances[i].signal(9);
        let _ = self.instances[i].wait_exit(Duration::from_secs(10));
        let endpoint = match (&self.relay, i + 1 == self.instances.len()) {
            (Some(r), true) => r.endpoint(),
            _ => self.etcd.endpoint(),
        };
        let extra = self.extra.clone();
        let p = self.launch(i, &endpoint, &extra);
        p.wait_ready(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("{e}\n{}", p.log()));
        self.instances[i] = p;
    }

    /// Cuts the last instance's link to etcd (a relay fleet only).
    pub(crate) fn cut_relay(&self) {
        if let Some(r) = &self.relay {
            r.cut();
        }
    }

    /// Restores the last instance's link to etcd.
    pub(crate) fn restore_relay(&self) {
        if let Some(r) = &self.relay {
            r.restore();
        }
    }

    fn config(&self, i: usize, endpoint: &str, extra: &str) -> String {
        let tag = &self.tag;
        let acme = self.dir.path().join("acme");
        let globex = self.dir.path().join("globex");
        let ops = self.dir.path().join("ops");
        std::fs::write(&acme, ACME).unwrap();
        std::fs::write(&globex, GLOBEX).unwrap();
        std::fs::write(&ops, OPS).unwrap();
        format!(
            "[server]\nworkers = 1\ninstance_id = \"{tag}-{i}\"\n\n\
             [[clusters]]\nid = \"main\"\nurl = \"{}\"\n\n\
             [[principals]]\nname = \"acme-svc\"\ntoken_file = \"{}\"\npartitions = [\"acme\"]\n\n\
             [[principals]]\nname = \"globex-svc\"\ntoken_file = \"{}\"\npartitions = [\"globex\"]\n\n\
             [[principals]]\nname = \"ops\"\ntoken_file = \"{}\"\noperator = true\nany_partition = true\n\n\
             [control]\nbackend = \"etcd\"\n\
             etcd = {{ endpoints = [\"{endpoint}\"], prefix = \"/osproxy/{tag}/\", lease_ttl = \"3s\", progress_interval = \"200ms\", connect_timeout = \"2s\" }}\n\n\
             [[indices]]\nname = \"orders\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"c-{tag}-shared\" }}\n\n{extra}",
            node().url(),
            acme.display(),
            globex.display(),
            ops.display()
        )
    }

    fn launch(&self, i: usize, endpoint: &str, extra: &str) -> ProxyInstance {
        ProxyInstance::start(binary(), &self.config(i, endpoint, extra))
            .unwrap_or_else(|e| panic!("instance {i} did not start: {e}"))
    }

    /// `osproxy ctl --admin <instance i> --token <ops> ARGS...`
    pub(crate) fn ctl(&self, i: usize, args: &[&str]) -> Output {
        self.ctl_command(i, args).output().unwrap()
    }

    fn ctl_command(&self, i: usize, args: &[&str]) -> Command {
        let mut cmd = Command::new(binary());
        cmd.arg("ctl")
            .arg("--admin")
            .arg(self.instances[i].admin_url())
            .arg("--token")
            .arg(OPS)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub(crate) fn ctl_json(&self, i: usize, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.ctl(i, &all);
        assert!(
            out.status.success(),
            "ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub(crate) async fn admin(&self, i: usize, path: &str) -> HttpResponse {
        let auth = format!("Bearer {OPS}");
        self.http
            .send_with(
                Method::GET,
                &format!("{}{path}", self.instances[i].admin_url()),
                None,
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap()
    }

    /// Instance `i`'s view of one placement entry: (epoch, physical index).
    async fn entry(&self, i: usize, partition: &str) -> (u64, String) {
        let v = self
            .admin(i, &format!("/v1/placements/orders/{partition}"))
            .await
            .json();
        (
            v["epoch"].as_u64().unwrap_or(u64::MAX),
            v["placement"]["index"].as_str().unwrap_or("").to_string(),
        )
    }

    /// Instance `i`'s explicit entries of `orders`: partition → (epoch, index).
    async fn entries(&self, i: usize) -> Vec<(String, u64, String)> {
        let v = self.admin(i, "/v1/placements/orders").await.json();
        v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["partition"].as_str().unwrap().to_string(),
                    e["epoch"].as_u64().unwrap(),
                    e["placement"]["index"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    /// Waits until instance `i`'s entries equal instance `j`'s.
    async fn converge(&self, i: usize, j: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let (a, b) = (self.entries(i).await, self.entries(j).await);
            if a == b {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "instance {i} did not converge with {j} within {timeout:?}:\n{a:?}\n{b:?}\n{}",
                self.instances[i].log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn index_doc(&self, i: usize, id: &str) -> HttpResponse {
        let auth = format!("Bearer {ACME}");
        self.http
            .send_with(
                Method::PUT,
                &format!("{}/orders/_doc/{id}?refresh=true", self.instances[i].url()),
                Some(json!({"n": 1}).to_string().into()),
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap()
    }

    /// Waits (bounded) until acme's migration is over (done or failed),
    /// asking instance `via`; returns its record.
    async fn migration_over(&self, via: usize, what: &str, timeout: Duration) -> Value {
        let mut record = Value::Null;
        eventually(what, timeout, || {
            record = self.ctl_json(via, &["migrate", "status", "orders", "acme"]);
            let over = record["phase"] == "done" || record["phase"] == "failed";
            async move { over }
        })
        .await;
        record
    }

    pub(crate) fn key(&self, rest: &str) -> String {
        format!("/osproxy/{}/{rest}", self.tag)
    }

    fn fleet_records(&self, via: usize) -> Vec<Value> {
        self.ctl_json(via, &["fleet"])["instances"]
            .as_array()
            .unwrap()
            .clone()
    }
}

async fn direct_get(path: &str) -> HttpResponse {
    Http::new()
        .send(Method::GET, &format!("{}{path}", node().url()), None)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_change_through_ctl_reaches_every_instance() {
    let tag = "prop";
    let fleet = EtcdFleet::start(tag, 3, false);
    let physical = format!("c-{tag}-acme");

    // A placement set through one instance is served by all three.
    let started = Instant::now();
    let set = fleet.ctl_json(
        0,
        &[
            "placement",
            "set",
            "orders",
            "acme",
            "--kind",
            "index",
            "--cluster",
            "main",
            "--index-name",
            &physical,
        ],
    );
    let epoch = set["epoch"].as_u64().unwrap();
    let mut seen = Vec::new();
    for i in 0..3 {
        eventually(
            "the placement reached every instance",
            Duration::from_secs(1),
            || async { fleet.entry(i, "acme").await == (epoch, physical.clone()) },
        )
        .await;
        seen.push(started.elapsed());
    }
    eprintln!("placement change served by 3 instances after {seen:?} (ctl round trip included)");

    // The data path of another instance routes by it.
    let resp = fleet.index_doc(2, "d1").await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let doc = direct_get(&format!("/{physical}/_doc/d1")).await;
    assert_eq!(doc.status, 200, "{}", doc.text());

    // A catalogue change likewise: a new logical index, usable everywhere.
    let spec =
        format!(r#"{{"default":{{"kind":"shared","cluster":"main","index":"c-{tag}-notes"}}}}"#);
    let out = fleet.ctl(1, &["catalogue", "put", "notes", "--spec", &spec]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for i in 0..3 {
        eventually(
            "the catalogue change reached every instance",
            Duration::from_secs(1),
            || async { fleet.admin(i, "/v1/catalogue/notes").await.status == 200 },
        )
        .await;
    }
    let auth = format!("Bearer {ACME}");
    let resp = fleet
        .http
        .send_with(
            Method::PUT,
            &format!("{}/notes/_doc/n1?refresh=true", fleet.instances[0].url()),
            Some(json!({"t": "x"}).to_string().into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(resp.status, 201, "{}", resp.text());
    let doc = direct_get(&format!("/c-{tag}-notes/_doc/acme:n1")).await;
    assert_eq!(doc.json()["_source"]["_tenant"], "acme", "{}", doc.text());

    // The list and the fleet agree.
    let list = fleet.ctl(2, &["catalogue", "list"]);
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains("notes") && text.contains("orders"), "{text}");
    let records = fleet.fleet_records(2);
    let mut ids: Vec<&str> = records.iter().map(|r| r["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["prop-0", "prop-1", "prop-2"]);

    // A late instance whose config names another index: the store wins.
    let late = fleet.launch(3, &fleet.etcd.endpoint(), "[[indices]]\nname = \"ghost\"\ndefault = { kind = \"shared\", cluster = \"main\", index = \"c-prop-ghost\" }\n");
    late.wait_ready(Duration::from_secs(30)).unwrap();
    let ghost = Http::new()
        .send_with(
            Method::GET,
            &format!("{}/v1/catalogue/ghost", late.admin_url()),
            None,
            &[("authorization", format!("Bearer {OPS}").as_str())],
        )
        .await
        .unwrap();
    assert_eq!(ghost.status, 404, "{}", ghost.text());
    assert!(late.log().contains("the store wins"), "{}", late.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn writes_made_while_an_instance_is_cut_off_are_all_applied_in_order() {
    let tag = "cut";
    let fleet = EtcdFleet::start(tag, 2, true);
    let relay = fleet.relay.as_ref().unwrap();
    let events = "osproxy_control_events_total";
    let before = metric(&fleet.instances[1], events).await.unwrap();

    relay.cut();
    // Right after the cut the instance still proves its lease (its last
    // keep-alive is younger than the lease's held time): it takes writes.
    let resp = fleet.index_doc(1, "during-cut").await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    // Ten creations, an update of one of them, a deletion of another: 12
    // changes, straight to etcd, while instance 1 cannot see them.
    for k in 0..10 {
        let v = format!(
            r#"{{"placement":{{"kind":"index","cluster":"main","index":"c-{tag}-p{k}"}}}}"#
        );
        fleet
            .etcd
            .etcdctl(&["put", &fleet.key(&format!("placements/orders/p{k}")), &v])
            .unwrap();
    }
    let v = format!(
        r#"{{"placement":{{"kind":"index","cluster":"main","index":"c-{tag}-p3-moved"}}}}"#
    );
    fleet
        .etcd
        .etcdctl(&["put", &fleet.key("placements/orders/p3"), &v])
        .unwrap();
    fleet
        .etcd
        .etcdctl(&["del", &fleet.key("placements/orders/p5")])
        .unwrap();
    // The connected instance applies every change (it is compared with the
    // count the writes above produce, not with itself).
    eventually(
        "the connected instance applied every change",
        Duration::from_secs(3),
        || async { fleet.entries(0).await.len() == 9 },
    )
    .await;
    // The cut-off instance still serves its last good snapshot, and reads
    // go on however long the cut lasts (writes pause once the lease can no
    // longer be proven: decision 0008).
    assert!(fleet.entries(1).await.is_empty());
    let auth = format!("Bearer {ACME}");
    let read = fleet
        .http
        .send_with(
            Method::GET,
            &format!("{}/orders/_doc/during-cut", fleet.instances[1].url()),
            None,
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(read.status, 200, "{}", read.text());

    relay.restore();
    fleet.converge(1, 0, Duration::from_secs(10)).await;
    let entries = fleet.entries(1).await;
    assert!(entries
        .iter()
        .any(|(p, _, i)| p == "p3" && i == &format!("c-{tag}-p3-moved")));
    assert!(!entries.iter().any(|(p, _, _)| p == "p5"));
    // Every change applied exactly once: none skipped, none twice.
    let after = metric(&fleet.instances[1], events).await.unwrap();
    assert_eq!(after - before, 12.0, "{}", fleet.instances[1].log());
    assert!(
        metric(
            &fleet.instances[1],
            "osproxy_control_watch_reconnects_total"
        )
        .await
        .unwrap()
            >= 1.0
    );

    // etcd itself stops: both instances keep serving; writes are refused
    // clearly; after the restart, changes flow again.
    let mut fleet = fleet;
    fleet.etcd.stop();
    let resp = fleet.index_doc(0, "during-outage").await;
    assert_eq!(resp.status, 201, "{}", resp.text());
    let out = fleet.ctl(
        0,
        &[
            "placement",
            "set",
            "orders",
            "q1",
            "--kind",
            "index",
            "--cluster",
            "main",
            "--index-name",
            "c-cut-q1",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("503") && err.contains("nothing was changed"),
        "{err}"
    );
    fleet.etcd.restart().unwrap();
    eventually(
        "a write after etcd came back",
        Duration::from_secs(15),
        || async {
            fleet
                .ctl(
                    0,
                    &[
                        "placement",
                        "set",
                        "orders",
                        "q1",
                        "--kind",
                        "index",
                        "--cluster",
                        "main",
                        "--index-name",
                        "c-cut-q1",
                    ],
                )
                .status
                .success()
        },
    )
    .await;
    fleet.converge(1, 0, Duration::from_secs(10)).await;
    assert!(fleet.entries(1).await.iter().any(|(p, _, _)| p == "q1"));
}

#[tokio::test(flavor = "multi_thread")]
async fn compaction_past_a_cut_off_instance_is_recovered_by_re_reading() {
    let tag = "compact";
    let fleet = EtcdFleet::start(tag, 2, true);
    let relay = fleet.relay.as_ref().unwrap();
    for p in ["p1", "p2"] {
        let name = format!("c-{tag}-{p}");
        let out = fleet.ctl(
            0,
            &[
                "placement",
                "set",
                "orders",
                p,
                "--kind",
                "index",
                "--cluster",
                "main",
                "--index-name",
                &name,
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    fleet.converge(1, 0, Duration::from_secs(2)).await;

    relay.cut();
    fleet
        .etcd
        .etcdctl(&["del", &fleet.key("placements/orders/p1")])
        .unwrap();
    let v = format!(r#"{{"placement":{{"kind":"index","cluster":"main","index":"c-{tag}-p2b"}}}}"#);
    fleet
        .etcd
        .etcdctl(&["put", &fleet.key("placements/orders/p2"), &v])
        .unwrap();
    let v = format!(r#"{{"placement":{{"kind":"index","cluster":"main","index":"c-{tag}-p3"}}}}"#);
    fleet
        .etcd
        .etcdctl(&["put", &fleet.key("placements/orders/p3"), &v])
        .unwrap();
    let revision = fleet.etcd.revision().unwrap();
    fleet
        .etcd
        .etcdctl(&["compact", &revision.to_string()])
        .unwrap();

    relay.restore();
    fleet.converge(1, 0, Duration::from_secs(10)).await;
    let entries: Vec<String> = fleet
        .entries(1)
        .await
        .into_iter()
        .map(|(p, _, i)| format!("{p}={i}"))
        .collect();
    assert_eq!(
        entries,
        [format!("p2=c-{tag}-p2b"), format!("p3=c-{tag}-p3")]
    );
    assert!(
        metric(&fleet.instances[1], "osproxy_control_reloads_total")
            .await
            .unwrap()
            >= 1.0
    );
    assert!(fleet.instances[1].log().contains("compacted"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_value_keeps_the_last_good_one_and_is_reported() {
    let tag = "bad";
    let fleet = EtcdFleet::start(tag, 3, false);
    let good = format!("c-{tag}-acme");
    let set = fleet.ctl_json(
        0,
        &[
            "placement",
            "set",
            "orders",
            "acme",
            "--kind",
            "index",
            "--cluster",
            "main",
            "--index-name",
            &good,
        ],
    );
    let epoch = set["epoch"].as_u64().unwrap();
    let directives = r#"{"directives":[{"id":"dbg","match":{"partition":"acme"},"level":"timing","expires_at":"2030-01-01T00:00:00Z"}]}"#;
    let out = fleet.ctl(0, &["directives", "put", "--set", directives]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let key = fleet.key("placements/orders/acme");
    fleet
        .etcd
        .etcdctl(&["put", &key, "{\"placement\": \"canary-7d1f\""])
        .unwrap();
    fleet
        .etcd
        .etcdctl(&[
            "put",
            &fleet.key("catalogue/orders"),
            r#"{"default":{"kind":"shared","cluster":"canary-cluster","index":"x"}}"#,
        ])
        .unwrap();
    fleet
        .etcd
        .etcdctl(&[
            "put",
            &fleet.key("directives"),
            r#"{"directives":[{"id":"x","level":"loud","expires_at":"2030-01-01T00:00:00Z"}]}"#,
        ])
        .unwrap();

    let wanted = [
        key.clone(),
        fleet.key("catalogue/orders"),
        fleet.key("directives"),
    ];
    let mut fleet_json = Vec::new();
    eventually(
        "every instance reporting three rejected keys",
        Duration::from_secs(5),
        || {
            fleet_json = fleet.fleet_records(1);
            let ok = fleet_json.len() == 3
                && fleet_json.iter().all(|r| {
                    let keys: Vec<&str> = r["rejected_keys"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|k| k["key"].as_str().unwrap())
                        .collect();
                    wanted.iter().all(|w| keys.contains(&w.as_str()))
                });
            async move { ok }
        },
    )
    .await;
    let text = serde_json::to_string(&fleet_json).unwrap();
    assert!(
        !text.contains("canary-7d1f"),
        "a refused value leaked into the fleet records: {text}"
    );
    let table = String::from_utf8_lossy(&fleet.ctl(2, &["fleet"]).stdout).into_owned();
    assert!(table.contains("placements/orders/acme"), "{table}");

    for i in 0..3 {
        assert_eq!(fleet.entry(i, "acme").await, (epoch, good.clone()));
        let cat = fleet.admin(i, "/v1/catalogue/orders").await.json();
        assert_eq!(cat["default"]["cluster"], "main");
        let d = fleet.admin(i, "/v1/directives").await.json();
        assert_eq!(d["directives"][0]["id"], "dbg", "{d}");
        let resp = fleet.index_doc(i, &format!("still-{i}")).await;
        assert_eq!(resp.status, 201, "{}", resp.text());
        assert!(!fleet.instances[i].log().contains("canary-7d1f"));
    }
    assert_eq!(
        direct_get(&format!("/{good}/_doc/still-2")).await.status,
        200
    );

    // A good value clears the rejection everywhere.
    let fixed = format!(r#"{{"placement":{{"kind":"index","cluster":"main","index":"{good}"}}}}"#);
    fleet.etcd.etcdctl(&["put", &key, &fixed]).unwrap();
    eventually("the rejection clearing", Duration::from_secs(5), || {
        let records = fleet.fleet_records(0);
        let ok = records.iter().all(|r| {
            !r["rejected_keys"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["key"] == key.as_str())
        });
        async move { ok }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_concurrent_sets_of_one_entry_one_wins_one_gets_409() {
    let tag = "race";
    let fleet = EtcdFleet::start(tag, 2, false);
    for round in 0..4 {
        let partition = format!("r{round}");
        let a = format!("c-{tag}-{round}-a");
        let b = format!("c-{tag}-{round}-b");
        let spawn = |i: usize, index: &str| {
            fleet
                .ctl_command(
                    i,
                    &[
                        "placement",
                        "set",
                        "orders",
                        &partition,
                        "--kind",
                        "index",
                        "--cluster",
                        "main",
                        "--index-name",
                        index,
                    ],
                )
                .spawn()
                .unwrap()
        };
        let (ca, cb) = (spawn(0, &a), spawn(1, &b));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        let wins = [&oa, &ob].iter().filter(|o| o.status.success()).count();
        assert_eq!(wins, 1, "exactly one must win:\n{oa:?}\n{ob:?}");
        let loser = if oa.status.success() { &ob } else { &oa };
        let err = String::from_utf8_lossy(&loser.stderr);
        assert!(err.contains("409"), "{err}");
        fleet.converge(1, 0, Duration::from_secs(2)).await;
    }
    // Two partitions claiming the same dedicated index through two
    // instances at once: the store takes one; the other is refused (its
    // transaction saw the table change), and no instance ends up refusing
    // a stored value.
    for round in 0..3 {
        let shared_name = format!("c-{tag}-own-{round}");
        let (pa, pb) = (format!("x{round}"), format!("y{round}"));
        let spawn = |i: usize, partition: &str| {
            fleet
                .ctl_command(
                    i,
                    &[
                        "placement",
                        "set",
                        "orders",
                        partition,
                        "--kind",
                        "index",
                        "--cluster",
                        "main",
                        "--index-name",
                        &shared_name,
                    ],
                )
                .spawn()
                .unwrap()
        };
        let (ca, cb) = (spawn(0, &pa), spawn(1, &pb));
        let (oa, ob) = (
            ca.wait_with_output().unwrap(),
            cb.wait_with_output().unwrap(),
        );
        let wins = [&oa, &ob].iter().filter(|o| o.status.success()).count();
        assert_eq!(wins, 1, "one owner per physical index:\n{oa:?}\n{ob:?}");
        fleet.converge(1, 0, Duration::from_secs(2)).await;
    }
    for r in fleet.fleet_records(0) {
        assert!(r["rejected_keys"].as_array().unwrap().is_empty(), "{r}");
    }
    // With an epoch: both read the same epoch, one replaces it, the other loses.
    let epoch = fleet.entry(0, "r0").await.0.to_string();
    let spawn = |i: usize, index: &str| {
        fleet
            .ctl_command(
                i,
                &[
                    "placement",
                    "set",
                    "orders",
                    "r0",
                    "--kind",
                    "index",
                    "--cluster",
                    "main",
                    "--index-name",
                    index,
                    "--epoch",
                    &epoch,
                ],
            )
            .spawn()
            .unwrap()
    };
    let (ca, cb) = (spawn(0, "c-race-x"), spawn(1, "c-race-y"));
    let (oa, ob) = (
        ca.wait_with_output().unwrap(),
        cb.wait_with_output().unwrap(),
    );
    assert_eq!(
        [&oa, &ob].iter().filter(|o| o.status.success()).count(),
        1,
        "{oa:?}\n{ob:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_instance_leaves_the_fleet_within_its_lease() {
    let tag = "lease";
    let fleet = EtcdFleet::start(tag, 3, false);
    assert_eq!(fleet.fleet_records(0).len(), 3);

    fleet.instances[2].signal(libc::SIGKILL);
    let killed = Instant::now();
    eventually(
        "the killed instance leaving the fleet list",
        Duration::from_secs(8),
        || {
            let n = fleet.fleet_records(0).len();
            async move { n == 2 }
        },
    )
    .await;
    let gone = killed.elapsed();
    eprintln!("SIGKILLed instance left the fleet after {gone:?} (lease TTL 3 s)");
    assert!(gone <= Duration::from_millis(4500), "{gone:?}");

    // A drained instance leaves at once (its lease is revoked).
    let mut fleet = fleet;
    fleet.instances[1].sigterm();
    let status = fleet.instances[1]
        .wait_exit(Duration::from_secs(15))
        .unwrap();
    assert!(status.success(), "{status:?}");
    let records = fleet.fleet_records(0);
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["id"], "lease-0");
}

#[test]
fn start_up_with_etcd_down_fails_fast_and_names_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port().unwrap();
    let config = dir.path().join("osproxy.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\ndata = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\
             [[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:9\"\n\
             [control]\nbackend = \"etcd\"\netcd = {{ endpoints = [\"http://127.0.0.1:{port}\"], connect_timeout = \"1s\" }}\n"
        ),
    )
    .unwrap();
    let started = Instant::now();
    let out = Command::new(binary())
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("cannot reach etcd"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_moving_partition_pauses_writes_in_cutover_and_on_instances_cut_off_from_etcd() {
    let tag = "moving";
    let fleet = EtcdFleet::start(tag, 2, true);
    let key = fleet.key("placements/orders/acme");
    let source = format!("c-{tag}-shared");
    let value = |phase: &str| {
        format!(
            r#"{{"placement":{{"kind":"shared","cluster":"main","index":"{source}"}},"state":"migrating","to":{{"kind":"index","cluster":"main","index":"c-{tag}-acme"}},"phase":"{phase}"}}"#
        )
    };
    // Copying: writes still go to the source.
    fleet
        .etcd
        .etcdctl(&["put", &key, &value("copying")])
        .unwrap();
    for i in 0..2 {
        eventually(
            "the migrating entry reached the instance",
            Duration::from_secs(3),
            || async {
                fleet.admin(i, "/v1/placements/orders/acme").await.json()["phase"] == "copying"
            },
        )
        .await;
        let r = fleet.index_doc(i, &format!("copying-{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    assert_eq!(
        direct_get(&format!("/{source}/_doc/acme:copying-1"))
            .await
            .status,
        200
    );
    // A plain placement set cannot touch a moving partition, even at the
    // entry's current epoch (so the compare-and-swap itself would pass).
    let epoch = fleet.admin(0, "/v1/placements/orders/acme").await.json()["epoch"]
        .as_u64()
        .expect("the moving entry has an epoch")
        .to_string();
    let out = fleet.ctl(
        0,
        &[
            "placement",
            "set",
            "orders",
            "acme",
            "--kind",
            "index",
            "--cluster",
            "main",
            "--index-name",
            "c-moving-x",
            "--epoch",
            &epoch,
        ],
    );
    assert!(!out.status.success());
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains("being migrated"),
        "refused for another reason: {said}"
    );
    assert_eq!(
        fleet.admin(0, "/v1/placements/orders/acme").await.json()["phase"],
        "copying",
        "the moving entry changed"
    );

    // Cutover: writes refused retryably everywhere; reads still served.
    fleet
        .etcd
        .etcdctl(&["put", &key, &value("cutover")])
        .unwrap();
    for i in 0..2 {
        eventually(
            "cutover reached the instance",
            Duration::from_secs(3),
            || async {
                fleet.admin(i, "/v1/placements/orders/acme").await.json()["phase"] == "cutover"
            },
        )
        .await;
        let r = fleet.index_doc(i, "during-cutover").await;
        assert_eq!(r.status, 409, "{}", r.text());
        let e = r.json();
        assert_eq!(e["error"]["type"], "partition_moving");
        assert_eq!(e["error"]["osproxy"]["retryable"], true);
        let auth = format!("Bearer {ACME}");
        let read = fleet
            .http
            .send_with(
                Method::GET,
                &format!("{}/orders/_doc/copying-0", fleet.instances[i].url()),
                None,
                &[("authorization", auth.as_str())],
            )
            .await
            .unwrap();
        assert_eq!(read.status, 200, "{}", read.text());
    }

    // Back to copying; then the instance behind the relay loses etcd: once
    // past its freshness bound it refuses writes to the moving partition
    // (M5) while the connected one accepts them.
    fleet
        .etcd
        .etcdctl(&["put", &key, &value("copying")])
        .unwrap();
    eventually("copying again", Duration::from_secs(3), || async {
        fleet.admin(1, "/v1/placements/orders/acme").await.json()["phase"] == "copying"
    })
    .await;
    fleet.relay.as_ref().unwrap().cut();
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let r = fleet.index_doc(1, "cut-off").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "control_plane_stale");
    let r = fleet.index_doc(0, "connected").await;
    assert_eq!(r.status, 201, "{}", r.text());
    fleet.relay.as_ref().unwrap().restore();
    eventually(
        "the instance is fresh again and writes",
        Duration::from_secs(10),
        || async { fleet.index_doc(1, "reconnected").await.status == 201 },
    )
    .await;
}

/// `ctl` arguments that start moving `partition` of `index` to a
/// placement of `kind` on `cluster` with physical index `index_name`.
fn migrate_start<'a>(
    index: &'a str,
    partition: &'a str,
    kind: &'a str,
    cluster: &'a str,
    index_name: &'a str,
) -> Vec<&'a str> {
    vec![
        "migrate",
        "start",
        index,
        partition,
        "--kind",
        kind,
        "--cluster",
        cluster,
        "--index-name",
        index_name,
    ]
}

/// One writer's acknowledged state: id → Some(n) written, None deleted.
type Acked = std::collections::BTreeMap<String, Option<u64>>;

/// Writes (and deletes) acme documents through alternating instances until
/// `stop`, retrying what is refused retryably; returns what was
/// acknowledged.
async fn writer(
    fleet: &EtcdFleet,
    stop: Arc<std::sync::atomic::AtomicBool>,
    refused: Arc<std::sync::atomic::AtomicU64>,
) -> Acked {
    let mut acked = Acked::new();
    let auth = format!("Bearer {ACME}");
    let retryable = ["stale_epoch", "partition_moving", "control_plane_stale"];
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let base = fleet.instances[(n % 2) as usize].url();
        let id = format!("w{}", n % 40);
        // Deletes, partial updates (upserting), single-item bulks and
        // plain index requests, interleaved.
        let (method, url, body, kind) = if n.is_multiple_of(7) {
            (
                Method::DELETE,
                format!("{base}/orders/_doc/{id}"),
                None,
                "delete",
            )
        } else if n.is_multiple_of(5) {
            let body = json!({"doc": {"n": n}, "doc_as_upsert": true}).to_string();
            (
                Method::POST,
                format!("{base}/orders/_update/{id}"),
                Some(body),
                "update",
            )
        } else if n.is_multiple_of(3) {
            let body = format!(
                "{{\"index\":{{\"_index\":\"orders\",\"_id\":\"{id}\"}}}}\n{}\n",
                json!({"n": n})
            );
            (Method::POST, format!("{base}/_bulk"), Some(body), "bulk")
        } else {
            (
                Method::PUT,
                format!("{base}/orders/_doc/{id}"),
                Some(json!({"n": n}).to_string()),
                "index",
            )
        };
        loop {
            let content_type = if kind == "bulk" {
                "application/x-ndjson"
            } else {
                "application/json"
            };
            let r = fleet
                .http
                .send_with(
                    method.clone(),
                    &url,
                    body.clone().map(Into::into),
                    &[
                        ("authorization", auth.as_str()),
                        ("content-type", content_type),
                    ],
                )
                .await
                .unwrap();
            let v = r.json();
            let (status, error_type) = if kind == "bulk" && r.status == 200 {
                let item = &v["items"][0]["index"];
                (
                    item["status"].as_u64().unwrap_or(0) as u16,
                    item["error"]["type"].as_str().unwrap_or("").to_string(),
                )
            } else {
                (
                    r.status.as_u16(),
                    v["error"]["type"].as_str().unwrap_or("").to_string(),
                )
            };
            match status {
                200 | 201 => {
                    acked.insert(id.clone(), if kind == "delete" { None } else { Some(n) });
                    break;
                }
                404 if kind == "delete" => {
                    acked.insert(id.clone(), None);
                    break;
                }
                409 | 503 if retryable.contains(&error_type.as_str()) => {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                s => panic!("unexpected answer {s} to a {kind}: {}", r.text()),
            }
        }
    }
    acked
}

/// Asserts that `ctl ARGS` on instance 0 fails, saying `says`.
fn ctl_refuses(fleet: &EtcdFleet, args: &[&str], says: &str) {
    let out = fleet.ctl(0, args);
    assert!(!out.status.success(), "{args:?}");
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(err.contains(says), "{args:?}: {err}");
}

/// Checks that the destination index `dest` holds exactly the writer's
/// acknowledged state (the last acknowledged write of each document, no
/// partition field, nothing acknowledged as deleted), the 100 documents
/// written before the move, and nothing of globex's.
async fn destination_holds_exactly(dest: &str, acked: &Acked) {
    Http::new()
        .send(
            Method::POST,
            &format!("{}/{dest}/_refresh", node().url()),
            None,
        )
        .await
        .unwrap();
    for (id, state) in acked {
        let doc = direct_get(&format!("/{dest}/_doc/{id}")).await;
        match state {
            Some(n) => {
                assert_eq!(doc.status, 200, "{id} acknowledged as written is missing");
                assert_eq!(
                    doc.json()["_source"]["n"],
                    *n,
                    "{id}: not the last acknowledged write"
                );
                assert!(doc.json()["_source"].get("_tenant").is_none());
            }
            None => assert_eq!(doc.status, 404, "{id} acknowledged as deleted is present"),
        }
    }
    for i in 0..100 {
        assert_eq!(
            direct_get(&format!("/{dest}/_doc/pre{i}")).await.status,
            200
        );
    }
    assert_eq!(direct_get(&format!("/{dest}/_doc/g1")).await.status, 404);
    let count = direct_get(&format!("/{dest}/_count")).await.json();
    let live = acked.values().filter(|s| s.is_some()).count() as u64;
    assert_eq!(count["count"], 100 + live, "{count}");
}

/// acme moves to its own index while a writer writes through two
/// instances: bad requests are refused, every instance routes to the
/// destination afterwards, which holds exactly what was acknowledged; an
/// empty partition moves cleanly.
#[tokio::test(flavor = "multi_thread")]
async fn a_partition_moves_while_written_to_through_two_instances_losing_nothing() {
    let tag = "mig";
    let fleet = Arc::new(EtcdFleet::start(tag, 2, false));
    let dest = format!("c-{tag}-acme");
    // Data before the move, and another tenant's, which must stay put.
    for i in 0..100 {
        let r = fleet.index_doc((i % 2) as usize, &format!("pre{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    let auth = format!("Bearer {GLOBEX}");
    fleet
        .http
        .send_with(
            Method::PUT,
            &format!("{}/orders/_doc/g1", fleet.instances[0].url()),
            Some(json!({"n": 1}).to_string().into()),
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();

    // Bad input first.
    let bad = |args: &[&str], says: &str| ctl_refuses(&fleet, args, says);
    bad(
        &migrate_start(
            "orders",
            "acme",
            "shared",
            "main",
            &format!("c-{tag}-shared"),
        ),
        "already at that placement",
    );
    bad(
        &migrate_start("orders", "acme", "index", "nowhere", "x"),
        "unknown cluster",
    );
    bad(
        &migrate_start("nope", "acme", "index", "main", "x"),
        "not a logical index",
    );

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let w = {
        let (fleet, stop, refused) = (fleet.clone(), stop.clone(), refused.clone());
        tokio::spawn(async move { writer(&fleet, stop, refused).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = fleet.ctl_json(0, &migrate_start("orders", "acme", "index", "main", &dest));
    assert_eq!(started["phase"], "copying");
    bad(
        &migrate_start("orders", "acme", "index", "main", "other"),
        "running",
    );
    let record = fleet
        .migration_over(1, "the migration to finish", Duration::from_secs(60))
        .await;
    assert_eq!(record["phase"], "done", "{record}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = w.await.unwrap();
    eprintln!(
        "migration record: {record}; writes refused and retried: {}",
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );

    // Every instance routes acme to the destination (M2).
    for i in 0..2 {
        let e = fleet.admin(i, "/v1/placements/orders/acme").await.json();
        assert_eq!(e["state"], "active", "{e}");
        assert_eq!(e["placement"]["index"], dest.as_str(), "{e}");
    }
    // The destination holds exactly the acknowledged state (M1, M4):
    // nothing lost, nothing resurrected, nothing of another tenant.
    destination_holds_exactly(&dest, &acked).await;
    assert!(record["cutover_ms"].as_u64().is_some());

    // Reads through the proxy come from the destination now.
    let auth = format!("Bearer {ACME}");
    let r = fleet
        .http
        .send_with(
            Method::GET,
            &format!("{}/orders/_doc/pre1", fleet.instances[1].url()),
            None,
            &[("authorization", auth.as_str())],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);

    // A partition with no data moves cleanly; an abort in copying leaves the
    // partition at its source.
    let empty = fleet.ctl_json(
        0,
        &migrate_start(
            "orders",
            "nobody",
            "index",
            "main",
            &format!("c-{tag}-nobody"),
        ),
    );
    assert_eq!(empty["phase"], "copying");
    eventually(
        "the empty migration to finish",
        Duration::from_secs(30),
        || {
            let r = fleet.ctl_json(0, &["migrate", "status", "orders", "nobody"]);
            async move { r["phase"] == "done" }
        },
    )
    .await;
    let list = String::from_utf8_lossy(&fleet.ctl(1, &["migrate", "list"]).stdout).into_owned();
    assert!(
        list.contains("acme") && list.contains("nobody") && list.contains("done"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_aborted_migration_leaves_the_partition_at_its_source() {
    let tag = "abort";
    let fleet = EtcdFleet::start(tag, 2, false);
    // Enough documents that the copy is still running when aborted.
    load_acme(&fleet, 40000).await;
    let started = fleet.ctl_json(
        0,
        &migrate_start("orders", "acme", "index", "main", &format!("c-{tag}-acme")),
    );
    assert_eq!(started["phase"], "copying");
    // Progress is visible while the copy runs.
    eventually(
        "copy progress in the record",
        Duration::from_secs(20),
        || {
            let r = fleet.ctl_json(1, &["migrate", "status", "orders", "acme"]);
            let progressing = r["phase"] == "copying" && r["copied"].as_u64().unwrap_or(0) > 0;
            async move { progressing }
        },
    )
    .await;
    let aborted = fleet.ctl_json(1, &["migrate", "abort", "orders", "acme"]);
    assert_eq!(aborted["phase"], "aborted", "{aborted}");
    for i in 0..2 {
        eventually(
            "the abort reached the instance",
            Duration::from_secs(3),
            || async {
                fleet.admin(i, "/v1/placements/orders/acme").await.json()["state"] == "active"
            },
        )
        .await;
        let e = fleet.admin(i, "/v1/placements/orders/acme").await.json();
        assert_eq!(e["placement"]["index"], format!("c-{tag}-shared"), "{e}");
        let r = fleet.index_doc(i, &format!("after-abort-{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    // The controller noticed and stopped: the record stays aborted.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rec = fleet.ctl_json(0, &["migrate", "status", "orders", "acme"]);
    assert_eq!(rec["phase"], "aborted", "{rec}");
    assert_eq!(
        direct_get(&format!("/c-{tag}-shared/_doc/acme:after-abort-1"))
            .await
            .status,
        200
    );
    let out = fleet.ctl(0, &["migrate", "abort", "orders", "acme"]);
    assert!(!out.status.success(), "nothing left to abort");
    // What the copy wrote is removed once the run has stopped: the
    // dedicated destination is gone, and the record no longer reserves it.
    let dest = format!("c-{tag}-acme");
    eventually(
        "the aborted copy removed from its destination",
        Duration::from_secs(20),
        || async {
            let r = fleet.ctl_json(1, &["migrate", "status", "orders", "acme"]);
            r.get("cleaning").is_none() && direct_get(&format!("/{dest}")).await.status == 404
        },
    )
    .await;
    // Free again: another partition may take the index, and it is empty.
    let set = fleet.ctl_json(
        0,
        &[
            "placement",
            "set",
            "orders",
            "globex",
            "--kind",
            "index",
            "--cluster",
            "main",
            "--index-name",
            &dest,
        ],
    );
    assert!(set["epoch"].as_u64().is_some(), "{set}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_migrations_destination_stays_reserved_until_cleaned() {
    let tag = "reserve";
    // A second cluster id reaching the node through a relay the test cuts:
    // the move there fails, and its clean-up cannot finish until the link
    // is back, so the reservation is observable (a reachable destination is
    // cleaned within a second).
    let node_addr = node().url().trim_start_matches("http://").to_string();
    let link = Relay::start(&node_addr).unwrap();
    let fleet = EtcdFleet::start_with(
        tag,
        2,
        false,
        &format!(
            "[[clusters]]\nid = \"edge\"\nurl = \"{}\"\n",
            link.endpoint()
        ),
    );
    load_acme(&fleet, 10).await;
    // The destination already holds something (what an earlier run of the
    // move could have copied there).
    let dest = format!("c-{tag}-acme");
    let put = Http::new()
        .send(
            Method::PUT,
            &format!("{}/{dest}/_doc/left?refresh=true", node().url()),
            Some(&json!({"n": 1}).to_string()),
        )
        .await
        .unwrap();
    assert_eq!(put.status, 201, "{}", put.text());
    link.cut();
    fleet.ctl_json(0, &migrate_start("orders", "acme", "index", "edge", &dest));
    let record = fleet
        .migration_over(
            1,
            "the move over the cut link to fail",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(record["phase"], "failed", "{record}");
    assert_eq!(record["cleaning"], true, "{record}");
    // The partition is served from its source meanwhile.
    assert_eq!(fleet.index_doc(1, "still-here").await.status, 201);
    // No other partition may take the destination ...
    ctl_refuses(
        &fleet,
        &[
            "placement",
            "set",
            "orders",
            "globex",
            "--kind",
            "index",
            "--cluster",
            "edge",
            "--index-name",
            &dest,
        ],
        "still holds documents an ended migration of partition \"acme\"",
    );
    // ... nor may a new move of the partition start before the clean-up.
    ctl_refuses(
        &fleet,
        &migrate_start("orders", "acme", "index", "main", &format!("c-{tag}-other")),
        "still removing what it copied",
    );
    // The clean-up is retried until the destination answers, then the
    // index is gone and the reservation released.
    link.restore();
    eventually(
        "the clean-up to finish once the link is back",
        Duration::from_secs(30),
        || async {
            let r = fleet.ctl_json(1, &["migrate", "status", "orders", "acme"]);
            r.get("cleaning").is_none() && direct_get(&format!("/{dest}")).await.status == 404
        },
    )
    .await;
    let started = fleet.ctl_json(
        0,
        &migrate_start("orders", "acme", "index", "main", &format!("c-{tag}-other")),
    );
    assert_eq!(started["phase"], "copying", "{started}");
}

async fn load_acme(fleet: &EtcdFleet, docs: usize) {
    let auth = format!("Bearer {ACME}");
    let mut bulk = String::new();
    for i in 0..docs {
        bulk.push_str(&format!(
            "{{\"index\":{{\"_index\":\"orders\",\"_id\":\"b{i}\"}}}}\n{{\"n\":{i}}}\n"
        ));
    }
    let r = fleet
        .http
        .send_with(
            Method::POST,
            &format!("{}/_bulk?refresh=true", fleet.instances[1].url()),
            Some(bulk.into()),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/x-ndjson"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.json()["errors"], false);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_migration_whose_controller_is_killed_is_adopted_and_completed() {
    let tag = "adopt";
    let fleet = EtcdFleet::start(tag, 2, false);
    load_acme(&fleet, 20000).await;
    let dest = format!("c-{tag}-acme");
    let started = fleet.ctl_json(0, &migrate_start("orders", "acme", "index", "main", &dest));
    assert_eq!(started["controller"], "adopt-0");
    fleet.instances[0].signal(libc::SIGKILL);
    let record = fleet
        .migration_over(
            1,
            "another instance to adopt and finish the migration",
            Duration::from_secs(60),
        )
        .await;
    assert_eq!(record["phase"], "done", "{record}");
    assert_eq!(record["controller"], "adopt-1", "{record}");
    assert_eq!(record["verified_count"], 20000, "{record}");
    let count = direct_get(&format!("/{dest}/_count")).await.json();
    assert_eq!(count["count"], 20000, "{count}");
    let e = fleet.admin(1, "/v1/placements/orders/acme").await.json();
    assert_eq!(e["placement"]["index"], dest.as_str(), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abort_in_cutover_puts_the_partition_back_with_every_write() {
    let tag = "cutabort";
    let fleet = EtcdFleet::start(tag, 2, false);
    load_acme(&fleet, 50).await;
    // A throttled by-query task on the source (started on the node, as an
    // operator would) holds the migration in cutover: the controller waits
    // for such tasks before its catch-up.
    let task = Http::new()
        .send(
            Method::POST,
            &format!(
                "{}/c-{tag}-shared/_update_by_query?wait_for_completion=false&requests_per_second=1&scroll_size=1&conflicts=proceed",
                node().url()
            ),
            Some(&json!({"query": {"term": {"_tenant": "acme"}}}).to_string()),
        )
        .await
        .unwrap()
        .json()["task"]
        .as_str()
        .unwrap()
        .to_string();
    fleet.ctl_json(
        0,
        &migrate_start("orders", "acme", "index", "main", &format!("c-{tag}-acme")),
    );
    eventually(
        "the migration to reach cutover",
        Duration::from_secs(20),
        || {
            let r = fleet.ctl_json(1, &["migrate", "status", "orders", "acme"]);
            async move { r["phase"] == "cutover" }
        },
    )
    .await;
    // Writes wait, index-level ones too (the copy would not carry a
    // mapping change made now).
    let r = fleet.index_doc(0, "in-cutover").await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "partition_moving");
    let ops = format!("Bearer {OPS}");
    let r = fleet
        .http
        .send_with(
            Method::PUT,
            &format!("{}/orders/_mapping", fleet.instances[1].url()),
            Some(
                json!({"properties": {"late": {"type": "keyword"}}})
                    .to_string()
                    .into(),
            ),
            &[
                ("authorization", ops.as_str()),
                ("x-osproxy-partition", "acme"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(
        r.json()["error"]["type"],
        "partition_moving",
        "{}",
        r.text()
    );
    let aborted = fleet.ctl_json(1, &["migrate", "abort", "orders", "acme"]);
    assert_eq!(aborted["phase"], "aborted", "{aborted}");
    Http::new()
        .send(
            Method::POST,
            &format!("{}/_tasks/{task}/_cancel", node().url()),
            None,
        )
        .await
        .unwrap();
    Http::new()
        .send(
            Method::POST,
            &format!("{}/_tasks/{task}/_cancel", node().url()),
            None,
        )
        .await
        .unwrap();
    for i in 0..2 {
        eventually(
            "the abort reached the instance",
            Duration::from_secs(3),
            || async {
                fleet.admin(i, "/v1/placements/orders/acme").await.json()["state"] == "active"
            },
        )
        .await;
        let r = fleet.index_doc(i, &format!("after-{i}")).await;
        assert_eq!(r.status, 201, "{}", r.text());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        fleet.ctl_json(0, &["migrate", "status", "orders", "acme"])["phase"],
        "aborted"
    );
    // Every write acknowledged before and after is at the source (M3).
    let count = direct_get(&format!("/c-{tag}-shared/_count?q=_tenant:acme"))
        .await
        .json();
    assert_eq!(count["count"], 52, "{count}");
}

/// Checks that `index` on the node at `url` holds exactly the acknowledged
/// state of the writer's documents (and the 100 preloaded ones).
async fn holds_exactly(
    url: &str,
    index: &str,
    id_of: impl Fn(&str) -> String,
    acked: &Acked,
    extra_field: Option<&str>,
) {
    let http = Http::new();
    http.send(Method::POST, &format!("{url}/{index}/_refresh"), None)
        .await
        .unwrap();
    for (id, state) in acked {
        let doc = http
            .send(
                Method::GET,
                &format!("{url}/{index}/_doc/{}?routing=acme", id_of(id)),
                None,
            )
            .await
            .unwrap();
        match state {
            Some(n) => {
                assert_eq!(
                    doc.status, 200,
                    "{index}: {id} acknowledged as written is missing"
                );
                assert_eq!(
                    doc.json()["_source"]["n"],
                    *n,
                    "{index}: {id} is not the last acknowledged write"
                );
                assert_eq!(
                    doc.json()["_source"].get("_tenant").and_then(Value::as_str),
                    extra_field,
                    "{index}: {id}"
                );
            }
            None => assert_eq!(
                doc.status, 404,
                "{index}: {id} acknowledged as deleted is present"
            ),
        }
    }
}

/// (kind, cluster, physical index, node url, expected partition field)
type Hop<'a> = (&'a str, &'a str, Option<String>, String, Option<&'a str>);

#[tokio::test(flavor = "multi_thread")]
async fn a_partition_moves_through_every_placement_kind_and_back_while_written_to() {
    let tag = "kinds";
    let second = osproxy_testkit::OpenSearchNode::start().unwrap();
    let extra = format!(
        "[[clusters]]\nid = \"second\"\nurl = \"{}\"\n",
        second.url()
    );
    let fleet = Arc::new(EtcdFleet::start_with(tag, 2, false, &extra));
    let mut acked = Acked::new();
    let hops: [Hop; 4] = [
        (
            "index",
            "main",
            Some(format!("c-{tag}-acme")),
            node().url(),
            None,
        ),
        ("cluster", "second", None, second.url(), None),
        (
            "cluster",
            "main",
            Some(format!("c-{tag}-acme-own")),
            node().url(),
            None,
        ),
        (
            "shared",
            "main",
            Some(format!("c-{tag}-shared")),
            node().url(),
            Some("acme"),
        ),
    ];
    for (kind, cluster, index_name, url, field) in hops {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let w = {
            let (fleet, stop, refused) = (fleet.clone(), stop.clone(), refused.clone());
            tokio::spawn(async move { writer(&fleet, stop, refused).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut args = vec![
            "migrate",
            "start",
            "orders",
            "acme",
            "--kind",
            kind,
            "--cluster",
            cluster,
        ];
        if let Some(i) = &index_name {
            args.extend(["--index-name", i.as_str()]);
        }
        let started = fleet.ctl_json(0, &args);
        assert_eq!(started["phase"], "copying", "{started}");
        let record = fleet
            .migration_over(1, "the hop to finish", Duration::from_secs(60))
            .await;
        assert_eq!(record["phase"], "done", "{kind} on {cluster}: {record}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Later writes of the same id supersede earlier hops' acknowledgements.
        for (id, state) in w.await.unwrap() {
            acked.insert(id, state);
        }
        let physical = index_name.clone().unwrap_or_else(|| "orders".to_string());
        let shared = kind == "shared";
        holds_exactly(
            &url,
            &physical,
            |id| {
                if shared {
                    format!("acme:{id}")
                } else {
                    id.to_string()
                }
            },
            &acked,
            field,
        )
        .await;
        for i in 0..2 {
            let e = fleet.admin(i, "/v1/placements/orders/acme").await.json();
            assert_eq!(e["placement"]["kind"], kind, "{e}");
            assert_eq!(e["placement"]["cluster"], cluster, "{e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_frozen_in_cutover_and_resumed_after_the_flip_never_writes_to_the_source() {
    let tag = "frozen";
    let fleet = EtcdFleet::start(tag, 2, false);
    load_acme(&fleet, 5000).await;
    let source = format!("c-{tag}-shared");
    let dest = format!("c-{tag}-acme");
    fleet.ctl_json(0, &migrate_start("orders", "acme", "index", "main", &dest));
    eventually("cutover", Duration::from_secs(30), || {
        let r = fleet.ctl_json(0, &["migrate", "status", "orders", "acme"]);
        async move { r["phase"] == "cutover" }
    })
    .await;
    fleet.instances[1].signal(libc::SIGSTOP);
    let record = fleet
        .migration_over(
            0,
            "the flip without the frozen instance",
            Duration::from_secs(30),
        )
        .await;
    assert_eq!(record["phase"], "done", "{record}");
    fleet.instances[1].signal(libc::SIGCONT);
    // Straight after waking up, and for a while: never a write to the
    // source. Refused retryably until its snapshot catches up, then to B.
    let mut landed = false;
    for n in 0..40 {
        let id = format!("woken-{n}");
        let r = fleet.index_doc(1, &id).await;
        match r.status.as_u16() {
            201 => {
                assert_eq!(
                    direct_get(&format!("/{dest}/_doc/{id}")).await.status,
                    200,
                    "{id} not at the destination"
                );
                landed = true;
            }
            409 | 503 => assert_eq!(
                r.json()["error"]["osproxy"]["retryable"],
                true,
                "{}",
                r.text()
            ),
            s => panic!("unexpected {s}: {}", r.text()),
        }
        assert_eq!(
            direct_get(&format!("/{source}/_doc/acme:{id}"))
                .await
                .status,
            404,
            "{id} reached the old placement"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(landed, "the woken instance never caught up");
}

/// Two values claiming one dedicated index: the one written first owns it,
/// on an instance that followed both as they came and on one that read them
/// at start-up (where key order would have let the later write win).
#[tokio::test(flavor = "multi_thread")]
async fn of_two_claims_to_one_index_the_first_written_wins_on_every_instance() {
    let tag = "owners";
    let mut fleet = EtcdFleet::start(tag, 2, false);
    let value = json!({"placement": {"kind": "index", "cluster": "main", "index": format!("c-{tag}-x")}, "state": "active"}).to_string();
    // "zzz" first, then "aaa": revision order and key order disagree.
    for partition in ["zzz", "aaa"] {
        fleet
            .etcd
            .etcdctl(&[
                "put",
                &fleet.key(&format!("placements/orders/{partition}")),
                &value,
            ])
            .unwrap();
    }
    let physical = format!("c-{tag}-x");
    eventually(
        "the first claim applied",
        Duration::from_secs(5),
        || async { fleet.entry(0, "zzz").await.1 == physical },
    )
    .await;
    // Instance 1 reads the whole table at start-up.
    fleet.kill_and_restart(1);
    for i in 0..2 {
        assert_eq!(fleet.entry(i, "zzz").await.1, physical, "instance {i}");
        assert_ne!(
            fleet.entry(i, "aaa").await.1,
            physical,
            "instance {i}: two owners"
        );
        let record = &fleet
            .fleet_records(0)
            .into_iter()
            .find(|r| r["id"] == format!("{tag}-{i}"))
            .unwrap_or_default();
        assert!(
            record["rejected_keys"]
                .to_string()
                .contains("placements/orders/aaa"),
            "instance {i} does not report the refused claim: {record}"
        );
    }
}

/// A seed that stopped half-way (the marker still says "pending") is
/// finished by the next instance that starts, instead of the half being
/// kept for ever as "the store wins".
#[tokio::test(flavor = "multi_thread")]
async fn a_seed_stopped_half_way_is_finished_at_the_next_start() {
    let tag = "seed";
    let extra = format!(
        "[[indices]]\nname = \"second\"\ndefault = {{ kind = \"shared\", cluster = \"main\", index = \"c-{tag}-second\" }}\n"
    );
    let mut fleet = EtcdFleet::start_with(tag, 1, false, &extra);
    let etcdctl = |fleet: &EtcdFleet, args: &[&str]| fleet.etcd.etcdctl(args).unwrap();
    let marker = |fleet: &EtcdFleet| {
        etcdctl(fleet, &["get", "--print-value-only", &fleet.key("seed")])
            .trim()
            .to_string()
    };
    let listed = |fleet: &EtcdFleet| {
        let admin = fleet.instances[0].admin_url();
        async move {
            Http::new()
                .send_with(
                    Method::GET,
                    &format!("{admin}/v1/catalogue"),
                    None,
                    &[("authorization", &format!("Bearer {OPS}"))],
                )
                .await
                .unwrap()
                .text()
                .contains("\"second\"")
        }
    };
    assert_eq!(marker(&fleet), "done");
    // As if the first start had stopped after its first transaction.
    etcdctl(&fleet, &["del", &fleet.key("catalogue/second")]);
    etcdctl(&fleet, &["put", &fleet.key("seed"), "pending"]);
    fleet.kill_and_restart(0);
    assert!(listed(&fleet).await, "the seed was not finished");
    assert_eq!(marker(&fleet), "done");
    // Finished, the store wins again: a removed entry stays removed.
    etcdctl(&fleet, &["del", &fleet.key("catalogue/second")]);
    fleet.kill_and_restart(0);
    assert!(!listed(&fleet).await, "a finished seed was applied again");
}

/// A table larger than one page of the whole-prefix read (1,000 keys) is
/// read whole at start-up.
#[tokio::test(flavor = "multi_thread")]
async fn a_table_of_more_than_a_page_is_read_whole_at_start_up() {
    let tag = "paged";
    let mut fleet = EtcdFleet::start(tag, 1, false);
    let auth = format!("Bearer {OPS}");
    let shared = json!({"kind": "shared", "cluster": "main", "index": format!("c-{tag}-shared")})
        .to_string();
    let admin = fleet.instances[0].admin_url();
    for i in 0..1050 {
        let r = fleet
            .http
            .send_with(
                Method::PUT,
                &format!("{admin}/v1/placements/orders/p{i:04}"),
                Some(shared.clone().into()),
                &[
                    ("authorization", auth.as_str()),
                    ("content-type", "application/json"),
                ],
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    fleet.kill_and_restart(0);
    let listed = fleet.admin(0, "/v1/placements/orders").await.json();
    let n = listed["entries"].as_array().map(Vec::len).unwrap_or(0);
    assert_eq!(
        n,
        1050,
        "{}",
        listed.to_string().chars().take(300).collect::<String>()
    );
}

/// `migrate start --wait` follows the move to its end, one line per phase
/// without a terminal, and `--max-docs-per-second` paces the copy.
#[tokio::test(flavor = "multi_thread")]
async fn a_waited_migration_reports_each_phase_and_keeps_its_pace() {
    let tag = "wait";
    let fleet = EtcdFleet::start(tag, 2, false);
    load_acme(&fleet, 300).await;
    let dest = format!("c-{tag}-acme");
    let mut args = migrate_start("orders", "acme", "index", "main", &dest);
    args.extend(["--wait", "--max-docs-per-second", "100"]);
    let out = fleet.ctl(0, &args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for phase in ["copying:", "cutover:", "done:"] {
        assert!(stdout.contains(phase), "no {phase} line in:\n{stdout}");
    }
    let record = fleet.ctl_json(0, &["migrate", "status", "orders", "acme"]);
    assert_eq!(record["total"], 300, "{record}");
    assert_eq!(record["max_docs_per_second"], 100, "{record}");
    // 300 documents at 100 a second: the copy takes at least 3 s.
    assert!(record["copy_ms"].as_u64().unwrap_or(0) >= 2900, "{record}");
    // A watched migration that fails exits non-zero with its reason.
    let mut back = migrate_start("orders", "acme", "index", "main", &dest);
    back.push("--wait");
    let out = fleet.ctl(0, &back);
    assert!(!out.status.success());
}

/// Two live processes with one instance id: the one holding the fleet
/// record keeps it, the other admits no writes (a barrier counting the
/// record would otherwise count one process for the other) until the
/// first is gone.
#[tokio::test(flavor = "multi_thread")]
async fn a_second_process_with_the_same_instance_id_admits_no_writes() {
    let tag = "dupid";
    let mut fleet = EtcdFleet::start(tag, 1, false);
    let endpoint = fleet.etcd.endpoint();
    let twin = fleet.launch(0, &endpoint, "");
    twin.wait_ready(Duration::from_secs(60)).unwrap();
    fleet.instances.push(twin);
    let r = fleet.index_doc(1, "via-twin").await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["type"], "control_plane_stale");
    assert!(fleet.instances[1]
        .log()
        .contains("another live process holds this instance id"));
    assert_eq!(fleet.index_doc(0, "via-first").await.status, 201);
    // The first one killed, its record expires with its lease; the twin
    // takes the id over and writes.
    fleet.instances[0].signal(9);
    eventually(
        "the twin takes the id over",
        Duration::from_secs(15),
        || async { fleet.index_doc(1, "via-twin-later").await.status == 201 },
    )
    .await;
}
