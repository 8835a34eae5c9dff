//! Trust the manager by the SHA-256 fingerprint of its certificate, the
//! way an edge joins: `outpost manager init` makes a self-signed
//! certificate and prints its fingerprint, so there is no CA to check.
//!
//! Invariant: a handshake succeeds only if the end-entity certificate's
//! DER hashes to the pinned value and the server proves it holds the key
//! (the signature checks stay rustls's own).

use std::sync::Arc;

use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// "aa:bb:..." lower-case hex pairs, as `manager init` prints them.
pub fn fingerprint_of(der: &[u8]) -> String {
    let digest = Sha256::digest(der);
    let pairs: Vec<String> = digest.iter().map(|b| format!("{b:02x}")).collect();
    pairs.join(":")
}

#[derive(Debug)]
struct PinnedFingerprint {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedFingerprint {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint_of(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the manager's certificate has fingerprint {}, not the pinned {}",
                fingerprint_of(end_entity),
                self.fingerprint
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
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
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A client config that accepts only the certificate with `fingerprint`.
pub fn pinned_client_config(fingerprint: &str) -> anyhow::Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = PinnedFingerprint {
        fingerprint: fingerprint.trim().to_ascii_lowercase(),
        provider: provider.clone(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use http::Method;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    use super::fingerprint_of;
    use crate::client::{Conn, Target};

    /// A TLS server with a fresh self-signed certificate that answers
    /// every request "pinned ok"; its address and fingerprint.
    async fn tls_server() -> (std::net::SocketAddr, String) {
        let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        let der = certified.cert.der().clone();
        let fingerprint = fingerprint_of(&der);
        let key = rustls_pki_types::PrivateKeyDer::Pkcs8(
            rustls_pki_types::PrivatePkcs8KeyDer::from(certified.key_pair.serialize_der()),
        );
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![der], key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let service = service_fn(|_request| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"pinned ok"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (addr, fingerprint)
    }

    #[tokio::test]
    async fn the_pinned_certificate_is_trusted_and_another_is_refused() {
        let (addr, fingerprint) = tls_server().await;
        let url = format!("https://{addr}");

        let target = Target::new(&url, Some(&fingerprint.to_uppercase()), 4).unwrap();
        let mut conn = Conn::new(None);
        for _ in 0..2 {
            let answer = conn
                .send(
                    &target,
                    Method::GET,
                    "/",
                    None,
                    None,
                    Duration::from_secs(10),
                )
                .await
                .unwrap();
            assert_eq!(&answer.body[..], b"pinned ok");
        }
        assert_eq!(
            target
                .counters
                .connects
                .load(std::sync::atomic::Ordering::Relaxed),
            1,
            "the second request reused the connection"
        );

        let wrong = fingerprint_of(b"another certificate");
        let target = Target::new(&url, Some(&wrong), 4).unwrap();
        let error = Conn::new(None)
            .send(
                &target,
                Method::GET,
                "/",
                None,
                None,
                Duration::from_secs(10),
            )
            .await
            .err()
            .expect("a certificate that is not the pinned one is refused");
        assert!(format!("{error:#}").contains("not the pinned"), "{error:#}");
    }
}
