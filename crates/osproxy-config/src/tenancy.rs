//! Checks of the tenancy sections: principals, the catalogue and placements.
//! Anything that could let one partition's requests reach another's data is
//! a configuration error, named by key.

use std::collections::HashMap;

use osproxy_core::partition::is_valid_partition;
use osproxy_core::Placement;

use crate::{Config, ConfigError, PartitionSource};

/// OpenSearch metadata field names an injected field may not take.
const METADATA_FIELDS: [&str; 17] = [
    "_id",
    "_index",
    "_routing",
    "_source",
    "_type",
    "_version",
    "_seq_no",
    "_primary_term",
    "_field_names",
    "_ignored",
    "_meta",
    "_doc_count",
    "_size",
    "_uid",
    "_parent",
    "_all",
    "_data_stream_timestamp",
];

pub(crate) fn validate(config: &Config, errs: &mut Vec<ConfigError>) {
    principals(config, errs);
    if !config.indices.is_empty() && config.principals.is_empty() {
        errs.push(ConfigError::new(
            "principals",
            "a catalogue ([[indices]]) needs at least one [[principals]] entry: every tenancy request is authenticated",
        ));
    }
    let mut owners: HashMap<(String, String), String> = HashMap::new();
    for (i, idx) in config.indices.iter().enumerate() {
        let key = |k: &str| format!("indices[{i}].{k}");
        for (k, message) in index_problems(idx) {
            errs.push(ConfigError::new(key(k), message));
        }
        if config.indices[..i].iter().any(|o| o.name == idx.name) {
            errs.push(ConfigError::new(
                key("name"),
                format!("duplicate logical index {:?}", idx.name),
            ));
        }
        placement(
            config,
            &idx.name,
            &idx.default,
            &key("default"),
            &format!("{} (default)", idx.name),
            &mut owners,
            errs,
        );
    }
    for (i, p) in config.placements.iter().enumerate() {
        let key = |k: &str| format!("placements[{i}].{k}");
        if !config.indices.iter().any(|idx| idx.name == p.index) {
            errs.push(ConfigError::new(
                key("index"),
                format!(
                    "{:?} is not in the catalogue: add an [[indices]] entry first",
                    p.index
                ),
            ));
        }
        if !is_valid_partition(&p.partition) {
            errs.push(ConfigError::new(
                key("partition"),
                format!(
                    "{:?} is not a partition id: 1 to 128 of [A-Za-z0-9_.-]",
                    p.partition
                ),
            ));
        }
        if config.placements[..i]
            .iter()
            .any(|o| o.index == p.index && o.partition == p.partition)
        {
            errs.push(ConfigError::new(
                key("partition"),
                format!("a second entry for {}/{}", p.index, p.partition),
            ));
        }
        placement(
            config,
            &p.index,
            &p.placement,
            &key("placement"),
            &format!("{}/{}", p.index, p.partition),
            &mut owners,
            errs,
        );
    }
    passthrough_overlap(config, &owners, errs);
}

fn principals(config: &Config, errs: &mut Vec<ConfigError>) {
    for (i, p) in config.principals.iter().enumerate() {
        let key = |k: &str| format!("principals[{i}].{k}");
        if p.name.is_empty() || config.principals[..i].iter().any(|o| o.name == p.name) {
            errs.push(ConfigError::new(
                key("name"),
                format!("{:?} is empty or not unique", p.name),
            ));
        }
        let by_certificate = p.cert_subject.is_some() || p.cert_san.is_some();
        // Two principals with one token could not be told apart: serve
        // refuses that, so check does too.
        let token = |q: &crate::PrincipalConfig| {
            crate::secret::read_secret("token", q.token_env.as_deref(), q.token_file.as_deref())
                .ok()
                .flatten()
        };
        if let Some(mine) = token(p) {
            if config.principals[..i]
                .iter()
                .any(|o| token(o).as_ref() == Some(&mine))
            {
                errs.push(ConfigError::new(
                    key(if p.token_env.is_some() {
                        "token_env"
                    } else {
                        "token_file"
                    }),
                    "this token is also an earlier principal's; tokens must be distinct",
                ));
            }
        }
        crate::secret::check_secret(
            errs,
            &key("token"),
            (p.token_env.as_ref(), p.token_file.as_ref()),
            16,
            "token",
            !by_certificate,
        );
        if p.cert_subject.is_some() && p.cert_san.is_some() {
            errs.push(ConfigError::new(
                key("cert_san"),
                "map a certificate by cert_subject or by cert_san, not both",
            ));
        }
        if by_certificate
            && config
                .listen
                .tls
                .as_ref()
                .is_none_or(|t| t.client_ca_file.is_none())
        {
            errs.push(ConfigError::new(
                key(if p.cert_subject.is_some() {
                    "cert_subject"
                } else {
                    "cert_san"
                }),
                "certificate principals need client certificates: set listen.tls.client_ca_file",
            ));
        }
        if let Some(subject) = &p.cert_subject {
            if crate::subject_parts(subject).is_none() {
                errs.push(ConfigError::new(
                    key("cert_subject"),
                    format!("{subject:?} is not a subject like \"CN=acme-svc,O=Acme\""),
                ));
            }
        }
        let same = |o: &crate::PrincipalConfig| {
            (p.cert_subject.is_some()
                && p.cert_subject.as_deref().and_then(crate::subject_parts)
                    == o.cert_subject.as_deref().and_then(crate::subject_parts))
                || (p.cert_san.is_some() && p.cert_san == o.cert_san)
        };
        if config.principals[..i].iter().any(same) {
            errs.push(ConfigError::new(
                key(if p.cert_subject.is_some() {
                    "cert_subject"
                } else {
                    "cert_san"
                }),
                "another principal has the same certificate identity",
            ));
        }
        if p.any_partition && !p.partitions.is_empty() {
            errs.push(ConfigError::new(
                key("partitions"),
                "any_partition = true already grants every partition; remove partitions",
            ));
        }
        for (j, part) in p.partitions.iter().enumerate() {
            if !is_valid_partition(part) {
                errs.push(ConfigError::new(
                    format!("principals[{i}].partitions[{j}]"),
                    format!("{part:?} is not a partition id: 1 to 128 of [A-Za-z0-9_.-]"),
                ));
            }
        }
    }
}

/// Checks one placement, and that no physical index is claimed twice in a
/// way that would mix partitions or logical indices.
fn placement(
    config: &Config,
    logical: &str,
    p: &Placement,
    key: &str,
    owner: &str,
    owners: &mut HashMap<(String, String), String>,
    errs: &mut Vec<ConfigError>,
) {
    if config.cluster(p.cluster()).is_none() {
        let known: Vec<&str> = config.clusters.iter().map(|c| c.id.as_str()).collect();
        errs.push(ConfigError::new(
            format!("{key}.cluster"),
            format!(
                "unknown cluster {:?}; configured clusters: {known:?}",
                p.cluster()
            ),
        ));
    }
    let physical = p.physical_index(logical);
    if !is_valid_index_name(physical) {
        errs.push(ConfigError::new(
            format!("{key}.index"),
            format!("{physical:?} is not a valid index name"),
        ));
    }
    // A shared index may serve many partitions of one logical index; any
    // other index belongs to exactly one (logical index, partition).
    let claim = if p.is_shared() {
        format!("shared:{logical}")
    } else {
        format!("own:{owner}")
    };
    let slot = (p.cluster().to_string(), physical.to_string());
    match owners.get(&slot) {
        Some(existing) if *existing != claim => errs.push(ConfigError::new(
            format!("{key}.index"),
            format!("index {physical:?} on cluster {:?} is already used by another placement; each physical index serves one logical index, and a dedicated one serves one partition", p.cluster()),
        )),
        _ => {
            owners.insert(slot, claim);
        }
    }
}

/// Passthrough must never reach a tenancy index.
fn passthrough_overlap(
    config: &Config,
    owners: &HashMap<(String, String), String>,
    errs: &mut Vec<ConfigError>,
) {
    let Some(pt) = &config.passthrough else {
        return;
    };
    if config.indices.is_empty() {
        return;
    }
    let Some(prefixes) = &pt.indices else {
        errs.push(ConfigError::new(
            "passthrough.indices",
            "with a catalogue configured, passthrough must list index prefixes: forwarding everything would expose tenant indices",
        ));
        return;
    };
    let names = owners
        .keys()
        .filter(|(c, _)| *c == pt.cluster)
        .map(|(_, i)| i.as_str())
        .chain(config.indices.iter().map(|i| i.name.as_str()));
    for name in names {
        if let Some(prefix) = prefixes.iter().find(|p| name.starts_with(p.as_str())) {
            errs.push(ConfigError::new(
                "passthrough.indices",
                format!("prefix {prefix:?} would pass through tenancy index {name:?}"),
            ));
        }
    }
}

/// What is wrong with an id template, if anything.
fn template_problem(t: &str) -> Option<String> {
    // The same parser the data path uses, so `check` and `serve` agree.
    osproxy_rewrite::IdTemplate::parse(t)
        .err()
        .map(|e| format!("{t:?} is not a usable id template: {e}"))
}

/// What is wrong with a partition field name, if anything.
fn field_problem(f: &str) -> Option<String> {
    if METADATA_FIELDS.contains(&f) {
        return Some(format!("{f:?} collides with an OpenSearch metadata field"));
    }
    if f.is_empty() || f.contains(['.', '*', ' ', '"', '\\']) {
        return Some(format!(
            "{f:?} is not a usable field name: non-empty, no dots, stars, quotes or spaces"
        ));
    }
    None
}

/// Whether `s` is a name OpenSearch accepts for a concrete index (no
/// wildcards, commas or path characters).
pub fn is_valid_index_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && !s.starts_with(['_', '-', '+', '.'])
        && !s
            .bytes()
            .any(|b| b.is_ascii_uppercase() || b" ,*/\\?\"<>|#:".contains(&b))
}

/// The problems of one `[[indices]]` entry on its own, as (key under the
/// entry, message); shared by config validation and runtime catalogue writes.
fn index_problems(idx: &crate::IndexConfig) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if !is_valid_index_name(&idx.name) {
        out.push(("name", format!("{:?} is not a valid index name: lower-case, not starting with _ - + or ., no , * / \\ ? \" < > | # : or spaces", idx.name)));
    }
    if let Some(m) = template_problem(&idx.id) {
        out.push(("id", m));
    }
    if let Some(m) = field_problem(&idx.field) {
        out.push(("field", m));
    }
    match &idx.partition {
        PartitionSource::Header(h) if http::HeaderName::from_bytes(h.as_bytes()).is_err() => {
            out.push(("partition.header", format!("{h:?} is not a header name")));
        }
        PartitionSource::Body(f) if field_problem(f).is_some() => {
            out.push((
                "partition.body",
                format!("{f:?} is not a usable top-level field name"),
            ));
        }
        _ => {}
    }
    if let Some(m) = &idx.mappings {
        match m.as_object() {
            None => out.push((
                "mappings",
                "must be an object (OpenSearch's `mappings`)".to_string(),
            )),
            Some(o) => {
                if o.get("properties")
                    .and_then(|p| p.get(&idx.field))
                    .is_some()
                {
                    out.push((
                        "mappings",
                        format!("`{}` is the partition field: osproxy maps it itself (keyword); remove it", idx.field),
                    ));
                }
                if o.get("properties").is_some_and(|p| !p.is_object()) {
                    out.push(("mappings", "`properties` must be an object".to_string()));
                }
            }
        }
    }
    if idx.settings.as_ref().is_some_and(|s| !s.is_object()) {
        out.push((
            "settings",
            "must be an object (OpenSearch's index `settings`)".to_string(),
        ));
    }
    if !idx.default.is_shared() {
        out.push((
            "default",
            "the default placement serves every partition without an entry, so it must be `shared`; give `index` and `cluster` placements per partition in [[placements]]".to_string(),
        ));
    }
    out
}

/// The checks of one `[[indices]]` entry that do not depend on the rest of
/// the configuration (the control plane applies them to runtime writes).
pub fn check_index(idx: &crate::IndexConfig) -> Result<(), IndexProblem> {
    if let Some((key, message)) = index_problems(idx).into_iter().next() {
        return Err(IndexProblem { key, message });
    }
    if !is_valid_index_name(idx.default.physical_index(&idx.name)) {
        return Err(IndexProblem {
            key: "default.index",
            message: "not a valid index name".to_string(),
        });
    }
    Ok(())
}

/// The first problem of a catalogue entry: the key under the entry and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct IndexProblem {
    /// The key under the entry (`id`, `field`, `default.index`, ...).
    pub key: &'static str,
    /// What is wrong with it.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use crate::from_str;

    const CLUSTERS: &str = "[[clusters]]\nid = \"main\"\nurl = \"http://127.0.0.1:9201\"\n[[clusters]]\nid = \"acme-dedicated\"\nurl = \"http://127.0.0.1:9202\"\n";
    const ORDERS: &str = "[[indices]]\nname = \"orders\"\npartition = { from = \"principal\" }\nid = \"{partition}:{id}\"\nfield = \"_tenant\"\ndefault = { kind = \"shared\", cluster = \"main\", index = \"orders-shared\" }\n";

    // PATH is set in every test environment and longer than 16 characters:
    // a stand-in token source that keeps these tests hermetic.
    const SVC: &str =
        "[[principals]]\nname = \"svc\"\ntoken_env = \"PATH\"\npartitions = [\"acme\"]\n";

    /// The keys named by the validation errors of a whole config text.
    fn error_keys(text: &str) -> Vec<String> {
        match from_str(text, std::iter::empty(), &[]) {
            Ok(_) => vec![],
            Err(e) => e.0.into_iter().map(|e| e.key).collect(),
        }
    }

    #[test]
    fn declared_mappings_and_settings() {
        let ok = "[[indices]]\nname = \"books\"\ndefault = { kind = \"shared\", cluster = \"main\", index = \"books-shared\" }\nsettings = { number_of_shards = 1 }\n[indices.mappings]\ndynamic = \"strict\"\nproperties = { title = { type = \"text\" } }\n";
        assert!(keys(ok).is_empty(), "{:?}", keys(ok));
        let cfg = from_str(
            &format!("{CLUSTERS}{ORDERS}{SVC}{ok}"),
            std::iter::empty(),
            &[],
        )
        .unwrap();
        let books = cfg.indices.iter().find(|i| i.name == "books").unwrap();
        assert_eq!(
            books.mappings.as_ref().unwrap()["properties"]["title"]["type"],
            "text"
        );
        assert_eq!(books.settings.as_ref().unwrap()["number_of_shards"], 1);
        let field = "[[indices]]\nname = \"books\"\ndefault = { kind = \"shared\", cluster = \"main\", index = \"books-shared\" }\nmappings = { properties = { _tenant = { type = \"text\" } } }\n";
        assert_eq!(keys(field), ["indices[1].mappings"]);
    }

    /// The same, for the orders catalogue plus `extra`.
    fn keys(extra: &str) -> Vec<String> {
        error_keys(&format!("{CLUSTERS}{ORDERS}{SVC}{extra}"))
    }

    #[test]
    fn the_documented_catalogue_is_valid() {
        let extra = "[[placements]]\nindex = \"orders\"\npartition = \"acme\"\nplacement = { kind = \"index\", cluster = \"main\", index = \"orders-acme\" }\n\
                     [[placements]]\nindex = \"orders\"\npartition = \"globex\"\nplacement = { kind = \"cluster\", cluster = \"acme-dedicated\" }\n";
        assert_eq!(keys(extra), Vec::<String>::new());
    }

    #[test]
    fn template_without_partition_is_refused() {
        let text = format!(
            "{CLUSTERS}{SVC}{}",
            ORDERS.replace("{partition}:{id}", "{id}")
        );
        assert_eq!(error_keys(&text), ["indices[0].id"]);
    }

    #[test]
    fn ambiguous_template_is_refused() {
        // `acme` + `-eu-7` and `acme-eu` + `7` would both give `acme-eu-7`.
        let text = format!(
            "{CLUSTERS}{SVC}{}",
            ORDERS.replace("{partition}:{id}", "{partition}-{id}")
        );
        assert_eq!(error_keys(&text), ["indices[0].id"]);
    }

    #[test]
    fn a_token_shared_by_two_principals_is_refused() {
        // SVC reads its token from PATH; a second principal with the same.
        let twin =
            "[[principals]]\nname = \"twin\"\ntoken_env = \"PATH\"\npartitions = [\"acme\"]\n";
        assert_eq!(keys(twin), ["principals[1].token_env"]);
    }

    #[test]
    fn metadata_field_collision_is_refused() {
        for field in ["_id", "_routing", "_source", "a.b"] {
            let text = format!(
                "{CLUSTERS}{SVC}{}",
                ORDERS.replace("\"_tenant\"", &format!("{field:?}"))
            );
            assert_eq!(error_keys(&text), ["indices[0].field"], "{field}");
        }
    }

    #[test]
    fn unknown_clusters_and_duplicates_are_refused() {
        assert_eq!(keys("[[placements]]\nindex = \"orders\"\npartition = \"acme\"\nplacement = { kind = \"cluster\", cluster = \"nope\" }\n"), ["placements[0].placement.cluster"]);
        assert_eq!(keys(ORDERS), ["indices[1].name"]);
        assert_eq!(keys("[[placements]]\nindex = \"invoices\"\npartition = \"acme\"\nplacement = { kind = \"cluster\", cluster = \"main\" }\n"), ["placements[0].index"]);
        let twice = "[[placements]]\nindex = \"orders\"\npartition = \"acme\"\nplacement = { kind = \"index\", cluster = \"main\", index = \"orders-acme\" }\n";
        assert_eq!(
            keys(&format!("{twice}{twice}")),
            ["placements[1].partition"]
        );
    }

    #[test]
    fn a_physical_index_is_never_shared_between_owners() {
        let steal = "[[placements]]\nindex = \"orders\"\npartition = \"acme\"\nplacement = { kind = \"index\", cluster = \"main\", index = \"orders-shared\" }\n";
        assert_eq!(keys(steal), ["placements[0].placement.index"]);
        let two = "[[placements]]\nindex = \"orders\"\npartition = \"a\"\nplacement = { kind = \"index\", cluster = \"main\", index = \"orders-x\" }\n\
                   [[placements]]\nindex = \"orders\"\npartition = \"b\"\nplacement = { kind = \"index\", cluster = \"main\", index = \"orders-x\" }\n";
        assert_eq!(keys(two), ["placements[1].placement.index"]);
    }

    #[test]
    fn passthrough_cannot_reach_tenancy_indices() {
        assert_eq!(
            keys("[passthrough]\ncluster = \"main\"\n"),
            ["passthrough.indices"]
        );
        assert_eq!(
            keys("[passthrough]\ncluster = \"main\"\nindices = [\"orders\"]\n"),
            ["passthrough.indices", "passthrough.indices"]
        );
        assert_eq!(
            keys("[passthrough]\ncluster = \"main\"\nindices = [\"legacy-\"]\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn principals_need_a_token_source_and_valid_grants() {
        assert_eq!(
            keys("[[principals]]\nname = \"a\"\npartitions = [\"acme\"]\n"),
            ["principals[1].token_env"]
        );
        assert_eq!(
            keys("[[principals]]\nname = \"a\"\ntoken_env = \"OSPROXY_TEST_UNSET_TOKEN\"\n"),
            ["principals[1].token_env"]
        );
        assert_eq!(keys("[[principals]]\nname = \"a\"\ntoken_file = \"/nonexistent/token\"\npartitions = [\"bad id\"]\n"), ["principals[1].token_file", "principals[1].partitions[0]"]);
        assert_eq!(keys("[[principals]]\nname = \"a\"\ntoken_file = \"/nonexistent/t\"\nany_partition = true\npartitions = [\"a\"]\n"), ["principals[1].token_file", "principals[1].partitions"]);
        // A second "svc", with the first one's token too.
        assert_eq!(
            keys("[[principals]]\nname = \"svc\"\ntoken_env = \"PATH\"\n"),
            ["principals[1].name", "principals[1].token_env"]
        );
    }

    #[test]
    fn a_default_placement_must_be_shared() {
        let text = format!(
            "{CLUSTERS}{SVC}{}",
            ORDERS.replace("kind = \"shared\"", "kind = \"index\"")
        );
        assert_eq!(error_keys(&text), ["indices[0].default"]);
    }

    #[test]
    fn a_catalogue_needs_principals() {
        let text = format!("{CLUSTERS}{ORDERS}");
        assert_eq!(error_keys(&text), ["principals"]);
    }
}
