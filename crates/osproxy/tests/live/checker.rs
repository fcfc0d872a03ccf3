//! The migration checker: writers record every acknowledged write while a
//! seeded schedule moves partitions between placement kinds and injects
//! faults — instances paused past their lease (SIGSTOP/SIGCONT), killed
//! and restarted, cut off from etcd, etcd compacted or stopped and
//! restarted — at random
//! points. Afterwards every partition must be active at one placement,
//! every instance must route it there, and the placement must hold exactly
//! the acknowledged state: the last acknowledged value of each document
//! (or the value of a write whose outcome was reported unknown), no
//! acknowledged delete undone, nothing of another tenant.
//!
//! Real parts throughout: three osproxy processes on one real etcd, the
//! shared real OpenSearch node (two cluster ids point at it, so cluster
//! placements are exercised; the shared index has several shards, so the
//! per-shard catch-up checkpoint is). A failing schedule is reproduced by
//! its seed: `OSPROXY_CHECKER_SEEDS=1234 cargo test -p osproxy --test live
//! checker`. `scripts/soak` runs many.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::Method;
use osproxy_testkit::{Http, HttpResponse};
use serde_json::{json, Value};

use crate::common::node;
use crate::control::{EtcdFleet, OPS};

/// A small deterministic generator (splitmix64): the schedule is a
/// function of the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const PARTITIONS: [&str; 3] = ["p0", "p1", "p2"];
/// Concurrent writers, each with its own documents.
const WRITERS: usize = 5;
/// Documents per partition written before the schedule starts.
const PRELOAD: u64 = 3000;
const INDEX: &str = "chk";

/// What a writer knows of one document: its last acknowledged state
/// (`Some(None)`: deleted or never there; `Some(Some(v))`: value `v`), and
/// every state a write of unknown outcome could have left.
#[derive(Debug, Default, Clone)]
struct Doc {
    acked: Option<Option<u64>>,
    maybe: BTreeSet<Option<u64>>,
    /// Every write of it: (ms since the start, instance, state, answer).
    history: Vec<(u128, usize, Option<u64>, String)>,
}

type Model = BTreeMap<(String, String), Doc>;

/// The instances' data URLs, updated when one is restarted.
type Urls = Arc<RwLock<Vec<String>>>;

/// How an answer counts.
enum Outcome {
    Applied,
    NotApplied,
    Unknown,
}

fn outcome(status: u16, error_type: &str, delete: bool) -> Outcome {
    match (status, error_type) {
        (200 | 201, _) => Outcome::Applied,
        (404, _) if delete => Outcome::Applied,
        // Refused before anything was sent.
        (409, "stale_epoch" | "partition_moving") | (503, "control_plane_stale") => {
            Outcome::NotApplied
        }
        (503, "shutting_down") => Outcome::NotApplied,
        (409, "version_conflict_engine_exception") => Outcome::NotApplied,
        // Sent, but not confirmed (or the connection broke).
        _ => Outcome::Unknown,
    }
}

/// One writer: its own documents of every partition, written through a
/// random instance each time, sequentially (so "last acknowledged" is
/// well defined). Index, delete, multi-item bulks of one partition,
/// gateway bulks whose items name their own partitions (the index takes the
/// partition from each document's `p`), and delete-by-query.
async fn writer(
    w: usize,
    seed: u64,
    urls: Urls,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) -> Model {
    let http = Http::new();
    let mut rng = Rng(seed ^ (w as u64 + 1).wrapping_mul(0x5851_F42D_4C95_7F2D));
    let mut model = Model::new();
    let auth = format!("Bearer {OPS}");
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let value = (w as u64) << 40 | n;
        let partition = PARTITIONS[rng.below(PARTITIONS.len() as u64) as usize];
        let (instance, base) = {
            let u = urls.read().unwrap();
            let i = rng.below(u.len() as u64) as usize;
            (i, u[i].clone())
        };
        let id = |rng: &mut Rng| format!("w{w}-{}", rng.below(12));
        // An update of a preloaded document this writer owns: counts and
        // id sets stay equal, so a lost update passes a migration's
        // verification and only this check sees it.
        let preloaded = |rng: &mut Rng| {
            format!(
                "pre-{}",
                rng.below(PRELOAD / WRITERS as u64) * WRITERS as u64 + w as u64
            )
        };
        let mut headers = vec![
            ("authorization", auth.as_str()),
            ("x-osproxy-partition", partition),
        ];
        // p0 only ever sees updates of preloaded documents: its counts and id
        // sets never change, so a migration's verification cannot catch a
        // lost write there and this check is the only one that can.
        let choice = if partition == "p0" { 0 } else { rng.below(10) };
        // (documents touched: partition, id, state if applied; request)
        let (touched, method, path, body, ndjson): (Vec<Touched>, _, _, _, _) = if choice < 5 {
            let id = if choice < 3 {
                preloaded(&mut rng)
            } else {
                id(&mut rng)
            };
            let body = json!({"v": value, "p": partition}).to_string();
            (
                vec![(partition, id.clone(), Some(value))],
                Method::PUT,
                format!("/{INDEX}/_doc/{id}"),
                Some(body),
                false,
            )
        } else if choice < 7 {
            let id = id(&mut rng);
            (
                vec![(partition, id.clone(), None)],
                Method::DELETE,
                format!("/{INDEX}/_doc/{id}"),
                None,
                false,
            )
        } else if choice < 8 {
            let mut body = String::new();
            let mut touched: Vec<Touched> = Vec::new();
            for k in 0..(2 + rng.below(4)) {
                let id = id(&mut rng);
                if touched.iter().any(|(_, t, _)| *t == id) {
                    continue;
                }
                let v = value + (k << 32);
                if rng.chance(25) {
                    body.push_str(&format!(
                        "{{\"delete\":{{\"_index\":\"{INDEX}\",\"_id\":\"{id}\"}}}}\n"
                    ));
                    touched.push((partition, id, None));
                } else {
                    body.push_str(&format!(
                        "{{\"index\":{{\"_index\":\"{INDEX}\",\"_id\":\"{id}\"}}}}\n"
                    ));
                    body.push_str(&json!({"v": v, "p": partition}).to_string());
                    body.push('\n');
                    touched.push((partition, id, Some(v)));
                }
            }
            (
                touched,
                Method::POST,
                "/_bulk".to_string(),
                Some(body),
                true,
            )
        } else if choice < 9 {
            // A gateway bulk: no partition header, each item's partition
            // from its own document, so one request writes to several
            // partitions (some of them moving) at once; each item must
            // be gated and routed by its own partition.
            headers.retain(|(name, _)| *name != "x-osproxy-partition");
            let mut body = String::new();
            let mut touched: Vec<Touched> = Vec::new();
            for k in 0..(2 + rng.below(5)) {
                let p = PARTITIONS[rng.below(PARTITIONS.len() as u64) as usize];
                let id = if p == "p0" {
                    preloaded(&mut rng)
                } else {
                    id(&mut rng)
                };
                if touched.iter().any(|(tp, t, _)| *tp == p && *t == id) {
                    continue;
                }
                let v = value + (k << 32);
                body.push_str(&format!(
                    "{{\"index\":{{\"_index\":\"{INDEX}\",\"_id\":\"{id}\"}}}}\n"
                ));
                body.push_str(&json!({"v": v, "p": p}).to_string());
                body.push('\n');
                touched.push((p, id, Some(v)));
            }
            (
                touched,
                Method::POST,
                "/_bulk".to_string(),
                Some(body),
                true,
            )
        } else {
            let id = id(&mut rng);
            let body = json!({"query": {"ids": {"values": [id]}}}).to_string();
            (
                vec![(partition, id.clone(), None)],
                Method::POST,
                format!("/{INDEX}/_delete_by_query?refresh=true"),
                Some(body),
                false,
            )
        };
        let content_type = if ndjson {
            "application/x-ndjson"
        } else {
            "application/json"
        };
        let mut all = headers.clone();
        all.push(("content-type", content_type));
        let sent = http
            .send_with(
                method.clone(),
                &format!("{base}{path}"),
                body.map(Into::into),
                &all,
            )
            .await;
        let by_query = path.contains("_delete_by_query");
        let (results, answer): (Vec<Outcome>, String) = match sent {
            // A refused connection sent nothing; any other transport error
            // may have come after the request left.
            Err(e) if e.contains("Connection refused") => {
                (touched.iter().map(|_| Outcome::NotApplied).collect(), e)
            }
            Err(e) => (touched.iter().map(|_| Outcome::Unknown).collect(), e),
            Ok(r) => (
                answer_outcomes(&r, &touched, ndjson, by_query, method == Method::DELETE),
                format!(
                    "{} {}",
                    r.status.as_u16(),
                    r.text().chars().take(300).collect::<String>()
                ),
            ),
        };
        let at = stats.started.elapsed().as_millis();
        for ((p, id, state), o) in touched.into_iter().zip(results) {
            let doc = model
                .entry((p.to_string(), id.clone()))
                .or_insert_with(|| Doc {
                    // A preloaded document starts acknowledged at its index.
                    acked: id
                        .strip_prefix("pre-")
                        .and_then(|i| i.parse().ok())
                        .map(Some),
                    ..Doc::default()
                });
            doc.history
                .push((at, instance, state, format!("{method} {path}: {answer}")));
            match o {
                Outcome::Applied => {
                    stats.applied.fetch_add(1, Ordering::Relaxed);
                    doc.acked = Some(state);
                }
                Outcome::NotApplied => {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Unknown => {
                    stats.unknown.fetch_add(1, Ordering::Relaxed);
                    let why: String = answer.chars().take(60).collect();
                    if let Ok(mut w) = stats.unknown_why.lock() {
                        *w.entry(why).or_default() += 1;
                    }
                    doc.maybe.insert(state);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(rng.below(15))).await;
    }
    model
}

/// A document a request touches: its partition, id, and state if applied.
type Touched = (&'static str, String, Option<u64>);

fn answer_outcomes(
    r: &HttpResponse,
    touched: &[Touched],
    ndjson: bool,
    by_query: bool,
    delete: bool,
) -> Vec<Outcome> {
    let v = r.json();
    let status = r.status.as_u16();
    if ndjson && status == 200 {
        let items = v["items"].as_array().cloned().unwrap_or_default();
        if items.len() != touched.len() {
            return touched.iter().map(|_| Outcome::Unknown).collect();
        }
        return items
            .iter()
            .zip(touched)
            .map(|(item, (_, _, state))| {
                let inner = item
                    .as_object()
                    .and_then(|o| o.values().next())
                    .cloned()
                    .unwrap_or(Value::Null);
                let s = inner["status"].as_u64().unwrap_or(0) as u16;
                let t = inner["error"]["type"].as_str().unwrap_or("");
                outcome(s, t, state.is_none())
            })
            .collect();
    }
    if by_query && (status == 200 || status == 409) {
        // A by-query request deletes what its search sees, and a search
        // sees what was refreshed: "deleted 0" says nothing changed (the
        // document may exist unrefreshed), "deleted 1" that it is gone.
        let failures = v["failures"].as_array().map(Vec::len).unwrap_or(0);
        let deleted = v["deleted"].as_u64().unwrap_or(0);
        // A version conflict (409) aborts the request at that document:
        // with one id asked for, "deleted 0" then means it was not deleted.
        return vec![match (failures, deleted) {
            (_, 0) => Outcome::NotApplied,
            (0, _) => Outcome::Applied,
            _ => Outcome::Unknown,
        }];
    }
    let t = v["error"]["type"].as_str().unwrap_or("");
    vec![outcome(status, t, delete)]
}

struct Stats {
    started: Instant,
    applied: AtomicU64,
    refused: AtomicU64,
    unknown: AtomicU64,
    /// Answers of unknown outcome, by their first characters.
    unknown_why: std::sync::Mutex<BTreeMap<String, u64>>,
}

/// Writes `PRELOAD` documents of each partition, acknowledged.
async fn preload(http: &Http, url: &str) -> Model {
    let auth = format!("Bearer {OPS}");
    let mut model = Model::new();
    for p in PARTITIONS {
        for chunk in 0..(PRELOAD / 500) {
            let mut body = String::new();
            for i in chunk * 500..(chunk + 1) * 500 {
                body.push_str(&format!(
                    "{{\"index\":{{\"_index\":\"{INDEX}\",\"_id\":\"pre-{i}\"}}}}\n"
                ));
                body.push_str(&json!({"v": i, "p": p}).to_string());
                body.push('\n');
                model.insert(
                    (p.to_string(), format!("pre-{i}")),
                    Doc {
                        acked: Some(Some(i)),
                        ..Doc::default()
                    },
                );
            }
            let r = http
                .send_with(
                    Method::POST,
                    &format!("{url}/_bulk"),
                    Some(body.into()),
                    &[
                        ("authorization", auth.as_str()),
                        ("x-osproxy-partition", p),
                        ("content-type", "application/x-ndjson"),
                    ],
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.text());
            assert_eq!(r.json()["errors"], false, "{}", r.text());
        }
    }
    model
}

/// One schedule step, with when it happened.
fn note(schedule: &mut Vec<String>, stats: &Stats, what: String) {
    schedule.push(format!(
        "{} ms: {what}",
        stats.started.elapsed().as_millis()
    ));
}

/// Where partition `p` may be moved: the shared index, an index of its own,
/// or the second cluster (a cluster placement).
fn destinations(tag: &str, p: &str, k: u64) -> Vec<Value> {
    vec![
        json!({"kind": "shared", "cluster": "main", "index": format!("c-{tag}-chk")}),
        json!({"kind": "index", "cluster": "main", "index": format!("c-{tag}-own-{p}-{k}")}),
        json!({"kind": "cluster", "cluster": "second", "index": format!("c-{tag}-c2-{p}-{k}")}),
    ]
}

async fn admin(
    http: &Http,
    url: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<HttpResponse> {
    let auth = format!("Bearer {OPS}");
    http.send_with(
        method,
        &format!("{url}{path}"),
        body.map(|b| b.to_string().into()),
        &[
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
        ],
    )
    .await
    .ok()
}

/// Runs one seeded schedule and checks its end state.
async fn run_schedule(seed: u64) {
    let tag = format!("chk{seed}");
    let extra = format!(
        "[[clusters]]\nid = \"second\"\nurl = \"{}\"\n\n\
         [[indices]]\nname = \"{INDEX}\"\npartition = {{ body = \"p\" }}\n\
         default = {{ kind = \"shared\", cluster = \"main\", index = \"c-{tag}-chk\" }}\n\
         settings = {{ number_of_shards = 3 }}\n",
        node().url()
    );
    let mut fleet = EtcdFleet::start_with(&tag, 3, true, &extra);
    let urls: Urls = Arc::new(RwLock::new(
        fleet.instances.iter().map(|p| p.url()).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats {
        started: Instant::now(),
        applied: AtomicU64::new(0),
        refused: AtomicU64::new(0),
        unknown: AtomicU64::new(0),
        unknown_why: std::sync::Mutex::new(BTreeMap::new()),
    });
    let http = Http::new();
    // Documents no writer touches again: the copies and catch-ups have
    // something to move, and verification something to count.
    let mut model = preload(&http, &fleet.instances[0].url()).await;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| tokio::spawn(writer(w, seed, urls.clone(), stop.clone(), stats.clone())))
        .collect();
    let mut rng = Rng(seed);
    let mut schedule = Vec::new();
    let started = Instant::now();
    let mut k = 0u64;
    let mut migrations = 0;
    while started.elapsed() < Duration::from_secs(36) {
        k += 1;
        let admin_url = fleet.instances[rng.below(3) as usize].admin_url();
        match rng.below(10) {
            0..=3 => {
                let p = PARTITIONS[rng.below(3) as usize];
                // Somewhere else than where it is now.
                let now = admin(
                    &http,
                    &admin_url,
                    Method::GET,
                    &format!("/v1/placements/{INDEX}/{p}"),
                    None,
                )
                .await
                .map(|r| {
                    r.json()["placement"]["kind"]
                        .as_str()
                        .unwrap_or("shared")
                        .to_string()
                })
                .unwrap_or_default();
                let choices: Vec<Value> = destinations(&tag, p, k)
                    .into_iter()
                    .filter(|d| d["kind"].as_str() != Some(now.as_str()))
                    .collect();
                let to = choices[rng.below(choices.len() as u64) as usize].clone();
                let delete_source = rng.chance(50);
                let r = admin(&http, &admin_url, Method::POST, "/v1/migrations", Some(json!({"index": INDEX, "partition": p, "to": to, "delete_source": delete_source}))).await;
                let status = r.as_ref().map(|r| r.status.as_u16()).unwrap_or(0);
                if status == 202 {
                    migrations += 1;
                }
                note(
                    &mut schedule,
                    &stats,
                    format!("migrate {p} -> {to} delete_source={delete_source}: {status}"),
                );
            }
            4 => {
                let p = PARTITIONS[rng.below(3) as usize];
                let r = admin(
                    &http,
                    &admin_url,
                    Method::DELETE,
                    &format!("/v1/migrations/{INDEX}/{p}"),
                    None,
                )
                .await;
                note(
                    &mut schedule,
                    &stats,
                    format!("abort {p}: {}", r.map(|r| r.status.as_u16()).unwrap_or(0)),
                );
            }
            5 | 6 => {
                // Paused, sometimes past the lease (3 s).
                let i = rng.below(3) as usize;
                let ms = 300 + rng.below(4500);
                note(
                    &mut schedule,
                    &stats,
                    format!("SIGSTOP instance {i} for {ms} ms"),
                );
                fleet.instances[i].signal(libc_sigstop());
                tokio::time::sleep(Duration::from_millis(ms)).await;
                fleet.instances[i].signal(libc_sigcont());
            }
            7 => {
                let i = rng.below(3) as usize;
                note(
                    &mut schedule,
                    &stats,
                    format!("SIGKILL instance {i}, restart"),
                );
                fleet.kill_and_restart(i);
                urls.write().unwrap()[i] = fleet.instances[i].url();
            }
            8 => {
                let ms = 500 + rng.below(4000);
                note(
                    &mut schedule,
                    &stats,
                    format!("cut instance 2 from etcd for {ms} ms"),
                );
                fleet.cut_relay();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                fleet.restore_relay();
            }
            _ if rng.chance(50) => {
                let rev = fleet.etcd.revision().unwrap_or(0);
                note(&mut schedule, &stats, format!("compact etcd at {rev}"));
                let _ = fleet.etcd.etcdctl(&["compact", &rev.to_string()]);
            }
            _ => {
                // The whole store down, sometimes past the lease: every
                // instance loses it, writes to logical indices are refused
                // until it is back and the leases are granted again.
                let ms = 200 + rng.below(3500);
                note(&mut schedule, &stats, format!("etcd down for {ms} ms"));
                fleet.etcd.stop();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                fleet
                    .etcd
                    .restart()
                    .unwrap_or_else(|e| panic!("etcd did not come back: {e}"));
            }
        }
        tokio::time::sleep(Duration::from_millis(200 + rng.below(1500))).await;
    }
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        model.extend(w.await.unwrap());
    }
    let context = format!(
        "seed {seed}; {migrations} migrations started; applied {} refused {} unknown {}; schedule:\n  {}",
        stats.applied.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed),
        stats.unknown.load(Ordering::Relaxed),
        schedule.join("\n  ")
    );
    check(&fleet, &http, &model, &context).await;
    assert!(
        stats.applied.load(Ordering::Relaxed) > 200,
        "the writers did too little: {context}"
    );
    eprintln!("checker: {context}");
    eprintln!(
        "checker: unknown outcomes by answer: {:?}",
        stats
            .unknown_why
            .lock()
            .map(|w| w.clone())
            .unwrap_or_default()
    );
}

/// Waits for every migration to end, then compares each partition's
/// placement with the model.
async fn check(fleet: &EtcdFleet, http: &Http, model: &Model, context: &str) {
    let admin0 = fleet.instances[0].admin_url();
    let deadline = Instant::now() + Duration::from_secs(150);
    let migrations;
    loop {
        let list = admin(http, &admin0, Method::GET, "/v1/migrations", None)
            .await
            .map(|r| r.json());
        let running: Vec<String> = list
            .as_ref()
            .and_then(|v| v["migrations"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|m| !matches!(m["phase"].as_str(), Some("done" | "failed" | "aborted")))
            .map(|m| format!("{}/{} {}", m["index"], m["partition"], m["phase"]))
            .collect();
        if list.is_some() && running.is_empty() {
            migrations = list
                .map(|v| v["migrations"].to_string())
                .unwrap_or_default();
            break;
        }
        assert!(
            Instant::now() < deadline,
            "migrations never ended: {running:?}\n{context}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // Searches see what was refreshed: make the last writes visible.
    http.send_with(
        Method::POST,
        &format!("{}/_refresh", node().url()),
        None,
        &[],
    )
    .await
    .unwrap();
    for p in PARTITIONS {
        // Active somewhere, and every instance agrees where.
        let mut entries = Vec::new();
        for inst in &fleet.instances {
            let e = eventually_entry(http, &inst.admin_url(), p).await;
            entries.push(e);
        }
        assert!(
            entries.windows(2).all(|w| w[0] == w[1]),
            "instances disagree on {p}'s placement: {entries:?}\n{context}"
        );
        assert_ne!(
            entries[0]["state"], "migrating",
            "{p} still migrating\n{context}"
        );
        // Holds exactly the acknowledged state, read through each instance.
        // (Where each value lies physically is shown when it does not.)
        let everywhere = http
            .send_with(
                Method::POST,
                &format!("{}/c-chk*/_search?size=10000", node().url()),
                Some(json!({"query": {"term": {"p": p}}, "version": true, "seq_no_primary_term": true}).to_string().into()),
                &[("content-type", "application/json")],
            )
            .await
            .map(|r| r.json())
            .unwrap_or_default();
        let logs: String = fleet
            .instances
            .iter()
            .enumerate()
            .flat_map(|(i, inst)| {
                inst.log()
                    .lines()
                    .filter(|l| {
                        l.contains(&format!("partition={p}"))
                            || l.contains(&format!("partition=\"{p}\""))
                            || l.contains(" WARN ")
                    })
                    .map(|l| format!("[{i}] {l}"))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
            .join("\n");
        for inst in &fleet.instances {
            let docs = read_partition(http, &inst.url(), p).await;
            compare(
                p,
                &docs,
                model,
                &format!(
                    "{context}\nread through {}; placement {}; migrations {migrations}\nlogs:\n{logs}",
                    inst.url(),
                    entries[0]
                ),
                &everywhere,
            );
        }
        // Nothing of another tenant in its physical index.
        if let Some(physical) = own_index(&entries[0]) {
            let r = http
                .send_with(
                    Method::POST,
                    &format!("{}/{physical}/_search?size=10000", node().url()),
                    Some(
                        json!({"query": {"bool": {"must_not": {"term": {"p": p}}}}})
                            .to_string()
                            .into(),
                    ),
                    &[("content-type", "application/json")],
                )
                .await
                .unwrap();
            let v = r.json();
            assert_eq!(
                v["hits"]["total"]["value"].as_u64().unwrap_or(0),
                0,
                "{physical} holds another tenant's documents: {v}\n{context}"
            );
        }
    }
}

/// The physical index of a dedicated placement entry.
fn own_index(entry: &Value) -> Option<String> {
    let pl = &entry["placement"];
    match pl["kind"].as_str() {
        Some("index") | Some("cluster") => pl["index"].as_str().map(str::to_string),
        _ => None,
    }
}

async fn eventually_entry(http: &Http, admin_url: &str, p: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(r) = admin(
            http,
            admin_url,
            Method::GET,
            &format!("/v1/placements/{INDEX}/{p}"),
            None,
        )
        .await
        {
            if r.status == 200 {
                return r.json();
            }
            if r.status == 404 {
                return json!({"state": "active", "placement": "default"});
            }
        }
        assert!(
            Instant::now() < deadline,
            "no placement answer for {p} from {admin_url}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Every document of partition `p` as the proxy returns it: id → value.
async fn read_partition(http: &Http, url: &str, p: &str) -> BTreeMap<String, u64> {
    let auth = format!("Bearer {OPS}");
    let r = http
        .send_with(
            Method::POST,
            &format!("{url}/{INDEX}/_search?size=10000"),
            Some(json!({"query": {"match_all": {}}}).to_string().into()),
            &[
                ("authorization", auth.as_str()),
                ("x-osproxy-partition", p),
                ("content-type", "application/json"),
            ],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "search of {p}: {}", r.text());
    let v = r.json();
    let mut out = BTreeMap::new();
    for h in v["hits"]["hits"].as_array().into_iter().flatten() {
        assert_eq!(
            h["_source"]["p"], p,
            "another tenant's document in {p}'s answer: {h}"
        );
        let id = h["_id"].as_str().unwrap_or_default().to_string();
        out.insert(id, h["_source"]["v"].as_u64().unwrap_or(u64::MAX));
    }
    out
}

fn compare(
    p: &str,
    docs: &BTreeMap<String, u64>,
    model: &Model,
    context: &str,
    everywhere: &Value,
) {
    for ((mp, id), doc) in model.iter().filter(|((mp, _), _)| mp == p) {
        let _ = mp;
        let got = docs.get(id).copied();
        let acked = doc.acked.unwrap_or(None);
        let allowed = got == acked || doc.maybe.contains(&got);
        let physical: Vec<String> = everywhere["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["_id"].as_str().is_some_and(|i| i.ends_with(id.as_str())))
            .map(|h| {
                format!(
                    "{} {} v{} seq{} = {}",
                    h["_index"], h["_id"], h["_version"], h["_seq_no"], h["_source"]["v"]
                )
            })
            .collect();
        assert!(
            allowed,
            "{p}/{id}: holds {got:?}, but the last acknowledged state is {acked:?} (unknown outcomes: {:?})\nphysically: {physical:?}\nits writes:\n  {}\n{context}",
            doc.maybe,
            doc.history
                .iter()
                .map(|(at, i, st, a)| format!("{at} ms via {i}: {st:?} <- {a}"))
                .collect::<Vec<_>>()
                .join("\n  ")
        );
    }
    for id in docs.keys() {
        assert!(
            model.contains_key(&(p.to_string(), id.clone())),
            "{p}/{id} exists but was never written\n{context}"
        );
    }
}

fn libc_sigstop() -> i32 {
    19
}

fn libc_sigcont() -> i32 {
    18
}

fn seeds() -> Vec<u64> {
    match std::env::var("OSPROXY_CHECKER_SEEDS") {
        Ok(s) => s.split(',').filter_map(|x| x.trim().parse().ok()).collect(),
        Err(_) => vec![1, 2],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrations_under_faults_lose_no_acknowledged_write() {
    for seed in seeds() {
        run_schedule(seed).await;
    }
}
