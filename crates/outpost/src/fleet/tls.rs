//! Trusting the manager: by the SHA-256 fingerprint of its certificate
//! (what `outpost manager init` prints: the manager's certificate is
//! self-signed, no CA vouches for it), or without a pin by the system's
//! trust store like any HTTPS server.
//!
//! The pinned verifier is the manager crate's
//! ([`outpost_manager::pinned_tls`], shared with `outpost fleet`): it
//! accepts exactly one end-entity certificate whatever its names and
//! dates, and still checks the handshake signatures, so a peer that shows
//! the pinned certificate without its private key is refused.

/// The TLS client configuration for the manager: pinned when `pin` is
/// given, else the system's trust store.
pub fn client_config(pin: Option<&str>) -> Result<rustls::ClientConfig, String> {
    if let Some(pin) = pin {
        return outpost_manager::pinned_tls::client_config(pin).map_err(|e| e.to_string());
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for e in &native.errors {
        tracing::warn!(error = %e, "reading the OS trust store");
    }
    roots.add_parsable_certificates(native.certs);
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}
