//! Fuzz targets of what ztunnel takes from outside: xDS resources as it decodes and applies
//! them (`istio.workload.Address`, `istio.security.Authorization`, bytes as they arrive in a
//! DeltaDiscoveryResponse), and the CONNECT authority of an inbound HBONE stream as `admit`
//! reads it. Refusals are fine; a panic is not. `MESH_FUZZ_ITERATIONS=10000000` for a long run.

use std::net::IpAddr;
use std::sync::RwLock;

use mesh_core::identity::Identity;
use mesh_core::proto::istio::security::{self as sec, string_match, Authorization};
use mesh_core::proto::istio::workload::{
    address, gateway_address, Address, GatewayAddress, NamespacedHostname, NetworkAddress, Port,
    PortList, Service, TunnelProtocol, Workload,
};
use mesh_test_support::fuzz;
use prost::Message;
use ztunnel::inbound::admit;
use ztunnel::state::State;

fn workload() -> Vec<u8> {
    Address {
        r#type: Some(address::Type::Workload(Workload {
            uid: "Kubernetes//Pod/demo/web-1".into(),
            name: "web-1".into(),
            namespace: "demo".into(),
            addresses: vec![vec![10, 1, 0, 5]],
            tunnel_protocol: TunnelProtocol::Hbone as i32,
            service_account: "web".into(),
            services: [(
                "demo/web.demo.svc.cluster.local".to_string(),
                PortList {
                    ports: vec![Port {
                        service_port: 80,
                        target_port: 8080,
                        app_protocol: 0,
                    }],
                },
            )]
            .into_iter()
            .collect(),
            waypoint: Some(GatewayAddress {
                destination: Some(gateway_address::Destination::Address(NetworkAddress {
                    network: String::new(),
                    address: vec![10, 1, 0, 9],
                    length: None,
                })),
                hbone_mtls_port: 15008,
            }),
            authorization_policies: vec!["demo/only-client".into()],
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn service() -> Vec<u8> {
    Address {
        r#type: Some(address::Type::Service(Service {
            name: "web".into(),
            namespace: "demo".into(),
            hostname: "web.demo.svc.cluster.local".into(),
            addresses: vec![NetworkAddress {
                network: String::new(),
                address: vec![10, 96, 0, 10],
                length: None,
            }],
            ports: vec![Port {
                service_port: 80,
                target_port: 8080,
                app_protocol: 0,
            }],
            subject_alt_names: vec!["spiffe://cluster.local/ns/demo/sa/web".into()],
            waypoint: Some(GatewayAddress {
                destination: Some(gateway_address::Destination::Hostname(NamespacedHostname {
                    namespace: "demo".into(),
                    hostname: "waypoint.demo.svc.cluster.local".into(),
                })),
                hbone_mtls_port: 0,
            }),
            ..Default::default()
        })),
    }
    .encode_to_vec()
}

fn policy() -> Vec<u8> {
    Authorization {
        name: "only-client".into(),
        namespace: "demo".into(),
        scope: sec::Scope::Namespace as i32,
        action: sec::Action::Allow as i32,
        rules: vec![sec::Rule {
            clauses: vec![sec::Clause {
                matches: vec![sec::Match {
                    principals: vec![sec::StringMatch {
                        match_type: Some(string_match::MatchType::Prefix("cluster.local/".into())),
                    }],
                    destination_ports: vec![8080],
                    ..Default::default()
                }],
            }],
        }],
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn xds_resources_take_any_bytes() {
    let mut state = State::default();
    let (w, s) = (workload(), service());
    fuzz("ztunnel Address", &[&w, &s], |input| {
        if let Ok(addr) = Address::decode(input) {
            let _ = state.apply_address("Kubernetes//Pod/demo/web-1", &addr);
            let _ = state.apply_address("demo/web.demo.svc.cluster.local", &addr);
        }
    });
    let p = policy();
    fuzz("ztunnel Authorization", &[&p], |input| {
        if let Ok(a) = Authorization::decode(input) {
            let _ = state.apply_authorization("demo/only-client", &a);
        }
    });
}

#[test]
fn connect_authorities_take_any_text() {
    let mut s = State::default();
    s.apply_address(
        "Kubernetes//Pod/demo/web-1",
        &Address::decode(workload().as_slice()).unwrap(),
    )
    .unwrap();
    s.apply_authorization(
        "demo/only-client",
        &Authorization::decode(policy().as_slice()).unwrap(),
    )
    .unwrap();
    let state = RwLock::new(s);
    let here: IpAddr = "10.1.0.5".parse().unwrap();
    let peer: Identity = "spiffe://cluster.local/ns/demo/sa/client".parse().unwrap();
    fuzz(
        "ztunnel CONNECT authority",
        &[b"10.1.0.5:8080", b"[fd00::5]:8080", b"10.1.0.5:15008"],
        |input| {
            let authority = String::from_utf8_lossy(input);
            if let Ok(admitted) = admit(
                &state,
                &authority,
                here,
                Some(&peer),
                "10.1.0.2".parse().unwrap(),
            ) {
                assert_eq!(admitted.upstream.ip(), here);
            }
        },
    );
}
