//! The `http_route` label, read from what the framework left in the ASGI scope.
//!
//! The common cases (a route in `scope["route"]`, FastAPI's effective route context for routers
//! included with a prefix, mount prefixes in `root_path`) are resolved here, because this runs
//! once per request. The rare case of a scope without a route goes to the Python fallback
//! (`caddy_beacon._routes.route_template`), which holds the full rules and their explanation.

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// What the label resolution produced.
pub enum RouteLabel {
    /// The template, or `None` when nothing matched.
    Resolved(Option<String>),
    /// No route in the scope: ask the Python fallback.
    NeedsFallback,
}

fn template_of(route: &Bound<'_, PyAny>, scope: &Bound<'_, PyDict>) -> PyResult<Option<String>> {
    let py = route.py();
    if let Some(fastapi) = scope.get_item(intern!(py, "fastapi"))? {
        if let Ok(fastapi) = fastapi.cast::<PyDict>() {
            if let Some(context) = fastapi.get_item(intern!(py, "effective_route_context"))? {
                let original = context.getattr_opt(intern!(py, "original_route"))?;
                if original.is_some_and(|o| o.is(route)) {
                    if let Some(format) = context.getattr_opt(intern!(py, "path_format"))? {
                        if let Ok(format) = format.cast::<PyString>() {
                            return Ok(Some(format.to_str()?.to_owned()));
                        }
                    }
                }
            }
        }
    }
    for attribute in [intern!(py, "path_format"), intern!(py, "path")] {
        if let Some(value) = route.getattr_opt(attribute)? {
            if let Ok(text) = value.cast::<PyString>() {
                let text = text.to_str()?;
                if !text.is_empty() {
                    return Ok(Some(text.to_owned()));
                }
            }
        }
    }
    Ok(None)
}

/// Resolves the label of a finished request.
pub fn route_label(scope: &Bound<'_, PyDict>, outer_root_path: &Bound<'_, PyAny>) -> PyResult<RouteLabel> {
    let py = scope.py();
    let Some(route) = scope.get_item(intern!(py, "route"))? else {
        return Ok(RouteLabel::NeedsFallback);
    };
    if route.is_none() {
        return Ok(RouteLabel::NeedsFallback);
    }
    let Some(template) = template_of(&route, scope)? else {
        return Ok(RouteLabel::Resolved(None));
    };
    let root_path = scope.get_item(intern!(py, "root_path"))?;
    let (root_path, outer) = match (&root_path, outer_root_path.cast::<PyString>()) {
        (Some(root), Ok(outer)) => match root.cast::<PyString>() {
            Ok(root) => (root.to_str()?, outer.to_str()?),
            Err(_) => return Ok(RouteLabel::Resolved(Some(template))),
        },
        _ => return Ok(RouteLabel::Resolved(Some(template))),
    };
    if root_path == outer {
        return Ok(RouteLabel::Resolved(Some(template)));
    }
    // Mounts below the middleware extended root_path: that extension is the mount prefix.
    let prefix = root_path.strip_prefix(outer).unwrap_or(root_path);
    if route.hasattr(intern!(py, "routes"))? && template.ends_with("/{path}") {
        // The route is the mount itself; its prefix is already the end of root_path.
        return Ok(RouteLabel::Resolved(Some(format!("{prefix}/{{path}}"))));
    }
    Ok(RouteLabel::Resolved(Some(format!("{prefix}{template}"))))
}
