//! Walking Caddy's JSON config: every object in it, wherever it sits, for the questions the
//! companion asks about tagged (`@id`) and dialled (`dial`) objects.

use serde_json::{Map, Value};

/// Every JSON object in `config`, depth first.
pub fn objects(config: &Value) -> Vec<&Map<String, Value>> {
    let mut found = Vec::new();
    let mut stack = vec![config];
    while let Some(value) = stack.pop() {
        match value {
            Value::Object(map) => {
                found.push(map);
                stack.extend(map.values());
            }
            Value::Array(items) => stack.extend(items),
            _ => {}
        }
    }
    found
}

/// An object's `key` as a string.
pub fn text<'a>(object: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    object.get(key).and_then(Value::as_str)
}

/// Whether some object in `config` is tagged `"@id": id`.
pub fn contains_id(config: &Value, id: &str) -> bool {
    objects(config)
        .into_iter()
        .any(|object| text(object, "@id") == Some(id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_objects_at_any_depth() {
        let config = json!({"a": [{"@id": "x", "b": {"c": [{"@id": "y"}]}}], "d": 1});
        assert_eq!(objects(&config).len(), 4);
        assert!(contains_id(&config, "y"));
        assert!(!contains_id(&config, "z"));
    }
}
