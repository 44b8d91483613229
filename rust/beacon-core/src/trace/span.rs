//! A finished server span, as handed to the exporter.
//!
//! The request path records only the request's facts, its texts in one buffer
//! (`HttpServerFacts`); the span's name and its semantic-convention attributes are made from
//! them on the export thread. Building the attributes on the event loop cost a dozen
//! allocations per request, freed on another thread (~3,000 instructions of malloc on the loop
//! under callgrind); one buffer costs one.

use std::borrow::Cow;

use crate::trace::context::RequestTrace;
use crate::HttpMethod;

/// An attribute value (the subset of OTLP's AnyValue that HTTP server spans use).
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    /// A string.
    Str(String),
    /// An integer.
    Int(i64),
    /// A list of strings (header attributes are string arrays in the semantic conventions).
    StrArray(Vec<String>),
}

/// One key/value attribute. Keys are usually the semantic conventions' static names.
pub type Attribute = (Cow<'static, str>, AttributeValue);

/// The texts a server span carries, in the order of its attributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpanText {
    /// The request id (`http.request.header.x-request-id`).
    RequestId,
    /// The matched route template (`http.route`, and the span name).
    Route,
    /// `url.path`.
    Path,
    /// `url.scheme`.
    Scheme,
    /// `network.protocol.version`.
    ProtocolVersion,
    /// `client.address`.
    ClientAddress,
    /// The `Host` header: `server.address` and `server.port`.
    Host,
    /// `user_agent.original`.
    UserAgent,
    /// The request id the app put on the response itself, when it did
    /// (`http.response.header.x-request-id`): that one is the response's only one.
    ResponseRequestId,
}

const TEXTS: usize = 9;

/// What the request path knows of a finished HTTP request: all a server span is made from.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpServerFacts {
    /// The request method.
    pub method: HttpMethod,
    /// The response status.
    pub status: u16,
    texts: String,
    // Byte ranges of each `SpanText` in `texts`; None when the request had none.
    ranges: [Option<(usize, usize)>; TEXTS],
}

impl HttpServerFacts {
    /// Facts without texts yet; `capacity` is the expected length of all texts together.
    pub fn new(method: HttpMethod, status: u16, capacity: usize) -> Self {
        HttpServerFacts {
            method,
            status,
            texts: String::with_capacity(capacity),
            ranges: [None; TEXTS],
        }
    }

    /// Sets one text (a later call for the same text replaces it).
    pub fn set(&mut self, which: SpanText, value: &str) {
        let start = self.texts.len();
        self.texts.push_str(value);
        self.ranges[which as usize] = Some((start, self.texts.len()));
    }

    /// One text, when the request had it.
    pub fn get(&self, which: SpanText) -> Option<&str> {
        self.ranges[which as usize].map(|(start, end)| &self.texts[start..end])
    }

    /// `"{method} {route}"`, or the method alone when no route matched.
    pub fn span_name(&self) -> String {
        match self.get(SpanText::Route) {
            Some(route) => [self.method.as_label(), " ", route].concat(),
            None => self.method.as_label().to_owned(),
        }
    }

    /// The span's attributes, per the OpenTelemetry HTTP semantic conventions.
    pub fn attributes(&self) -> Vec<Attribute> {
        let text = |which| self.get(which).map(str::to_owned);
        let mut attributes: Vec<Attribute> = Vec::with_capacity(12);
        attributes.push((
            "http.request.method".into(),
            AttributeValue::Str(self.method.as_label().into()),
        ));
        attributes.push((
            "http.response.status_code".into(),
            AttributeValue::Int(i64::from(self.status)),
        ));
        if let Some(id) = text(SpanText::RequestId) {
            attributes.push((
                "http.request.header.x-request-id".into(),
                AttributeValue::StrArray(vec![id]),
            ));
        }
        let named = [
            (SpanText::Route, "http.route"),
            (SpanText::Path, "url.path"),
            (SpanText::Scheme, "url.scheme"),
            (SpanText::ProtocolVersion, "network.protocol.version"),
            (SpanText::ClientAddress, "client.address"),
        ];
        for (which, key) in named {
            if let Some(value) = text(which) {
                attributes.push((key.into(), AttributeValue::Str(value)));
            }
        }
        if let Some(host) = self.get(SpanText::Host) {
            let (address, port) = split_host(host);
            attributes.push((
                "server.address".into(),
                AttributeValue::Str(address.to_owned()),
            ));
            if let Some(port) = port {
                attributes.push(("server.port".into(), AttributeValue::Int(i64::from(port))));
            }
        }
        if let Some(agent) = text(SpanText::UserAgent) {
            attributes.push(("user_agent.original".into(), AttributeValue::Str(agent)));
        }
        if let Some(id) = text(SpanText::ResponseRequestId) {
            attributes.push((
                "http.response.header.x-request-id".into(),
                AttributeValue::StrArray(vec![id]),
            ));
        }
        attributes
    }
}

/// `host[:port]` of a `Host` header; a bracketed IPv6 address without a port stays whole.
fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((address, port)) if !address.is_empty() && !host.ends_with(']') => {
            match port.parse::<u16>() {
                Ok(port) => (address, Some(port)),
                Err(_) => (host, None),
            }
        }
        _ => (host, None),
    }
}

/// A finished span of kind SERVER.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRecord {
    /// Its trace context: ids, parent, tracestate, flags and start.
    pub trace: RequestTrace,
    /// End, in nanoseconds since the Unix epoch.
    pub end_unix_nanos: u64,
    /// What the span's name and attributes are made from.
    pub http: HttpServerFacts,
    /// Whether the span's status is ERROR (5xx or an exception).
    pub error: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_come_back_and_make_name_and_attributes_in_order() {
        let mut facts = HttpServerFacts::new(HttpMethod::Post, 201, 0);
        facts.set(SpanText::RequestId, "rid-1");
        facts.set(SpanText::Route, "/items/{id}");
        facts.set(SpanText::Path, "/items/7");
        facts.set(SpanText::Host, "example.com:8443");
        facts.set(SpanText::UserAgent, "curl/8");
        facts.set(SpanText::ResponseRequestId, "app-own-id");
        assert_eq!(facts.get(SpanText::Route), Some("/items/{id}"));
        assert_eq!(facts.get(SpanText::Scheme), None);
        assert_eq!(facts.span_name(), "POST /items/{id}");
        let keys: Vec<_> = facts.attributes().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "http.request.method",
                "http.response.status_code",
                "http.request.header.x-request-id",
                "http.route",
                "url.path",
                "server.address",
                "server.port",
                "user_agent.original",
                "http.response.header.x-request-id"
            ]
        );
        assert!(facts
            .attributes()
            .contains(&("server.port".into(), AttributeValue::Int(8443))));
        assert_eq!(
            HttpServerFacts::new(HttpMethod::Other, 404, 0).span_name(),
            "_OTHER"
        );
    }

    #[test]
    fn host_headers_split_into_address_and_port() {
        assert_eq!(split_host("example.com"), ("example.com", None));
        assert_eq!(split_host("example.com:80"), ("example.com", Some(80)));
        assert_eq!(split_host("[::1]"), ("[::1]", None));
        assert_eq!(split_host("[::1]:8080"), ("[::1]", Some(8080)));
        assert_eq!(
            split_host("example.com:notaport"),
            ("example.com:notaport", None)
        );
        assert_eq!(split_host(":80"), (":80", None));
    }
}
