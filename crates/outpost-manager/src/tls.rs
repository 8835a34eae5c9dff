//! The manager's TLS identity: a self-signed certificate made at init (or
//! one the admin supplies), its fingerprint, and the server config.
//!
//! Edges and the CLI trust the manager by the SHA-256 of its certificate
//! (DER), written `aa:bb:...` in lower-case hex, so no CA is needed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use crate::ManagerError;

pub const CERT_FILE: &str = "tls/cert.pem";
pub const KEY_FILE: &str = "tls/key.pem";

/// SHA-256 of a DER certificate, `aa:bb:...`.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A self-signed certificate for `names` (DNS names or IP addresses):
/// (certificate PEM, private key PEM, DER of the certificate).
pub fn self_signed(names: &[String]) -> Result<(String, String, Vec<u8>), ManagerError> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())
        .map_err(|e| ManagerError::Internal(format!("making the TLS certificate: {e}")))?;
    Ok((
        certified.cert.pem(),
        certified.key_pair.serialize_pem(),
        certified.cert.der().to_vec(),
    ))
}

/// The names a fresh certificate covers: localhost, loopback, the host
/// name, and the extra `--san` names.
pub fn default_names(extra: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    names.extend(extra.iter().cloned());
    names.dedup();
    names
}

pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ManagerError> {
    let certs: Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| ManagerError::BadRequest(format!("{}: {e}", path.display())))?
        .collect();
    let certs = certs.map_err(|e| ManagerError::BadRequest(format!("{}: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ManagerError::BadRequest(format!(
            "{}: no certificate in it",
            path.display()
        )));
    }
    Ok(certs)
}

/// The certificate and key paths of a data directory: the ones init was
/// given, else the ones it made.
pub fn paths(data_dir: &Path, settings: (Option<String>, Option<String>)) -> (PathBuf, PathBuf) {
    (
        settings
            .0
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join(CERT_FILE)),
        settings
            .1
            .map(PathBuf::from)
            .unwrap_or_else(|| data_dir.join(KEY_FILE)),
    )
}

pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<rustls::ServerConfig>, ManagerError> {
    let certs = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| ManagerError::BadRequest(format!("{}: {e}", key.display())))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ManagerError::Internal(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| ManagerError::BadRequest(format!("TLS certificate and key: {e}")))?;
    // HTTP/2 first: an edge keeps one connection for all its calls.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_certificate_loads_and_has_a_colon_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, der) = self_signed(&default_names(&["mgr.example".into()])).unwrap();
        std::fs::write(dir.path().join("c.pem"), cert).unwrap();
        std::fs::write(dir.path().join("k.pem"), key).unwrap();
        server_config(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap();
        let loaded = load_certs(&dir.path().join("c.pem")).unwrap();
        let fp = fingerprint(&loaded[0]);
        assert_eq!(fp, fingerprint(&der));
        assert_eq!(fp.len(), 32 * 3 - 1);
        assert!(
            fp.chars()
                .all(|c| c == ':' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
    }
}
