//! L4 authorization at the destination, with Istio's semantics (`docs/istio-compatibility.md` §7).
//!
//! Policies arrive as `istio.security.Authorization` and are converted once, at xDS time, into
//! [`Policy`] (an invalid address or an empty string match is dropped there, as Istio's ztunnel
//! does). Evaluation order for a connection to workload W:
//!
//! 1. dry-run DENY policies: evaluated, matches only logged;
//! 2. DENY policies: any match denies;
//! 3. dry-run ALLOW policies: evaluated, only logged;
//! 4. no ALLOW policy applies: allow;
//! 5. an ALLOW policy matches: allow;
//! 6. otherwise deny.
//!
//! A policy matches if any rule matches (no rule: never); a rule if all its clauses match (no
//! clause: always); a clause if any of its matches matches (none: always); a match if every
//! field it sets passes (a match that sets nothing never matches on its own).

use std::net::IpAddr;

use mesh_core::identity::Identity;
use mesh_core::proto::istio::security as xds;

/// How a string is compared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Presence,
}

impl StringMatch {
    fn from_xds(m: &xds::StringMatch) -> Option<StringMatch> {
        use xds::string_match::MatchType;
        Some(match m.match_type.as_ref()? {
            MatchType::Exact(s) => StringMatch::Exact(s.clone()),
            MatchType::Prefix(s) => StringMatch::Prefix(s.clone()),
            MatchType::Suffix(s) => StringMatch::Suffix(s.clone()),
            MatchType::Presence(()) => StringMatch::Presence,
        })
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StringMatch::Exact(s) => value == s,
            StringMatch::Prefix(s) => value.starts_with(s.as_str()),
            StringMatch::Suffix(s) => value.ends_with(s.as_str()),
            StringMatch::Presence => !value.is_empty(),
        }
    }
}

/// An IP network.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    fn from_xds(a: &xds::Address) -> Option<Cidr> {
        let addr = match a.address.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(a.address.as_slice()).ok()?),
            16 => IpAddr::from(<[u8; 16]>::try_from(a.address.as_slice()).ok()?),
            _ => return None,
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = u8::try_from(a.length).ok().filter(|l| *l <= max)?;
        Some(Cidr { addr, len })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            // An IPv4-mapped IPv6 peer is compared as IPv4.
            (IpAddr::V4(_), IpAddr::V6(ip)) => ip
                .to_ipv4_mapped()
                .is_some_and(|v4| self.contains(IpAddr::V4(v4))),
            _ => false,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    pub service_accounts: Vec<(String, String)>,
    pub not_service_accounts: Vec<(String, String)>,
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    pub source_ips: Vec<Cidr>,
    pub not_source_ips: Vec<Cidr>,
    pub destination_ips: Vec<Cidr>,
    pub not_destination_ips: Vec<Cidr>,
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
}

/// Rules (ORed) of clauses (ANDed) of matches (ORed).
pub type Rules = Vec<Vec<Vec<Match>>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Global,
    Namespace,
    WorkloadSelector,
}

/// One L4 policy, ready to evaluate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `<namespace>/<name>`.
    pub key: String,
    pub namespace: String,
    pub scope: Scope,
    pub action: Action,
    pub dry_run: bool,
    pub rules: Rules,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("unknown scope {0}")]
    Scope(i32),
    #[error("unknown action {0}")]
    Action(i32),
    #[error("port {0} is out of range")]
    Port(u32),
}

fn ports(list: &[u32]) -> Result<Vec<u16>, PolicyError> {
    list.iter()
        .map(|p| u16::try_from(*p).map_err(|_| PolicyError::Port(*p)))
        .collect()
}

fn strings(list: &[xds::StringMatch]) -> Vec<StringMatch> {
    list.iter().filter_map(StringMatch::from_xds).collect()
}

fn cidrs(list: &[xds::Address]) -> Vec<Cidr> {
    list.iter().filter_map(Cidr::from_xds).collect()
}

fn accounts(list: &[xds::ServiceAccountMatch]) -> Vec<(String, String)> {
    list.iter()
        .map(|s| (s.namespace.clone(), s.service_account.clone()))
        .collect()
}

impl TryFrom<&xds::Authorization> for Policy {
    type Error = PolicyError;

    fn try_from(a: &xds::Authorization) -> Result<Self, Self::Error> {
        let scope = match xds::Scope::try_from(a.scope) {
            Ok(xds::Scope::Global) => Scope::Global,
            Ok(xds::Scope::Namespace) => Scope::Namespace,
            Ok(xds::Scope::WorkloadSelector) => Scope::WorkloadSelector,
            Err(_) => return Err(PolicyError::Scope(a.scope)),
        };
        let action = match xds::Action::try_from(a.action) {
            Ok(xds::Action::Allow) => Action::Allow,
            Ok(xds::Action::Deny) => Action::Deny,
            Err(_) => return Err(PolicyError::Action(a.action)),
        };
        let mut rules = Vec::new();
        for rule in &a.rules {
            let mut clauses = Vec::new();
            for clause in &rule.clauses {
                let mut matches = Vec::new();
                for m in &clause.matches {
                    matches.push(Match {
                        namespaces: strings(&m.namespaces),
                        not_namespaces: strings(&m.not_namespaces),
                        service_accounts: accounts(&m.service_accounts),
                        not_service_accounts: accounts(&m.not_service_accounts),
                        principals: strings(&m.principals),
                        not_principals: strings(&m.not_principals),
                        source_ips: cidrs(&m.source_ips),
                        not_source_ips: cidrs(&m.not_source_ips),
                        destination_ips: cidrs(&m.destination_ips),
                        not_destination_ips: cidrs(&m.not_destination_ips),
                        destination_ports: ports(&m.destination_ports)?,
                        not_destination_ports: ports(&m.not_destination_ports)?,
                    });
                }
                clauses.push(matches);
            }
            rules.push(clauses);
        }
        Ok(Policy {
            key: format!("{}/{}", a.namespace, a.name),
            namespace: a.namespace.clone(),
            scope,
            action,
            dry_run: a.dry_run,
            rules,
        })
    }
}

/// What is known of a connection when it is authorized.
#[derive(Clone, Debug)]
pub struct Connection {
    /// The peer's identity from its verified certificate; `None` for plaintext.
    pub src_identity: Option<Identity>,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// The resolved upstream (target) port, not 15008.
    pub dst_port: u16,
}

/// Either field list passes: empty (not set), or any element matches.
fn any_of<T>(list: &[T], f: impl Fn(&T) -> bool) -> bool {
    list.iter().any(f)
}

impl Match {
    fn is_empty(&self) -> bool {
        *self == Match::default()
    }

    fn matches(&self, c: &Connection) -> bool {
        if self.is_empty() {
            return false;
        }
        let ns = c
            .src_identity
            .as_ref()
            .map(|i| i.namespace.as_str())
            .unwrap_or("");
        let principal = c
            .src_identity
            .as_ref()
            .map(Identity::principal)
            .unwrap_or_default();
        let sa = c
            .src_identity
            .as_ref()
            .map(|i| (i.namespace.as_str(), i.service_account.as_str()));
        let sa_is = |(n, s): &(String, String)| sa == Some((n.as_str(), s.as_str()));
        let checks = [
            self.namespaces.is_empty() || any_of(&self.namespaces, |m| m.matches(ns)),
            !any_of(&self.not_namespaces, |m| m.matches(ns)),
            self.service_accounts.is_empty() || any_of(&self.service_accounts, sa_is),
            !any_of(&self.not_service_accounts, sa_is),
            self.principals.is_empty() || any_of(&self.principals, |m| m.matches(&principal)),
            !any_of(&self.not_principals, |m| m.matches(&principal)),
            self.source_ips.is_empty() || any_of(&self.source_ips, |n| n.contains(c.src_ip)),
            !any_of(&self.not_source_ips, |n| n.contains(c.src_ip)),
            self.destination_ips.is_empty()
                || any_of(&self.destination_ips, |n| n.contains(c.dst_ip)),
            !any_of(&self.not_destination_ips, |n| n.contains(c.dst_ip)),
            self.destination_ports.is_empty() || self.destination_ports.contains(&c.dst_port),
            !self.not_destination_ports.contains(&c.dst_port),
        ];
        checks.iter().all(|ok| *ok)
    }
}

impl Policy {
    pub fn matches(&self, c: &Connection) -> bool {
        self.rules.iter().any(|clauses| {
            clauses
                .iter()
                .all(|matches| matches.is_empty() || matches.iter().any(|m| m.matches(c)))
        })
    }
}

/// The outcome of authorization, with the reason a user can grep for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        /// The policy that decided (`ns/name`), when one did.
        policy: Option<String>,
        reason: String,
    },
}

impl Decision {
    pub fn is_allow(&self) -> bool {
        matches!(self, Decision::Allow)
    }
}

/// Evaluates the policies that apply to a destination workload. `policies` are those in
/// effect for it: global ones, its namespace's, and the selector policies it names.
pub fn evaluate<'a>(policies: impl IntoIterator<Item = &'a Policy>, c: &Connection) -> Decision {
    let policies: Vec<&Policy> = policies.into_iter().collect();
    let of = |action: Action, dry: bool| {
        policies
            .iter()
            .copied()
            .filter(move |p| p.action == action && p.dry_run == dry)
    };
    for p in of(Action::Deny, true) {
        if p.matches(c) {
            tracing::info!(policy = %p.key, "dry-run: connection would be denied");
        }
    }
    if let Some(p) = of(Action::Deny, false).find(|p| p.matches(c)) {
        return Decision::Deny {
            policy: Some(p.key.clone()),
            reason: format!("explicitly denied by: {}", p.key),
        };
    }
    for p in of(Action::Allow, true) {
        let verdict = if p.matches(c) { "allowed" } else { "denied" };
        tracing::info!(policy = %p.key, verdict, "dry-run: connection would be {verdict}");
    }
    let mut allows = of(Action::Allow, false).peekable();
    if allows.peek().is_none() {
        return Decision::Allow;
    }
    if allows.any(|p| p.matches(c)) {
        return Decision::Allow;
    }
    Decision::Deny {
        policy: None,
        reason: "allow policies exist, but none allowed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(id: Option<&str>, src: &str, port: u16) -> Connection {
        Connection {
            src_identity: id.map(|i| i.parse().unwrap()),
            src_ip: src.parse().unwrap(),
            dst_ip: "10.1.0.5".parse().unwrap(),
            dst_port: port,
        }
    }

    fn policy(key: &str, action: Action, rules: Rules) -> Policy {
        Policy {
            key: key.into(),
            namespace: "demo".into(),
            scope: Scope::Namespace,
            action,
            dry_run: false,
            rules,
        }
    }

    const CLIENT: &str = "spiffe://cluster.local/ns/demo/sa/client";
    const OTHER: &str = "spiffe://cluster.local/ns/other/sa/x";

    #[test]
    fn no_policies_allow_and_deny_wins() {
        let c = conn(Some(CLIENT), "10.1.0.9", 8080);
        assert!(evaluate([], &c).is_allow());
        let allow_all = policy("demo/all", Action::Allow, vec![vec![]]);
        let deny_port = policy(
            "demo/no-8080",
            Action::Deny,
            vec![vec![vec![Match {
                destination_ports: vec![8080],
                ..Default::default()
            }]]],
        );
        let d = evaluate([&allow_all, &deny_port], &c);
        assert_eq!(
            d,
            Decision::Deny {
                policy: Some("demo/no-8080".into()),
                reason: "explicitly denied by: demo/no-8080".into()
            }
        );
        assert!(evaluate(
            [&allow_all, &deny_port],
            &conn(Some(CLIENT), "10.1.0.9", 9090)
        )
        .is_allow());
    }

    #[test]
    fn allow_by_principal_namespace_and_source_ip() {
        let by_principal = policy(
            "demo/p",
            Action::Allow,
            vec![vec![vec![Match {
                principals: vec![StringMatch::Exact("cluster.local/ns/demo/sa/client".into())],
                ..Default::default()
            }]]],
        );
        assert!(evaluate([&by_principal], &conn(Some(CLIENT), "10.1.0.9", 80)).is_allow());
        assert!(!evaluate([&by_principal], &conn(Some(OTHER), "10.1.0.9", 80)).is_allow());
        assert!(!evaluate([&by_principal], &conn(None, "10.1.0.9", 80)).is_allow());

        let by_ns_and_net = policy(
            "demo/n",
            Action::Allow,
            vec![vec![
                vec![Match {
                    namespaces: vec![StringMatch::Prefix("oth".into())],
                    ..Default::default()
                }],
                vec![Match {
                    source_ips: vec![Cidr {
                        addr: "10.2.0.0".parse().unwrap(),
                        len: 16,
                    }],
                    ..Default::default()
                }],
            ]],
        );
        assert!(evaluate([&by_ns_and_net], &conn(Some(OTHER), "10.2.3.4", 80)).is_allow());
        assert!(!evaluate([&by_ns_and_net], &conn(Some(OTHER), "10.3.3.4", 80)).is_allow());
        assert!(!evaluate([&by_ns_and_net], &conn(Some(CLIENT), "10.2.3.4", 80)).is_allow());
    }

    #[test]
    fn an_allow_without_rules_denies_and_dry_run_does_not_enforce() {
        let empty = policy("demo/empty", Action::Allow, vec![]);
        let d = evaluate([&empty], &conn(Some(CLIENT), "10.1.0.9", 80));
        assert_eq!(
            d,
            Decision::Deny {
                policy: None,
                reason: "allow policies exist, but none allowed".into()
            }
        );
        let dry = Policy {
            dry_run: true,
            ..policy("demo/dry", Action::Deny, vec![vec![]])
        };
        assert!(evaluate([&dry], &conn(Some(CLIENT), "10.1.0.9", 80)).is_allow());
    }

    #[test]
    fn strict_peer_authentication_shape_denies_plaintext_only() {
        // What istiod-lite generates for STRICT: deny when the principal is absent.
        let strict = policy(
            "demo/converted_peer_authentication_default",
            Action::Deny,
            vec![vec![vec![Match {
                not_principals: vec![StringMatch::Presence],
                ..Default::default()
            }]]],
        );
        assert!(!evaluate([&strict], &conn(None, "10.1.0.9", 80)).is_allow());
        assert!(evaluate([&strict], &conn(Some(CLIENT), "10.1.0.9", 80)).is_allow());
    }

    #[test]
    fn service_accounts_ignore_the_trust_domain() {
        let by_sa = policy(
            "demo/sa",
            Action::Allow,
            vec![vec![vec![Match {
                service_accounts: vec![("demo".into(), "client".into())],
                ..Default::default()
            }]]],
        );
        let foreign = "spiffe://other.domain/ns/demo/sa/client";
        assert!(evaluate([&by_sa], &conn(Some(foreign), "10.1.0.9", 80)).is_allow());
        assert!(!evaluate([&by_sa], &conn(Some(OTHER), "10.1.0.9", 80)).is_allow());
    }

    #[test]
    fn conversion_drops_invalid_entries_and_refuses_bad_enums() {
        let a = xds::Authorization {
            name: "p".into(),
            namespace: "demo".into(),
            scope: 1,
            action: 0,
            rules: vec![xds::Rule {
                clauses: vec![xds::Clause {
                    matches: vec![xds::Match {
                        principals: vec![xds::StringMatch { match_type: None }],
                        source_ips: vec![xds::Address {
                            address: vec![1, 2, 3],
                            length: 8,
                        }],
                        ..Default::default()
                    }],
                }],
            }],
            ..Default::default()
        };
        let p = Policy::try_from(&a).unwrap();
        assert!(p.rules[0][0][0].is_empty());
        let bad = xds::Authorization {
            action: 7,
            ..a.clone()
        };
        assert_eq!(Policy::try_from(&bad), Err(PolicyError::Action(7)));
    }

    #[test]
    fn cidr_containment() {
        let net = Cidr {
            addr: "10.0.0.0".parse().unwrap(),
            len: 8,
        };
        assert!(net.contains("10.255.0.1".parse().unwrap()));
        assert!(!net.contains("11.0.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.2.3".parse().unwrap()));
        let all = Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            len: 0,
        };
        assert!(all.contains("192.0.2.1".parse().unwrap()));
    }
}
