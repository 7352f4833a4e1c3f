//! The signing side of the mesh CA: the root (generated on first start and kept on disk with
//! mode 0600, or given by the operator), CSR checking, and leaf issuance.
//!
//! A CSR is accepted only if its signature verifies, its key is ECDSA P-256, and its only SAN is
//! the one URI the caller is allowed to have. The leaf is then built from scratch (nothing from
//! the CSR is copied but the public key): empty subject, that URI SAN (critical), KU
//! digitalSignature+keyEncipherment, EKU serverAuth+clientAuth.

use std::fs;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_core::identity::Identity;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, SubjectPublicKeyInfo,
};
use time::OffsetDateTime;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

/// Backdating of `notBefore`, for peers whose clocks run a little behind.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Lifetime of a generated root.
const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("the CSR is not PEM: {0}")]
    Pem(String),
    #[error("the CSR does not parse: {0}")]
    Parse(String),
    #[error("the CSR signature does not verify")]
    Signature,
    #[error("the CSR key must be ECDSA P-256")]
    KeyType,
    #[error("the CSR must carry exactly one SAN, the URI {expected}; it has {found}")]
    San { expected: String, found: String },
}

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> CaError {
    CaError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The mesh CA.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// PEM of the signing certificate, when it is not itself the root.
    intermediates: Vec<String>,
    /// PEM of the root (the trust bundle returned as the last chain element).
    root_pem: String,
    trust_domain: String,
}

impl Authority {
    /// Loads `root-cert.pem`/`root-key.pem` from `dir`, creating them (key mode 0600) on first
    /// start.
    pub fn load_or_create(dir: &Path, trust_domain: &str) -> Result<Authority, CaError> {
        let cert_path = dir.join("root-cert.pem");
        let key_path = dir.join("root-key.pem");
        if cert_path.exists() || key_path.exists() {
            return Authority::from_files(&cert_path, &key_path, None, trust_domain);
        }
        fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        dn.push(DnType::CommonName, "istiod-lite mesh root");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ROOT_TTL;
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key)?;
        // Key first, never readable by others; then the certificate that makes the pair usable.
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        write_private(&cert_path, cert.pem().as_bytes())?;
        tracing::info!(cert = %cert_path.display(), "generated a new mesh root CA");
        Ok(Authority {
            issuer: Issuer::new(params, key),
            intermediates: Vec::new(),
            root_pem: cert.pem(),
            trust_domain: trust_domain.to_string(),
        })
    }

    /// Uses an operator's CA: `cert` signs leaves with `key`; `root` is the trust bundle (when
    /// `cert` is an intermediate), else `cert` is the root.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        root: Option<&Path>,
        trust_domain: &str,
    ) -> Result<Authority, CaError> {
        let cert_pem = fs::read_to_string(cert).map_err(|e| file_err(cert, e))?;
        let key_pem = fs::read_to_string(key).map_err(|e| file_err(key, e))?;
        if let Ok(meta) = fs::metadata(key) {
            use std::os::unix::fs::PermissionsExt;
            if meta.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %key.display(), mode = format!("{:o}", meta.permissions().mode() & 0o777),
                    "the CA key is readable by other users; chmod 600 it");
            }
        }
        let key_pair = KeyPair::from_pem(&key_pem).map_err(|e| file_err(key, e))?;
        // A key of another certificate would start, report ready, and then sign leaves that
        // no peer can verify: refuse it here, naming both files.
        let cert_key = certificate_public_key(&cert_pem).map_err(|e| file_err(cert, e))?;
        if cert_key != key_pair.public_key_raw() {
            return Err(file_err(
                key,
                format!(
                    "this private key does not belong to the CA certificate {} (their public keys differ)",
                    cert.display()
                ),
            ));
        }
        let issuer =
            Issuer::from_ca_cert_pem(&cert_pem, key_pair).map_err(|e| file_err(cert, e))?;
        let (intermediates, root_pem) = match root {
            Some(root) => {
                let root_pem = fs::read_to_string(root).map_err(|e| file_err(root, e))?;
                (vec![cert_pem], root_pem)
            }
            None => (Vec::new(), cert_pem),
        };
        Ok(Authority {
            issuer,
            intermediates,
            root_pem,
            trust_domain: trust_domain.to_string(),
        })
    }

    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Checks a CSR for `identity` and issues its leaf. Returns `[leaf, intermediates.., root]`.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, SignError> {
        let spki = check_csr(csr_pem, &identity.to_string())?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let uri = identity
            .to_string()
            .try_into()
            .map_err(|_| SignError::Internal("identity is not IA5".into()))?;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial());
        let leaf = params
            .signed_by(&spki, &self.issuer)
            .map_err(|e| SignError::Internal(e.to_string()))?;
        let mut chain = vec![leaf.pem()];
        chain.extend(self.intermediates.iter().cloned());
        chain.push(self.root_pem.clone());
        Ok(chain)
    }

    /// Issues the serving certificate of the control plane itself (DNS and IP SANs), with a new
    /// key. Returns (chain PEM, key PEM).
    pub fn issue_server_cert(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
    ) -> Result<(String, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, self.trust_domain.as_str());
        params.distinguished_name = dn;
        for name in dns_names {
            params
                .subject_alt_names
                .push(SanType::DnsName(name.clone().try_into()?));
        }
        params
            .subject_alt_names
            .extend(ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&key, &self.issuer)?;
        let mut chain = cert.pem();
        for i in &self.intermediates {
            chain.push_str(i);
        }
        Ok((chain, key.serialize_pem()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("signing failed: {0}")]
    Internal(String),
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x01; // and no leading zero byte
    SerialNumber::from_slice(&bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), CaError> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| file_err(path, e))?;
    f.write_all(bytes).map_err(|e| file_err(path, e))
}

/// Parses and checks a PEM CSR; returns its public key.
pub fn check_csr(csr_pem: &str, expected_uri: &str) -> Result<SubjectPublicKeyInfo, CsrError> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| CsrError::Pem(e.to_string()))?;
    if pem.label != "CERTIFICATE REQUEST" && pem.label != "NEW CERTIFICATE REQUEST" {
        return Err(CsrError::Pem(format!(
            "expected a CERTIFICATE REQUEST block, found {}",
            pem.label
        )));
    }
    let (rest, csr) = X509CertificationRequest::from_der(&pem.contents)
        .map_err(|e| CsrError::Parse(e.to_string()))?;
    if !rest.is_empty() {
        return Err(CsrError::Parse("trailing bytes after the CSR".into()));
    }
    csr.verify_signature().map_err(|_| CsrError::Signature)?;
    let info = &csr.certification_request_info;
    let spki_der = info.subject_pki.raw;
    let spki = SubjectPublicKeyInfo::from_der(spki_der).map_err(|_| CsrError::KeyType)?;
    if rcgen::PublicKeyData::algorithm(&spki) != &rcgen::PKCS_ECDSA_P256_SHA256 {
        return Err(CsrError::KeyType);
    }
    let mut found = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                found.push(match name {
                    GeneralName::URI(u) => format!("URI:{u}"),
                    GeneralName::DNSName(d) => format!("DNS:{d}"),
                    GeneralName::IPAddress(_) => "an IP address".to_string(),
                    other => format!("{other:?}"),
                });
            }
        }
    }
    if found.len() != 1 || found[0] != format!("URI:{expected_uri}") {
        let found = if found.is_empty() {
            "none".to_string()
        } else {
            found.join(", ")
        };
        return Err(CsrError::San {
            expected: expected_uri.to_string(),
            found,
        });
    }
    Ok(spki)
}

/// The subject public key of the first certificate in `pem`, as raw bytes.
fn certificate_public_key(pem: &str) -> Result<Vec<u8>, String> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| format!("the certificate does not parse: {e}"))?;
    Ok(cert.public_key().subject_public_key.data.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_that_does_not_belong_to_the_certificate_is_refused() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        Authority::load_or_create(a.path(), "cluster.local").unwrap();
        Authority::load_or_create(b.path(), "cluster.local").unwrap();
        // Each pair loads again as it is.
        Authority::load_or_create(a.path(), "cluster.local").unwrap();
        // A's certificate with B's key.
        let err = Authority::from_files(
            &a.path().join("root-cert.pem"),
            &b.path().join("root-key.pem"),
            None,
            "cluster.local",
        )
        .err()
        .expect("refused");
        let text = err.to_string();
        assert!(
            text.contains("does not belong to the CA certificate"),
            "{text}"
        );
        assert!(text.contains("root-key.pem"), "{text}");
    }
}
