//! The etcd client of the control plane: connecting, seeding an empty
//! prefix, consistent reads and compare-and-swap transactions.
//!
//! Reading follows the design's recipe: one consistent range read of the
//! prefix at revision R, a snapshot swapped in, then a watch from R+1 with
//! progress requests, applied revision by revision. A dropped stream resumes
//! from the last applied revision after a jittered, capped backoff; a
//! compacted start revision means re-reading everything. A value that does
//! not decode is refused for its key alone.

use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue, Txn, TxnOp};
use osproxy_config::{Config, EtcdConfig};
use tracing::info;

use crate::snapshot::Entry;
use crate::store::{self, PlacementValue};
use crate::write::{now_ms, Conflict, WriteError};

/// The largest number of operations etcd accepts in one transaction by
/// default (`--max-txn-ops`), less room for the comparisons.
const MAX_TXN_OPS: usize = 120;
/// Keys per page of a whole-prefix read.
const READ_PAGE: i64 = 1000;
/// The largest answer (a page, a watch batch) the client accepts; gRPC's
/// default of 4 MiB is a few thousand large values.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// The end of the key range that holds every key starting with `prefix`
/// (the prefix with its last byte below 0xff incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// A connected store under one fleet prefix.
pub struct EtcdStore {
    pub(crate) client: Client,
    pub(crate) prefix: String,
    pub(crate) cfg: EtcdConfig,
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
            CasFailure::Unknown(m) => write!(f, "outcome unknown: {m}"),
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
    /// etcd could not be asked; nothing was written.
    Unavailable(String),
    /// The transaction was sent but not confirmed (a timeout, a broken
    /// connection): it may have been committed.
    Unknown(String),
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
            CasFailure::Unknown(m) => WriteError::Unknown(m),
        }
    }
}

/// The connection options' TLS (for `https://` endpoints) and etcd user,
/// from the config; an error names the key.
fn secured(cfg: &EtcdConfig, mut options: ConnectOptions) -> Result<ConnectOptions, String> {
    if let Some(user) = &cfg.username {
        let password = osproxy_config::read_secret(
            "control.etcd.password",
            cfg.password_env.as_deref(),
            cfg.password_file.as_deref(),
        )
        .map_err(|e| e.to_string())?
        .ok_or("control.etcd.username: no password_env or password_file")?;
        options = options
            .with_user(user.clone(), password)
            .with_auto_token_refresh(true);
    }
    if !cfg.endpoints.iter().any(|e| e.starts_with("https://")) {
        return Ok(options);
    }
    let read = |key: &str, file: &str| {
        std::fs::read(file).map_err(|e| format!("control.etcd.tls.{key}: cannot read {file}: {e}"))
    };
    let default = osproxy_config::ClusterTls::default();
    let tls_cfg = cfg.tls.as_ref().unwrap_or(&default);
    let mut tls = etcd_client::TlsOptions::new();
    tls = match &tls_cfg.ca_file {
        Some(file) => {
            tls.ca_certificate(etcd_client::Certificate::from_pem(read("ca_file", file)?))
        }
        None => tls.with_native_roots(),
    };
    match (&tls_cfg.client_cert_file, &tls_cfg.client_key_file) {
        (Some(cert), Some(key)) => {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read("client_cert_file", cert)?,
                read("client_key_file", key)?,
            ));
        }
        (None, None) => {}
        _ => return Err(
            "control.etcd.tls.client_cert_file: client_cert_file and client_key_file go together"
                .into(),
        ),
    }
    if let Some(name) = &tls_cfg.server_name {
        tls = tls.domain_name(name.clone());
    }
    Ok(options.with_tls(tls))
}

pub(crate) fn rev(r: i64) -> u64 {
    u64::try_from(r).unwrap_or(0)
}

pub(crate) fn signed(r: u64) -> i64 {
    i64::try_from(r).unwrap_or(i64::MAX)
}

/// Why the etcd store did not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `backend = "etcd"` without a `[control.etcd]` table.
    #[error("control.etcd: missing (backend = \"etcd\"); add [control.etcd] with its endpoints")]
    NotConfigured,
    /// At start-up: no etcd answered at the configured endpoints.
    #[error("control.etcd: cannot reach etcd at {endpoints} ({reason}); start etcd or fix control.etcd.endpoints")]
    Unreachable {
        /// The configured endpoints.
        endpoints: String,
        /// What happened.
        reason: String,
    },
    /// A call got no answer within the connect timeout.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// etcd answered with an error.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A value could not be encoded.
    #[error("cannot encode {what}")]
    Encode {
        /// What was encoded.
        what: &'static str,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl StoreError {
    /// Whether the request cannot have reached etcd: no connection could be
    /// made. Anything else (a timeout, a reset, an error status) may come
    /// after etcd received it.
    pub fn never_sent(&self) -> bool {
        match self {
            StoreError::NotConfigured | StoreError::Encode { .. } => true,
            StoreError::Etcd(e) => {
                let text = e.to_string();
                [
                    "tcp connect error",
                    "error trying to connect",
                    "Connection refused",
                ]
                .iter()
                .any(|m| text.contains(m))
            }
            StoreError::Unreachable { .. } | StoreError::Timeout(_) => false,
        }
    }
}

impl EtcdStore {
    /// Connects and proves etcd answers, within `connect_timeout`.
    pub async fn connect(cfg: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let t = cfg.connect_timeout.as_std();
        let endpoints = cfg.endpoints.join(", ");
        let fail = |reason: String| StoreError::Unreachable {
            endpoints: endpoints.clone(),
            reason,
        };
        let options = ConnectOptions::new()
            .with_connect_timeout(t)
            // A member cut off from the quorum answers nothing: a watch on
            // it must not look current.
            .with_require_leader(true)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        let options = secured(cfg, options).map_err(fail)?;
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
        self.cfg.freshness_bound()
    }

    pub(crate) fn timeout(&self) -> Duration {
        self.cfg.connect_timeout.as_std()
    }

    pub(crate) async fn call<T>(
        &self,
        f: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout(), f).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(StoreError::Etcd(e)),
            Err(_) => Err(StoreError::Timeout(self.timeout())),
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

    pub(crate) async fn commit(&self, key: &str, txn: Txn) -> Result<u64, CasFailure> {
        let mut client = self.client.clone();
        let resp = self.call(client.txn(txn)).await.map_err(|e| {
            if e.never_sent() {
                CasFailure::Unavailable(e.to_string())
            } else {
                CasFailure::Unknown(e.to_string())
            }
        })?;
        if resp.succeeded() {
            return Ok(resp.header().map(|h| rev(h.revision())).unwrap_or(0));
        }
        let mut client = self.client.clone();
        let current = self
            .call(client.get(key, None))
            .await
            .map_err(|e| CasFailure::Unavailable(e.to_string()))?;
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

    /// One key's value and revision, read linearizably (etcd's default: the
    /// answer reflects every write committed before the read began).
    pub async fn get_one(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, StoreError> {
        let mut client = self.client.clone();
        let resp = self.call(client.get(key, None)).await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), rev(kv.mod_revision()))))
    }

    /// Every live fleet record, with how long ago each was confirmed fresh.
    pub async fn fleet(&self) -> Result<Vec<serde_json::Value>, StoreError> {
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

    /// Writes the config file's `[limits]` to the `limits` key if that key
    /// is absent; a store that holds limits keeps them (the store wins, as
    /// for the catalogue).
    pub(crate) async fn seed_limits(
        &self,
        limits: &osproxy_config::Limits,
    ) -> Result<(), StoreError> {
        if limits.is_empty() {
            return Ok(());
        }
        let v = serde_json::to_vec(limits).map_err(|source| StoreError::Encode {
            what: "the limits",
            source,
        })?;
        match self
            .cas_put(&store::limits_key(&self.prefix), v, 0, None, None)
            .await
        {
            Ok(_) => Ok(()),
            Err(CasFailure::Conflict { .. }) => {
                info!(prefix = %self.prefix, "the store already holds limits: the store wins; [limits] of the config file is not applied");
                Ok(())
            }
            Err(CasFailure::Unavailable(reason) | CasFailure::Unknown(reason)) => {
                Err(StoreError::Unreachable {
                    endpoints: self.cfg.endpoints.join(","),
                    reason,
                })
            }
        }
    }

    /// Seeds the catalogue and placements of `config` into an empty prefix;
    /// a prefix that already holds either keeps what it holds.
    pub(crate) async fn seed(&self, config: &Config) -> Result<(), StoreError> {
        if config.indices.is_empty() && config.placements.is_empty() {
            return Ok(());
        }
        let mut entries: Vec<(String, Vec<u8>)> = Vec::new();
        for idx in &config.indices {
            let v = serde_json::to_vec(idx).map_err(|source| StoreError::Encode {
                what: "a catalogue entry",
                source,
            })?;
            entries.push((store::catalogue_key(&self.prefix, &idx.name), v));
        }
        for p in &config.placements {
            let value = PlacementValue::active(p.placement.clone());
            let v = serde_json::to_vec(&value).map_err(|source| StoreError::Encode {
                what: "a placement entry",
                source,
            })?;
            entries.push((
                store::placement_key(&self.prefix, &p.index, &p.partition),
                v,
            ));
        }
        let catalogue = format!("{}catalogue/", self.prefix);
        let placements = format!("{}placements/", self.prefix);
        // The seed is one marked piece of work: the first transaction (only
        // into an empty prefix) writes the marker `seed` = "pending" with as
        // many entries as fit; the rest follow key by key, each only if
        // still absent; the marker then says "done". An instance that finds
        // the marker pending (a seed stopped half-way: a crash, etcd lost)
        // finishes it the same way instead of keeping the half for ever.
        let marker = format!("{}seed", self.prefix);
        let empty = vec![
            Compare::create_revision(catalogue, CompareOp::Equal, 0).with_prefix(),
            Compare::create_revision(placements, CompareOp::Equal, 0).with_prefix(),
        ];
        let split = entries.len().min(MAX_TXN_OPS - 1);
        let mut first: Vec<TxnOp> = entries[..split]
            .iter()
            .map(|(k, v)| TxnOp::put(k.as_str(), v.clone(), None))
            .collect();
        first.push(TxnOp::put(marker.as_str(), "pending", None));
        let mut client = self.client.clone();
        let resp = self
            .call(client.txn(Txn::new().when(empty).and_then(first)))
            .await?;
        let rest = if resp.succeeded() {
            &entries[split..]
        } else {
            let mut client = self.client.clone();
            let pending = self
                .call(client.get(marker.as_str(), None))
                .await?
                .kvs()
                .first()
                .is_some_and(|kv| kv.value() == b"pending");
            if !pending {
                info!(prefix = %self.prefix, "the store already holds a catalogue or placements: the store wins; [[indices]] and [[placements]] of the config file are not applied");
                return Ok(());
            }
            info!(prefix = %self.prefix, "an earlier seed stopped half-way; finishing it");
            &entries[..]
        };
        // Beyond etcd's per-transaction limit, the rest follows key by key,
        // each only if still absent (never over a write made meanwhile).
        for (key, value) in rest {
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
        let mut client = self.client.clone();
        self.call(client.put(marker.as_str(), "done", None)).await?;
        info!(prefix = %self.prefix, indices = config.indices.len(), placements = config.placements.len(), "seeded an empty store from the config file");
        Ok(())
    }

    /// Every key under the prefix at one revision, read in pages of
    /// [`READ_PAGE`] keys (all pages at the first page's revision), so a
    /// large fleet's table never meets gRPC's message limit.
    pub(crate) async fn read_all(&self) -> Result<(Vec<KeyValue>, u64), StoreError> {
        self.read_all_paged(READ_PAGE).await
    }

    pub(crate) async fn read_all_paged(
        &self,
        page: i64,
    ) -> Result<(Vec<KeyValue>, u64), StoreError> {
        let mut kv = self
            .client
            .kv_client()
            .max_decoding_message_size(MAX_MESSAGE);
        let end = prefix_end(self.prefix.as_bytes());
        let mut from = self.prefix.as_bytes().to_vec();
        let mut revision = 0u64;
        let mut all = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(page);
            if revision > 0 {
                options = options.with_revision(signed(revision));
            }
            let mut resp = self.call(kv.get(from.clone(), Some(options))).await?;
            if revision == 0 {
                revision = resp.header().map(|h| rev(h.revision())).unwrap_or(0);
            }
            let more = resp.more();
            let kvs = resp.take_kvs();
            let Some(last) = kvs.last() else { break };
            // The next page starts just after the last key read.
            from = last.key().to_vec();
            from.push(0);
            all.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((all, revision))
    }
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_range_end_of_a_prefix_follows_every_key_under_it() {
        assert_eq!(prefix_end(b"/osproxy/a/"), b"/osproxy/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }
}
