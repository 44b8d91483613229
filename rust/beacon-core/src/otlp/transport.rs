//! The OTLP exporter of one export thread: `opentelemetry-otlp` over reqwest (http/protobuf,
//! http/json) or tonic (gRPC), with rustls on the ring provider, gzip when asked, and the
//! exporter's retry policy (429/502/503/504 and lost connections, honouring `Retry-After`,
//! within the export timeout).
//!
//! It runs on a current-thread tokio runtime that the export thread builds for itself, after
//! any fork and never at import; nothing here runs on the request path.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use opentelemetry::InstrumentationScope;
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::tonic_types::metadata::MetadataMap;
use opentelemetry_otlp::tonic_types::transport::{Certificate, ClientTlsConfig, Identity};
use opentelemetry_otlp::{Compression, WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_sdk::trace::SpanExporter as _;
use opentelemetry_sdk::Resource;

use crate::otlp::settings::{ExporterConfig, Protocol};
use crate::otlp::span_data::{key_value, span_data};
use crate::trace::span::{Attribute, SpanRecord};
use beacon_base::error_chain::error_chain;
use beacon_base::tls_files::configure_reqwest;

// reqwest's client, keeping the cause of the last failed request: the exporter reports a
// failed connection only as "network error", which does not tell a wrong CA from a closed port.
#[derive(Debug, Clone)]
struct ExplainedClient {
    inner: reqwest::Client,
    last_error: Arc<Mutex<Option<String>>>,
}

#[async_trait::async_trait]
impl HttpClient for ExplainedClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let result = self.inner.send_bytes(request).await;
        if let Err(error) = &result {
            *self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(error_chain(error.as_ref()));
        }
        result
    }
}

/// The exporter of this thread, with the runtime it runs on.
pub struct Transport {
    runtime: tokio::runtime::Runtime,
    exporter: opentelemetry_otlp::SpanExporter,
    last_error: Arc<Mutex<Option<String>>>,
    scope: InstrumentationScope,
}

fn header_map(headers: &[(String, String)]) -> Result<http::HeaderMap, String> {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        let name = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|e| format!("header {name:?}: {e}"))?;
        let value =
            http::HeaderValue::from_str(value).map_err(|e| format!("header {name}: {e}"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn http_exporter(
    config: &ExporterConfig,
    last_error: &Arc<Mutex<Option<String>>>,
) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let https = config.endpoint.starts_with("https://");
    let client = configure_reqwest(
        reqwest::Client::builder().timeout(config.timeout),
        https.then_some(&config.tls),
    )
    .map_err(|e| e.to_string())?
    .build()
    .map_err(|e| error_chain(&e))?;
    let headers: HashMap<String, String> = config.headers.iter().cloned().collect();
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(ExplainedClient {
            inner: client,
            last_error: Arc::clone(last_error),
        })
        .with_endpoint(config.endpoint.clone())
        .with_protocol(match config.protocol {
            Protocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
            _ => opentelemetry_otlp::Protocol::HttpBinary,
        })
        .with_timeout(config.timeout)
        .with_headers(headers);
    if config.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    builder.build().map_err(|e| error_chain(&e))
}

fn grpc_exporter(config: &ExporterConfig) -> Result<opentelemetry_otlp::SpanExporter, String> {
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(config.endpoint.clone())
        .with_protocol(opentelemetry_otlp::Protocol::Grpc)
        .with_timeout(config.timeout)
        .with_metadata(MetadataMap::from_headers(header_map(&config.headers)?));
    if config.endpoint.starts_with("https://") {
        let mut tls = ClientTlsConfig::new().with_native_roots();
        if let Some(ca) = &config.tls.ca_pem {
            tls = tls.ca_certificate(Certificate::from_pem(ca));
        }
        if let Some(client) = &config.tls.client_pem {
            tls = tls.identity(Identity::from_pem(&client.cert_pem, &client.key_pem));
        }
        builder = builder.with_tls_config(tls);
    }
    if config.gzip {
        builder = builder.with_compression(Compression::Gzip);
    }
    builder.build().map_err(|e| error_chain(&e))
}

impl Transport {
    /// Builds the runtime and the exporter for `config`, exporting under `resource`.
    pub fn start(config: &ExporterConfig, resource: &[Attribute]) -> Result<Transport, String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the export runtime: {e}"))?;
        let last_error = Arc::new(Mutex::new(None));
        // tonic's lazy channel registers with the runtime it is built in.
        let mut exporter = {
            let _inside = runtime.enter();
            match config.protocol {
                Protocol::Grpc => grpc_exporter(config)?,
                Protocol::HttpProtobuf | Protocol::HttpJson => http_exporter(config, &last_error)?,
            }
        };
        exporter.set_resource(
            &Resource::builder_empty()
                .with_attributes(resource.iter().cloned().map(key_value))
                .build(),
        );
        let scope = InstrumentationScope::builder("caddy-beacon")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(Transport {
            runtime,
            exporter,
            last_error,
            scope,
        })
    }

    /// Exports one batch (retrying as the policy allows, within the timeout). The error says
    /// why the collector did not take it.
    pub fn send(&self, spans: Vec<SpanRecord>) -> Result<(), String> {
        let batch = spans
            .into_iter()
            .map(|record| span_data(record, &self.scope))
            .collect();
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let result = self.runtime.block_on(self.exporter.export(batch));
        result.map_err(|error| {
            let text = error.to_string();
            match self
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take()
            {
                Some(cause) => format!("{text} ({cause})"),
                None => text,
            }
        })
    }
}
