//! The `http_route` label, read from what the framework left in the ASGI scope.
//!
//! The common cases (a route in `scope["route"]`, FastAPI's effective route context for routers
//! included with a prefix, mount prefixes in `root_path`) are resolved here, because this runs
//! once per request. The rare case of a scope without a route goes to the Python fallback
//! (`caddy_beacon._routes.route_template`), which holds the full rules and their explanation.
//!
//! Outside mounts the label depends only on the route object and FastAPI's effective route
//! context object, both built once per app: it is resolved once per pair and then found by
//! their identity (saves reading attributes and copying the text on every request, ~800
//! instructions under callgrind).

use std::sync::{Arc, Mutex, PoisonError};

use fnv::FnvHashMap;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString};

/// More distinct (route, context) pairs than any app has; past it labels are resolved anew.
const MAX_RESOLVED: usize = 4096;

/// How the requests of one middleware find their route label.
pub struct RouteLabels {
    /// `route_template(scope, outer_root_path) -> str | None`, for scopes without a route.
    fallback: Py<PyAny>,
    /// By the addresses of (route, effective context or none); the entry keeps both alive, so
    /// an address is never reused for another object while it is a key.
    resolved: Mutex<FnvHashMap<(usize, usize), Resolved>>,
}

struct Resolved {
    _route: Py<PyAny>,
    _context: Option<Py<PyAny>>,
    label: Option<Arc<str>>,
}

impl RouteLabels {
    pub fn new(fallback: Py<PyAny>) -> Self {
        RouteLabels {
            fallback,
            resolved: Mutex::new(FnvHashMap::default()),
        }
    }

    /// The label of a finished request, or None when no route matched.
    pub fn label_of(
        &self,
        scope: &Bound<'_, PyDict>,
        outer_root_path: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Arc<str>>> {
        let py = scope.py();
        let route = match scope.get_item(intern!(py, "route"))? {
            Some(route) if !route.is_none() => route,
            _ => return self.label_by_fallback(scope, outer_root_path),
        };
        let context = effective_route_context(scope)?;
        let root_path = scope.get_item(intern!(py, "root_path"))?;
        let Some(prefix) = mount_prefix(root_path.as_ref(), outer_root_path)? else {
            return self.unmounted_label(route, context);
        };
        let Some(template) = template_of(&route, context.as_ref())? else {
            return Ok(None);
        };
        // Mounts below the middleware extended root_path: that extension is the mount prefix.
        if route.hasattr(intern!(py, "routes"))? && template.ends_with("/{path}") {
            // The route is the mount itself; its prefix is already the end of root_path.
            return Ok(Some(format!("{prefix}/{{path}}").into()));
        }
        Ok(Some(format!("{prefix}{template}").into()))
    }

    /// Outside mounts: the template of (route, context), resolved on their first request.
    fn unmounted_label(
        &self,
        route: Bound<'_, PyAny>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Option<Arc<str>>> {
        let key = (
            route.as_ptr() as usize,
            context.as_ref().map_or(0, |c| c.as_ptr() as usize),
        );
        if let Some(resolved) = self
            .resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            return Ok(resolved.label.clone());
        }
        let label = template_of(&route, context.as_ref())?.map(Arc::<str>::from);
        let mut resolved = self.resolved.lock().unwrap_or_else(PoisonError::into_inner);
        if resolved.len() < MAX_RESOLVED {
            resolved.insert(
                key,
                Resolved {
                    _route: route.unbind(),
                    _context: context.map(Bound::unbind),
                    label: label.clone(),
                },
            );
        }
        Ok(label)
    }

    fn label_by_fallback(
        &self,
        scope: &Bound<'_, PyDict>,
        outer_root_path: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Arc<str>>> {
        let label = self
            .fallback
            .bind(scope.py())
            .call1((scope, outer_root_path))?;
        if label.is_none() {
            return Ok(None);
        }
        Ok(Some(label.cast::<PyString>()?.to_str()?.into()))
    }
}

/// FastAPI's `scope["fastapi"]["effective_route_context"]`, when there is one.
fn effective_route_context<'py>(scope: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let py = scope.py();
    let Some(fastapi) = scope.get_item(intern!(py, "fastapi"))? else {
        return Ok(None);
    };
    let Ok(fastapi) = fastapi.cast::<PyDict>() else {
        return Ok(None);
    };
    fastapi.get_item(intern!(py, "effective_route_context"))
}

/// What mounts below the middleware added to `root_path`; None when they added nothing.
fn mount_prefix<'a>(
    root_path: Option<&'a Bound<'_, PyAny>>,
    outer_root_path: &'a Bound<'_, PyAny>,
) -> PyResult<Option<&'a str>> {
    let Some(root_path) = root_path else {
        return Ok(None);
    };
    if root_path.is(outer_root_path) {
        return Ok(None);
    }
    let (Ok(root), Ok(outer)) = (
        root_path.cast::<PyString>(),
        outer_root_path.cast::<PyString>(),
    ) else {
        return Ok(None);
    };
    let (root, outer) = (root.to_str()?, outer.to_str()?);
    if root == outer {
        return Ok(None);
    }
    Ok(Some(root.strip_prefix(outer).unwrap_or(root)))
}

fn template_of(
    route: &Bound<'_, PyAny>,
    context: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<String>> {
    let py = route.py();
    if let Some(context) = context {
        let original = context.getattr_opt(intern!(py, "original_route"))?;
        if original.is_some_and(|o| o.is(route)) {
            if let Some(format) = context.getattr_opt(intern!(py, "path_format"))? {
                if let Ok(format) = format.cast::<PyString>() {
                    return Ok(Some(format.to_str()?.to_owned()));
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
