//! Finding the `reverse_proxy` handler a companion joins in Caddy's JSON config: by the
//! Caddyfile site address (`--site :8080`, `--site api.example.com`) or by an `@id` tag on the
//! handler (`--handler-id`).

use serde_json::Value;

/// Which handler to join.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A Caddyfile site address.
    Site(String),
    /// A handler tagged `"@id": ...`.
    HandlerId(String),
}

impl Target {
    /// A stable key for the owned-object ids.
    pub fn key(&self) -> String {
        match self {
            Target::Site(site) => format!("site {site}"),
            Target::HandlerId(id) => format!("handler {id}"),
        }
    }

    /// For messages.
    pub fn describe(&self) -> String {
        match self {
            Target::Site(site) => format!("site {site:?}"),
            Target::HandlerId(id) => format!("handler @id {id:?}"),
        }
    }
}

/// The handler, located in one version of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Located {
    /// Admin API path of the handler, e.g. `/config/apps/http/servers/srv0/routes/0/handle/0`.
    pub path: String,
    /// Its `upstreams` array; None when the handler has none yet (a Caddyfile `reverse_proxy`
    /// without static upstreams).
    pub upstreams: Option<Vec<Value>>,
}

/// Why the handler was not found; each message says what to change.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    /// Nothing matches.
    #[error("Caddy's config has no {0}")]
    Missing(String),
    /// The match is not a reverse_proxy, or the site has none.
    #[error("{0}")]
    NotAProxy(String),
    /// Several proxies match: the companion cannot guess.
    #[error("{what} has {count} reverse_proxy handlers; tag the one to join with \"@id\" in Caddy's JSON config and pass --handler-id")]
    Ambiguous {
        /// The target.
        what: String,
        /// How many.
        count: usize,
    },
}

/// Finds the handler for `target` in `config` (the whole config, as GET /config/ returns it).
pub fn locate(config: &Value, target: &Target) -> Result<Located, LocateError> {
    let path = match target {
        Target::HandlerId(id) => {
            let mut found = Vec::new();
            find_by_id(config, id, "/config".to_owned(), &mut found);
            let path = found
                .pop()
                .ok_or_else(|| LocateError::Missing(target.describe()))?;
            let handler = pointer(config, &path);
            if handler
                .and_then(|h| h.get("handler"))
                .and_then(Value::as_str)
                != Some("reverse_proxy")
            {
                return Err(LocateError::NotAProxy(format!(
                    "the object tagged @id {id:?} is not a reverse_proxy handler"
                )));
            }
            path
        }
        Target::Site(site) => {
            let (host, port) = split_site(site);
            let servers = config
                .pointer("/apps/http/servers")
                .and_then(Value::as_object);
            let mut proxies = Vec::new();
            let mut site_found = false;
            for (name, server) in servers.into_iter().flatten() {
                let listens = server
                    .get("listen")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let port_matches = port.is_none_or(|port| {
                    listens
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|l| l.rsplit_once(':').is_some_and(|(_, p)| p == port))
                });
                if !port_matches {
                    continue;
                }
                let routes = server
                    .get("routes")
                    .and_then(Value::as_array)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                for (index, route) in routes.iter().enumerate() {
                    if !route_matches_host(route, host) {
                        continue;
                    }
                    site_found = true;
                    find_proxies(
                        route,
                        format!("/config/apps/http/servers/{name}/routes/{index}"),
                        &mut proxies,
                    );
                }
            }
            if !site_found {
                return Err(LocateError::Missing(target.describe()));
            }
            match proxies.len() {
                0 => {
                    return Err(LocateError::NotAProxy(format!(
                        "{} has no reverse_proxy handler",
                        target.describe()
                    )))
                }
                1 => proxies.remove(0),
                count => {
                    return Err(LocateError::Ambiguous {
                        what: target.describe(),
                        count,
                    })
                }
            }
        }
    };
    let handler = pointer(config, &path);
    // A proxy fed by a dynamic source ignores static upstreams: an entry added there would
    // never get a request.
    if let Some(source) = handler
        .and_then(|h| h.pointer("/dynamic_upstreams/source"))
        .and_then(Value::as_str)
    {
        let advice = match handler
            .and_then(|h| h.pointer("/dynamic_upstreams/pool"))
            .and_then(Value::as_str)
        {
            Some(pool) if source == "beacon" => format!("join its pool with --pool {pool}"),
            _ => "it cannot be joined by editing its upstreams".to_owned(),
        };
        return Err(LocateError::NotAProxy(format!(
            "{} takes its upstreams from `dynamic {source}`: {advice}",
            target.describe()
        )));
    }
    let upstreams = handler
        .and_then(|h| h.get("upstreams"))
        .and_then(Value::as_array)
        .cloned();
    Ok(Located { path, upstreams })
}

fn pointer<'a>(config: &'a Value, admin_path: &str) -> Option<&'a Value> {
    config.pointer(admin_path.strip_prefix("/config").unwrap_or(admin_path))
}

/// `http://api.example.com:8080` → (Some("api.example.com"), Some("8080")); `:8080` → (None, Some).
fn split_site(site: &str) -> (Option<&str>, Option<&str>) {
    let rest = site
        .strip_prefix("http://")
        .or_else(|| site.strip_prefix("https://"))
        .unwrap_or(site);
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            (host, Some(port))
        }
        _ => (rest, None),
    };
    let port = port.or(match site {
        s if s.starts_with("http://") => Some("80"),
        s if s.starts_with("https://") => Some("443"),
        _ => None,
    });
    ((!host.is_empty()).then_some(host), port)
}

fn route_matches_host(route: &Value, host: Option<&str>) -> bool {
    let hosts: Vec<&str> = route
        .get("match")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("host").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    match host {
        // `:8080 { ... }` has no host matcher.
        None => hosts.is_empty(),
        Some(host) => hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
    }
}

fn find_proxies(value: &Value, path: String, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.get("handler").and_then(Value::as_str) == Some("reverse_proxy") {
                found.push(path);
                return;
            }
            for (key, child) in map {
                find_proxies(child, format!("{path}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                find_proxies(child, format!("{path}/{index}"), found);
            }
        }
        _ => {}
    }
}

fn find_by_id(value: &Value, id: &str, path: String, found: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if map.get("@id").and_then(Value::as_str) == Some(id) {
                found.push(path.clone());
            }
            for (key, child) in map {
                find_by_id(child, id, format!("{path}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, child) in items.iter().enumerate() {
                find_by_id(child, id, format!("{path}/{index}"), found);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxy_fed_by_the_beacon_module_is_not_joined_through_its_config() {
        let config = serde_json::json!({"apps": {"http": {"servers": {"srv0": {"listen": [":8080"], "routes": [{"handle": [
            {"handler": "reverse_proxy", "dynamic_upstreams": {"source": "beacon", "pool": "app"}}]}]}}}}});
        let error = locate(&config, &Target::Site(":8080".into())).unwrap_err();
        assert!(
            error.to_string().ends_with(
                "takes its upstreams from `dynamic beacon`: join its pool with --pool app"
            ),
            "{error}"
        );
    }
    use serde_json::json;

    fn config() -> Value {
        json!({"apps": {"http": {"servers": {
            "srv0": {"listen": [":8080"], "routes": [
                {"handle": [{"handler": "subroute", "routes": [{"handle": [
                    {"handler": "reverse_proxy", "@id": "api-proxy", "health_checks": {}}]}]}]}]},
            "srv1": {"listen": ["127.0.0.1:9090"], "routes": [
                {"match": [{"host": ["a.example.com"]}], "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "x:1"}]}]},
                {"match": [{"host": ["b.example.com"]}], "handle": [{"handler": "reverse_proxy"}, {"handler": "reverse_proxy"}]},
                {"match": [{"host": ["c.example.com"]}], "handle": [{"handler": "static_response"}]}]}}}}})
    }

    #[test]
    fn finds_the_proxy_of_a_site() {
        let found = locate(&config(), &Target::Site(":8080".into())).unwrap();
        assert_eq!(
            found.path,
            "/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0"
        );
        assert_eq!(found.upstreams, None);
        let found = locate(&config(), &Target::Site("http://a.example.com:9090".into())).unwrap();
        assert_eq!(
            found.path,
            "/config/apps/http/servers/srv1/routes/0/handle/0"
        );
        assert_eq!(found.upstreams.unwrap().len(), 1);
        assert_eq!(
            locate(&config(), &Target::Site("a.example.com".into()))
                .unwrap()
                .path,
            "/config/apps/http/servers/srv1/routes/0/handle/0"
        );
    }

    #[test]
    fn finds_a_tagged_handler() {
        let found = locate(&config(), &Target::HandlerId("api-proxy".into())).unwrap();
        assert_eq!(
            found.path,
            "/config/apps/http/servers/srv0/routes/0/handle/0/routes/0/handle/0"
        );
    }

    #[test]
    fn explains_what_is_wrong() {
        let error = |target| locate(&config(), &target).unwrap_err().to_string();
        assert!(error(Target::Site(":7000".into())).contains("no site \":7000\""));
        assert!(error(Target::Site("b.example.com".into())).contains("2 reverse_proxy handlers"));
        assert!(error(Target::Site("c.example.com".into())).contains("has no reverse_proxy"));
        assert!(error(Target::HandlerId("nope".into())).contains("no handler @id \"nope\""));
    }
}
