//! The JSON edits config-edit mode makes to a copy of Caddy's config before writing it back:
//! each touches only the objects it is told to.

use serde_json::Value;

/// Removes every object tagged `"@id": id`.
pub(super) fn remove_id(value: &mut Value, id: &str) {
    match value {
        Value::Object(map) => map.values_mut().for_each(|v| remove_id(v, id)),
        Value::Array(items) => {
            items.retain(|item| item.get("@id").and_then(Value::as_str) != Some(id));
            items.iter_mut().for_each(|v| remove_id(v, id));
        }
        _ => {}
    }
}

/// Appends `entry` to the `upstreams` of the handler at `admin_path` (creating the array).
pub(super) fn add_upstream(config: &mut Value, admin_path: &str, entry: Value) {
    let pointer = admin_path.strip_prefix("/config").unwrap_or(admin_path);
    if let Some(Value::Object(handler)) = config.pointer_mut(pointer) {
        match handler
            .entry("upstreams")
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(entry),
            other => *other = Value::Array(vec![entry]),
        }
    }
}

/// Sets the value at a JSON pointer made of object keys, creating missing objects.
pub(super) fn set_pointer(config: &mut Value, pointer: &str, value: Value) {
    let mut current = config;
    let keys: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (index, key) in keys.iter().enumerate() {
        if !current.is_object() {
            *current = Value::Object(serde_json::Map::new());
        }
        let Value::Object(map) = current else { return };
        if index == keys.len() - 1 {
            map.insert((*key).to_owned(), value);
            return;
        }
        current = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(serde_json::Map::new()));
    }
}

/// Removes the value at a JSON pointer made of object keys, if there.
pub(super) fn remove_pointer(config: &mut Value, pointer: &str) {
    if let Some((parent, key)) = pointer.rsplit_once('/') {
        if let Some(Value::Object(map)) = config.pointer_mut(parent) {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn edits_only_the_objects_it_is_told_to() {
        let mut config = json!({"apps": {"http": {"h": {"handler": "reverse_proxy"}}},
                                "other": [{"@id": "keep"}, {"@id": "mine", "dial": "a:1"}]});
        let before = config.clone();
        add_upstream(
            &mut config,
            "/config/apps/http/h",
            json!({"@id": "mine2", "dial": "a:1"}),
        );
        add_upstream(
            &mut config,
            "/config/apps/http/h",
            json!({"@id": "mine3", "dial": "a:2"}),
        );
        assert_eq!(
            config["apps"]["http"]["h"]["upstreams"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        set_pointer(
            &mut config,
            "/logging/logs/caddy-beacon-events-x",
            json!({"level": "DEBUG"}),
        );
        assert_eq!(
            config["logging"]["logs"]["caddy-beacon-events-x"]["level"],
            "DEBUG"
        );
        remove_id(&mut config, "mine");
        assert_eq!(config["other"], json!([{"@id": "keep"}]));
        remove_id(&mut config, "mine2");
        remove_id(&mut config, "mine3");
        remove_pointer(&mut config, "/logging/logs/caddy-beacon-events-x");
        config["apps"]["http"]["h"]
            .as_object_mut()
            .unwrap()
            .remove("upstreams");
        config.as_object_mut().unwrap().remove("logging");
        let mut expected = before;
        expected["other"] = json!([{"@id": "keep"}]);
        assert_eq!(config, expected);
    }
}
