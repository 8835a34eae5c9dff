//! A TLS client that trusts exactly one certificate, named by its SHA-256
//! fingerprint (of the DER), the way edges and `outpost fleet` trust a
//! manager with a self-signed certificate. The handshake's signatures are
//! still verified (so the peer holds the certificate's key); names and
//! chains are not, since the pin says more than either.
//!
//! Reusable by any client: [`client_config`] gives a `rustls::ClientConfig`.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error(
        "fingerprint {0:?}: expected the SHA-256 of the certificate as 32 hex pairs, e.g. aa:bb:..."
    )]
    BadFingerprint(String),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
}

/// Parses `aa:bb:...` (or the same without colons; either case).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], PinError> {
    let hex: String = text
        .trim()
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let bad = || PinError::BadFingerprint(text.to_string());
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[i * 2..i * 2 + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let seen: [u8; 32] = Sha256::digest(end_entity.as_ref()).into();
        if crate::secret::constant_time_eq(&seen, &self.pin) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the server's certificate has fingerprint {}, not the pinned one",
                crate::tls::fingerprint(end_entity.as_ref())
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that accepts only the certificate with `fingerprint`.
pub fn client_config(fingerprint: &str) -> Result<rustls::ClientConfig, PinError> {
    let pin = parse_fingerprint(fingerprint)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedVerifier { pin, provider }))
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_parse_with_or_without_colons() {
        let fp = "AA:".repeat(31) + "0f";
        assert_eq!(parse_fingerprint(&fp).unwrap()[31], 0x0f);
        assert_eq!(parse_fingerprint(&"ab".repeat(32)).unwrap()[0], 0xab);
        assert!(parse_fingerprint("aa:bb").is_err());
        assert!(parse_fingerprint(&"zz".repeat(32)).is_err());
        client_config(&fp).unwrap();
    }
}
