//! `mesh-echo get`: GET requests over one reused connection, HTTP/1.1 or prior-knowledge h2c,
//! with a timeout on connecting and on each exchange. Plain `http://` only: inside the mesh,
//! TLS is the mesh's job, so an `https://` URL in a demo is a mistake worth pointing out.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper::header::{HeaderName, HeaderValue, HOST, USER_AGENT};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;
use tracing::debug;

use super::ClientError;

/// Where the requests go, checked once before any of them.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port` as dialed, and as named in errors.
    addr: String,
    /// The URL with an explicit path, as HTTP/2 requests carry it.
    uri: Uri,
    /// `host[:port]` as written in the URL, for the HTTP/1.1 Host header.
    host_header: HeaderValue,
}

impl Target {
    pub fn parse(url: &str) -> Result<Target, ClientError> {
        let invalid = |reason: &str| ClientError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(invalid("only http:// URLs are supported")),
            None => return Err(invalid("missing scheme; only http:// URLs are supported")),
        }
        let authority = uri
            .authority()
            .ok_or_else(|| invalid("missing host"))?
            .clone();
        if authority.as_str().contains('@') {
            return Err(invalid("credentials in URLs are not supported"));
        }
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let host_header = HeaderValue::from_str(authority.as_str())
            .map_err(|_| invalid("host is not a valid header value"))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let uri = Uri::builder()
            .scheme("http")
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| invalid(&format!("{e}")))?;
        Ok(Target {
            addr,
            uri,
            host_header,
        })
    }

    /// `host:port` as dialed.
    pub fn addr(&self) -> &str {
        &self.addr
    }
}

/// How to send the requests.
#[derive(Debug, Clone)]
pub struct GetOptions {
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// h2c with prior knowledge instead of HTTP/1.1.
    pub http2: bool,
    pub count: u32,
    /// Limit on connecting, and separately on each request/response exchange.
    pub timeout: Duration,
}

/// One response, read whole.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub version: Version,
    pub status: StatusCode,
    pub body: Bytes,
}

/// Sends `options.count` GETs to `target`, handing each response to `each` as it arrives, so
/// a long run shows progress. Stops at the first connection failure.
pub async fn get(
    target: &Target,
    options: &GetOptions,
    mut each: impl FnMut(Fetched),
) -> Result<(), ClientError> {
    let mut connection: Option<Sender> = None;
    for _ in 0..options.count {
        // Reuse the connection (keep-alive is part of what a demo shows) unless the server
        // closed it, as it may between requests.
        let sender = match connection.take() {
            Some(sender) if !sender.is_closed() => connection.insert(sender),
            _ => connection.insert(connect(target, options).await?),
        };
        let request = build_request(target, options)?;
        let exchange = async {
            let response = sender.send(request).await?;
            let (parts, body) = response.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>(Fetched {
                version: parts.version,
                status: parts.status,
                body,
            })
        };
        let fetched = tokio::time::timeout(options.timeout, exchange)
            .await
            .map_err(|_| ClientError::ResponseTimeout {
                addr: target.addr.clone(),
                after: options.timeout,
            })?
            .map_err(|e| ClientError::connection(&target.addr, &e))?;
        each(fetched);
    }
    Ok(())
}

fn build_request(
    target: &Target,
    options: &GetOptions,
) -> Result<Request<Empty<Bytes>>, ClientError> {
    let mut request = Request::new(Empty::new());
    if options.http2 {
        // HTTP/2 carries scheme and authority as pseudo-headers, taken from an absolute URI.
        *request.uri_mut() = target.uri.clone();
        *request.version_mut() = Version::HTTP_2;
    } else {
        let path = target.uri.path_and_query().map_or("/", |p| p.as_str());
        *request.uri_mut() = path.parse().map_err(|e| ClientError::Url {
            url: target.uri.to_string(),
            reason: format!("{e}"),
        })?;
        request
            .headers_mut()
            .insert(HOST, target.host_header.clone());
    }
    let headers = request.headers_mut();
    headers.insert(
        USER_AGENT,
        HeaderValue::from_static(concat!("mesh-echo/", env!("CARGO_PKG_VERSION"))),
    );
    // The first -H of a name replaces a default; later ones add values, as curl does.
    let mut replaced: Vec<&HeaderName> = Vec::new();
    for (name, value) in &options.headers {
        if replaced.contains(&name) {
            headers.append(name, value.clone());
        } else {
            headers.insert(name, value.clone());
            replaced.push(name);
        }
    }
    Ok(request)
}

/// A connection's request side, whichever protocol it speaks.
enum Sender {
    Http1(http1::SendRequest<Empty<Bytes>>),
    Http2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    async fn send(
        &mut self,
        request: Request<Empty<Bytes>>,
    ) -> Result<Response<hyper::body::Incoming>, hyper::Error> {
        match self {
            Sender::Http1(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
            Sender::Http2(sender) => {
                sender.ready().await?;
                sender.send_request(request).await
            }
        }
    }
}

async fn connect(target: &Target, options: &GetOptions) -> Result<Sender, ClientError> {
    let addr = &target.addr;
    let stream = tokio::time::timeout(options.timeout, dial(addr))
        .await
        .map_err(|_| ClientError::ConnectTimeout { addr: addr.clone() })??;
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%addr, error = %e, "setting TCP_NODELAY failed");
    }
    let io = TokioIo::new(stream);
    let handshake_failed = |e: hyper::Error| ClientError::connection(addr, &e);
    if options.http2 {
        let (sender, connection) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(handshake_failed)?;
        tokio::spawn(drive(connection, addr.clone()));
        Ok(Sender::Http2(sender))
    } else {
        let (sender, connection) = http1::handshake(io).await.map_err(handshake_failed)?;
        tokio::spawn(drive(connection, addr.clone()));
        Ok(Sender::Http1(sender))
    }
}

/// Runs a connection's I/O; its errors also fail the request in flight, which reports them.
async fn drive<C>(connection: C, addr: String)
where
    C: std::future::Future<Output = Result<(), hyper::Error>>,
{
    if let Err(e) = connection.await {
        debug!(%addr, error = %e, "connection ended with an error");
    }
}

/// Resolves `addr` and connects to the first address that accepts.
async fn dial(addr: &str) -> Result<TcpStream, ClientError> {
    let candidates: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| ClientError::Resolve {
            addr: addr.to_owned(),
            detail: e.to_string(),
        })?
        .collect();
    let mut last_error = None;
    for candidate in candidates {
        match TcpStream::connect(candidate).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last_error = Some(e),
        }
    }
    Err(match last_error {
        Some(e) => ClientError::connection(addr, &e),
        None => ClientError::Resolve {
            addr: addr.to_owned(),
            detail: "no addresses".to_owned(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let target = Target::parse("http://10.0.0.5:8080/a?b=c").expect("valid");
        assert_eq!(target.addr(), "10.0.0.5:8080");
        assert_eq!(target.uri, "http://10.0.0.5:8080/a?b=c");
        let target = Target::parse("http://echo").expect("valid");
        assert_eq!(target.addr(), "echo:80");
        assert_eq!(target.uri, "http://echo/");
        assert_eq!(target.host_header, "echo");
        let target = Target::parse("http://[::1]:9/").expect("valid");
        assert_eq!(target.addr(), "[::1]:9");
    }

    #[test]
    fn refuses_other_urls() {
        for url in [
            "https://a/",
            "10.0.0.5:8080",
            "ftp://a/",
            "http://u:p@a/",
            "/path",
        ] {
            assert!(
                matches!(Target::parse(url), Err(ClientError::Url { .. })),
                "{url}"
            );
        }
    }
}
