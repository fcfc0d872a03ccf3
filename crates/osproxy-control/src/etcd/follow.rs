//! Following etcd: the first snapshot from one consistent read, then the
//! watch applied revision by revision (resumed after a dropped stream,
//! re-read after compaction), and the lease-held fleet record.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, KeyValue, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use osproxy_config::Config;
use tokio::sync::watch;
use tracing::{info, warn};

use super::client::{rev, signed, EtcdStore, StoreError};
use crate::admission::mono_ms;
use crate::apply::EventOutcome;
use crate::plane::ControlPlane;
use crate::snapshot::Snapshot;
use crate::store::{self, Key};
use crate::write::{now_ms, Member};

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
    ) -> Result<EtcdHandle, StoreError> {
        let cfg = config
            .control
            .etcd
            .as_ref()
            .ok_or(StoreError::NotConfigured)?;
        let store = Arc::new(EtcdStore::connect(cfg).await?);
        store.seed(config).await?;
        store.seed_limits(&config.limits).await?;
        let (kvs, revision) = store.read_all().await?;
        let snap = self.rebuild(&store, &kvs, revision, None);
        info!(prefix = %store.prefix, revision, keys = kvs.len(), indices = snap.index_count(), "control snapshot built from etcd");
        self.publish(snap, revision);
        self.mark_fresh();
        self.set_freshness_bound(store.stale_after());
        self.attach_etcd(store.clone());
        let (stop, stop_rx) = watch::channel(false);
        let watch = tokio::spawn(follow(self.clone(), store.clone(), stop_rx.clone()));
        let timeout = store.timeout();
        let fleet = tokio::spawn(keep_record(self.clone(), store, member, stop_rx));
        // Writes wait for the first fleet record; so does start-up, briefly,
        // so that a ready instance can take writes.
        let deadline = Instant::now() + timeout;
        while !self.admission.lease_held() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if !self.admission.lease_held() {
            warn!("no fleet lease yet; writes to logical indices wait for it");
        }
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
        self.fleet_reset(
            kvs.iter()
                .filter_map(|kv| match Key::parse(&store.prefix, kv.key()) {
                    Some(Key::Fleet(id)) => Some(id),
                    _ => None,
                }),
        );
        let mut seen = BTreeSet::new();
        // Checked value by value, the table is built in revision order: of
        // two values claiming one physical index, the one written first
        // stays and the later one is refused (key order would let a later
        // write displace an earlier owner).
        let mut by_revision: Vec<&KeyValue> = kvs.iter().collect();
        by_revision.sort_by_key(|kv| kv.mod_revision());
        let mut build = |checked: bool| {
            let mut snap = Snapshot::default();
            snap.defer_checks(!checked);
            let order: Vec<&KeyValue> = if checked {
                by_revision.clone()
            } else {
                kvs.iter().collect()
            };
            for kv in order {
                seen.insert(String::from_utf8_lossy(kv.key()).into_owned());
                let outcome = self.apply_event(
                    &mut snap,
                    &store.prefix,
                    kv.key(),
                    Some(kv.value()),
                    rev(kv.mod_revision()),
                );
                if outcome == EventOutcome::Rejected {
                    if let (Some(prev), Some(key)) = (previous, Key::parse(&store.prefix, kv.key()))
                    {
                        snap.carry(prev, key);
                        // A carried value is kept only if it breaks nothing
                        // (checked builds): it may be the very claim that
                        // conflicts with an earlier owner.
                        if checked && snap.check().is_err() {
                            snap.uncarry(key);
                        }
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
        if let Ok(mut rejected) = self.following.rejected.lock() {
            rejected.retain(|k, _| seen.contains(k));
        }
        snap
    }
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
        let mut client = store
            .client
            .watch_client()
            .max_decoding_message_size(super::client::MAX_MESSAGE);
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
                                .following
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
                    .following
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
        if let Some(Key::Fleet(id)) = Key::parse(&store.prefix, kv.key()) {
            plane.fleet_member(id, kv.version() != 0);
        }
        if revision != group && group != 0 {
            flush(&mut next, group);
        }
        group = revision;
        let relevant = matches!(
            Key::parse(&store.prefix, kv.key()),
            Some(
                Key::Catalogue(_)
                    | Key::Placement(..)
                    | Key::Directives
                    | Key::Limits
                    | Key::Migration(..)
            )
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
        if plane.apply_event(snap, &store.prefix, kv.key(), value, revision)
            == EventOutcome::Changed
        {
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
    let held = store.cfg.lease_held_for();
    let key = store::fleet_key(&store.prefix, &member.id);
    let mut backoff = Backoff::new();
    let admission = &plane.admission;
    // This process's lease before the current one, if any.
    let mut previous: Option<i64> = None;
    loop {
        let mut client = store.client.clone();
        let granted_at = mono_ms();
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
        // Writes are admitted under this lease only once the fleet record
        // that makes barriers wait for this instance is written under it.
        admission.lease_granted();
        let mut confirmed = false;
        // The store revision of the first fleet record written under this
        // lease: writes are admitted only once this instance's snapshot has
        // applied it. Found by review: an instance paused past its lease
        // rejoined with a fresh lease while its snapshot still predated
        // what the fleet did meanwhile (a cut-over, a flip), and admitted
        // writes by it.
        let mut joined: Option<u64> = None;
        let mut catch_up = tokio::time::interval(Duration::from_millis(20));
        catch_up.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        // When the last keep-alive this lease was confirmed by was sent:
        // the lease lives its TTL from then.
        let mut kept_since = granted_at;
        let mut warned = false;
        let mut keepalive = tokio::time::interval(ttl / 3);
        // Rewritten on every change it shows, and otherwise a few times
        // per lease: each write is a revision etcd keeps until compaction.
        let mut heartbeat = tokio::time::interval((ttl / 3).max(Duration::from_secs(1)));
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let lost = loop {
            let write = tokio::select! {
                _ = stopped(&mut stop) => {
                    admission.lease_lost();
                    let _ = store.call(client.lease_revoke(lease)).await;
                    info!("left the fleet");
                    return;
                }
                _ = keepalive.tick() => {
                    let sent = mono_ms();
                    if let Err(e) = keeper.keep_alive().await {
                        break format!("keep-alive failed: {e}");
                    }
                    match tokio::time::timeout(ttl / 3, acks.message()).await {
                        Ok(Ok(Some(r))) if r.ttl() > 0 => {
                            kept_since = sent;
                            if confirmed {
                                admission.lease_confirmed(sent, held);
                            }
                            false
                        }
                        _ => break "the lease expired or etcd did not confirm it".to_string(),
                    }
                }
                _ = heartbeat.tick() => true,
                _ = plane.record_changed.notified() => true,
                _ = catch_up.tick(), if !confirmed && joined.is_some() => {
                    if joined.is_some_and(|j| plane.applied_revision() >= j) {
                        confirmed = true;
                        admission.lease_confirmed(kept_since, held);
                    }
                    false
                }
            };
            if write {
                let record = plane.record(&member).to_string();
                // The record is this process's while it is bound to this
                // lease (or absent): a second live process with the same
                // instance id — a frozen one and its replacement — must not
                // overwrite it, or barriers would count one for the other.
                let put = || {
                    TxnOp::put(
                        key.as_str(),
                        record.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                };
                // Ours: bound to this lease, or to this process's previous
                // one (a record left from before a lost lease is ours too).
                let held_by = |l: i64| {
                    Txn::new()
                        .when(vec![Compare::lease(key.as_str(), CompareOp::Equal, l)])
                        .and_then(vec![put()])
                };
                let mine = held_by(lease);
                let before = previous.map(held_by);
                let free = Txn::new()
                    .when(vec![Compare::create_revision(
                        key.as_str(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![put()]);
                // Whether it was written, and at which store revision.
                // (No header: no revision to wait for; read as 0 it would
                // admit at once, so the record counts as not written.)
                let outcome = |r: etcd_client::TxnResponse| match r.header() {
                    Some(h) => (r.succeeded(), rev(h.revision())),
                    None => (false, 0),
                };
                let mut written = store.call(client.txn(mine)).await.map(outcome);
                if let (Ok((false, _)), Some(before)) = (&written, before) {
                    written = store.call(client.txn(before)).await.map(outcome);
                }
                if let Ok((false, _)) = written {
                    written = store.call(client.txn(free)).await.map(outcome);
                }
                let at = match written {
                    Ok((true, at)) => at,
                    Ok((false, _)) => {
                        if confirmed || !warned {
                            warned = true;
                            warn!(instance = %member.id, "another live process holds this instance id's fleet record; this one admits no writes until it is gone (give every process its own instance_id)");
                        }
                        admission.lease_lost();
                        confirmed = false;
                        joined = None;
                        continue;
                    }
                    Err(e) => break format!("cannot write the fleet record: {e}"),
                };
                if !confirmed {
                    let joined = *joined.get_or_insert(at);
                    // The grant (or the last keep-alive) was sent at
                    // `kept_since`: the lease lives at least its TTL from
                    // then. Confirmed here, or by the catch-up tick once
                    // the snapshot has the record.
                    if plane.applied_revision() >= joined {
                        confirmed = true;
                        admission.lease_confirmed(kept_since, held);
                    }
                }
                backoff.reset();
            }
        };
        admission.lease_lost();
        previous = Some(lease);
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
