//! How a proxy reaches its control plane (istiod-lite, or Istio's istiod) for xDS and for
//! certificates: one gRPC channel over TLS, verified against the mesh's root, with the caller's
//! bearer token on every request. ztunnel and the waypoint both start here.

use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Where the control plane is and how to prove who we are to it.
#[derive(Clone, Debug)]
pub struct ControlPlane {
    /// `https://host:port`.
    pub address: String,
    /// Name the control plane's certificate must carry (see [`ControlPlane::host_of`]).
    pub server_name: String,
    /// PEM roots the control plane's certificate must chain to.
    pub root_pem: String,
    /// Bearer token naming the caller (a node, or a workload).
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error("{0:?} is not a URL like https://istiod:15012")]
    Address(String),
    #[error("connecting to {address}: {source}")]
    Connect {
        address: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("the token is not valid header text")]
    Token,
}

impl ControlPlane {
    /// The host part of a URL (`https://host:port/...`, IPv6 in brackets): the name the
    /// control plane's certificate is checked against unless told otherwise.
    pub fn host_of(address: &str) -> String {
        let rest = address.split_once("://").map_or(address, |(_, r)| r);
        let host_port = rest.split('/').next().unwrap_or(rest);
        match host_port.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or(v6).to_string(),
            None => host_port
                .rsplit_once(':')
                .map_or(host_port, |(h, _)| h)
                .to_string(),
        }
    }

    /// A connected channel. Keep-alives notice a control plane that vanished without closing
    /// the connection, so a stream waiting for pushes fails and reconnects.
    pub async fn connect(&self) -> Result<Channel, ControlPlaneError> {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.root_pem))
            .domain_name(self.server_name.clone());
        let connect_err = |source| ControlPlaneError::Connect {
            address: self.address.clone(),
            source,
        };
        Channel::from_shared(self.address.clone())
            .map_err(|_| ControlPlaneError::Address(self.address.clone()))?
            .tls_config(tls)
            .map_err(connect_err)?
            .connect_timeout(Duration::from_secs(5))
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(connect_err)
    }

    /// `message` as a request carrying our bearer token.
    pub fn request<T>(&self, message: T) -> Result<tonic::Request<T>, ControlPlaneError> {
        let mut request = tonic::Request::new(message);
        let auth = format!("Bearer {}", self.token)
            .parse()
            .map_err(|_| ControlPlaneError::Token)?;
        request.metadata_mut().insert("authorization", auth);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_name_defaults_to_the_host_of_the_address() {
        let host = ControlPlane::host_of;
        assert_eq!(
            host("https://istiod.istio-system.svc:15012"),
            "istiod.istio-system.svc"
        );
        assert_eq!(host("https://[fd00::1]:15012"), "fd00::1");
        assert_eq!(host("https://10.0.0.1:15012/"), "10.0.0.1");
        assert_eq!(host("istiod"), "istiod");
    }

    #[test]
    fn a_token_that_is_not_header_text_is_refused() {
        let cp = ControlPlane {
            address: "https://x:1".into(),
            server_name: "x".into(),
            root_pem: String::new(),
            token: "bad\ntoken".into(),
        };
        assert!(matches!(cp.request(()), Err(ControlPlaneError::Token)));
        let ok = ControlPlane {
            token: "abc".into(),
            ..cp
        };
        let req = ok.request(()).unwrap();
        assert_eq!(req.metadata().get("authorization").unwrap(), "Bearer abc");
    }
}
