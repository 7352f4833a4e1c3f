//! The L4 authorization matrix end to end: Istio's AuthorizationPolicy and PeerAuthentication
//! semantics as ztunnel enforces them, checked from the client's side on a two-node local
//! cluster (see `mesh_e2e`).
//!
//! One cluster, four clients (two service accounts of one namespace on both nodes, a third
//! namespace, and a pod outside the mesh that speaks plaintext) and three servers (two in `srv`
//! on both nodes, one in `beta`), then a table: each policy set is written as one file into
//! istiod-lite's directory, with a sentinel (a policy and a service port naming the set) so the
//! test knows when both ztunnels hold exactly that set; then every case of the set connects,
//! sends a line and reads the answer. Allowed is the server's answer; denied is a connection
//! closed or reset without one. Every case prints one line, and the test fails at the end
//! listing every mismatch.
//!
//! Root only; ignored by default. `e2e/run.sh` runs it.

use std::fmt;
use std::time::{Duration, Instant};

use mesh_e2e::*;
use serde_json::Value;

/// Listens on every port given, reads a line and answers `<name>:<port> got=<line>`.
const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1]
def serve(c, port):
    try:
        c.settimeout(10)
        line = c.makefile().readline().strip()
        c.sendall(("%s:%d got=%s\n" % (name, port, line)).encode())
    except Exception:
        pass
    finally:
        c.close()
def listen(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", port))
    srv.listen(128)
    while True:
        c, _ = srv.accept()
        threading.Thread(target=serve, args=(c, port), daemon=True).start()
for p in sys.argv[2:]:
    threading.Thread(target=listen, args=(int(p),), daemon=True).start()
threading.Event().wait()
"#;

const TOKEN: &str = "authz-probe";
const WEB_VIP: &str = "10.96.251.20";
const SENTINEL_VIP: &str = "10.96.251.250";
const SENTINEL_HOST: &str = "sentinel.mesh-sentinel.svc.cluster.local";

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: alpha, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: beta, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: srv, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Namespace
metadata: {name: legacy}
---
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: Namespace
metadata: {name: mesh-sentinel}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: srv}
spec:
  selector: {app: authz-web}
  clusterIP: 10.96.251.20
  ports: [{port: 80, targetPort: 8080}]
"#;

// Peer identities as policies write them (no `spiffe://`).
const ID_A: &str = "cluster.local/ns/alpha/sa/sa-a";
const ID_B: &str = "cluster.local/ns/alpha/sa/sa-b";
const ID_C: &str = "cluster.local/ns/beta/sa/sa-c";

/// The clients: `A` alpha/sa-a on node1, `B` alpha/sa-b on node2, `C` beta/sa-c on node1,
/// `L` a pod of the non-ambient namespace `legacy` on node1 (plaintext, no identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Src {
    A,
    B,
    C,
    L,
}

/// The destinations: `Web` srv/authz-web on node2 (8080, 8081, 9090), `Db` srv/authz-db on
/// node1 (8080, 9090), `Web2` beta/authz-web2 on node2 (8080), `Vip` the service srv/web
/// (port 80 to target port 8080 of authz-web).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dst {
    Web(u16),
    Db(u16),
    Web2,
    Vip,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Allow,
    Deny,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        })
    }
}
use Verdict::{Allow, Deny};

/// One document of a policy set, and the key (`ns/name`) ztunnel must hold for it (none for
/// what is not sent to ztunnel, and for PeerAuthentications, whose generated policies are
/// named by istiod-lite).
struct Doc {
    yaml: String,
    key: Option<String>,
}

impl Doc {
    fn dry_run(mut self) -> Doc {
        self.yaml = self.yaml.replacen(
            "}\nspec:",
            ", annotations: {istio.io/dry-run: \"true\"}}\nspec:",
            1,
        );
        self
    }

    fn not_sent(mut self) -> Doc {
        self.key = None;
        self
    }
}

fn object(kind: &str, ns: &str, name: &str, app: Option<&str>, spec: &str) -> String {
    let selector = app.map_or(String::new(), |a| {
        format!("selector: {{matchLabels: {{app: {a}}}}}, ")
    });
    format!(
        "apiVersion: security.istio.io/v1\nkind: {kind}\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{{selector}{spec}}}\n"
    )
}

/// An AuthorizationPolicy; `app` selects pods by their `app` label, `None` is namespace-wide.
fn ap(ns: &str, name: &str, app: Option<&str>, spec: &str) -> Doc {
    Doc {
        yaml: object("AuthorizationPolicy", ns, name, app, spec),
        key: Some(format!("{ns}/{name}")),
    }
}

fn pa(ns: &str, name: &str, app: Option<&str>, spec: &str) -> Doc {
    Doc {
        yaml: object("PeerAuthentication", ns, name, app, spec),
        key: None,
    }
}

/// `ALLOW` of one rule with one source.
fn allow_from(source: &str) -> String {
    format!("action: ALLOW, rules: [{{from: [{{source: {{{source}}}}}]}}]")
}

fn deny_from(source: &str) -> String {
    format!("action: DENY, rules: [{{from: [{{source: {{{source}}}}}]}}]")
}

const WEB: Option<&str> = Some("authz-web");
const DB: Option<&str> = Some("authz-db");
const WEB2: Option<&str> = Some("authz-web2");

struct Case {
    from: Src,
    to: Dst,
    expect: Verdict,
    why: &'static str,
}

fn t(from: Src, to: Dst, expect: Verdict, why: &'static str) -> Case {
    Case {
        from,
        to,
        expect,
        why,
    }
}

struct Set {
    title: &'static str,
    docs: Vec<Doc>,
    cases: Vec<Case>,
}

/// The source addresses policies name, known once the pods have theirs.
struct Addrs {
    a: String,
    b: String,
    c: String,
    l: String,
    /// node1's pod subnet (A, C, L and Db live there).
    node1: String,
}

/// The matrix. Cases marked "differs from Istio" expect our documented behaviour where Istio's
/// own translation behaves otherwise (`docs/istio-compatibility.md` §10.3).
fn matrix(ip: &Addrs) -> Vec<Set> {
    use Dst::*;
    use Src::*;
    vec![
        Set {
            title: "no policy: everything is allowed (PERMISSIVE)",
            docs: vec![],
            cases: vec![
                t(A, Web(8080), Allow, "cross-node"),
                t(B, Web(8081), Allow, "same node as web"),
                t(C, Db(8080), Allow, "same node"),
                t(L, Web(8080), Allow, "plaintext from outside the mesh"),
                t(L, Db(9090), Allow, "plaintext, same node"),
                t(A, Vip, Allow, "service VIP"),
                t(B, Web2, Allow, "other namespace"),
                t(A, Db(9090), Allow, "second port"),
            ],
        },
        Set {
            title: "principals, exact (selector app=authz-web)",
            docs: vec![ap("srv", "allow-a", WEB, &allow_from(&format!("principals: [\"{ID_A}\"]")))],
            cases: vec![
                t(A, Web(8080), Allow, "the named principal"),
                t(A, Web(9090), Allow, "on every port"),
                t(A, Vip, Allow, "through the service VIP too"),
                t(B, Web(8080), Deny, "another service account"),
                t(C, Web(8080), Deny, "another namespace"),
                t(L, Web(8080), Deny, "no identity"),
                t(B, Vip, Deny, "VIP: the same policy"),
                t(B, Db(8080), Allow, "the selector does not pick db"),
                t(C, Web2, Allow, "nor a pod of another namespace"),
            ],
        },
        Set {
            title: "principals: prefix, presence, suffix",
            docs: vec![
                ap("srv", "prefix", WEB, &allow_from("principals: [\"cluster.local/ns/alpha/*\"]")),
                ap("srv", "presence", DB, &allow_from("principals: [\"*\"]")),
                ap("beta", "suffix", WEB2, &allow_from("principals: [\"*/sa/sa-c\"]")),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "prefix matches alpha/sa-a"),
                t(B, Web(8080), Allow, "prefix matches alpha/sa-b"),
                t(C, Web(8080), Deny, "prefix does not match beta"),
                t(L, Web(8080), Deny, "prefix: no identity"),
                t(A, Db(8080), Allow, "\"*\": any identity"),
                t(C, Db(8080), Allow, "\"*\": any identity"),
                t(L, Db(8080), Deny, "\"*\": no identity is not present"),
                t(C, Web2, Allow, "suffix */sa/sa-c"),
                t(A, Web2, Deny, "suffix does not match sa-a"),
                t(B, Web2, Deny, "suffix does not match sa-b"),
            ],
        },
        Set {
            title: "principals: another trust domain, the spiffe:// form",
            docs: vec![
                ap("srv", "other-td", WEB, &allow_from("principals: [\"other.domain/ns/alpha/sa/sa-a\"]")),
                ap("srv", "spiffe-form", DB, &allow_from(&format!("principals: [\"spiffe://{ID_A}\"]"))),
            ],
            cases: vec![
                t(A, Web(8080), Deny, "the trust domain is part of the principal"),
                // istiod-lite strips `spiffe://` from policy principals; Istio passes the
                // value as written and its ztunnel never matches it (§10.3).
                t(A, Db(8080), Allow, "spiffe:// accepted (differs from Istio)"),
                t(B, Db(8080), Deny, "spiffe:// form names sa-a only"),
            ],
        },
        Set {
            title: "notPrincipals (ALLOW and DENY)",
            docs: vec![
                ap("srv", "not-a", WEB, &allow_from(&format!("notPrincipals: [\"{ID_A}\"]"))),
                ap("srv", "deny-not-alpha", DB, &deny_from("notPrincipals: [\"cluster.local/ns/alpha/*\"]")),
            ],
            cases: vec![
                t(A, Web(8080), Deny, "excluded principal"),
                t(B, Web(8080), Allow, "any other principal"),
                t(C, Web(8080), Allow, "any other principal"),
                t(L, Web(8080), Allow, "no identity passes notPrincipals"),
                t(A, Db(8080), Allow, "alpha is not denied"),
                t(B, Db(8080), Allow, "alpha is not denied"),
                t(C, Db(8080), Deny, "beta is denied"),
                t(L, Db(8080), Deny, "no identity is denied"),
            ],
        },
        Set {
            title: "namespaces: exact, prefix, suffix",
            docs: vec![
                ap("srv", "ns-alpha", WEB, &allow_from("namespaces: [alpha]")),
                ap("srv", "ns-prefix", DB, &allow_from("namespaces: [\"be*\"]")),
                ap("beta", "ns-suffix", WEB2, &allow_from("namespaces: [\"*pha\"]")),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "alpha"),
                t(B, Web(8080), Allow, "alpha, other node"),
                t(C, Web(8080), Deny, "beta"),
                t(L, Web(8080), Deny, "no identity has no namespace"),
                t(C, Db(8080), Allow, "be* matches beta"),
                t(A, Db(8080), Deny, "be* does not match alpha"),
                t(A, Web2, Allow, "*pha matches alpha"),
                t(C, Web2, Deny, "*pha does not match beta"),
            ],
        },
        Set {
            title: "notNamespaces (ALLOW and DENY)",
            docs: vec![
                ap("srv", "not-beta", WEB, &allow_from("notNamespaces: [beta]")),
                ap("srv", "deny-not-alpha", DB, &deny_from("notNamespaces: [alpha]")),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "alpha is not excluded"),
                t(C, Web(8080), Deny, "beta is excluded"),
                t(L, Web(8080), Allow, "no identity: empty namespace, not excluded"),
                t(A, Db(8080), Allow, "alpha is not denied"),
                t(C, Db(8080), Deny, "beta is denied"),
                t(L, Db(8080), Deny, "no identity is denied"),
            ],
        },
        Set {
            title: "serviceAccounts and notServiceAccounts",
            docs: vec![
                ap("srv", "sa-b", WEB, &allow_from("serviceAccounts: [alpha/sa-b]")),
                ap("beta", "sa-c", WEB2, &allow_from("serviceAccounts: [sa-c]")),
                ap("srv", "deny-not-sa-a", DB, &deny_from("notServiceAccounts: [alpha/sa-a]")),
            ],
            cases: vec![
                t(B, Web(8080), Allow, "alpha/sa-b"),
                t(A, Web(8080), Deny, "alpha/sa-a"),
                t(L, Web(8080), Deny, "no identity"),
                t(C, Web2, Allow, "short form: the policy's namespace"),
                t(A, Web2, Deny, "short form: not alpha"),
                t(A, Db(8080), Allow, "alpha/sa-a is not denied"),
                t(B, Db(8080), Deny, "every other account is denied"),
                t(L, Db(8080), Deny, "no identity is denied"),
            ],
        },
        Set {
            title: "ipBlocks",
            docs: vec![
                ap("srv", "ip-a", WEB, &allow_from(&format!("ipBlocks: [\"{}/32\"]", ip.a))),
                ap("srv", "node1-net", DB, &allow_from(&format!("ipBlocks: [\"{}\"]", ip.node1))),
                ap("beta", "bare-ip", WEB2, &allow_from(&format!("ipBlocks: [\"{}\"]", ip.b))),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "A's address"),
                t(B, Web(8080), Deny, "another address"),
                t(L, Web(8080), Deny, "another address, plaintext"),
                t(A, Db(8080), Allow, "inside node1's subnet"),
                t(C, Db(8080), Allow, "inside node1's subnet"),
                t(L, Db(8080), Allow, "plaintext allowed by address"),
                t(B, Db(8080), Deny, "node2's subnet"),
                t(B, Web2, Allow, "an address without /len"),
                t(C, Web2, Deny, "another address"),
            ],
        },
        Set {
            title: "notIpBlocks (DENY and ALLOW)",
            docs: vec![
                ap("srv", "deny-off-node1", WEB, &deny_from(&format!("notIpBlocks: [\"{}\"]", ip.node1))),
                ap("srv", "not-ip-a", DB, &allow_from(&format!("notIpBlocks: [\"{}/32\"]", ip.a))),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "from node1's subnet"),
                t(B, Web(8080), Deny, "from node2's subnet"),
                t(L, Web(8080), Allow, "plaintext from node1's subnet"),
                t(A, Db(8080), Deny, "A's address is excluded"),
                t(C, Db(8080), Allow, "any other address"),
            ],
        },
        Set {
            title: "ports and notPorts are target ports",
            docs: vec![
                ap("srv", "port-8080", WEB, "action: ALLOW, rules: [{to: [{operation: {ports: [\"8080\"]}}]}]"),
                ap("srv", "not-9090", DB, "action: ALLOW, rules: [{to: [{operation: {notPorts: [\"9090\"]}}]}]"),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "the port"),
                t(A, Web(8081), Deny, "another port"),
                t(A, Web(9090), Deny, "another port"),
                t(A, Vip, Allow, "VIP :80 targets 8080"),
                t(L, Web(8080), Allow, "a port-only rule allows plaintext too"),
                t(A, Db(8080), Allow, "not the excluded port"),
                t(A, Db(9090), Deny, "the excluded port"),
            ],
        },
        Set {
            title: "a service port is not a target port; DENY by port",
            docs: vec![
                ap("srv", "port-80", WEB, "action: ALLOW, rules: [{to: [{operation: {ports: [\"80\"]}}]}]"),
                ap("srv", "deny-9090", DB, "action: DENY, rules: [{to: [{operation: {ports: [\"9090\"]}}]}]"),
            ],
            cases: vec![
                t(A, Vip, Deny, "VIP :80 is checked as 8080"),
                t(A, Web(8080), Deny, "8080 is not 80"),
                t(A, Db(9090), Deny, "the denied port"),
                t(A, Db(8080), Allow, "another port"),
                t(L, Db(9090), Deny, "the denied port, plaintext"),
            ],
        },
        Set {
            title: "rule structure: from AND to, rules OR, sources OR, fields AND",
            docs: vec![
                ap("srv", "combo", WEB, &format!(
                    "action: ALLOW, rules: [{{from: [{{source: {{principals: [\"{ID_A}\"]}}}}], to: [{{operation: {{ports: [\"8081\"]}}}}]}}, {{from: [{{source: {{namespaces: [beta]}}}}]}}]"
                )),
                ap("srv", "two-sources", DB, &format!(
                    "action: ALLOW, rules: [{{from: [{{source: {{principals: [\"{ID_A}\"]}}}}, {{source: {{principals: [\"{ID_B}\"]}}}}]}}]"
                )),
                ap("beta", "and-fields", WEB2, &allow_from("namespaces: [alpha], principals: [\"*/sa/sa-b\"]")),
            ],
            cases: vec![
                t(A, Web(8081), Allow, "rule 1: A and 8081"),
                t(A, Web(8080), Deny, "rule 1: A but not 8081"),
                t(B, Web(8081), Deny, "rule 1: 8081 but not A"),
                t(C, Web(8080), Allow, "rule 2: beta, any port"),
                t(C, Web(9090), Allow, "rule 2: beta, any port"),
                t(A, Db(8080), Allow, "first source"),
                t(B, Db(8080), Allow, "second source"),
                t(C, Db(8080), Deny, "neither source"),
                t(B, Web2, Allow, "alpha and */sa/sa-b"),
                t(A, Web2, Deny, "alpha but not sa-b"),
                t(C, Web2, Deny, "neither"),
            ],
        },
        Set {
            title: "when conditions (ANDed)",
            docs: vec![
                ap("srv", "when-web", WEB, &format!(
                    "action: ALLOW, rules: [{{when: [{{key: source.principal, values: [\"{ID_A}\"]}}, {{key: destination.port, values: [\"8080\"]}}]}}]"
                )),
                ap("srv", "when-ip", DB, &format!(
                    "action: ALLOW, rules: [{{when: [{{key: source.ip, values: [\"{}\"]}}]}}]", ip.c
                )),
                ap("beta", "when-not-ns", WEB2,
                    "action: DENY, rules: [{when: [{key: source.namespace, notValues: [beta]}]}]"),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "principal and port"),
                t(A, Web(9090), Deny, "principal, not the port"),
                t(B, Web(8080), Deny, "port, not the principal"),
                t(C, Db(8080), Allow, "source.ip"),
                t(A, Db(8080), Deny, "another source.ip"),
                t(A, Web2, Deny, "source.namespace is not beta"),
                t(C, Web2, Allow, "source.namespace is beta"),
                t(L, Web2, Deny, "no identity: namespace is not beta"),
            ],
        },
        Set {
            title: "DENY is evaluated before ALLOW",
            docs: vec![
                ap("srv", "allow-all", WEB, "action: ALLOW, rules: [{}]"),
                ap("srv", "deny-a", WEB, &deny_from(&format!("principals: [\"{ID_A}\"]"))),
                ap("srv", "allow-a", DB, &allow_from(&format!("principals: [\"{ID_A}\"]"))),
                ap("srv", "deny-a-db", DB, &deny_from(&format!("principals: [\"{ID_A}\"]"))),
            ],
            cases: vec![
                t(A, Web(8080), Deny, "ALLOW all, DENY A"),
                t(B, Web(8080), Allow, "ALLOW all"),
                t(L, Web(8080), Allow, "ALLOW all, plaintext"),
                t(A, Db(8080), Deny, "both match: DENY wins"),
                t(B, Db(8080), Deny, "no ALLOW matches"),
            ],
        },
        Set {
            title: "rules absent or empty",
            docs: vec![
                ap("srv", "allow-nothing", WEB, "action: ALLOW"),
                ap("srv", "deny-nothing", DB, "action: DENY"),
                ap("beta", "deny-all", WEB2, "action: DENY, rules: [{}]"),
            ],
            cases: vec![
                t(A, Web(8080), Deny, "an ALLOW without rules denies all"),
                t(B, Web(8081), Deny, "an ALLOW without rules denies all"),
                t(L, Web(8080), Deny, "an ALLOW without rules denies all"),
                t(A, Db(8080), Allow, "a DENY without rules denies nothing"),
                t(L, Db(8080), Allow, "a DENY without rules denies nothing"),
                t(C, Web2, Deny, "DENY {} denies all"),
                t(A, Web2, Deny, "DENY {} denies all"),
            ],
        },
        Set {
            title: "the rule {} allows all; rules: [] is no rule",
            docs: vec![
                ap("srv", "allow-everything", WEB, "action: ALLOW, rules: [{}]"),
                ap("srv", "empty-list", DB, "action: ALLOW, rules: []"),
                ap("beta", "empty-source", WEB2, "action: ALLOW, rules: [{from: [{source: {}}]}]"),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "{} matches"),
                t(B, Web(9090), Allow, "{} matches"),
                t(C, Web(8081), Allow, "{} matches"),
                t(L, Web(8080), Allow, "{} matches plaintext too"),
                t(A, Db(8080), Deny, "rules: [] denies all"),
                // An empty source constrains nothing here; Istio's ztunnel skips an empty
                // match, so there it matches nothing (docs/istio-compatibility.md §10.3).
                t(C, Web2, Allow, "an empty source matches all (differs from Istio)"),
            ],
        },
        Set {
            title: "namespace-wide policies apply to their namespace only, at the destination",
            docs: vec![
                ap("srv", "ns-allow-a", None, &allow_from(&format!("principals: [\"{ID_A}\"]"))),
                ap("alpha", "client-ns-deny-all", None, "action: DENY, rules: [{}]"),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "allowed; the client namespace's DENY is not outbound"),
                t(B, Web(8080), Deny, "namespace-wide: web"),
                t(B, Db(8080), Deny, "namespace-wide: db too"),
                t(L, Db(8080), Deny, "namespace-wide: no identity"),
                t(A, Db(9090), Allow, "namespace-wide: A on db"),
                t(B, Web2, Allow, "beta is not srv"),
            ],
        },
        Set {
            title: "the root namespace istio-system: mesh-wide",
            docs: vec![
                ap("istio-system", "global-deny-b", None, &deny_from(&format!("principals: [\"{ID_B}\"]"))),
                ap("istio-system", "root-selector-db", DB, &allow_from(&format!("principals: [\"{ID_C}\"]"))),
                ap("srv", "srv-selects-web2", WEB2, "action: ALLOW"),
            ],
            cases: vec![
                t(B, Web(8080), Deny, "global DENY: srv"),
                t(B, Db(8080), Deny, "global DENY: srv, node1"),
                t(B, Web2, Deny, "global DENY: beta"),
                t(A, Web(8080), Allow, "global DENY names B only"),
                t(C, Web2, Allow, "a srv selector does not select in beta"),
                t(C, Db(8080), Allow, "root selector policy selects db in srv"),
                t(A, Db(8080), Deny, "root selector ALLOW names C only"),
            ],
        },
        Set {
            title: "AUDIT, dry-run and targetRefs do not change ztunnel's decision",
            docs: vec![
                ap("srv", "audit", WEB, "action: AUDIT, rules: [{}]").not_sent(),
                ap("srv", "dry-deny-all", DB, "action: DENY, rules: [{}]").dry_run(),
                ap("beta", "dry-allow-a", WEB2, &allow_from(&format!("principals: [\"{ID_A}\"]"))).dry_run(),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "AUDIT does not deny"),
                t(B, Web(8080), Allow, "AUDIT is not an ALLOW"),
                t(A, Db(8080), Allow, "a dry-run DENY does not deny"),
                t(L, Db(8080), Allow, "a dry-run DENY does not deny plaintext"),
                t(C, Web2, Allow, "a dry-run ALLOW is not an ALLOW"),
            ],
        },
        Set {
            title: "dry-run beside enforced policies; a waypoint (targetRefs) policy",
            docs: vec![
                ap("srv", "allow-a", WEB, &allow_from(&format!("principals: [\"{ID_A}\"]"))),
                ap("srv", "dry-allow-b", WEB, &allow_from(&format!("principals: [\"{ID_B}\"]"))).dry_run(),
                ap("srv", "deny-c", DB, &deny_from(&format!("principals: [\"{ID_C}\"]"))),
                ap("srv", "dry-deny-all-db", DB, "action: DENY, rules: [{}]").dry_run(),
                ap("beta", "waypoint-only", None, &format!(
                    "targetRefs: [{{group: gateway.networking.k8s.io, kind: Gateway, name: waypoint}}], {}",
                    allow_from(&format!("principals: [\"{ID_A}\"]"))
                )).not_sent(),
            ],
            cases: vec![
                t(A, Web(8080), Allow, "the enforced ALLOW"),
                t(B, Web(8080), Deny, "only a dry-run ALLOW names B"),
                t(A, Db(8080), Allow, "dry-run DENY of all is not enforced"),
                t(C, Db(8080), Deny, "the enforced DENY"),
                t(C, Web2, Allow, "targetRefs policies are the waypoint's"),
            ],
        },
        Set {
            title: "HTTP fields without a waypoint (1): methods",
            docs: vec![
                ap("srv", "l7-allow", WEB, "action: ALLOW, rules: [{to: [{operation: {methods: [GET]}}]}]"),
                ap("srv", "l7-rule-dropped", DB, &format!(
                    "action: ALLOW, rules: [{{from: [{{source: {{principals: [\"{ID_A}\"]}}}}], to: [{{operation: {{methods: [GET]}}}}]}}, {{from: [{{source: {{principals: [\"{ID_B}\"]}}}}]}}]"
                )),
                ap("beta", "l7-deny", WEB2, "action: DENY, rules: [{to: [{operation: {methods: [GET]}}]}]"),
            ],
            cases: vec![
                t(A, Web(8080), Deny, "an ALLOW of only methods denies all"),
                t(B, Web(8080), Deny, "an ALLOW of only methods denies all"),
                t(L, Web(8080), Deny, "an ALLOW of only methods denies all"),
                t(A, Db(8080), Deny, "the rule with methods is dropped whole"),
                t(B, Db(8080), Allow, "the L4 rule still allows"),
                t(C, Web2, Deny, "a DENY of only methods denies all (differs from Istio)"),
                t(A, Web2, Deny, "a DENY of only methods denies all (differs from Istio)"),
            ],
        },
        Set {
            title: "HTTP fields without a waypoint (2): paths, requestPrincipals, remoteIpBlocks, headers",
            docs: vec![
                ap("srv", "deny-b-path", WEB, &format!(
                    "action: DENY, rules: [{{from: [{{source: {{principals: [\"{ID_B}\"]}}}}], to: [{{operation: {{paths: [/admin]}}}}]}}]"
                )),
                ap("srv", "allow-jwt", DB, &allow_from("requestPrincipals: [\"*\"]")),
                ap("srv", "allow-remote-ip", DB, &allow_from(&format!("remoteIpBlocks: [\"{}/32\"]", ip.a))),
                ap("beta", "allow-header", WEB2,
                    "action: ALLOW, rules: [{when: [{key: \"request.headers[x-user]\", values: [a]}]}]"),
            ],
            cases: vec![
                t(B, Web(8080), Deny, "a DENY keeps its L4 part: B (differs from Istio)"),
                t(A, Web(8080), Allow, "a DENY keeps its L4 part: not A"),
                t(A, Db(8080), Deny, "remoteIpBlocks needs a waypoint"),
                t(C, Db(8080), Deny, "requestPrincipals needs a waypoint"),
                t(C, Web2, Deny, "a header condition needs a waypoint"),
                t(A, Web2, Deny, "a header condition needs a waypoint"),
            ],
        },
        Set {
            title: "HTTP fields without a waypoint (3): DENY with ports and methods, remote IPs, JWT conditions",
            docs: vec![
                ap("srv", "deny-post-8081", WEB,
                    "action: DENY, rules: [{to: [{operation: {ports: [\"8081\"], methods: [POST]}}]}]"),
                ap("srv", "deny-remote-ip", DB, &deny_from("remoteIpBlocks: [\"10.0.0.0/8\"]")),
                ap("beta", "deny-jwt-when", WEB2,
                    "action: DENY, rules: [{when: [{key: request.auth.principal, values: [\"*\"]}]}]"),
            ],
            cases: vec![
                t(A, Web(8081), Deny, "the port is denied whatever the method"),
                t(A, Web(8080), Allow, "another port"),
                t(A, Db(8080), Deny, "a DENY of only remoteIpBlocks denies all (differs from Istio)"),
                t(L, Db(8080), Deny, "a DENY of only remoteIpBlocks denies all (differs from Istio)"),
                t(C, Web2, Deny, "a DENY of only a JWT condition denies all (differs from Istio)"),
            ],
        },
        Set {
            title: "PeerAuthentication STRICT for a namespace",
            docs: vec![pa("srv", "strict", None, "mtls: {mode: STRICT}")],
            cases: vec![
                t(L, Web(8080), Deny, "plaintext refused"),
                t(L, Db(8080), Deny, "plaintext refused, same node"),
                t(A, Web(8080), Allow, "mTLS"),
                t(C, Db(8080), Allow, "mTLS"),
                t(L, Web2, Allow, "beta is PERMISSIVE"),
            ],
        },
        Set {
            title: "PeerAuthentication: mesh-wide STRICT, namespace and workload PERMISSIVE",
            docs: vec![
                pa("istio-system", "mesh-strict", None, "mtls: {mode: STRICT}"),
                pa("beta", "beta-permissive", None, "mtls: {mode: PERMISSIVE}"),
                pa("srv", "db-permissive", DB, "mtls: {mode: PERMISSIVE}"),
            ],
            cases: vec![
                t(L, Web(8080), Deny, "mesh-wide STRICT"),
                t(L, Db(8080), Allow, "the workload's PERMISSIVE wins"),
                t(L, Web2, Allow, "the namespace's PERMISSIVE wins"),
                t(B, Web(8080), Allow, "mTLS"),
            ],
        },
        Set {
            title: "PeerAuthentication: port-level modes, DISABLE",
            docs: vec![
                pa("srv", "web-ports", WEB, "mtls: {mode: STRICT}, portLevelMtls: {\"8081\": {mode: PERMISSIVE}}"),
                pa("srv", "ns-disable", None, "mtls: {mode: DISABLE}"),
                pa("beta", "web2-ports", WEB2, "mtls: {mode: PERMISSIVE}, portLevelMtls: {\"8080\": {mode: STRICT}}"),
            ],
            cases: vec![
                t(L, Web(8080), Deny, "STRICT"),
                t(L, Web(8081), Allow, "the PERMISSIVE port"),
                t(L, Web(9090), Deny, "STRICT"),
                t(A, Web(8081), Allow, "mTLS"),
                t(L, Db(8080), Allow, "DISABLE is PERMISSIVE in ambient"),
                t(L, Web2, Deny, "the STRICT port"),
                t(C, Web2, Allow, "mTLS"),
            ],
        },
        Set {
            title: "STRICT is a DENY: evaluated before an ALLOW; written by hand",
            docs: vec![
                pa("srv", "strict", None, "mtls: {mode: STRICT}"),
                ap("srv", "allow-by-ip", WEB, &allow_from(&format!("ipBlocks: [\"{}/32\", \"{}/32\"]", ip.l, ip.a))),
                ap("beta", "require-mtls", WEB2, &deny_from("notPrincipals: [\"*\"]")),
            ],
            cases: vec![
                t(L, Web(8080), Deny, "STRICT before the ALLOW of its address"),
                t(A, Web(8080), Allow, "mTLS and allowed"),
                t(B, Web(8080), Deny, "mTLS, not allowed"),
                t(L, Web2, Deny, "DENY notPrincipals *: plaintext"),
                t(C, Web2, Allow, "DENY notPrincipals *: mTLS passes"),
            ],
        },
        Set {
            title: "back to no policy",
            docs: vec![],
            cases: vec![
                t(A, Web(8080), Allow, "every policy removed"),
                t(L, Web(8080), Allow, "PERMISSIVE again"),
                t(B, Db(8080), Allow, "every policy removed"),
            ],
        },
    ]
}

/// The pods and the addresses cases connect to.
struct Pods {
    a: usize,
    b: usize,
    c: usize,
    l: usize,
    web: String,
    db: String,
    web2: String,
    /// The nodes of the servers, whose ztunnels decide.
    web_node: usize,
    db_node: usize,
    web2_node: usize,
}

impl Pods {
    fn client(&self, f: Src) -> usize {
        match f {
            Src::A => self.a,
            Src::B => self.b,
            Src::C => self.c,
            Src::L => self.l,
        }
    }

    /// Where to connect, the `<server>:<port>` that must answer, and the node deciding.
    fn target(&self, to: Dst) -> (String, u16, String, usize) {
        match to {
            Dst::Web(p) => (self.web.clone(), p, format!("authz-web:{p}"), self.web_node),
            Dst::Db(p) => (self.db.clone(), p, format!("authz-db:{p}"), self.db_node),
            Dst::Web2 => (
                self.web2.clone(),
                8080,
                "authz-web2:8080".into(),
                self.web2_node,
            ),
            Dst::Vip => (WEB_VIP.into(), 80, "authz-web:8080".into(), self.web_node),
        }
    }
}

/// Policy denials counted by node `i`'s ztunnel (HBONE and plaintext alike).
fn denials(c: &Cluster, i: usize) -> u64 {
    let text = c
        .node_get(i, "127.0.0.1:15020", "/metrics")
        .unwrap_or_else(|e| panic!("metrics of node{}: {e}", i + 1));
    metric(
        &text,
        "istio_tcp_connections_failed_total",
        &[("reporter", "destination"), ("response_flags", "DENY")],
    )
}

/// What the client saw, checked against the deciding ztunnel's count: the right server's
/// answer with no new denial is an allow; a connection closed or reset without an answer,
/// with exactly one new denial, is a deny; anything else (a timeout, a refusal, another
/// answer, a close the policy did not make) is neither.
fn verdict(out: &str, server: &str, new_denials: u64) -> Option<Verdict> {
    let answered = out == format!("REPLY {server} got={TOKEN}");
    let closed = out == "REPLY <closed>"
        || out == "ERROR ConnectionResetError"
        || out == "ERROR BrokenPipeError";
    match (answered, closed, new_denials) {
        (true, _, 0) => Some(Allow),
        (_, true, 1) => Some(Deny),
        _ => None,
    }
}

fn probe(c: &Cluster, pods: &Pods, from: Src, to: Dst) -> (Option<Verdict>, String) {
    let (host, port, server, node) = pods.target(to);
    let before = denials(c, node);
    let out = c.exec(
        pods.client(from),
        LINE_CLIENT,
        &[&host, &port.to_string(), TOKEN, "3"],
    );
    let new = denials(c, node) - before;
    (
        verdict(&out, &server, new),
        format!("{out}; denials +{new}"),
    )
}

/// Writes the set with its sentinel and waits until every ztunnel holds exactly it: the
/// sentinel policy and service port (one per xDS type, so both types' pushes of this
/// generation have been applied), every policy of the set, and no other.
fn apply_set(c: &Cluster, generation: u16, docs: &[Doc]) {
    let mut yaml = format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: gen-{generation}, namespace: mesh-sentinel}}\nspec: {{action: DENY}}\n\
         ---\napiVersion: v1\nkind: Service\nmetadata: {{name: sentinel, namespace: mesh-sentinel}}\nspec: {{clusterIP: {SENTINEL_VIP}, ports: [{{port: {}}}]}}\n",
        1000 + generation
    );
    for d in docs {
        yaml.push_str("---\n");
        yaml.push_str(&d.yaml);
    }
    c.apply("authz-set.yaml", &yaml);
    let mut want: Vec<String> = docs.iter().filter_map(|d| d.key.clone()).collect();
    want.push(format!("mesh-sentinel/gen-{generation}"));
    want.sort();
    let port = u64::from(1000 + generation);
    eventually(
        &format!(
            "policy set {generation} in every ztunnel (a refused document is in istiod-lite's log)"
        ),
        Duration::from_secs(20),
        || {
            for i in 0..c.nodes.len() {
                let dump: Value =
                    serde_json::from_str(&c.node_get(i, "127.0.0.1:15000", "/config_dump")?)
                        .map_err(|e| e.to_string())?;
                let sentinel_port = dump["services"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|s| s["hostname"] == SENTINEL_HOST)
                    .flat_map(|s| s["ports"].as_array().cloned().unwrap_or_default())
                    .any(|p| p["port"].as_u64() == Some(port));
                if !sentinel_port {
                    return Err(format!("node{}: sentinel port {port} not there yet", i + 1));
                }
                let mut have: Vec<String> = dump["policies"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p["name"].as_str())
                    .filter(|n| !n.contains("/converted_peer_authentication_"))
                    .map(str::to_string)
                    .collect();
                have.sort();
                if have != want {
                    return Err(format!("node{}: policies {have:?}, want {want:?}", i + 1));
                }
            }
            Ok(())
        },
    );
}

#[test]
#[ignore = "needs root: run e2e/run.sh"]
fn authorization_matrix() {
    let started = Instant::now();
    let mut c = Cluster::up(2);
    c.apply("authz-base.yaml", BASE);
    let a = c.add_pod("alpha", "authz-a", 0, "sa-a");
    let b = c.add_pod("alpha", "authz-b", 1, "sa-b");
    let cl = c.add_pod("beta", "authz-c", 0, "sa-c");
    let l = c.add_pod("legacy", "authz-legacy", 0, "legacy");
    let web = c.add_pod("srv", "authz-web", 1, "web");
    let db = c.add_pod("srv", "authz-db", 0, "db");
    let web2 = c.add_pod("beta", "authz-web2", 1, "web2");
    c.run_app(web, SERVER, &["authz-web", "8080", "8081", "9090"]);
    c.run_app(db, SERVER, &["authz-db", "8080", "9090"]);
    c.run_app(web2, SERVER, &["authz-web2", "8080"]);
    let ip = |p: usize| c.pods[p].ip.to_string();
    let a_ip = c.pods[a].ip.octets();
    let addrs = Addrs {
        a: ip(a),
        b: ip(b),
        c: ip(cl),
        l: ip(l),
        node1: format!("{}.{}.{}.0/24", a_ip[0], a_ip[1], a_ip[2]),
    };
    let pods = Pods {
        a,
        b,
        c: cl,
        l,
        web: ip(web),
        db: ip(db),
        web2: ip(web2),
        web_node: c.pods[web].node,
        db_node: c.pods[db].node,
        web2_node: c.pods[web2].node,
    };
    println!(
        "clients: A {} (alpha/sa-a, node1), B {} (alpha/sa-b, node2), C {} (beta/sa-c, node1), L {} (legacy, plaintext, node1)\n\
         servers: web {} (srv, node2), db {} (srv, node1), web2 {} (beta, node2), web VIP {WEB_VIP}",
        addrs.a, addrs.b, addrs.c, addrs.l, pods.web, pods.db, pods.web2
    );

    // Every server port answers every client before the matrix starts (the apps and the
    // captures are up): the first set's cases then measure policy only.
    apply_set(&c, 0, &[]);
    for from in [Src::A, Src::B, Src::C, Src::L] {
        for to in [
            Dst::Web(8080),
            Dst::Web(8081),
            Dst::Web(9090),
            Dst::Db(8080),
            Dst::Db(9090),
            Dst::Web2,
            Dst::Vip,
        ] {
            // Service VIPs are resolved by the client's ztunnel only (there is no kube-proxy).
            if from == Src::L && to == Dst::Vip {
                continue;
            }
            eventually(
                &format!("{from:?} -> {to:?} answers"),
                Duration::from_secs(20),
                || match probe(&c, &pods, from, to) {
                    (Some(Allow), _) => Ok(()),
                    (_, out) => Err(out),
                },
            );
        }
    }
    println!("ready after {:.1}s", started.elapsed().as_secs_f64());

    let sets = matrix(&addrs);
    let total: usize = sets.iter().map(|s| s.cases.len()).sum();
    let matrix_started = Instant::now();
    let mut mismatches = Vec::new();
    for (n, set) in sets.iter().enumerate() {
        let generation = n as u16 + 1;
        let applied = Instant::now();
        apply_set(&c, generation, &set.docs);
        println!(
            "\n== set {generation}: {} (in effect after {} ms)",
            set.title,
            applied.elapsed().as_millis()
        );
        for case in &set.cases {
            let (got, out) = probe(&c, &pods, case.from, case.to);
            let got_text = got.map_or("neither".to_string(), |v| v.to_string());
            let ok = got == Some(case.expect);
            let line = format!(
                "{:?} -> {:?} ({}): expect {}, got {} [{out}]",
                case.from, case.to, case.why, case.expect, got_text
            );
            println!("  {} {line}", if ok { "ok  " } else { "FAIL" });
            if !ok {
                mismatches.push(format!("set {generation} ({}): {line}", set.title));
            }
        }
    }
    println!(
        "\n{total} cases in {} sets: {} mismatches; matrix {:.1}s, whole test {:.1}s",
        sets.len(),
        mismatches.len(),
        matrix_started.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 100, "the matrix has {total} cases");
    assert!(
        mismatches.is_empty(),
        "{} of {total} cases differ:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
}
