//! Trust the manager by the SHA-256 fingerprint of its certificate, the
//! way an edge joins: the manager crate's `pinned_tls` client config, so
//! the simulator checks the certificate exactly as edges and
//! `outpost fleet` do.

/// A client config that accepts only the certificate with `fingerprint`
/// ("aa:bb:..." as `outpost manager init` prints it).
///
/// Without session resumption: all simulated edges share this config, and
/// its session cache would let one edge resume with the ticket another
/// just got, which real edges (one cache each, last used an interval
/// ago, long evicted from the manager's 256-session cache) cannot.
pub fn pinned_client_config(fingerprint: &str) -> anyhow::Result<rustls::ClientConfig> {
    let mut config = outpost_manager::pinned_tls::client_config(fingerprint)?;
    config.resumption = rustls::client::Resumption::disabled();
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

    use crate::client::{Conn, Target};
    use outpost_manager::tls::fingerprint as fingerprint_of;

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

        let target = Target::new(
            &url,
            Some(&fingerprint.to_uppercase()),
            4,
            crate::client::Transport::Http1,
        )
        .unwrap();
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
        let target = Target::new(&url, Some(&wrong), 4, crate::client::Transport::Http1).unwrap();
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
