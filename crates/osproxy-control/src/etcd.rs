//! The etcd backend: seeding, watch-and-cache, compare-and-swap writes and
//! the lease-held fleet record.
//!
//! Reading follows the design's recipe: one consistent range read of the
//! prefix at revision R, a snapshot swapped in, then a watch from R+1 with
//! progress requests, applied revision by revision. A dropped stream resumes
//! from the last applied revision after a jittered, capped backoff; a
//! compacted start revision means re-reading everything. A value that does
//! not decode is refused for its key alone.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, PutOptions, Txn, TxnOp,
    WatchOptions, WatchStream,
};
use osproxy_config::{Config, EtcdConfig};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::plane::{now_ms, Conflict, ControlPlane, Member, WriteError};
use crate::snapshot::{Entry, Snapshot};
use crate::store::{self, Key, PlacementValue};

/// The largest number of operations etcd accepts in one transaction by
/// default (`--max-txn-ops`), less room for the comparisons.
const MAX_TXN_OPS: usize = 120;

/// A connected store under one fleet prefix.
pub struct EtcdStore {
    client: Client,
    prefix: String,
    cfg: EtcdConfig,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.cfg.endpoints)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl std::fmt::Debug for CasFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CasFailure::Conflict { epoch, .. } => write!(f, "conflict at epoch {epoch:?}"),
            CasFailure::Unavailable(m) => write!(f, "unavailable: {m}"),
        }
    }
}

/// Why a compare-and-swap did not write.
pub enum CasFailure {
    /// The key moved: its epoch and raw value now (`None`: absent).
    Conflict {
        /// The key's current revision.
        epoch: Option<u64>,
        /// Its current value.
        value: Option<Vec<u8>>,
    },
    /// etcd did not answer.
    Unavailable(String),
}

impl CasFailure {
    /// The admin API's view: `decode` turns the current value into an
    /// entry when the caller wants one.
    pub(crate) fn into_write_error(
        self,
        decode: impl FnOnce(u64, &[u8]) -> Option<Entry>,
    ) -> WriteError {
        match self {
            CasFailure::Conflict { epoch, value } => {
                let entry = match (epoch, value.as_deref()) {
                    (Some(e), Some(v)) => decode(e, v),
                    _ => None,
                };
                WriteError::Conflict(Conflict { entry, epoch })
            }
            CasFailure::Unavailable(m) => WriteError::Unavailable(m),
        }
    }
}

fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

fn signed(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

impl EtcdStore {
    /// Connects and proves etcd answers, within `connect_timeout`.
    pub async fn connect(cfg: &EtcdConfig) -> Result<EtcdStore, String> {
        let t = cfg.connect_timeout.as_std();
        let endpoints = cfg.endpoints.join(", ");
        let fail = |what: String| {
            format!(
                "control.etcd: cannot reach etcd at {endpoints} ({what}); start etcd or fix control.etcd.endpoints"
            )
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(t)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let client = tokio::time::timeout(t, Client::connect(&cfg.endpoints, Some(options)))
            .await
            .map_err(|_| fail(format!("no answer within {t:?}")))?
            .map_err(|e| fail(e.to_string()))?;
        let store = EtcdStore {
            client,
            prefix: cfg.prefix.clone(),
            cfg: cfg.clone(),
        };
        // The client connects lazily: one read proves the endpoint works.
        let mut probe = store.client.clone();
        tokio::time::timeout(
            t,
            probe.get(
                store.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix().with_count_only()),
            ),
        )
        .await
        .map_err(|_| fail(format!("no answer within {t:?}")))?
        .map_err(|e| fail(e.to_string()))?;
        Ok(store)
    }

    /// The fleet prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How long the watch may go without any answer before it is reopened;
    /// also the bound within which an instance counts as fresh.
    pub fn stale_after(&self) -> Duration {
        (self.cfg.progress_interval.as_std() * 4).max(Duration::from_secs(2))
    }

    fn timeout(&self) -> Duration {
        self.cfg.connect_timeout.as_std()
    }

    async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("etcd: {e}")),
            Err(_) => Err(format!("etcd did not answer within {:?}", self.timeout())),
        }
    }

    /// Writes `value` at `key` if its revision is still `expected` (0:
    /// absent) and, with `guard`, if that other key is at its revision too.
    /// With `applied`, also only if nothing in the catalogue or the
    /// placement table changed after that revision: the writer's checks
    /// that span keys (one owner per physical index) were made on a view
    /// that is still the store's. Returns the revision of the write (the
    /// key's new epoch).
    pub async fn cas_put(
        &self,
        key: &str,
        value: Vec<u8>,
        expected: u64,
        guard: Option<(String, u64)>,
        applied: Option<u64>,
    ) -> Result<u64, CasFailure> {
        let mut compares = vec![Compare::mod_revision(
            key,
            CompareOp::Equal,
            signed(expected),
        )];
        if let Some((k, r)) = guard {
            compares.push(Compare::mod_revision(k, CompareOp::Equal, signed(r)));
        }
        if let Some(applied) = applied {
            compares.extend(self.tables_unchanged_since(applied));
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::put(key, value, None)]);
        self.commit(key, txn).await
    }

    /// Nothing under `catalogue/` or `placements/` changed after
    /// `applied`: checks made on a snapshot at that revision still hold.
    fn tables_unchanged_since(&self, applied: u64) -> [Compare; 2] {
        ["catalogue/", "placements/"].map(|table| {
            Compare::mod_revision(
                format!("{}{table}", self.prefix),
                CompareOp::Less,
                signed(applied.saturating_add(1)),
            )
            .with_prefix()
        })
    }

    /// One migration step: the placement entry (when given) and the
    /// migration record, written together if both keys are still at the
    /// revisions read (0: absent) and, with an entry, if the tables did not
    /// change after `applied`.
    pub async fn cas_step(
        &self,
        entry: Option<(&str, Vec<u8>)>,
        expect_entry: (&str, u64),
        record: (&str, Vec<u8>),
        expect_record: u64,
        applied: u64,
    ) -> Result<u64, CasFailure> {
        let mut compares = vec![
            Compare::mod_revision(expect_entry.0, CompareOp::Equal, signed(expect_entry.1)),
            Compare::mod_revision(record.0, CompareOp::Equal, signed(expect_record)),
        ];
        let mut ops = vec![TxnOp::put(record.0, record.1, None)];
        if let Some((key, value)) = entry {
            ops.push(TxnOp::put(key, value, None));
            compares.extend(self.tables_unchanged_since(applied));
        }
        let txn = Txn::new().when(compares).and_then(ops);
        self.commit(record.0, txn).await
    }

    /// Deletes `key` if its revision is still `expected` and, when
    /// `empty_prefix` is not empty, no key under that prefix exists.
    pub async fn cas_delete(
        &self,
        key: &str,
        expected: u64,
        empty_prefix: &str,
    ) -> Result<u64, CasFailure> {
        let mut compares = vec![Compare::mod_revision(
            key,
            CompareOp::Equal,
            signed(expected),
        )];
        if !empty_prefix.is_empty() {
            compares
                .push(Compare::create_revision(empty_prefix, CompareOp::Equal, 0).with_prefix());
        }
        let txn = Txn::new()
            .when(compares)
            .and_then(vec![TxnOp::delete(key, None)]);
        self.commit(key, txn).await
    }

    async fn commit(&self, key: &str, txn: Txn) -> Result<u64, CasFailure> {
        let mut client = self.client.clone();
        let resp = self
            .call(client.txn(txn))
            .await
            .map_err(CasFailure::Unavailable)?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| rev(h.revision())).unwrap_or(0));
        }
        let mut client = self.client.clone();
        let current = self
            .call(client.get(key, None))
            .await
            .map_err(CasFailure::Unavailable)?;
        Err(match current.kvs().first() {
            Some(kv) => CasFailure::Conflict {
                epoch: Some(rev(kv.mod_revision())),
                value: Some(kv.value().to_vec()),
            },
            None => CasFailure::Conflict {
                epoch: None,
                value: None,
            },
        })
    }

    /// Every live fleet record, with how long ago each was confirmed fresh.
    pub async fn fleet(&self) -> Result<Vec<serde_json::Value>, String> {
        let mut client = self.client.clone();
        let resp = self
            .call(client.get(
                store::fleet_key(&self.prefix, ""),
                Some(GetOptions::new().with_prefix()),
            ))
            .await?;
        let now = now_ms();
        Ok(resp
            .kvs()
            .iter()
            .filter_map(|kv| serde_json::from_slice::<serde_json::Value>(kv.value()).ok())
            .map(|mut v| {
                if let Some(f) = v.get("last_fresh_ms").and_then(serde_json::Value::as_u64) {
                    v["fresh_age_ms"] = serde_json::Value::from(now.saturating_sub(f));
                }
                v
            })
            .collect())
    }

    /// Seeds the catalogue and placements of `config` into an empty prefix;
    /// a prefix that already holds either keeps what it holds.
    async fn seed(&self, config: &Config) -> Result<(), String> {
        if config.indices.is_empty() && config.placements.is_empty() {
            return Ok(());
        }
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for idx in &config.indices {
            let v = serde_json::to_vec(idx).map_err(|e| e.to_string())?;
            entries.push((store::catalogue_key(&self.prefix, &idx.name), v));
        }
        for p in &config.placements {
            let value = PlacementValue::active(p.placement.clone());
            let v = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            entries.push((
                store::placement_key(&self.prefix, &p.index, &p.partition),
                v,
            ));
        }
        let catalogue = format!("{}catalogue/", self.prefix);
        let placements = format!("{}placements/", self.prefix);
        let empty = vec![
            Compare::create_revision(catalogue, CompareOp::Equal, 0).with_prefix(),
            Compare::create_revision(placements, CompareOp::Equal, 0).with_prefix(),
        ];
        let split = entries.len().min(MAX_TXN_OPS);
        let first: Vec<TxnOp> = entries[..split]
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        let mut client = self.client.clone();
        let resp = self
            .call(client.txn(Txn::new().when(empty).and_then(first)))
            .await?;
        if !resp.succeeded() {
            info!(prefix = %self.prefix, "the store already holds a catalogue or placements: the store wins; [[indices]] and [[placements]] of the config file are not applied");
            return Ok(());
        }
        // Beyond etcd's per-transaction limit, the rest follows key by key,
        // each only if still absent (never over a write made meanwhile).
        for (key, value) in &entries[split..] {
            let mut client = self.client.clone();
            let txn = Txn::new()
                .when(vec![Compare::create_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    0,
                )])
                .and_then(vec![TxnOp::put(key.as_str(), value.clone(), None)]);
            self.call(client.txn(txn)).await?;
        }
        info!(prefix = %self.prefix, indices = config.indices.len(), placements = config.placements.len(), "seeded an empty store from the config file");
        Ok(())
    }

    async fn read_all(&self) -> Result<(Vec<KeyValue>, u64), String> {
        let mut client = self.client.clone();
        let mut resp = self
            .call(client.get(
                self.prefix.as_bytes(),
                Some(GetOptions::new().with_prefix()),
            ))
            .await?;
        let revision = resp.header().map(|h| rev(h.revision())).unwrap_or(0);
        Ok((resp.take_kvs(), revision))
    }
}

/// What an instance holds to stop following the store and leave the fleet.
#[derive(Debug)]
pub struct EtcdHandle {
    stop: watch::Sender<bool>,
    fleet: tokio::task::JoinHandle<()>,
    watch: tokio::task::JoinHandle<()>,
}

impl EtcdHandle {
    /// Stops the watch and revokes the fleet lease (bounded): the instance
    /// leaves the fleet list at once instead of at lease expiry.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(3), self.fleet).await;
        self.watch.abort();
    }
}

impl ControlPlane {
    /// Connects to etcd, seeds an empty prefix from `config`, builds the
    /// first snapshot from one consistent read, then follows the store and
    /// keeps this instance's fleet record. Fails fast when etcd is not
    /// reachable.
    pub async fn start_etcd(
        self: &Arc<Self>,
        config: &Config,
        member: Member,
    ) -> Result<EtcdHandle, String> {
        let cfg = config
            .control
            .etcd
            .as_ref()
            .ok_or("control.etcd: missing (backend = \"etcd\")")?;
        let store = Arc::new(EtcdStore::connect(cfg).await?);
        store.seed(config).await?;
        let (kvs, revision) = store.read_all().await?;
        let snap = self.rebuild(&store, &kvs, revision, None);
        info!(prefix = %store.prefix, revision, keys = kvs.len(), indices = snap.index_count(), "control snapshot built from etcd");
        self.publish(snap, revision);
        self.mark_fresh();
        self.set_freshness_bound(store.stale_after());
        self.attach_etcd(store.clone());
        let (stop, stop_rx) = watch::channel(false);
        let watch = tokio::spawn(follow(self.clone(), store.clone(), stop_rx.clone()));
        let fleet = tokio::spawn(keep_record(self.clone(), store, member, stop_rx));
        Ok(EtcdHandle { stop, fleet, watch })
    }

    /// A snapshot of everything under the prefix at `revision`. A refused
    /// value keeps the key's value from `previous` (the last good one).
    fn rebuild(
        &self,
        store: &EtcdStore,
        kvs: &[KeyValue],
        revision: u64,
        previous: Option<&Snapshot>,
    ) -> Snapshot {
        let mut seen = BTreeSet::new();
        let mut build = |checked: bool| {
            let mut snap = Snapshot::default();
            snap.defer_checks(!checked);
            for kv in kvs {
                seen.insert(String::from_utf8_lossy(kv.key()).into_owned());
                let outcome = self.apply_event(
                    &mut snap,
                    &store.prefix,
                    kv.key(),
                    Some(kv.value()),
                    rev(kv.mod_revision()),
                );
                if outcome == Outcome::Rejected {
                    if let (Some(prev), Some(key)) = (previous, Key::parse(&store.prefix, kv.key()))
                    {
                        snap.carry(prev, key);
                    }
                }
            }
            snap.defer_checks(false);
            snap.set_revision(revision);
            snap
        };
        // Ownership is checked once for the whole table; only when that
        // fails is each value checked in turn, to refuse the culprits.
        let fast = build(false);
        let snap = if fast.check().is_ok() {
            fast
        } else {
            build(true)
        };
        if let Ok(mut rejected) = self.standing.rejected.lock() {
            rejected.retain(|k, _| seen.contains(k));
        }
        snap
    }
}

/// What applying one store value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The snapshot changed.
    Changed,
    /// Not a key the snapshot holds.
    Ignored,
    /// Refused; the last good value stays.
    Rejected,
}

/// Jittered, capped exponential backoff.
struct Backoff {
    next: Duration,
    state: u64,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const CAP: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Backoff {
            next: Self::FIRST,
            state: now_ms() ^ (u64::from(std::process::id()) << 32) | 1,
        }
    }

    fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Half the current step plus a random part of the other half.
    fn next(&mut self) -> Duration {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        let step = self.next;
        self.next = (step * 2).min(Self::CAP);
        let half = step / 2;
        let jitter = half.mul_f64((self.state % 1000) as f64 / 1000.0);
        half + jitter
    }
}

/// Resolves once asked to stop.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Sleeps, or returns `false` when asked to stop meanwhile.
async fn pause(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = stopped(stop) => false,
    }
}

enum StreamEnd {
    Stopped,
    Compacted(u64),
    Dropped(String),
}

/// The watch loop: follows the prefix from the last applied revision,
/// forever, until stopped.
async fn follow(plane: Arc<ControlPlane>, store: Arc<EtcdStore>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new();
    loop {
        let from = plane.applied_revision() + 1;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(signed(from))
            .with_progress_notify();
        let mut client = store.client.clone();
        let opened = tokio::select! {
            r = tokio::time::timeout(store.timeout(), client.watch(store.prefix.as_bytes(), Some(options))) => r,
            _ = stopped(&mut stop) => return,
        };
        let end = match opened {
            Ok(Ok(mut stream)) => {
                run_stream(&plane, &store, &mut stream, &mut stop, &mut backoff).await
            }
            Ok(Err(e)) => StreamEnd::Dropped(format!("cannot open a watch: {e}")),
            Err(_) => StreamEnd::Dropped("cannot open a watch: no answer".into()),
        };
        match end {
            StreamEnd::Stopped => return,
            StreamEnd::Compacted(compacted) => {
                warn!(
                    from,
                    compacted,
                    "the watch's start revision was compacted; re-reading the whole prefix"
                );
                loop {
                    match store.read_all().await {
                        Ok((kvs, revision)) => {
                            let previous = plane.load();
                            let snap = plane.rebuild(&store, &kvs, revision, Some(&previous));
                            plane.publish(snap, revision);
                            plane.mark_fresh();
                            plane
                                .standing
                                .reloads
                                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            plane.record_changed.notify_one();
                            info!(revision, "control snapshot rebuilt after compaction");
                            break;
                        }
                        Err(e) => {
                            warn!(error = %e, "re-reading the prefix failed; retrying");
                            if !pause(backoff.next(), &mut stop).await {
                                return;
                            }
                        }
                    }
                }
            }
            StreamEnd::Dropped(reason) => {
                plane
                    .standing
                    .reconnects
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let wait = backoff.next();
                warn!(%reason, applied = plane.applied_revision(), retry_in_ms = wait.as_millis() as u64, "control-plane watch lost; keeping the last good snapshot");
                if !pause(wait, &mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn run_stream(
    plane: &ControlPlane,
    store: &EtcdStore,
    stream: &mut WatchStream,
    stop: &mut watch::Receiver<bool>,
    backoff: &mut Backoff,
) -> StreamEnd {
    let interval = store.cfg.progress_interval.as_std();
    let stale_after = store.stale_after();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_message = Instant::now();
    // Freshness on a new stream is proven only once the watch has delivered
    // an event at or past the store revision of the first progress answer
    // (a fence): etcd 3.4 answers progress requests at once, even while the
    // watch is still catching up, so before the fence an answer proves
    // nothing. A fleet-record rewrite is asked for now so that an event
    // past the fence comes soon.
    let mut fence: Option<u64> = None;
    let mut synced = false;
    plane.record_changed.notify_one();
    loop {
        tokio::select! {
            _ = stopped(stop) => return StreamEnd::Stopped,
            _ = tick.tick() => {
                if last_message.elapsed() > stale_after {
                    return StreamEnd::Dropped(format!("no answer from etcd for {stale_after:?}"));
                }
                if let Err(e) = stream.request_progress().await {
                    return StreamEnd::Dropped(format!("progress request failed: {e}"));
                }
            }
            msg = stream.message() => {
                let resp = match msg {
                    Ok(Some(r)) => r,
                    Ok(None) => return StreamEnd::Dropped("etcd closed the watch".into()),
                    Err(e) => return StreamEnd::Dropped(e.to_string()),
                };
                last_message = Instant::now();
                if resp.canceled() {
                    if resp.compact_revision() > 0 {
                        return StreamEnd::Compacted(rev(resp.compact_revision()));
                    }
                    return StreamEnd::Dropped(format!("watch cancelled: {}", resp.cancel_reason()));
                }
                if resp.created() {
                    backoff.reset();
                    continue;
                }
                if resp.events().is_empty() {
                    // A progress answer: etcd is there and the stream is
                    // alive. Its header revision does not advance the
                    // applied revision (resuming from a revision whose
                    // events were never delivered would skip them); once
                    // past the fence it confirms freshness.
                    let at = resp.header().map(|h| rev(h.revision())).unwrap_or(0);
                    let f = *fence.get_or_insert(at);
                    synced = synced || plane.applied_revision() >= f;
                    if synced {
                        plane.mark_fresh();
                    }
                    continue;
                }
                apply_events(plane, store, resp.events());
                synced = synced || fence.is_some_and(|f| plane.applied_revision() >= f);
                if synced {
                    plane.mark_fresh();
                }
            }
        }
    }
}

/// Applies a batch of events revision by revision, swapping in a snapshot
/// after each revision that changed it.
fn apply_events(plane: &ControlPlane, store: &EtcdStore, events: &[etcd_client::Event]) {
    let mut next: Option<Snapshot> = None;
    let mut group = 0u64;
    let mut changed = false;
    let flush = |next: &mut Option<Snapshot>, group: u64| match next.take() {
        Some(mut snap) => {
            snap.set_revision(group);
            plane.publish(snap, group);
        }
        None => plane.mark_applied(group),
    };
    for ev in events {
        let Some(kv) = ev.kv() else { continue };
        let revision = rev(kv.mod_revision());
        if revision != group && group != 0 {
            flush(&mut next, group);
        }
        group = revision;
        let relevant = matches!(
            Key::parse(&store.prefix, kv.key()),
            Some(Key::Catalogue(_) | Key::Placement(..) | Key::Directives | Key::Migration(..))
        );
        if !relevant {
            continue;
        }
        let snap = next.get_or_insert_with(|| (*plane.load()).clone());
        // A deleted key's last state has version 0 (etcd-client's
        // `event_type` panics on a type it does not know; this cannot).
        let value = if kv.version() == 0 {
            None
        } else {
            Some(kv.value())
        };
        if plane.apply_event(snap, &store.prefix, kv.key(), value, revision) == Outcome::Changed {
            changed = true;
        }
    }
    if group != 0 {
        flush(&mut next, group);
    }
    if changed {
        plane.record_changed.notify_one();
    }
}

/// Keeps `fleet/<id>` under a lease: granted, kept alive, rewritten every
/// third of the lease (at least a second apart) and whenever something it
/// shows changes; revoked on shutdown.
async fn keep_record(
    plane: Arc<ControlPlane>,
    store: Arc<EtcdStore>,
    member: Member,
    mut stop: watch::Receiver<bool>,
) {
    let ttl = store.cfg.lease_ttl.as_std();
    let key = store::fleet_key(&store.prefix, &member.id);
    let mut backoff = Backoff::new();
    loop {
        let mut client = store.client.clone();
        let lease = match store
            .call(client.lease_grant(signed(ttl.as_secs().max(2)), None))
            .await
        {
            Ok(l) => l.id(),
            Err(e) => {
                warn!(error = %e, "cannot take the fleet lease; retrying");
                if !pause(backoff.next(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let kept = match store.call(client.lease_keep_alive(lease)).await {
            Ok(k) => k,
            Err(e) => {
                warn!(error = %e, "cannot keep the fleet lease alive; retrying");
                if !pause(backoff.next(), &mut stop).await {
                    return;
                }
                continue;
            }
        };
        let (mut keeper, mut acks) = kept;
        let mut keepalive = tokio::time::interval(ttl / 3);
        // Rewritten on every change it shows, and otherwise a few times
        // per lease: each write is a revision etcd keeps until compaction.
        let mut heartbeat = tokio::time::interval((ttl / 3).max(Duration::from_secs(1)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            let write = tokio::select! {
                _ = stopped(&mut stop) => {
                    let _ = store.call(client.lease_revoke(lease)).await;
                    info!("left the fleet");
                    return;
                }
                _ = keepalive.tick() => {
                    if let Err(e) = keeper.keep_alive().await {
                        break format!("keep-alive failed: {e}");
                    }
                    match tokio::time::timeout(ttl / 3, acks.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => false,
                        _ => break "the lease expired or etcd did not confirm it".to_string(),
                    }
                }
                _ = heartbeat.tick() => true,
                _ = plane.record_changed.notified() => true,
            };
            if write {
                let record = plane.record(&member).to_string();
                let put = client.put(
                    key.as_str(),
                    record,
                    Some(PutOptions::new().with_lease(lease)),
                );
                if let Err(e) = store.call(put).await {
                    break format!("cannot write the fleet record: {e}");
                }
                backoff.reset();
            }
        };
        warn!(reason = %lost, "fleet record lost; taking a new lease");
        if !pause(backoff.next(), &mut stop).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_capped_and_jittered() {
        let mut b = Backoff::new();
        let steps: Vec<Duration> = (0..12).map(|_| b.next()).collect();
        assert!(steps[0] >= Duration::from_millis(50) && steps[0] <= Duration::from_millis(100));
        assert!(steps.iter().all(|d| *d <= Backoff::CAP));
        assert!(steps[11] >= Backoff::CAP / 2);
        b.reset();
        assert!(b.next() <= Duration::from_millis(100));
    }
}
