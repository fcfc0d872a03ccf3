//! Document ids named in queries, translated to physical ids.

use serde_json::Value;

/// Translates the document ids a query names to physical ids, wherever the
/// query holds them: `{"ids":{"values":[..]}}`, and `term`, `terms`,
/// `match` and `prefix`-free forms on `_id` (`{"term":{"_id":"1"}}`,
/// `{"term":{"_id":{"value":"1"}}}`, `{"terms":{"_id":["1","2"]}}`).
pub(super) fn physical_ids(v: &mut Value, to_physical: &dyn Fn(&str) -> String) {
    let map_str = |v: &mut Value| {
        if let Value::String(s) = v {
            *s = to_physical(s);
        }
    };
    match v {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                match key.as_str() {
                    "ids" => {
                        if let Some(Value::Array(values)) = value.get_mut("values") {
                            values.iter_mut().for_each(map_str);
                            continue;
                        }
                    }
                    "term" | "match" | "match_phrase" => {
                        if let Some(id) = value.get_mut("_id") {
                            match id {
                                Value::String(_) => map_str(id),
                                Value::Object(o) => {
                                    for k in ["value", "query"] {
                                        if let Some(x) = o.get_mut(k) {
                                            map_str(x);
                                        }
                                    }
                                }
                                _ => {}
                            }
                            continue;
                        }
                    }
                    "terms" => {
                        if let Some(Value::Array(values)) = value.get_mut("_id") {
                            values.iter_mut().for_each(map_str);
                            continue;
                        }
                    }
                    _ => {}
                }
                physical_ids(value, to_physical);
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| physical_ids(item, to_physical)),
        _ => {}
    }
}
