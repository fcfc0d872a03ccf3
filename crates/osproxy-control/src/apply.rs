//! Applying one key's stored value to a snapshot: the decode-and-apply
//! step every change to the data path's view goes through.

use std::sync::Arc;

use osproxy_core::PartitionId;

use crate::directives::DirectiveSet;
use crate::snapshot::Snapshot;
use crate::store::*;

/// Whether a change was about the data path's view or something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The snapshot changed.
    Changed,
    /// A key the snapshot does not hold (fleet records, migrations, ...).
    Ignored,
}

/// Applies one key's new value (`None`: deleted) at revision `rev` to
/// `snap`. On `Err` the snapshot is unchanged for that key: its last good
/// value stays.
pub fn apply(
    snap: &mut Snapshot,
    key: Key<'_>,
    value: Option<&[u8]>,
    rev: u64,
    clusters: &[String],
) -> Result<Applied, Rejection> {
    let known = |cluster: &str| -> Result<(), Rejection> {
        if clusters.iter().any(|c| c == cluster) {
            Ok(())
        } else {
            Err(Rejection::Refused(format!(
                "unknown cluster {cluster:?}: this instance is configured with {clusters:?}"
            )))
        }
    };
    match (key, value) {
        (Key::Catalogue(name), Some(bytes)) => {
            let idx = decode_index(name, bytes)?;
            known(idx.default.cluster())?;
            snap.put_index_at(&idx, rev)
                .map_err(|e| Rejection::Refused(e.to_string()))?;
        }
        (Key::Catalogue(name), None) => snap.remove_index(name),
        (Key::Placement(index, partition), Some(bytes)) => {
            if PartitionId::new(partition).is_err() {
                return Err(Rejection::Refused(
                    "the key's partition is not 1 to 128 of [A-Za-z0-9_.-]".into(),
                ));
            }
            let value = decode_placement(bytes)?;
            known(value.placement.cluster())?;
            let migrating = value
                .migrating()
                .map_err(|e| Rejection::Refused(e.to_string()))?;
            if let Some(m) = &migrating {
                known(m.to.cluster())?;
            }
            snap.put_placement_at(
                index,
                partition,
                value.placement,
                rev,
                migrating.map(std::sync::Arc::new),
            )
            .map_err(|e| Rejection::Refused(e.to_string()))?;
        }
        (Key::Placement(index, partition), None) => snap.remove_placement(index, partition),
        (Key::Directives, Some(bytes)) => {
            let set = DirectiveSet::decode(bytes).map_err(|e| {
                // The decoder names fields, never values, except in its
                // JSON syntax errors: keep only the shape here.
                Rejection::Refused(format!(
                    "directive set refused: {}",
                    shape_of(&e.to_string())
                ))
            })?;
            snap.set_directives(Some((Arc::new(set), rev)));
        }
        (Key::Directives, None) => snap.set_directives(None),
        (Key::Limits, Some(bytes)) => {
            let limits = crate::limits::decode(bytes)
                .map_err(|e| Rejection::Refused(format!("limits refused: {}", shape_of(&e))))?;
            // Kept even when nothing is limited: its epoch is what the next
            // compare-and-swap names.
            snap.set_limits(Some((Arc::new(limits), rev)));
        }
        (Key::Limits, None) => snap.set_limits(None),
        (Key::Migration(index, partition), Some(bytes)) => {
            let record: MigrationRecord = decode("migration", bytes)?;
            if record.index != index || record.partition != partition {
                return Err(Rejection::Refused(
                    "the record's index and partition differ from the key's".into(),
                ));
            }
            snap.set_migration(index, partition, Some((Arc::new(record), rev)));
        }
        (Key::Migration(index, partition), None) => snap.set_migration(index, partition, None),
        (Key::Fleet(_) | Key::Other, _) => return Ok(Applied::Ignored),
    }
    Ok(Applied::Changed)
}

/// What applying one store value did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventOutcome {
    /// The snapshot changed.
    Changed,
    /// Not a key the snapshot holds.
    Ignored,
    /// Refused; the last good value stays.
    Rejected,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters() -> Vec<String> {
        vec!["main".to_string()]
    }

    #[test]
    fn a_bad_value_is_rejected_for_its_key_alone() {
        let mut snap = Snapshot::default();
        let cat = br#"{"default":{"kind":"shared","cluster":"main","index":"orders-shared"}}"#;
        assert_eq!(
            apply(
                &mut snap,
                Key::Catalogue("orders"),
                Some(cat),
                5,
                &clusters()
            ),
            Ok(Applied::Changed)
        );
        let good = br#"{"placement":{"kind":"index","cluster":"main","index":"orders-acme"}}"#;
        apply(
            &mut snap,
            Key::Placement("orders", "acme"),
            Some(good),
            6,
            &clusters(),
        )
        .unwrap();
        let acme = PartitionId::new("acme").unwrap();
        assert_eq!(snap.entry("orders", &acme).unwrap().epoch, 6);

        // Not JSON, wrong shape, unknown cluster, a second owner: each is
        // refused and the last good value stays.
        for (bad, says) in [
            (&b"{not json"[..], "not valid JSON"),
            (
                br#"{"placement":{"kind":"index","cluster":"main"}}"#,
                "schema",
            ),
            (
                br#"{"placement":{"kind":"index","cluster":"secret-x","index":"i"}}"#,
                "unknown cluster",
            ),
            (
                br#"{"placement":{"kind":"index","cluster":"main","index":"orders-shared"}}"#,
                "already used",
            ),
            (
                br#"{"placement":{"kind":"index","cluster":"main","index":"i"},"extra":1}"#,
                "schema",
            ),
        ] {
            let err = apply(
                &mut snap,
                Key::Placement("orders", "acme"),
                Some(bad),
                7,
                &clusters(),
            )
            .unwrap_err();
            assert!(err.to_string().contains(says), "{err}");
            assert_eq!(snap.entry("orders", &acme).unwrap().epoch, 6);
            assert_eq!(
                snap.entry("orders", &acme)
                    .unwrap()
                    .placement
                    .physical_index("orders"),
                "orders-acme"
            );
        }
        // Shape-only: a value's content never appears in the reason.
        let err = apply(
            &mut snap,
            Key::Catalogue("orders"),
            Some(br#"{"default":{"kind":"shared","cluster":"main","index":"orders-shared"},"field":{"canary-value":1}}"#),
            8,
            &clusters(),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("canary"), "{err}");

        apply(
            &mut snap,
            Key::Placement("orders", "acme"),
            None,
            9,
            &clusters(),
        )
        .unwrap();
        assert!(snap.entry("orders", &acme).is_none());
        assert_eq!(
            apply(&mut snap, Key::Fleet("x"), Some(b"junk"), 10, &clusters()),
            Ok(Applied::Ignored)
        );
    }
}
