//! Partition-scoped document ids for `shared` placements: a template such as
//! `{partition}:{id}` turns a client's logical `_id` into the physical one,
//! and maps a physical id back only for the partition that built it.

use std::fmt;

use osproxy_core::partition::is_valid_partition;

const PARTITION: &str = "{partition}";
const ID: &str = "{id}";

/// A parsed id template: literal text around exactly one `{partition}` and
/// one `{id}`, with a literal separator between them.
///
/// The separator must be non-empty, and its character next to `{partition}`
/// must be outside the partition alphabet `[A-Za-z0-9_.-]`. That character is
/// where every partition id ends, so the partition part of a physical id is
/// found without guessing even when logical ids contain the separator, and two
/// partitions can never produce the same physical id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdTemplate {
    prefix: String,
    separator: String,
    suffix: String,
    partition_first: bool,
}

impl std::fmt::Display for IdTemplate {
    /// The template as written.
    ///
    /// ```
    /// use osproxy_rewrite::IdTemplate;
    /// for t in ["{partition}:{id}", "x/{id}@{partition}.y"] {
    ///     assert_eq!(IdTemplate::parse(t).unwrap().to_string(), t);
    /// }
    /// ```
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (first, second) = if self.partition_first {
            ("{partition}", "{id}")
        } else {
            ("{id}", "{partition}")
        };
        write!(
            f,
            "{}{first}{}{second}{}",
            self.prefix, self.separator, self.suffix
        )
    }
}

/// Why a template was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplateError {
    /// The placeholder (`{partition}` or `{id}`) does not occur.
    Missing(&'static str),
    /// The placeholder occurs more than once.
    Repeated(&'static str),
    /// A `{...}` placeholder other than `{partition}` and `{id}`.
    UnknownPlaceholder(String),
    /// A `{` without its `}`, or a `}` without its `{`, at this byte offset.
    UnmatchedBrace(usize),
    /// Nothing separates `{partition}` from `{id}`.
    EmptySeparator,
    /// The separator's character next to `{partition}` may also occur in a
    /// partition id, so different partitions could build the same id.
    AmbiguousSeparator(String),
}

impl std::error::Error for TemplateError {}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TemplateError::Missing(p) => write!(f, "the id template must contain `{p}`"),
            TemplateError::Repeated(p) => {
                write!(f, "the id template must contain `{p}` exactly once")
            }
            TemplateError::UnknownPlaceholder(p) => write!(
                f,
                "the id template has an unknown placeholder `{p}`; only `{PARTITION}` and `{ID}` exist"
            ),
            TemplateError::UnmatchedBrace(at) => write!(
                f,
                "the id template has an unmatched brace at byte {at}; braces only delimit placeholders"
            ),
            TemplateError::EmptySeparator => f.write_str(
                "the id template needs literal text between `{partition}` and `{id}`, \
                 otherwise physical ids cannot be split back",
            ),
            TemplateError::AmbiguousSeparator(sep) => write!(
                f,
                "the id template separator `{sep}` must have a character outside \
                 [A-Za-z0-9_.-] next to `{PARTITION}`, otherwise two partitions can build the same id"
            ),
        }
    }
}

fn in_partition_alphabet(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')
}

impl IdTemplate {
    /// Parses a template.
    ///
    /// ```
    /// use osproxy_rewrite::{IdTemplate, TemplateError};
    /// assert!(IdTemplate::parse("{partition}:{id}").is_ok());
    /// assert!(IdTemplate::parse("doc/{id}@{partition}").is_ok());
    /// assert_eq!(IdTemplate::parse("{partition}{id}"), Err(TemplateError::EmptySeparator));
    /// assert!(IdTemplate::parse("{partition}-{id}").is_err()); // `-` can be in a partition
    /// ```
    pub fn parse(template: &str) -> Result<IdTemplate, TemplateError> {
        // (placeholder, start, end) in template order.
        let mut slots: Vec<(&'static str, usize, usize)> = Vec::new();
        let mut i = 0;
        while let Some(off) = template[i..].find(['{', '}']) {
            let at = i + off;
            if template[at..].starts_with('}') {
                return Err(TemplateError::UnmatchedBrace(at));
            }
            let close = match template[at + 1..].find(['{', '}']) {
                Some(c) if template[at + 1 + c..].starts_with('}') => at + 1 + c,
                _ => return Err(TemplateError::UnmatchedBrace(at)),
            };
            let name = match &template[at..=close] {
                PARTITION => PARTITION,
                ID => ID,
                other => return Err(TemplateError::UnknownPlaceholder(other.to_string())),
            };
            if slots.iter().any(|(n, _, _)| *n == name) {
                return Err(TemplateError::Repeated(name));
            }
            slots.push((name, at, close + 1));
            i = close + 1;
        }
        for name in [PARTITION, ID] {
            if !slots.iter().any(|(n, _, _)| *n == name) {
                return Err(TemplateError::Missing(name));
            }
        }
        let [(first, first_start, first_end), (_, second_start, second_end)] = slots[..] else {
            return Err(TemplateError::Missing(ID));
        };
        let prefix = &template[..first_start];
        let separator = &template[first_end..second_start];
        let suffix = &template[second_end..];
        let partition_first = first == PARTITION;
        // The separator character touching `{partition}` ends (or starts) it.
        let touching = if partition_first {
            separator.chars().next()
        } else {
            separator.chars().next_back()
        };
        match touching {
            None => return Err(TemplateError::EmptySeparator),
            Some(c) if in_partition_alphabet(c) => {
                return Err(TemplateError::AmbiguousSeparator(separator.to_string()))
            }
            Some(_) => {}
        }
        Ok(IdTemplate {
            prefix: prefix.to_string(),
            separator: separator.to_string(),
            suffix: suffix.to_string(),
            partition_first,
        })
    }

    /// Builds the physical id of `logical_id` for `partition`, which must be a
    /// valid partition id (callers hold an `osproxy_core::PartitionId`).
    ///
    /// ```
    /// use osproxy_rewrite::IdTemplate;
    /// let t = IdTemplate::parse("{partition}:{id}").unwrap();
    /// assert_eq!(t.physical("acme", "order:7"), "acme:order:7");
    /// ```
    pub fn physical(&self, partition: &str, logical_id: &str) -> String {
        let (first, second) = if self.partition_first {
            (partition, logical_id)
        } else {
            (logical_id, partition)
        };
        let mut out = String::with_capacity(
            self.prefix.len()
                + first.len()
                + self.separator.len()
                + second.len()
                + self.suffix.len(),
        );
        for part in [
            self.prefix.as_str(),
            first,
            &self.separator,
            second,
            &self.suffix,
        ] {
            out.push_str(part);
        }
        out
    }

    /// The logical id inside `physical`, if `physical` was built by this
    /// template for exactly `partition`. Ids of other partitions, ids of no
    /// partition, and invalid partitions give `None`.
    ///
    /// ```
    /// use osproxy_rewrite::IdTemplate;
    /// let t = IdTemplate::parse("{partition}:{id}").unwrap();
    /// assert_eq!(t.logical("acme", "acme:order:7"), Some("order:7"));
    /// assert_eq!(t.logical("acme", "acme-eu:order:7"), None);
    /// assert_eq!(t.logical("acme-eu", "acme:eu:7"), None);
    /// ```
    pub fn logical<'a>(&self, partition: &str, physical: &'a str) -> Option<&'a str> {
        if !is_valid_partition(partition) {
            return None;
        }
        let rest = physical
            .strip_prefix(self.prefix.as_str())?
            .strip_suffix(self.suffix.as_str())?;
        let id = if self.partition_first {
            rest.strip_prefix(partition)?
                .strip_prefix(self.separator.as_str())?
        } else {
            rest.strip_suffix(partition)?
                .strip_suffix(self.separator.as_str())?
        };
        (!id.is_empty()).then_some(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> IdTemplate {
        IdTemplate::parse(s).unwrap()
    }

    #[test]
    fn parse_errors_name_the_problem() {
        use TemplateError as E;
        assert_eq!(IdTemplate::parse("{id}"), Err(E::Missing(PARTITION)));
        assert_eq!(IdTemplate::parse("{partition}:x"), Err(E::Missing(ID)));
        assert_eq!(IdTemplate::parse(""), Err(E::Missing(PARTITION)));
        assert_eq!(
            IdTemplate::parse("{partition}:{id}:{id}"),
            Err(E::Repeated(ID))
        );
        assert_eq!(
            IdTemplate::parse("{partition}:{partition}:{id}"),
            Err(E::Repeated(PARTITION))
        );
        assert_eq!(
            IdTemplate::parse("{partition}:{id}:{tenant}"),
            Err(E::UnknownPlaceholder("{tenant}".into()))
        );
        assert_eq!(
            IdTemplate::parse("{partition}:{id"),
            Err(E::UnmatchedBrace(12))
        );
        assert_eq!(
            IdTemplate::parse("}{partition}:{id}"),
            Err(E::UnmatchedBrace(0))
        );
        assert_eq!(
            IdTemplate::parse("{{partition}:{id}"),
            Err(E::UnmatchedBrace(0))
        );
        assert_eq!(IdTemplate::parse("{id}{partition}"), Err(E::EmptySeparator));
        assert_eq!(
            IdTemplate::parse("{partition}_{id}"),
            Err(E::AmbiguousSeparator("_".into()))
        );
        assert_eq!(
            IdTemplate::parse("{id}:x{partition}"),
            Err(E::AmbiguousSeparator(":x".into()))
        );
        // Only the character touching `{partition}` matters.
        assert!(IdTemplate::parse("{partition}:x-{id}").is_ok());
        assert!(IdTemplate::parse("{id}x-:{partition}").is_ok());
        let msg = E::EmptySeparator.to_string();
        assert!(msg.contains("between"), "{msg}");
    }

    #[test]
    fn literal_text_around_placeholders() {
        let tpl = t("doc/{partition}::{id}.v1");
        let p = tpl.physical("acme", "a::b.v1");
        assert_eq!(p, "doc/acme::a::b.v1.v1");
        assert_eq!(tpl.logical("acme", &p), Some("a::b.v1"));
        assert_eq!(tpl.logical("acme", "acme::x.v1"), None);
        assert_eq!(tpl.logical("acme", "doc/acme::.v1"), None);
    }

    #[test]
    fn id_first_anchors_on_the_trailing_partition() {
        let tpl = t("{id}@{partition}");
        assert_eq!(tpl.physical("acme", "x@y"), "x@y@acme");
        assert_eq!(tpl.logical("acme", "x@y@acme"), Some("x@y"));
        assert_eq!(tpl.logical("y", "x@y@acme"), None);
        assert_eq!(tpl.logical("cme", "x@acme"), None);
    }

    #[test]
    fn prefixes_of_partitions_do_not_match() {
        let tpl = t("{partition}:{id}");
        let phys = tpl.physical("acme.eu", "1");
        assert_eq!(tpl.logical("acme", &phys), None);
        assert_eq!(tpl.logical("acme.e", &phys), None);
        assert_eq!(tpl.logical("bad:part", "bad:part:1"), None);
    }

    fn template() -> impl Strategy<Value = IdTemplate> {
        (
            any::<bool>(),
            "[a-z:/]{0,3}",
            "[:@/|#~ ]",
            "[a-z0-9:_-]{0,2}",
            "[a-z:.]{0,3}",
        )
            .prop_map(|(partition_first, prefix, edge, more, suffix)| {
                let (a, b, sep) = if partition_first {
                    (PARTITION, ID, format!("{edge}{more}"))
                } else {
                    (ID, PARTITION, format!("{more}{edge}"))
                };
                format!("{prefix}{a}{sep}{b}{suffix}")
            })
            .prop_filter_map("valid template", |s| IdTemplate::parse(&s).ok())
    }

    // A small alphabet so that partitions often prefix each other and ids
    // often contain separators, template literals and partition text.
    const PART: &str = "[ab._-]{1,4}";
    const LOGICAL: &str = "[ab._:@/|#~ -]{1,10}|\\PC{1,12}";

    proptest! {
        #[test]
        fn logical_inverts_physical(tpl in template(), p in PART, id in LOGICAL) {
            let physical = tpl.physical(&p, &id);
            prop_assert_eq!(tpl.logical(&p, &physical), Some(id.as_str()));
        }

        #[test]
        fn other_partitions_never_map(tpl in template(), p in PART, q in PART, id in LOGICAL) {
            prop_assume!(p != q);
            let physical = tpl.physical(&p, &id);
            prop_assert_eq!(tpl.logical(&q, &physical), None);
        }

        #[test]
        fn a_mapped_id_rebuilds_the_same_physical_id(
            tpl in template(), q in PART, physical in "[ab._:@/|#~ -]{0,16}",
        ) {
            if let Some(id) = tpl.logical(&q, &physical) {
                prop_assert_eq!(tpl.physical(&q, id), physical);
            }
        }

        #[test]
        fn parse_never_panics(s in "[{}a-z:]{0,24}|\\PC{0,24}") {
            let _ = IdTemplate::parse(&s);
        }
    }
}
