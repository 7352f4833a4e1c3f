//! Library shared by the mesh binaries: the wire protos, SPIFFE identities, the Kubernetes object
//! model that every config source produces, the cluster directory (the local cluster's API), and
//! the TLS settings both ends of a connection agree on.

#![forbid(unsafe_code)]

pub mod cluster_dir;
pub mod hbone;
pub mod identity;
pub mod k8s;
pub mod mtls;
pub mod node;
pub mod proto;
pub mod splice;
pub mod tls;

/// Type URL of `istio.workload.Address` resources (workloads and services).
pub const ADDRESS_TYPE_URL: &str = "type.googleapis.com/istio.workload.Address";
/// Type URL of `istio.security.Authorization` resources (L4 policies).
pub const AUTHORIZATION_TYPE_URL: &str = "type.googleapis.com/istio.security.Authorization";

/// Parses `90`, `90s`, `30m`, `24h`, `7d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 24h or 7d"))?;
    let unit_secs: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h or d)")),
    };
    let secs = n.saturating_mul(unit_secs);
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    // Certificates outliving the generated root (10 years) would not verify anyway.
    if secs > 3650 * 86400 {
        return Err(format!("{s:?} is longer than 3650d"));
    }
    Ok(std::time::Duration::from_secs(secs))
}
