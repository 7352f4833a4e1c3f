//! The resource catalogue: kubectl's names for each kind this cluster stores (`pods`, `po`,
//! `authorizationpolicies.security.istio.io`), and how what a user types resolves to one.

use mesh_core::k8s::Kind;

/// kubectl's names for a kind: `pods`, `po`, `authorizationpolicies.security.istio.io`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    pub kind: Kind,
    /// The resource name, e.g. `authorizationpolicies`.
    pub plural: &'static str,
    pub short_name: &'static str,
    /// API group, empty for the core group.
    pub group: &'static str,
}

impl Resource {
    pub fn of(kind: Kind) -> Resource {
        let (plural, short_name, group) = match kind {
            Kind::Namespace => ("namespaces", "ns", ""),
            Kind::ServiceAccount => ("serviceaccounts", "sa", ""),
            Kind::Pod => ("pods", "po", ""),
            Kind::Service => ("services", "svc", ""),
            Kind::AuthorizationPolicy => ("authorizationpolicies", "ap", "security.istio.io"),
            Kind::PeerAuthentication => ("peerauthentications", "pa", "security.istio.io"),
            Kind::Gateway => ("gateways", "gtw", "gateway.networking.k8s.io"),
            Kind::HttpRoute => ("httproutes", "httproute", "gateway.networking.k8s.io"),
            Kind::GrpcRoute => ("grpcroutes", "grpcroute", "gateway.networking.k8s.io"),
        };
        Resource {
            kind,
            plural,
            short_name,
            group,
        }
    }

    /// Resolves what a user types: `po`, `pod`, `pods`, `Pod`, `gateways.gateway.networking.k8s.io`.
    pub fn find(name: &str) -> Option<Resource> {
        let name = name.to_ascii_lowercase();
        let matches =
            |r: &Resource, n: &str| n == r.plural || n == r.short_name || n == r.singular();
        let all = Kind::ALL.map(Resource::of);
        if let Some(r) = all.iter().find(|r| matches(r, &name)) {
            return Some(*r);
        }
        let (base, group) = name.split_once('.')?;
        all.into_iter()
            .find(|r| !r.group.is_empty() && r.group == group && matches(r, base))
    }

    /// `pod`, `authorizationpolicy`.
    pub fn singular(&self) -> String {
        self.kind.as_str().to_ascii_lowercase()
    }

    /// How kubectl names one object's type in `apply`/`delete` output: `pod`,
    /// `authorizationpolicy.security.istio.io`.
    pub fn type_name(&self) -> String {
        with_group(self.singular(), self.group)
    }

    /// How the API server names the resource in errors: `pods`,
    /// `authorizationpolicies.security.istio.io`.
    pub fn qualified_plural(&self) -> String {
        with_group(self.plural.to_string(), self.group)
    }

    /// kubectl's line for an object of this resource that does not exist.
    pub fn not_found(&self, name: &str) -> String {
        format!(
            "Error from server (NotFound): {} {name:?} not found",
            self.qualified_plural()
        )
    }
}

fn with_group(name: String, group: &str) -> String {
    if group.is_empty() {
        name
    } else {
        format!("{name}.{group}")
    }
}

/// The kinds this cluster stores, as a help line: `namespaces (ns), pods (po), ...`.
pub fn supported_resources() -> String {
    Kind::ALL
        .map(|k| {
            let r = Resource::of(k);
            format!("{} ({})", r.plural, r.short_name)
        })
        .join(", ")
}
