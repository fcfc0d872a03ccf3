//! The query DSL as osproxy knows it: which options, queries and
//! aggregations exist and hold what, and the reasons refusals give.

pub(super) const UNKNOWN: &str =
    "osproxy does not know it, so it cannot tell whether it reads other tenants' documents";
pub(super) const BY_ID: &str = "it fetches a document by id, which may belong to another tenant";
pub(super) const JOIN: &str =
    "it reaches joined documents that the partition filter does not cover";
pub(super) const OTHER_INDEX: &str = "it names an index, which may hold other tenants' documents";
pub(super) const STATS: &str = "it prints index-wide terms or statistics, which include other tenants' documents in a shared placement";
pub(super) const EXPANSION: &str = "it chooses which terms to expand by their index-wide frequency, which tells of other tenants' documents in a shared placement";

/// Top-level keys whose values hold no queries and run no code of their own
/// (scripts inside them are still found).
pub(super) const PLAIN_OPTIONS: &str =
    "from size timeout terminate_after min_score version seq_no_primary_term explain \
    _source stored_fields docvalue_fields fields track_scores \
    include_named_queries_score track_total_hits stats profile \
    search_after collapse slice verbose_pipeline";

/// Query types whose bodies hold no sub-queries.
pub(super) const LEAF_QUERIES: &str =
    "match_all match_none match match_phrase match_phrase_prefix match_bool_prefix \
    multi_match combined_fields query_string simple_query_string common term terms_set \
    range exists prefix wildcard regexp fuzzy ids intervals distance_feature \
    rank_feature geo_bounding_box geo_distance geo_polygon geo_shape shape xy_shape \
    parent_id percolate more_like_this span_term script neural_sparse";

/// Compound query types and the keys of their bodies that hold queries.
pub(super) const COMPOUND_QUERIES: &[(&str, &[&str])] = &[
    // `mustNot` is a deprecated spelling OpenSearch still accepts.
    ("bool", &["must", "should", "filter", "must_not", "mustNot"]),
    ("nested", &["query"]),
    // Refused in shared placements (see `check_key`); walked elsewhere.
    ("has_child", &["query"]),
    ("has_parent", &["query"]),
    ("script_score", &["query"]),
    ("function_score", &["query", "functions"]),
    ("constant_score", &["filter"]),
    ("boosting", &["positive", "negative"]),
    ("dis_max", &["queries"]),
    ("hybrid", &["queries", "filter"]),
    ("span_near", &["clauses"]),
    ("span_or", &["clauses"]),
    ("span_not", &["include", "exclude"]),
    ("span_first", &["match"]),
    ("span_multi", &["match"]),
    ("span_containing", &["big", "little"]),
    ("span_within", &["big", "little"]),
    ("field_masking_span", &["query"]),
];

/// Aggregation types that only see the documents the query matched.
pub(super) const PLAIN_AGGS: &str =
    "avg sum min max value_count cardinality stats extended_stats percentiles \
    percentile_ranks median_absolute_deviation weighted_avg geo_bounds geo_centroid \
    top_hits matrix_stats scripted_metric terms multi_terms rare_terms histogram \
    date_histogram auto_date_histogram variable_width_histogram range date_range \
    ip_range geo_distance missing nested reverse_nested sampler diversified_sampler \
    composite geohash_grid geotile_grid avg_bucket sum_bucket min_bucket max_bucket \
    stats_bucket extended_stats_bucket percentiles_bucket derivative cumulative_sum \
    moving_avg moving_fn serial_diff bucket_script bucket_selector bucket_sort";
