//! The CA over the real TLS port: what it issues, and whom it refuses.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::*;
use mesh_core::proto::istio::ca::istio_certificate_service_client::IstioCertificateServiceClient;
use mesh_core::proto::istio::ca::IstioCertificateRequest;
use prost_types::{value::Kind as ValueKind, Struct, Value};
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use rustls_pki_types::{CertificateDer, UnixTime};
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::*;

const CONFIG: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: demo, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo}
spec: {nodeName: node1, serviceAccountName: web}
status: {podIP: 10.1.0.5}
"#;

const WEB_ID: &str = "spiffe://cluster.local/ns/demo/sa/web";

fn csr_for(uri: &str) -> (String, KeyPair) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri.to_string().try_into().unwrap())];
    let csr = params.serialize_request(&key).unwrap();
    (csr.pem().unwrap(), key)
}

fn request(csr: String, impersonate: Option<&str>, ttl: i64) -> IstioCertificateRequest {
    IstioCertificateRequest {
        csr,
        validity_duration: ttl,
        metadata: impersonate.map(|id| Struct {
            fields: [(
                "ImpersonatedIdentity".to_string(),
                Value {
                    kind: Some(ValueKind::StringValue(id.to_string())),
                },
            )]
            .into_iter()
            .collect(),
        }),
    }
}

async fn client(h: &Harness) -> IstioCertificateServiceClient<tonic::transport::Channel> {
    IstioCertificateServiceClient::new(h.channel().await)
}

fn der(pem: &str) -> CertificateDer<'static> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    CertificateDer::from(p.contents)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_gets_a_certificate_for_a_pod_on_its_node() {
    let h = start_harness(&[("config.yaml", CONFIG)]).await;
    let (csr, key) = csr_for(WEB_ID);
    let resp = client(&h)
        .await
        .create_certificate(with_token(request(csr, Some(WEB_ID), 3600), NODE1_TOKEN))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.cert_chain.len(), 2, "[leaf, root]");
    assert_eq!(resp.cert_chain[1], h.running.root_cert_pem);

    let leaf_der = der(&resp.cert_chain[0]);
    let root_der = der(&resp.cert_chain[1]);
    // It chains to the root for both client and server use.
    let anchor = webpki::anchor_from_trusted_cert(&root_der).unwrap();
    let ee = webpki::EndEntityCert::try_from(&leaf_der).unwrap();
    for usage in [
        webpki::KeyUsage::client_auth(),
        webpki::KeyUsage::server_auth(),
    ] {
        ee.verify_for_usage(
            &[webpki::ring::ECDSA_P256_SHA256],
            std::slice::from_ref(&anchor),
            &[],
            UnixTime::now(),
            usage,
            None,
            None,
        )
        .unwrap();
    }

    let (_, cert) = X509Certificate::from_der(&leaf_der).unwrap();
    // Exactly the SPIFFE SAN, critical, with an empty subject.
    assert!(
        cert.subject().iter().next().is_none(),
        "subject must be empty"
    );
    let mut sans = Vec::new();
    let mut eku = None;
    let mut san_critical = false;
    for ext in cert.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                san_critical = ext.critical;
                for n in &san.general_names {
                    sans.push(match n {
                        GeneralName::URI(u) => format!("URI:{u}"),
                        other => format!("{other:?}"),
                    });
                }
            }
            ParsedExtension::ExtendedKeyUsage(e) => {
                eku = Some((e.server_auth, e.client_auth, e.other.len()))
            }
            _ => {}
        }
    }
    assert_eq!(sans, vec![format!("URI:{WEB_ID}")]);
    assert!(san_critical);
    assert_eq!(eku, Some((true, true, 0)));
    assert!(!cert.is_ca());
    // The requested TTL is honoured (one minute of backdating for clock skew).
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 3600 + 60);
    // The leaf holds the CSR's key.
    assert_eq!(
        cert.public_key().subject_public_key.data.as_ref(),
        key.public_key_raw()
    );

    let (_, metrics) = h.http_get("/metrics").await;
    assert!(
        metrics.contains("citadel_server_success_cert_issuance_count 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_is_refused_for_pods_on_other_nodes() {
    let h = start_harness(&[("config.yaml", CONFIG)]).await;
    let (csr, _) = csr_for(WEB_ID);
    let err = client(&h)
        .await
        .create_certificate(with_token(request(csr, Some(WEB_ID), 0), NODE2_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("node2"), "{}", err.message());

    // Another trust domain is refused too.
    let other = "spiffe://evil.example/ns/demo/sa/web";
    let (csr, _) = csr_for(other);
    let err = client(&h)
        .await
        .create_certificate(with_token(request(csr, Some(other), 0), NODE1_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_mismatched_csrs_are_invalid_arguments() {
    let h = start_harness(&[("config.yaml", CONFIG)]).await;
    let mut c = client(&h).await;
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let err = c
        .create_certificate(with_token(
            request(garbage.into(), Some(WEB_ID), 0),
            NODE1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::InvalidArgument,
        "{}",
        err.message()
    );

    let err = c
        .create_certificate(with_token(
            request("not pem".into(), Some(WEB_ID), 0),
            NODE1_TOKEN,
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    // A CSR for another identity than the one requested.
    let (csr, _) = csr_for("spiffe://cluster.local/ns/demo/sa/admin");
    let err = c
        .create_certificate(with_token(request(csr, Some(WEB_ID), 0), NODE1_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("sa/admin"), "{}", err.message());

    // A CSR whose signature was tampered with.
    let (csr, _) = csr_for(WEB_ID);
    let (_, p) = x509_parser::pem::parse_x509_pem(csr.as_bytes()).unwrap();
    let mut bytes = p.contents.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    let tampered = ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", bytes));
    let err = c
        .create_certificate(with_token(request(tampered, Some(WEB_ID), 0), NODE1_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("signature"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workloads_get_only_their_own_identity() {
    let h = start_harness(&[("config.yaml", CONFIG)]).await;
    let mut c = client(&h).await;
    let own = "spiffe://cluster.local/ns/demo/sa/waypoint";
    let (csr, _) = csr_for(own);
    let resp = c
        .create_certificate(with_token(request(csr, None, 0), WAYPOINT_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let leaf = der(&resp.cert_chain[0]);
    let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert_eq!(lifetime, 24 * 3600 + 60, "default TTL");

    let (csr, _) = csr_for(WEB_ID);
    let err = c
        .create_certificate(with_token(request(csr, Some(WEB_ID), 0), WAYPOINT_TOKEN))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);

    let (csr, _) = csr_for(WEB_ID);
    let err = c
        .create_certificate(tonic::Request::new(request(csr, Some(WEB_ID), 0)))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_is_kept_private_and_reused_across_restarts() {
    let h = start_harness(&[("config.yaml", CONFIG)]).await;
    let key = h.state_dir().join("ca/root-key.pem");
    for file in [key, h.state_dir().join("ca/root-cert.pem")] {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let first_root = h.running.root_cert_pem.clone();
    let again = h.dir.start().await;
    assert_eq!(again.root_cert_pem, first_root);
}

/// The identity manager every proxy shares (`mesh_core::identity::manager`), against this CA:
/// as a node it asks on a pod's behalf, as a workload (a waypoint) it asks as itself, and the
/// CA holds each to what its token allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_identity_manager_asks_as_a_node_or_as_itself() {
    use mesh_core::identity::manager::{CaConfig, IdentityManager, Requester};
    use mesh_core::identity::Identity;

    let h = start_harness(&[("config.yaml", CONFIG)]).await;
    let manager = |token: &str, requester| {
        IdentityManager::new(CaConfig {
            control_plane: h.control_plane(token),
            requester,
            ttl: std::time::Duration::from_secs(3600),
        })
    };
    let web: Identity = WEB_ID.parse().unwrap();
    let waypoint: Identity = "spiffe://cluster.local/ns/demo/sa/waypoint"
        .parse()
        .unwrap();

    let node = manager(NODE1_TOKEN, Requester::Node);
    assert_eq!(node.certificate(&web).await.unwrap().identity, web);
    // A node names every identity it asks for: its own, unnamed, is not something it can have.
    let err = node.certificate(&waypoint).await.unwrap_err().to_string();
    assert!(err.contains("PermissionDenied"), "{err}");

    let own = manager(WAYPOINT_TOKEN, Requester::Workload);
    let cert = own.certificate(&waypoint).await.unwrap();
    assert_eq!(cert.identity, waypoint);
    assert_eq!(own.held().len(), 1);
    // As itself, a workload gets only the identity its token names.
    let err = own.certificate(&web).await.unwrap_err().to_string();
    assert!(
        err.contains("InvalidArgument") && err.contains("sa/waypoint"),
        "{err}"
    );
}
