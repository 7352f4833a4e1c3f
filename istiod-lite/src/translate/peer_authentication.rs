//! PeerAuthentication -> DENY policies for ztunnel.
//!
//! The effective mode of a workload is its own (selector) PeerAuthentication, else its
//! namespace's, else the mesh-wide one in the root namespace, else PERMISSIVE; the oldest policy
//! wins a tie. `DISABLE` is ignored in ambient (treated as PERMISSIVE). Where the effective mode
//! is STRICT (for all ports, or some), the workload gets a DENY policy for callers without a peer
//! identity, with the permissive ports excepted (or only the strict ports listed).
//!
//! The policies are WORKLOAD_SELECTOR scoped and named `converted_peer_authentication_<name>`
//! after the PeerAuthentication that decided, so a workload override really overrides: a
//! NAMESPACE or GLOBAL scoped policy could not be taken back for one workload.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use mesh_core::k8s::{selector_matches, Kind, Labels, MtlsMode, ObjectKey, PeerAuthentication};
use mesh_core::proto::istio::security::{
    string_match, Action, Authorization, Clause, Match, Rule, Scope, StringMatch,
};

use super::{Condition, MeshConfig, ZTUNNEL_ACCEPTED};
use crate::store::Snapshot;

const PREFIX: &str = "converted_peer_authentication_";

/// The policy that decides, the base mode, and the ports whose mode differs from it.
type Decision = (Arc<PeerAuthentication>, MtlsMode, Vec<(u32, MtlsMode)>);

pub struct PeerAuthentications {
    mesh: Option<Arc<PeerAuthentication>>,
    namespace: HashMap<String, Arc<PeerAuthentication>>,
    /// Selector policies per namespace, oldest first.
    selector: HashMap<String, Vec<Arc<PeerAuthentication>>>,
    /// The generated policies, by key `ns/name`.
    generated: BTreeMap<String, Authorization>,
}

fn age_key(pa: &PeerAuthentication) -> (String, String) {
    (
        pa.metadata.creation_timestamp.clone().unwrap_or_default(),
        pa.metadata.name.clone(),
    )
}

fn selector_of(pa: &PeerAuthentication) -> Option<&Labels> {
    pa.spec
        .selector
        .as_ref()
        .map(|s| &s.match_labels)
        .filter(|l| !l.is_empty())
}

fn mode_of(pa: &PeerAuthentication) -> MtlsMode {
    pa.spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default()
}

/// DISABLE is not a thing in ambient: the tunnel between enrolled pods is always mTLS.
fn normalise(mode: MtlsMode) -> MtlsMode {
    match mode {
        MtlsMode::Disable => MtlsMode::Permissive,
        m => m,
    }
}

impl PeerAuthentications {
    pub fn index(
        snapshot: &Snapshot,
        mesh: &MeshConfig,
        statuses: &mut BTreeMap<ObjectKey, Vec<Condition>>,
    ) -> PeerAuthentications {
        let mut all: Vec<&Arc<PeerAuthentication>> =
            snapshot.peer_authentications.values().collect();
        all.sort_by_key(|pa| age_key(pa));
        let mut index = PeerAuthentications {
            mesh: None,
            namespace: HashMap::new(),
            selector: HashMap::new(),
            generated: BTreeMap::new(),
        };
        for pa in all {
            let ns = pa.metadata.namespace.clone().unwrap_or_default();
            let key = ObjectKey::new(Kind::PeerAuthentication, &ns, &pa.metadata.name);
            let mut problems = Vec::new();
            if mode_of(pa) == MtlsMode::Disable {
                problems.push("mode DISABLE is ignored in ambient mode (traffic between enrolled workloads is always mTLS); it is treated as PERMISSIVE".to_string());
            }
            let has_selector = selector_of(pa).is_some();
            if !has_selector && !pa.spec.port_level_mtls.is_empty() {
                problems.push(
                    "portLevelMtls only applies to policies with a selector; it is ignored"
                        .to_string(),
                );
            }
            let accepted = if has_selector && ns == mesh.root_namespace {
                problems.push(format!(
                    "a selector policy in the root namespace {ns} is ignored; move it to the workload's namespace"
                ));
                false
            } else if has_selector {
                index
                    .selector
                    .entry(ns.clone())
                    .or_default()
                    .push(pa.clone());
                true
            } else if ns == mesh.root_namespace {
                match &index.mesh {
                    Some(first) => {
                        problems.push(format!(
                            "mesh-wide PeerAuthentication {ns}/{} is older and wins; this one is ignored",
                            first.metadata.name
                        ));
                        false
                    }
                    None => {
                        index.mesh = Some(pa.clone());
                        true
                    }
                }
            } else {
                match index.namespace.get(&ns) {
                    Some(first) => {
                        problems.push(format!(
                            "namespace-wide PeerAuthentication {ns}/{} is older and wins; this one is ignored",
                            first.metadata.name
                        ));
                        false
                    }
                    None => {
                        index.namespace.insert(ns.clone(), pa.clone());
                        true
                    }
                }
            };
            let condition = if problems.is_empty() {
                Condition::new(ZTUNNEL_ACCEPTED, true, "Accepted", "attached to ztunnel")
            } else {
                let reason = if accepted {
                    "UnsupportedValue"
                } else {
                    "Conflicted"
                };
                Condition::new(ZTUNNEL_ACCEPTED, false, reason, problems.join("; "))
            };
            statuses.insert(key, vec![condition]);
        }
        index.generate();
        index
    }

    /// The mode a namespace gives its workloads (before any workload policy).
    fn namespace_mode(&self, namespace: &str) -> (MtlsMode, Option<&Arc<PeerAuthentication>>) {
        if let Some(pa) = self.namespace.get(namespace) {
            let m = normalise(mode_of(pa));
            if m != MtlsMode::Unset {
                return (m, Some(pa));
            }
        }
        if let Some(pa) = &self.mesh {
            let m = normalise(mode_of(pa));
            if m != MtlsMode::Unset {
                return (m, Some(pa));
            }
        }
        (MtlsMode::Permissive, None)
    }

    /// The PeerAuthentication that decides a workload's mode (its own, else its namespace's,
    /// else the mesh's), the base mode, and the ports whose mode differs from the base.
    fn decide(
        &self,
        namespace: &str,
        workload_pa: Option<&Arc<PeerAuthentication>>,
    ) -> Option<Decision> {
        let (inherited, inherited_from) = self.namespace_mode(namespace);
        // A workload policy that sets neither a mode nor a port decides nothing.
        let workload_pa = workload_pa.filter(|pa| {
            normalise(mode_of(pa)) != MtlsMode::Unset || !pa.spec.port_level_mtls.is_empty()
        });
        match workload_pa {
            Some(pa) => {
                let own = normalise(mode_of(pa));
                let base = if own == MtlsMode::Unset {
                    inherited
                } else {
                    own
                };
                let ports = pa
                    .spec
                    .port_level_mtls
                    .iter()
                    .filter_map(|(p, m)| Some((p.parse::<u32>().ok()?, normalise(m.mode))))
                    .filter(|(_, m)| *m != MtlsMode::Unset && *m != base)
                    .collect();
                Some((pa.clone(), base, ports))
            }
            None => Some((inherited_from?.clone(), inherited, Vec::new())),
        }
    }

    fn key_of(owner: &PeerAuthentication) -> String {
        format!(
            "{}/{PREFIX}{}",
            owner.metadata.namespace.as_deref().unwrap_or_default(),
            owner.metadata.name
        )
    }

    /// The DENY policy a decision needs, if any part of it is STRICT.
    fn policy(
        owner: &PeerAuthentication,
        base: MtlsMode,
        ports: &[(u32, MtlsMode)],
    ) -> Option<Authorization> {
        let strict_ports: Vec<u32> = ports
            .iter()
            .filter(|(_, m)| *m == MtlsMode::Strict)
            .map(|(p, _)| *p)
            .collect();
        let open_ports: Vec<u32> = ports
            .iter()
            .filter(|(_, m)| *m != MtlsMode::Strict)
            .map(|(p, _)| *p)
            .collect();
        let no_identity = Match {
            not_principals: vec![StringMatch {
                match_type: Some(string_match::MatchType::Presence(())),
            }],
            ..Default::default()
        };
        let m = if base == MtlsMode::Strict {
            Match {
                not_destination_ports: open_ports,
                ..no_identity
            }
        } else if !strict_ports.is_empty() {
            Match {
                destination_ports: strict_ports,
                ..no_identity
            }
        } else {
            return None;
        };
        Some(Authorization {
            name: format!("{PREFIX}{}", owner.metadata.name),
            namespace: owner.metadata.namespace.clone().unwrap_or_default(),
            scope: Scope::WorkloadSelector as i32,
            action: Action::Deny as i32,
            rules: vec![Rule {
                clauses: vec![Clause { matches: vec![m] }],
            }],
            dry_run: false,
            extensions: vec![],
        })
    }

    /// Generates the DENY policy of every PeerAuthentication that can decide a workload's
    /// mode, whether or not a workload uses it yet (unreferenced WORKLOAD_SELECTOR policies
    /// apply to nothing), so workload translation stays a pure lookup.
    fn generate(&mut self) {
        let mut decisions = Vec::new();
        for (ns, list) in &self.selector {
            for pa in list {
                decisions.extend(self.decide(ns, Some(pa)));
            }
        }
        for ns in self.namespace.keys() {
            decisions.extend(self.decide(ns, None));
        }
        // A namespace with no policy of its own inherits the mesh's.
        decisions.extend(self.decide("", None));
        for (owner, base, ports) in decisions {
            if let Some(auth) = Self::policy(&owner, base, &ports) {
                self.generated.insert(Self::key_of(&owner), auth);
            }
        }
    }

    /// The key of the generated DENY policy that applies to a workload, if any.
    pub fn policy_for(&self, namespace: &str, labels: &Labels) -> Option<String> {
        let workload_pa = self.selector.get(namespace).and_then(|list| {
            list.iter()
                .find(|pa| selector_of(pa).is_some_and(|s| selector_matches(s, labels)))
        });
        let (owner, _, _) = self.decide(namespace, workload_pa)?;
        let key = Self::key_of(&owner);
        self.generated.contains_key(&key).then_some(key)
    }

    /// The generated policies.
    pub fn authorizations(&self) -> impl Iterator<Item = Authorization> + '_ {
        self.generated.values().cloned()
    }
}
