//! Confinement of prefix passthrough to its index prefixes: the index
//! names a path, a query body or a bulk action line gives must each start
//! with a configured prefix. Bodies are read with the same strict parser
//! and reference walker as tenancy's, so what is checked is what
//! OpenSearch will read.

/// Whether one index name of a path stays within the prefixes. Exclusions
/// (`-x`) and empty names are refused: they only make sense next to a
/// wider pattern that is itself outside. So is a name with `:`, which no
/// index has and OpenSearch reads as `cluster:index` of a remote cluster
/// (`legacy-*:orders-shared` names a remote's index).
pub fn within(name: &str, prefixes: &[String]) -> bool {
    !name.is_empty() && !name.contains(':') && prefixes.iter().any(|p| name.starts_with(p.as_str()))
}

/// Checks the indices a passthrough query body names: all within
/// `prefixes`, or why not.
pub fn check_references(body: &[u8], prefixes: &[String]) -> Result<(), Outside> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    crate::strict::check(body).map_err(|e| Outside::Unreadable(e.to_string()))?;
    references_within(body, prefixes)
}

/// [`check_references`] of a body its caller has already checked strict
/// (and charged for the tree this builds).
pub fn references_within(body: &[u8], prefixes: &[String]) -> Result<(), Outside> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let names =
        crate::search::named_indices(body).map_err(|e| Outside::Unreadable(e.to_string()))?;
    let outside = names
        .iter()
        .flat_map(|n| n.split(','))
        .find(|n| !within(n, prefixes))
        .map(str::to_string)
        .or_else(|| {
            // The names an alias endpoint reads from the body's tokens,
            // checked as they are found.
            crate::search::first_flat_name(body, |n| n.split(',').all(|n| within(n, prefixes)))
        });
    match outside {
        Some(name) => Err(Outside::Reference {
            index: name.chars().take(200).collect(),
            prefixes: prefixes.to_vec(),
        }),
        None => Ok(()),
    }
}

/// Why a passthrough body is not forwarded: it names an index outside the
/// prefixes, or cannot be read well enough to tell.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Outside {
    /// The body is not the strict JSON (or bulk action) the check reads.
    #[error("the body is refused: {0}")]
    Unreadable(String),
    /// A bulk action line that does not parse: item boundaries are unknown.
    #[error("a bulk action line could not be read ({0}), so its target cannot be checked")]
    Action(String),
    /// A query names an index by reference outside the prefixes.
    #[error("the body names index {index:?} by reference, which does not start with a passthrough prefix {prefixes:?}")]
    Reference {
        /// The name (its first 200 characters).
        index: String,
        /// The prefixes.
        prefixes: Vec<String>,
    },
    /// A bulk action names an ingest pipeline, which could send the
    /// document to any index.
    #[error("a bulk action names an ingest `pipeline`, which could write the document to an index outside the passthrough prefixes; index without it")]
    Pipeline,
    /// A bulk action targets an index outside the prefixes.
    #[error("a bulk action names index {index:?}, which does not start with a passthrough prefix {prefixes:?}")]
    Target {
        /// The name (its first 200 characters).
        index: String,
        /// The prefixes.
        prefixes: Vec<String>,
    },
}

/// Checks the action lines of a passthrough `_bulk` as they stream: every
/// `_index` an action names must stay within the prefixes. A line that does
/// not read as an action stops the request (item boundaries are then
/// unknown).
#[derive(Debug)]
pub struct BulkCheck {
    prefixes: Vec<String>,
    expect_source: bool,
}

impl BulkCheck {
    /// A check for these prefixes.
    pub fn new(prefixes: Vec<String>) -> Self {
        BulkCheck {
            prefixes,
            expect_source: false,
        }
    }

    /// Checks one line; `Err` says why the request must stop.
    /// Blank lines count where OpenSearch counts them: skipped where an
    /// action is expected, but taken as the source where one is expected.
    pub fn line(&mut self, line: &[u8]) -> Result<(), Outside> {
        if std::mem::take(&mut self.expect_source) {
            return Ok(());
        }
        if crate::bulk::is_blank(line) {
            return Ok(());
        }
        let action = crate::bulk::parse_action(line).map_err(|e| Outside::Action(e.to_string()))?;
        // An ingest pipeline runs after this check and can set `_index`:
        // refused per action as `?pipeline=` is for the whole request.
        if action.rest.iter().any(|(k, _)| k == "pipeline") {
            return Err(Outside::Pipeline);
        }
        if let Some(index) = &action.index {
            let all_within = index.split(',').all(|n| within(n, &self.prefixes));
            if !all_within {
                return Err(Outside::Target {
                    index: index.chars().take(200).collect(),
                    prefixes: self.prefixes.clone(),
                });
            }
        }
        self.expect_source = action.op.has_source();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bulk_action_lines_stay_within_the_prefixes() {
        let mut check = BulkCheck::new(vec!["legacy-".into()]);
        assert!(check.line(br#"{"index":{"_id":"1"}}"#).is_ok());
        assert!(check
            .line(br#"{"_index":"orders-shared","evil":"as a source line this is fine"}"#)
            .is_ok());
        assert!(check
            .line(br#"{"index":{"_index":"legacy-b","_id":"2"}}"#)
            .is_ok());
        assert!(check.line(br#"{"a":1}"#).is_ok());
        assert!(check
            .line(br#"{"delete":{"_index":"legacy-c","_id":"3"}}"#)
            .is_ok());
        assert!(check
            .line(br#"{"delete":{"_index":"orders-shared","_id":"acme:1"}}"#)
            .is_err());
        let mut check = BulkCheck::new(vec!["legacy-".into()]);
        assert!(check
            .line(br#"{"create":{"_index":"legacy-a,orders"}}"#)
            .is_err());
        let mut check = BulkCheck::new(vec!["legacy-".into()]);
        assert!(check.line(b"not json").is_err());
        // A blank line after an action with a source is its source: the
        // line after it is an action, and checked as one.
        let mut check = BulkCheck::new(vec!["legacy-".into()]);
        assert!(check.line(br#"{"index":{"_index":"legacy-x"}}"#).is_ok());
        assert!(check.line(b"").is_ok());
        assert!(check
            .line(br#"{"delete":{"_index":"orders-shared","_id":"acme:1"}}"#)
            .is_err());
        // Where an action is expected, blank lines are skipped.
        let mut check = BulkCheck::new(vec!["legacy-".into()]);
        assert!(check.line(b"  ").is_ok());
        assert!(check
            .line(br#"{"delete":{"_index":"legacy-x","_id":"1"}}"#)
            .is_ok());
        assert!(check.line(b"").is_ok());
        assert!(check
            .line(br#"{"delete":{"_index":"other","_id":"1"}}"#)
            .is_err());
        // A per-action pipeline is refused like `?pipeline=` (it runs after
        // this check and can set `_index`).
        for line in [
            &br#"{"index":{"_index":"legacy-x","_id":"1","pipeline":"route"}}"#[..],
            br#"{"create":{"_index":"legacy-x","pipeline":"route"}}"#,
            br#"{"update":{"_index":"legacy-x","_id":"1","pipeline":"route"}}"#,
        ] {
            let mut check = BulkCheck::new(vec!["legacy-".into()]);
            assert_eq!(
                check.line(line),
                Err(Outside::Pipeline),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn references_in_bodies_are_checked() {
        let p = vec!["legacy-".to_string()];
        assert!(check_references(
            br#"{"query":{"terms":{"f":{"index":"legacy-b","id":"1","path":"f"}}}}"#,
            &p
        )
        .is_ok());
        for bad in [
            &br#"{"query":{"terms":{"f":{"index":"orders-shared","id":"1","path":"f"}}}}"#[..],
            br#"{"aliases":{"orders-shared":{}}}"#,
            br#"{"actions":[{"add":{"index":"legacy-x","alias":"orders"}}]}"#,
            br#"{"templates":[{"id":"t","template":{"source":"{}"}}]}"#,
            br#"{"query":{"geo_shape":{"g":{"indexed_shape":{"id":"1","path":"g"}}}}}"#,
            br#"{"query":{"match_all":{}}/*x*/}"#,
            // Found by review: the alias endpoint reads every scalar under
            // `index` or `alias` as a name, in a list too.
            br#"{"index":["orders-shared"]}"#,
            br#"{"index":["legacy-a","orders-shared"]}"#,
            br#"{"alias":["orders-globex"]}"#,
            br#"{"index":2024}"#,
            br#"{"alias":true}"#,
            br#"{"indices":["legacy-a",7]}"#,
            br#"{"index":"legacy-*:orders-shared"}"#,
            // OpenSearch reads the alias body as a flat run of tokens.
            br#"{"index":[["orders-shared"]]}"#,
            br#"{"x":[{"index":"legacy-x"},"orders-shared"]}"#,
            br#"{"alias":[["orders-acme"]]}"#,
            br#"{"index":null}"#,
            br#"{"settings":{"index.search.default_pipeline":"p"}}"#,
            br#"{"search.default_pipeline":"p"}"#,
        ] {
            assert!(
                check_references(bad, &p).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // A mapping parameter named `index` is not an index name.
        assert!(check_references(
            br#"{"mappings":{"properties":{"x":{"type":"text","index":"false"}}}}"#,
            &p
        )
        .is_ok());
        assert!(check_references(
            br#"{"mappings":{"properties":{"x":{"type":"text","index":false}}}}"#,
            &p
        )
        .is_ok());
        assert!(check_references(
            br#"{"index":["legacy-a","legacy-b"],"alias":"legacy-c"}"#,
            &p
        )
        .is_ok());
        assert!(check_references(
            br#"{"mappings":{"properties":{"index":{"type":"keyword","index":true},"t":{"type":"text"}}}}"#,
            &p
        )
        .is_ok());
        assert!(check_references(
            br#"{"filter":{"term":{"user":"kimchy"}},"routing":"1"}"#,
            &p
        )
        .is_ok());
    }
}
