//! The gateway's TLS certificate.
//!
//! Browsers accept a self-signed certificate for WebTransport only through
//! `serverCertificateHashes`, and only if it is ECDSA (P-256 here) and valid for at most
//! 14 days. So by default the gateway makes its own, valid for [`SELF_SIGNED_VALIDITY`],
//! publishes its SHA-256 hash (the player fetches it over HTTP), and makes a new one
//! [`RENEW_BEFORE`] before it expires. A production gateway can use a real certificate from
//! PEM files instead; the hash is then served too but not needed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// Validity of a self-signed certificate: under the browsers' 14-day limit.
pub const SELF_SIGNED_VALIDITY: Duration = Duration::from_secs(13 * 24 * 3600);
/// A self-signed certificate is replaced this long before it expires.
pub const RENEW_BEFORE: Duration = Duration::from_secs(2 * 24 * 3600);

/// Why a certificate cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Generating a self-signed certificate failed.
    #[error("cannot make a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A PEM file could not be read.
    #[error("cannot read {path}: {reason}")]
    Pem {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// TLS refused the certificate or key.
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
}

/// A certificate with its key and what the player needs to know of it.
#[derive(Debug)]
pub struct Certificate {
    /// The chain, leaf first.
    pub chain: Vec<CertificateDer<'static>>,
    /// The private key.
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf, for `serverCertificateHashes`.
    pub sha256: [u8; 32],
    /// End of validity, µs since the Unix epoch (`None` for a certificate from files, whose
    /// renewal is the operator's).
    pub not_after_us: Option<u64>,
}

impl Certificate {
    /// A fresh self-signed ECDSA P-256 certificate for `names` (host names or IP addresses),
    /// valid from an hour ago (clock skew) for [`SELF_SIGNED_VALIDITY`].
    pub fn self_signed(names: &[String], now_us: u64) -> Result<Self, CertError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = rcgen::CertificateParams::new(names.to_vec())?;
        let now = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_us) * 1000)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
        params.not_before = now - time::Duration::hours(1);
        let validity = time::Duration::seconds(SELF_SIGNED_VALIDITY.as_secs() as i64);
        params.not_after = now + validity;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Fjord gateway");
        let cert = params.self_signed(&key)?;
        let der = cert.der().clone();
        let sha256 = Sha256::digest(&der).into();
        Ok(Self {
            chain: vec![der],
            key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            sha256,
            not_after_us: Some(now_us + SELF_SIGNED_VALIDITY.as_micros() as u64),
        })
    }

    /// A certificate chain and key from PEM files.
    pub fn from_pem(chain: &Path, key: &Path) -> Result<Self, CertError> {
        let pem_err = |path: &Path, reason: String| CertError::Pem {
            path: path.display().to_string(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(chain)
            .map_err(|e| pem_err(chain, e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| pem_err(chain, e.to_string()))?;
        let leaf = certs
            .first()
            .ok_or_else(|| pem_err(chain, "no certificate in the file".into()))?;
        let sha256 = Sha256::digest(leaf).into();
        let key = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_err(key, e.to_string()))?;
        Ok(Self {
            chain: certs,
            key,
            sha256,
            not_after_us: None,
        })
    }

    /// The QUIC server configuration for WebTransport (ALPN `h3`) with this certificate.
    pub fn server_config(&self) -> Result<quinn::ServerConfig, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        tls.alpn_protocols = vec![web_transport_quinn::ALPN.as_bytes().to_vec()];
        let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
        let mut transport = quinn::TransportConfig::default();
        // A browser that vanishes is noticed within seconds; a chunk per stream needs many.
        transport.max_idle_timeout(Some(
            Duration::from_secs(10)
                .try_into()
                .expect("10 s is a valid idle timeout"),
        ));
        transport.max_concurrent_uni_streams(64u32.into());
        config.transport_config(Arc::new(transport));
        Ok(config)
    }

    /// The hash as lowercase hex.
    pub fn sha256_hex(&self) -> String {
        self.sha256.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_is_short_lived_ecdsa_and_hashed() {
        let now = 1_796_000_000_000_000;
        let c = Certificate::self_signed(&["127.0.0.1".into(), "localhost".into()], now).unwrap();
        assert_eq!(c.sha256.to_vec(), Sha256::digest(&c.chain[0]).to_vec());
        assert!(c.not_after_us.unwrap() - now <= 14 * 24 * 3600 * 1_000_000);
        assert_eq!(c.sha256_hex().len(), 64);
        c.server_config().unwrap();
        // Written as PEM and read back, the same certificate.
        let dir = tempfile::tempdir().unwrap();
        let (cp, kp) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
        let pem = |label: &str, der: &[u8]| {
            use std::fmt::Write;
            let b64 = base64_encode(der);
            let mut s = format!("-----BEGIN {label}-----\n");
            for line in b64.as_bytes().chunks(64) {
                let _ = writeln!(s, "{}", std::str::from_utf8(line).unwrap());
            }
            let _ = writeln!(s, "-----END {label}-----");
            s
        };
        std::fs::write(&cp, pem("CERTIFICATE", &c.chain[0])).unwrap();
        std::fs::write(&kp, pem("PRIVATE KEY", c.key.secret_der())).unwrap();
        let again = Certificate::from_pem(&cp, &kp).unwrap();
        assert_eq!(again.sha256, c.sha256);
        assert!(
            Certificate::from_pem(&kp, &kp).is_err(),
            "a key is not a certificate"
        );
    }

    fn base64_encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (u32::from(c[0]) << 16)
                | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
                | u32::from(*c.get(2).unwrap_or(&0));
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}
