//! Fuzz target of the CA's input: the CSR a caller sends, as `Authority::sign_csr` checks it
//! (PEM, DER, signature, key type, SAN). A refusal is fine; a panic or a certificate for another
//! identity is not. `MESH_FUZZ_ITERATIONS=10000000` for a long run.

use std::time::Duration;

use istiod_lite::ca::Authority;
use mesh_core::identity::Identity;
use mesh_test_support::fuzz;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};

#[test]
fn csrs_take_any_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::load_or_create(dir.path(), "cluster.local").unwrap();
    let id: Identity = "spiffe://cluster.local/ns/demo/sa/web".parse().unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap().pem().unwrap();
    assert!(
        ca.sign_csr(&csr, &id, Duration::from_secs(3600)).is_ok(),
        "the seed is good"
    );
    fuzz("CA sign_csr", &[csr.as_bytes()], |input| {
        let text = String::from_utf8_lossy(input);
        if let Ok(chain) = ca.sign_csr(&text, &id, Duration::from_secs(3600)) {
            assert!(!chain.is_empty());
        }
    });
}
