//! What a running echo server says about itself (name, version, host) and how it shuts down;
//! built once from flags or by a test, then shared read-only by every connection.

use std::time::Duration;

use hyper::header::HeaderValue;

/// The response header naming the answering server, `NAME-VERSION`, so a client (or a test
/// through the mesh) can tell which backend answered without parsing the body.
pub const SERVICE_HEADER: &str = "x-echo-service";

/// How long shutdown waits by default for in-flight requests before dropping connections.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct Config {
    name: String,
    version: String,
    hostname: String,
    drain_timeout: Duration,
    /// `NAME-VERSION`, as logged and sent in [`SERVICE_HEADER`].
    label: String,
    /// The label as a header value, checked once here so no request can fail building it.
    service_header: HeaderValue,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("service name and version {0:?} do not make a valid x-echo-service header value")]
    Header(String),
}

impl Config {
    /// A server named `name` at `version`, reporting the host's name as read from the kernel.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Result<Config, ConfigError> {
        let name = name.into();
        let version = version.into();
        let label = format!("{name}-{version}");
        let service_header =
            HeaderValue::from_str(&label).map_err(|_| ConfigError::Header(label.clone()))?;
        Ok(Config {
            name,
            version,
            hostname: local_hostname(),
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            label,
            service_header,
        })
    }

    /// Replaces the reported hostname (tests, or a pod that wants its pod name shown).
    pub fn with_hostname(mut self, hostname: impl Into<String>) -> Config {
        self.hostname = hostname.into();
        self
    }

    pub fn with_drain_timeout(mut self, drain_timeout: Duration) -> Config {
        self.drain_timeout = drain_timeout;
        self
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    pub fn drain_timeout(&self) -> Duration {
        self.drain_timeout
    }

    /// `NAME-VERSION`.
    pub fn label(&self) -> &str {
        &self.label
    }

    pub fn service_header(&self) -> &HeaderValue {
        &self.service_header
    }
}

/// The UTS hostname. Read from procfs rather than gethostname(2) to keep this crate free of
/// unsafe code; in a pod it is the pod name, which is what the demo wants to show.
fn local_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|name| !name.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_header_joins_name_and_version() {
        let config = Config::new("reviews", "v2").expect("valid names");
        assert_eq!(config.service_header(), "reviews-v2");
        assert_eq!(config.label(), "reviews-v2");
        assert!(!config.hostname().is_empty());
    }

    #[test]
    fn rejects_names_that_cannot_be_a_header() {
        assert!(matches!(
            Config::new("bad\nname", "v1"),
            Err(ConfigError::Header(_))
        ));
    }
}
