//! SPIFFE workload identities of the form `spiffe://<trust-domain>/ns/<namespace>/sa/<account>`,
//! and (in [`manager`]) the certificates a proxy holds for them.
//!
//! Parsing is strict (exactly the five path parts, literal `ns` and `sa`), as Istio's is: an
//! identity that parses loosely could be accepted where it should not be.

pub mod manager;

use std::fmt;
use std::str::FromStr;

const SCHEME: &str = "spiffe://";

/// A workload identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    pub trust_domain: String,
    pub namespace: String,
    pub service_account: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with spiffe://")]
    Scheme(String),
    #[error(
        "identity {0:?} is not of the form spiffe://<trust-domain>/ns/<namespace>/sa/<account>"
    )]
    Shape(String),
}

impl Identity {
    pub fn new(trust_domain: &str, namespace: &str, service_account: &str) -> Self {
        Identity {
            trust_domain: trust_domain.to_string(),
            namespace: namespace.to_string(),
            service_account: service_account.to_string(),
        }
    }

    /// The identity without `spiffe://`: the form Istio's authorization principals use.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.principal())
    }
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::Scheme(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] if !td.is_empty() && !ns.is_empty() && !sa.is_empty() => {
                Ok(Identity::new(td, ns, sa))
            }
            _ => Err(IdentityError::Shape(s.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "spiffe://cluster.local/ns/demo/sa/web".parse().unwrap();
        assert_eq!(id, Identity::new("cluster.local", "demo", "web"));
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/demo/sa/web");
        assert_eq!(id.principal(), "cluster.local/ns/demo/sa/web");
    }

    #[test]
    fn rejects_loose_forms() {
        for bad in [
            "cluster.local/ns/demo/sa/web",
            "spiffe://cluster.local/ns/demo/sa/web/extra",
            "spiffe://cluster.local/namespace/demo/sa/web",
            "spiffe://cluster.local/ns//sa/web",
            "spiffe:///ns/demo/sa/web",
            "spiffe://cluster.local/ns/demo/serviceaccount/web",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad} parsed");
        }
    }
}
