//! Fuzz targets of the parsers in mesh-core that take outside input, as plain tests
//! (`mesh_test_support::fuzz`; `MESH_FUZZ_ITERATIONS=10000000` for a long run): the YAML object
//! model as every reader of the cluster directory calls it, SPIFFE identities as they arrive in
//! certificates and xDS, and durations as users type them.

use mesh_core::cluster_dir::parse_bytes;
use mesh_core::identity::Identity;
use mesh_core::time_text::{parse_duration, parse_ttl};
use mesh_test_support::fuzz;

const POLICY: &[u8] = br#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: only-web, namespace: demo, annotations: {istio.io/dry-run: "false"}}
spec:
  selector: {matchLabels: {app: db}}
  action: DENY
  rules:
  - from: [{source: {principals: ["cluster.local/ns/demo/sa/web"], ipBlocks: ["10.0.0.0/8"]}}]
    to: [{operation: {ports: ["5432"], methods: [GET]}}]
    when: [{key: source.ip, values: ["10.1.0.0/16"]}]
"#;

const POD_AND_SERVICE: &[u8] = br#"apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: demo, labels: {app: web, istio.io/dataplane-mode: ambient}}
spec: {nodeName: node1, serviceAccountName: web, containers: [{name: app, ports: [{containerPort: 8080}]}]}
status: {podIP: 10.1.0.5, podIPs: [{ip: 10.1.0.5}]}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: demo}
spec: {selector: {app: web}, clusterIP: 10.96.0.10, ports: [{port: 80, targetPort: 8080, name: http}]}
"#;

const GATEWAY_AND_PEER: &[u8] = br#"{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
 "metadata": {"name": "waypoint", "namespace": "demo", "labels": {"istio.io/waypoint-for": "service"}},
 "spec": {"gatewayClassName": "istio-waypoint", "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: demo}
spec: {mtls: {mode: STRICT}, portLevelMtls: {"8080": {mode: PERMISSIVE}}}
"#;

#[test]
fn the_object_model_takes_any_bytes() {
    fuzz(
        "cluster_dir::parse_bytes",
        &[POLICY, POD_AND_SERVICE, GATEWAY_AND_PEER],
        |input| {
            let parsed = parse_bytes("fuzz.yaml", input);
            // Whatever it read, each object is accounted for once.
            assert_eq!(parsed.objects.len(), parsed.documents.len());
        },
    );
}

#[test]
fn identities_take_any_text() {
    fuzz(
        "Identity::from_str",
        &[
            b"spiffe://cluster.local/ns/demo/sa/web",
            b"spiffe://td/ns/a/sa/b",
        ],
        |input| {
            if let Ok(id) = String::from_utf8_lossy(input).parse::<Identity>() {
                // What parses prints back as itself.
                assert_eq!(id.to_string().parse::<Identity>().unwrap(), id);
            }
        },
    );
}

#[test]
fn durations_take_any_text() {
    fuzz("time_text", &[b"150ms", b"24h", b"90", b"3650d"], |input| {
        let text = String::from_utf8_lossy(input);
        let _ = parse_duration(&text);
        let _ = parse_ttl(&text);
    });
}
