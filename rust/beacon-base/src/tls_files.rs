//! The TLS files a client is configured with — a CA to trust besides the system's roots, and a
//! client certificate with its key — read and checked once, at configuration time, so that a
//! wrong path or a file that is not PEM is one clear error at start, not a failed handshake
//! later. Shared by the span exporter (`OTEL_EXPORTER_OTLP_CERTIFICATE`, `_CLIENT_CERTIFICATE`,
//! `_CLIENT_KEY`) and the companion (`--admin-ca`, `--admin-cert`, `--admin-key`).

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// TLS files that are missing or not PEM, or a client that cannot take them; the message says
/// which file and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// PEM files for one TLS client, as read from disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA certificates (PEM) trusted in addition to the system's roots.
    pub ca_pem: Option<Vec<u8>>,
    /// The client certificate chain and its key (PEM), for mutual TLS.
    pub client_pem: Option<ClientIdentity>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate chain.
    pub cert_pem: Vec<u8>,
    /// The private key.
    pub key_pem: Vec<u8>,
}

fn read(what: &str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("{what} {}: {e}", path.display())))
}

impl TlsFiles {
    /// Reads and checks the files. `what` names the settings in messages (e.g. the variable
    /// or flag prefix). A certificate without its key (or the reverse) is an error.
    pub fn load(
        what: &str,
        ca: Option<&PathBuf>,
        client_cert: Option<&PathBuf>,
        client_key: Option<&PathBuf>,
    ) -> Result<TlsFiles, TlsError> {
        let ca_pem = match ca {
            None => None,
            Some(path) => {
                let pem = read(&format!("{what}: the CA file"), path)?;
                let count = CertificateDer::pem_slice_iter(&pem)
                    .filter(Result::is_ok)
                    .count();
                if count == 0 {
                    return Err(TlsError(format!(
                        "{what}: the CA file {} holds no PEM certificate",
                        path.display()
                    )));
                }
                Some(pem)
            }
        };
        let client_pem = match (client_cert, client_key) {
            (None, None) => None,
            (Some(_), None) | (None, Some(_)) => {
                return Err(TlsError(format!(
                    "{what}: a client certificate needs its key, and a key its certificate"
                )))
            }
            (Some(cert), Some(key)) => {
                let cert_pem = read(&format!("{what}: the client certificate"), cert)?;
                if CertificateDer::pem_slice_iter(&cert_pem)
                    .filter(Result::is_ok)
                    .count()
                    == 0
                {
                    return Err(TlsError(format!(
                        "{what}: {} holds no PEM certificate",
                        cert.display()
                    )));
                }
                let key_pem = read(&format!("{what}: the client key"), key)?;
                if PrivateKeyDer::from_pem_slice(&key_pem).is_err() {
                    return Err(TlsError(format!(
                        "{what}: {} holds no PEM private key",
                        key.display()
                    )));
                }
                Some(ClientIdentity { cert_pem, key_pem })
            }
        };
        Ok(TlsFiles { ca_pem, client_pem })
    }

    fn reqwest_roots(&self) -> Result<Vec<reqwest::Certificate>, TlsError> {
        match &self.ca_pem {
            None => Ok(Vec::new()),
            Some(pem) => reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| TlsError(format!("the CA file: {e}"))),
        }
    }

    fn reqwest_identity(&self) -> Result<Option<reqwest::Identity>, TlsError> {
        let Some(client) = &self.client_pem else {
            return Ok(None);
        };
        let mut pem = client.cert_pem.clone();
        pem.push(b'\n');
        pem.extend_from_slice(&client.key_pem);
        reqwest::Identity::from_pem(&pem)
            .map(Some)
            .map_err(|e| TlsError(format!("the client certificate: {e}")))
    }
}

/// Gives a reqwest client its TLS settings, for both of our clients (the span exporter's and the
/// companion's): with `tls` (the URL is https://), the system's roots plus its CA and its client
/// certificate; without, a configuration with no roots at all (see [`no_tls`]). Installs the
/// crypto provider first: reqwest is built without one.
pub fn configure_reqwest(
    builder: reqwest::ClientBuilder,
    tls: Option<&TlsFiles>,
) -> Result<reqwest::ClientBuilder, TlsError> {
    install_crypto_provider();
    let Some(tls) = tls else {
        return Ok(builder.tls_backend_preconfigured(no_tls()));
    };
    let builder = builder.tls_certs_merge(tls.reqwest_roots()?);
    Ok(match tls.reqwest_identity()? {
        Some(identity) => builder.identity(identity),
        None => builder,
    })
}

/// Makes ring the process's rustls provider, unless one is installed already (by us, or by
/// another library in the same process: either serves). reqwest is built without a provider of
/// its own, so this runs before any client is built.
pub fn install_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race with another installer is fine: some provider is installed either way.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

/// The TLS settings for a client that only ever dials `http://` URLs: no roots. reqwest builds
/// its TLS settings when the client is built, even if no URL will use them, and its default
/// loads and parses every system root certificate — measured ~0.6 MiB resident in the
/// companion, and as much in every tracing worker, for nothing.
fn no_tls() -> rustls::ClientConfig {
    rustls::ClientConfig::builder()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clear_errors_for_missing_and_wrong_files() {
        let dir = std::env::temp_dir().join(format!("beacon-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, b"hello").unwrap();
        let missing = dir.join("missing.pem");
        let error = TlsFiles::load("OTEL_EXPORTER_OTLP_CERTIFICATE", Some(&missing), None, None)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("missing.pem") && error.contains("CA file"),
            "{error}"
        );
        let error = TlsFiles::load("X", Some(&not_pem), None, None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("no PEM certificate"), "{error}");
        let error = TlsFiles::load("X", None, Some(&not_pem), None)
            .unwrap_err()
            .to_string();
        assert!(error.contains("needs its key"), "{error}");
        assert_eq!(
            TlsFiles::load("X", None, None, None).unwrap(),
            TlsFiles::default()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
