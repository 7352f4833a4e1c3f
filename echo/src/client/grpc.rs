//! `mesh-echo grpc`: one unary `mesh.echo.v1.Echo/Echo` call through a tonic channel, so the
//! demo exercises a real gRPC stack rather than this crate's own framing.

use std::time::Duration;

use hyper::header::{HeaderName, HeaderValue};
use hyper::HeaderMap;
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataMap;
use tonic::transport::Endpoint;
use tonic_prost::ProstCodec;

use super::ClientError;
use crate::grpc::proto::{EchoRequest, EchoResponse, ECHO_PATH};

/// What to send.
#[derive(Debug, Clone)]
pub struct CallOptions {
    pub message: String,
    pub metadata: Vec<(HeaderName, HeaderValue)>,
    /// Limit on connecting, and separately on the call (sent as its deadline).
    pub timeout: Duration,
}

/// How a call that reached the server ended.
#[derive(Debug)]
pub enum CallOutcome {
    Response(EchoResponse),
    Status(tonic::Status),
}

/// Calls Echo on `addr` (`host:port`, or `http://host:port`).
pub async fn echo(addr: &str, options: &CallOptions) -> Result<CallOutcome, ClientError> {
    let (url, authority) = match addr.split_once("://") {
        Some(("http", rest)) => (addr.to_owned(), rest.trim_end_matches('/').to_owned()),
        Some(_) => {
            return Err(ClientError::Url {
                url: addr.to_owned(),
                reason: "only plain (http://) gRPC is supported".to_owned(),
            })
        }
        None => (format!("http://{addr}"), addr.to_owned()),
    };
    let endpoint = Endpoint::from_shared(url.clone())
        .map_err(|e| ClientError::Url {
            url,
            reason: e.to_string(),
        })?
        .connect_timeout(options.timeout)
        .timeout(options.timeout);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| ClientError::connection(&authority, &e))?;
    let mut client = tonic::client::Grpc::new(channel);
    client
        .ready()
        .await
        .map_err(|e| ClientError::connection(&authority, &e))?;

    let mut metadata = HeaderMap::new();
    for (name, value) in &options.metadata {
        metadata.append(name, value.clone());
    }
    let mut request = tonic::Request::new(EchoRequest {
        message: options.message.clone(),
    });
    *request.metadata_mut() = MetadataMap::from_headers(metadata);
    let codec = ProstCodec::<EchoRequest, EchoResponse>::default();
    let path = PathAndQuery::from_static(ECHO_PATH);
    Ok(match client.unary(request, path, codec).await {
        Ok(response) => CallOutcome::Response(response.into_inner()),
        Err(status) => CallOutcome::Status(status),
    })
}
