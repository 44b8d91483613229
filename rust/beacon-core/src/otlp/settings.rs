//! What the span exporter is configured with, checked when the middleware starts: a URL that
//! cannot be dialled, a header that would break the request, or TLS files that are missing are
//! refused then, in one message naming the setting, rather than failing every export later.

use std::time::Duration;

use crate::trace::span::Attribute;
use crate::BeaconError;
use beacon_base::tls_files::TlsFiles;

/// The OTLP transports (`OTEL_EXPORTER_OTLP_PROTOCOL`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `http/protobuf` (the default).
    HttpProtobuf,
    /// `http/json`.
    HttpJson,
    /// `grpc`.
    Grpc,
}

impl Protocol {
    /// Parses the specification's names.
    pub fn parse(name: &str) -> Result<Protocol, BeaconError> {
        match name.trim() {
            "" | "http/protobuf" => Ok(Protocol::HttpProtobuf),
            "http/json" => Ok(Protocol::HttpJson),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(BeaconError::InvalidExport(format!(
                "OTEL_EXPORTER_OTLP_PROTOCOL={other:?} is not one of http/protobuf, http/json, grpc"
            ))),
        }
    }
}

/// How the exporter sends.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// Where spans go: the traces URL (`…/v1/traces`) for OTLP/HTTP, the collector's address
    /// for gRPC.
    pub endpoint: String,
    /// The transport.
    pub protocol: Protocol,
    /// Extra request headers (gRPC metadata), e.g. an API key.
    pub headers: Vec<(String, String)>,
    /// Gzip the requests (`OTEL_EXPORTER_OTLP_COMPRESSION=gzip`).
    pub gzip: bool,
    /// A CA to trust besides the system's roots, and a client certificate.
    pub tls: TlsFiles,
    /// Deadline of one export, retries included.
    pub timeout: Duration,
    /// Spans waiting to be sent before new ones are dropped.
    pub queue_size: usize,
    /// Spans per request at most.
    pub batch_size: usize,
    /// Longest time a span waits in a partial batch.
    pub interval: Duration,
    /// Resource attributes (`service.name`, `service.instance.id`, …).
    pub resource: Vec<Attribute>,
}

impl ExporterConfig {
    /// Refuses what cannot work: a URL that is not `http(s)://host…`, header names or values
    /// that HTTP (or gRPC metadata) cannot carry, TLS files given for a plain `http://` URL
    /// (they would be silently unused), empty queues.
    pub fn validate(&self) -> Result<(), BeaconError> {
        let url = reqwest::Url::parse(&self.endpoint).map_err(|e| {
            BeaconError::InvalidExport(format!(
                "the OTLP endpoint {:?} is not a URL: {e}",
                self.endpoint
            ))
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
            return Err(BeaconError::InvalidExport(format!(
                "the OTLP endpoint {:?} must be http://host[:port][/path] or https://…",
                self.endpoint
            )));
        }
        for (name, value) in &self.headers {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(BeaconError::InvalidExport(format!(
                    "OTLP header name {name:?} is not a valid HTTP header name"
                )));
            }
            // HeaderValue accepts obs-text; we do not: only visible ASCII, spaces and tabs, so
            // no CR or LF can split a header and a gRPC metadata value is always ASCII.
            if !value
                .bytes()
                .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
            {
                return Err(BeaconError::InvalidExport(format!(
                    "the value of OTLP header {name:?} holds characters a header cannot carry (control characters or non-ASCII)"
                )));
            }
        }
        if url.scheme() == "http" && self.tls != TlsFiles::default() {
            return Err(BeaconError::InvalidExport(format!(
                "TLS certificates are configured but the OTLP endpoint {:?} is plain http://; use https://",
                self.endpoint
            )));
        }
        if self.queue_size == 0 || self.batch_size == 0 {
            return Err(BeaconError::InvalidExport(
                "span queue and batch sizes must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn config(endpoint: &str) -> ExporterConfig {
        ExporterConfig {
            endpoint: endpoint.to_owned(),
            protocol: Protocol::HttpProtobuf,
            headers: vec![("authorization".into(), "Bearer t".into())],
            gzip: false,
            tls: TlsFiles::default(),
            timeout: Duration::from_secs(2),
            queue_size: 10,
            batch_size: 2,
            interval: Duration::from_secs(600),
            resource: vec![],
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(Protocol::parse("grpc").unwrap(), Protocol::Grpc);
        assert_eq!(Protocol::parse("").unwrap(), Protocol::HttpProtobuf);
        assert!(Protocol::parse("thrift")
            .unwrap_err()
            .to_string()
            .contains("http/protobuf, http/json, grpc"));
    }

    #[test]
    fn refuses_what_cannot_work() {
        assert!(config("https://otlp.example.com/v1/traces")
            .validate()
            .is_ok());
        assert!(config("http://[::1]:4318/v1/traces").validate().is_ok());
        for bad in [
            "localhost:4318",
            "ftp://h/v1/traces",
            "http://",
            "not a url",
        ] {
            assert!(config(bad).validate().is_err(), "{bad}");
        }
        let mut injected = config("http://127.0.0.1:4318/v1/traces");
        injected.headers = vec![("x-key".into(), "a\r\nx-evil: 1".into())];
        assert!(injected
            .validate()
            .unwrap_err()
            .to_string()
            .contains("x-key"));
        injected.headers = vec![("bad name".into(), "1".into())];
        assert!(injected.validate().is_err());
        let mut plain_with_ca = config("http://127.0.0.1:4318/v1/traces");
        plain_with_ca.tls.ca_pem = Some(b"pem".to_vec());
        assert!(plain_with_ca
            .validate()
            .unwrap_err()
            .to_string()
            .contains("https://"));
    }
}
