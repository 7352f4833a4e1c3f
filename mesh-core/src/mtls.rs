//! Mutual TLS between workloads (HBONE), as Istio's ztunnel does it (`docs/istio-compatibility.md`
//! §2):
//!
//! * the server requires a client certificate that chains to our roots and carries a SPIFFE
//!   URI SAN in the server's own trust domain (which ns/sa is for authorization to decide);
//! * the client verifies the server's chain, then requires one of the server leaf's URI SANs to
//!   equal an identity it expects (DNS and IP names are ignored; no SNI is sent);
//! * TLS 1.3 with the AES-GCM suites only, ALPN `h2`, both sides present leaf + intermediates.
//!
//! An identity is never accepted without both the chain and the SAN check.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, Error, RootCertStore,
    ServerConfig, SignatureScheme,
};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use crate::identity::Identity;
use crate::tls::{parse_certs, parse_key, provider, TlsError};

/// A workload's certificate, key and trust roots, as the CA returned them.
#[derive(Clone, Debug)]
pub struct WorkloadCertificate {
    pub identity: Identity,
    /// Leaf then intermediates (never the root).
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Arc<PrivateKeyDer<'static>>,
    pub roots: Vec<CertificateDer<'static>>,
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

impl WorkloadCertificate {
    /// From a CA response `[leaf, intermediates.., root bundle]` and the key the CSR was made
    /// with. The leaf's first SPIFFE SAN must be `expected`.
    pub fn from_pem(
        cert_chain: &[String],
        key_pem: &str,
        expected: &Identity,
    ) -> Result<WorkloadCertificate, TlsError> {
        let (leaf_pem, rest) = cert_chain
            .split_first()
            .ok_or_else(|| TlsError::NoCertificate("empty certificate chain".into()))?;
        let (roots_pem, intermediates) = rest
            .split_last()
            .ok_or_else(|| TlsError::NoCertificate("certificate chain without a root".into()))?;
        let mut chain = parse_certs(leaf_pem, "leaf certificate")?;
        for i in intermediates {
            chain.extend(parse_certs(i, "intermediate certificate")?);
        }
        let roots = parse_certs(roots_pem, "root certificates")?;
        let key = parse_key(key_pem, "workload key")?;
        let (_, leaf) = x509_parser::certificate::X509Certificate::from_der(&chain[0])
            .map_err(|e| TlsError::Invalid(format!("leaf certificate: {e}")))?;
        let identity = identities(&leaf)
            .into_iter()
            .next()
            .ok_or_else(|| TlsError::Invalid("leaf certificate has no SPIFFE URI SAN".into()))?;
        if identity != *expected {
            return Err(TlsError::Invalid(format!(
                "leaf certificate is for {identity}, not the requested {expected}"
            )));
        }
        let time = |t: x509_parser::time::ASN1Time| {
            SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(t.timestamp().max(0) as u64)
        };
        Ok(WorkloadCertificate {
            identity,
            not_before: time(leaf.validity().not_before),
            not_after: time(leaf.validity().not_after),
            chain,
            key: Arc::new(key),
            roots,
        })
    }

    fn root_store(&self) -> Result<RootCertStore, Error> {
        let mut store = RootCertStore::empty();
        for r in &self.roots {
            store.add(r.clone())?;
        }
        Ok(store)
    }

    /// The HBONE server side: clients must present a certificate from our roots with an
    /// identity in our trust domain.
    pub fn server_config(&self) -> Result<ServerConfig, TlsError> {
        let inner =
            WebPkiClientVerifier::builder_with_provider(Arc::new(self.root_store()?), provider())
                .build()
                .map_err(|e| TlsError::Invalid(format!("client verifier: {e}")))?;
        let verifier = Arc::new(TrustDomainVerifier {
            inner,
            trust_domain: self.identity.trust_domain.clone(),
        });
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    /// The HBONE client side: the server must be one of `expected`.
    pub fn client_config(&self, expected: Vec<Identity>) -> Result<ClientConfig, TlsError> {
        let verifier = Arc::new(IdentityVerifier {
            roots: self.roots.clone(),
            expected,
        });
        let mut config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        config.enable_sni = false;
        config.resumption = rustls::client::Resumption::disabled();
        Ok(config)
    }
}

/// The SPIFFE identities in a certificate's URI SANs, in order.
pub fn identities(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<Identity> {
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    if let Ok(id) = uri.parse::<Identity>() {
                        out.push(id);
                    }
                }
            }
        }
    }
    out
}

/// The identity of a DER certificate (its first SPIFFE SAN).
pub fn identity_of(cert: &CertificateDer<'_>) -> Option<Identity> {
    let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(cert).ok()?;
    identities(&parsed).into_iter().next()
}

fn bad_cert(message: String) -> Error {
    Error::InvalidCertificate(CertificateError::Other(rustls::OtherError(Arc::new(
        IdentityMismatch(message),
    ))))
}

#[derive(Debug)]
struct IdentityMismatch(String);

impl std::fmt::Display for IdentityMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for IdentityMismatch {}

/// Server side: the web PKI chain check, then the trust domain of the client's identity.
#[derive(Debug)]
struct TrustDomainVerifier {
    inner: Arc<dyn ClientCertVerifier>,
    trust_domain: String,
}

impl ClientCertVerifier for TrustDomainVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        self.inner
            .verify_client_cert(end_entity, intermediates, now)?;
        match identity_of(end_entity) {
            Some(id) if id.trust_domain == self.trust_domain => Ok(ClientCertVerified::assertion()),
            Some(id) => Err(bad_cert(format!(
                "client identity {id} is not in trust domain {}",
                self.trust_domain
            ))),
            None => Err(bad_cert("client certificate has no SPIFFE identity".into())),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Client side: the chain to our roots (server-auth usage), then an expected identity.
#[derive(Debug)]
struct IdentityVerifier {
    roots: Vec<CertificateDer<'static>>,
    expected: Vec<Identity>,
}

impl ServerCertVerifier for IdentityVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let anchors: Vec<_> = self
            .roots
            .iter()
            .filter_map(|r| webpki::anchor_from_trusted_cert(r).ok())
            .collect();
        let cert = webpki::EndEntityCert::try_from(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        cert.verify_for_usage(
            provider().signature_verification_algorithms.all,
            &anchors,
            intermediates,
            now,
            webpki::KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| bad_cert(format!("server certificate does not verify: {e}")))?;
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(end_entity)
            .map_err(|_| Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let found = identities(&parsed);
        if found.iter().any(|id| self.expected.contains(id)) {
            Ok(ServerCertVerified::assertion())
        } else {
            let found: Vec<String> = found.iter().map(Identity::to_string).collect();
            let expected: Vec<String> = self.expected.iter().map(Identity::to_string).collect();
            Err(bad_cert(format!(
                "server identity [{}] is none of the expected [{}]",
                found.join(", "),
                expected.join(", ")
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The dummy server name HBONE clients use (no SNI is sent; the verifier ignores it).
pub fn no_server_name() -> ServerName<'static> {
    ServerName::IpAddress(std::net::Ipv4Addr::UNSPECIFIED.into())
}
