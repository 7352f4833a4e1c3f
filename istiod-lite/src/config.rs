//! istiod-lite's configuration: every flag has an environment variable and a documented default.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use mesh_core::time_text::parse_ttl;

use crate::translate::MeshConfig;

/// The control plane of the mesh: config store, workload xDS and the mesh CA.
///
/// istiod-lite reads Kubernetes YAML (Namespaces, Pods, Services, ServiceAccounts,
/// AuthorizationPolicies, PeerAuthentications and waypoint Gateways) from a directory it
/// watches, translates it into Istio's workload xDS, serves that over delta ADS with TLS on
/// port 15012, and signs workload certificates on the same port. Readiness, metrics and
/// debug views are on port 15014.
#[derive(Clone, Debug, Parser)]
#[command(name = "istiod-lite", version, about, long_about = None)]
pub struct Config {
    /// Directory of Kubernetes YAML to serve; watched for changes (*.yaml, *.yml, *.json,
    /// recursively; hidden files ignored).
    #[arg(long, env = "ISTIOD_LITE_CONFIG_DIR", default_value = "config")]
    pub config_dir: PathBuf,

    /// Directory for state istiod-lite owns: the generated CA (ca/), status (status/) and, by
    /// default, the token file.
    #[arg(
        long,
        env = "ISTIOD_LITE_STATE_DIR",
        default_value = "/var/lib/istiod-lite"
    )]
    pub state_dir: PathBuf,

    /// YAML file of bearer tokens naming callers (default: <state-dir>/tokens.yaml). Without a
    /// usable token file every xDS and CA call is refused.
    #[arg(long, env = "ISTIOD_LITE_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Where policy status files are written (default: <state-dir>/status).
    #[arg(long, env = "ISTIOD_LITE_STATUS_DIR")]
    pub status_dir: Option<PathBuf>,

    /// CA certificate given by the operator (PEM). With --ca-key; otherwise a root is generated
    /// in <state-dir>/ca on first start and reused after.
    #[arg(long, env = "ISTIOD_LITE_CA_CERT", requires = "ca_key")]
    pub ca_cert: Option<PathBuf>,

    /// Private key of --ca-cert (PEM, PKCS#8).
    #[arg(long, env = "ISTIOD_LITE_CA_KEY", requires = "ca_cert")]
    pub ca_key: Option<PathBuf>,

    /// Root bundle when --ca-cert is an intermediate (PEM).
    #[arg(long, env = "ISTIOD_LITE_CA_ROOT", requires = "ca_cert")]
    pub ca_root: Option<PathBuf>,

    /// SPIFFE trust domain of issued identities.
    #[arg(long, env = "TRUST_DOMAIN", default_value = "cluster.local")]
    pub trust_domain: String,

    /// Namespace whose policies apply mesh-wide.
    #[arg(
        long,
        env = "ISTIOD_LITE_ROOT_NAMESPACE",
        default_value = "istio-system"
    )]
    pub root_namespace: String,

    /// Cluster name used in workload UIDs and `cluster_id`.
    #[arg(long, env = "CLUSTER_ID", default_value = "Kubernetes")]
    pub cluster_id: String,

    /// DNS suffix of service hostnames (<name>.<namespace>.svc.<suffix>).
    #[arg(
        long,
        env = "ISTIOD_LITE_DOMAIN_SUFFIX",
        default_value = "cluster.local"
    )]
    pub domain_suffix: String,

    /// Address of the xDS + CA gRPC server (TLS).
    #[arg(long, env = "ISTIOD_LITE_XDS_ADDR", default_value = "[::]:15012")]
    pub xds_addr: SocketAddr,

    /// Address of the plaintext monitoring server (/ready, /metrics, /debug/*).
    #[arg(
        long,
        env = "ISTIOD_LITE_MONITORING_ADDR",
        default_value = "[::]:15014"
    )]
    pub monitoring_addr: SocketAddr,

    /// Names and IPs in the serving certificate of the xDS port (repeat or comma-separate).
    #[arg(
        long = "server-san",
        env = "ISTIOD_LITE_SERVER_SANS",
        value_delimiter = ',',
        default_value = "istiod.istio-system.svc,istiod-lite,localhost,127.0.0.1,::1"
    )]
    pub server_sans: Vec<String>,

    /// Default lifetime of issued workload certificates (e.g. 24h, 90m, 3600s).
    #[arg(long, env = "DEFAULT_WORKLOAD_CERT_TTL", default_value = "24h", value_parser = parse_ttl)]
    pub cert_ttl: Duration,

    /// Longest lifetime a caller may ask for.
    #[arg(long, env = "MAX_WORKLOAD_CERT_TTL", default_value = "90d", value_parser = parse_ttl)]
    pub max_cert_ttl: Duration,

    /// Longest a client of the xDS/CA port may take for its TLS handshake and the HTTP/2
    /// preface together; past it the connection is closed.
    #[arg(long, env = "ISTIOD_LITE_HANDSHAKE_TIMEOUT", default_value = "10s", value_parser = mesh_core::time_text::parse_timeout)]
    pub handshake_timeout: Duration,

    /// Log format: text or json.
    #[arg(long, env = "ISTIOD_LITE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    pub fn mesh(&self) -> MeshConfig {
        MeshConfig {
            trust_domain: self.trust_domain.clone(),
            root_namespace: self.root_namespace.clone(),
            cluster_id: self.cluster_id.clone(),
            domain_suffix: self.domain_suffix.clone(),
        }
    }

    pub fn tokens_file(&self) -> PathBuf {
        self.tokens_file
            .clone()
            .unwrap_or_else(|| self.state_dir.join("tokens.yaml"))
    }

    pub fn status_dir(&self) -> PathBuf {
        self.status_dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("status"))
    }

    /// --server-san split into DNS names and IP addresses.
    pub fn server_names(&self) -> (Vec<String>, Vec<IpAddr>) {
        let mut dns = Vec::new();
        let mut ips = Vec::new();
        for san in self
            .server_sans
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
        {
            match san.parse::<IpAddr>() {
                Ok(ip) => ips.push(ip),
                Err(_) => dns.push(san.to_string()),
            }
        }
        (dns, ips)
    }

    /// A configuration for tests: loopback, ephemeral ports, everything under `state_dir`. Not
    /// part of the API: only built for tests (feature `testing`, see `testing.rs`).
    #[cfg(any(test, feature = "testing"))]
    pub fn for_test(config_dir: PathBuf, state_dir: PathBuf) -> Config {
        let mut c = Config::parse_from(["istiod-lite"]);
        c.config_dir = config_dir;
        c.state_dir = state_dir;
        c.xds_addr = "127.0.0.1:0".parse().expect("literal address");
        c.monitoring_addr = "127.0.0.1:0".parse().expect("literal address");
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_documented_values() {
        let c = Config::parse_from(["istiod-lite"]);
        assert_eq!(c.xds_addr.port(), 15012);
        assert_eq!(c.monitoring_addr.port(), 15014);
        assert_eq!(c.cert_ttl, Duration::from_secs(86400));
        let (dns, ips) = c.server_names();
        assert!(dns.contains(&"istiod.istio-system.svc".to_string()));
        assert!(ips.contains(&"127.0.0.1".parse().unwrap()));
    }
}
