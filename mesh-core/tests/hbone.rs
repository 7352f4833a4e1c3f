//! HBONE over real sockets on loopback: mutual TLS with SPIFFE identities, CONNECT tunnels,
//! refusals, and what a wrong or foreign identity gets.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, StatusCode};
use mesh_core::hbone::{self, Connection, Ended, HboneError, ServerLimits};
use mesh_core::identity::Identity;
use mesh_core::mtls::WorkloadCertificate;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose, SanType,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;

struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

impl TestCa {
    fn new() -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).unwrap();
        TestCa {
            root_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn issue(&self, id: &str) -> WorkloadCertificate {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.subject_alt_names = vec![SanType::URI(id.to_string().try_into().unwrap())];
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        WorkloadCertificate::from_pem(
            &[cert.pem(), self.root_pem.clone()],
            &key.serialize_pem(),
            &id.parse().unwrap(),
        )
        .unwrap()
    }
}

const A: &str = "spiffe://cluster.local/ns/demo/sa/client";
const B: &str = "spiffe://cluster.local/ns/demo/sa/server";

/// An upstream that echoes everything until EOF.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// An HBONE server as `cert`, reporting (peer identity, authority) of each stream. Authorities
/// on port 9999 are refused with 401; upstreams that do not answer give 503.
async fn hbone_server(
    cert: &WorkloadCertificate,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(Option<Identity>, String)>,
) {
    let (addr, seen, _ended) = hbone_server_with(cert, ServerLimits::default()).await;
    (addr, seen)
}

/// How each connection served by [`hbone_server_with`] ended.
type Endings = mpsc::UnboundedReceiver<Result<Ended, String>>;

/// [`hbone_server`] with `limits`, also reporting how each connection ended.
async fn hbone_server_with(
    cert: &WorkloadCertificate,
    limits: ServerLimits,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<(Option<Identity>, String)>,
    Endings,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(cert.server_config().unwrap()));
    let (tx, rx) = mpsc::unbounded_channel();
    let (ended_tx, ended_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let (tx, ended_tx) = (tx.clone(), ended_tx.clone());
            tokio::spawn(async move {
                let ended =
                    hbone::serve(tcp, &acceptor, limits, move |req: hbone::ConnectRequest| {
                        let _ = tx.send((req.peer.clone(), req.authority.clone()));
                        async move {
                            let target: SocketAddr =
                                req.authority.parse().map_err(|_| StatusCode::BAD_REQUEST)?;
                            if target.port() == 9999 {
                                return Err(StatusCode::UNAUTHORIZED);
                            }
                            TcpStream::connect(target)
                                .await
                                .map_err(|_| StatusCode::SERVICE_UNAVAILABLE)
                        }
                    })
                    .await;
                let _ = ended_tx.send(ended.map_err(|e| e.to_string()));
            });
        }
    });
    (addr, rx, ended_rx)
}

async fn client(
    cert: &WorkloadCertificate,
    server: SocketAddr,
    expect: &str,
) -> Result<Connection, HboneError> {
    let config = Arc::new(cert.client_config(vec![expect.parse().unwrap()]).unwrap());
    let tls = hbone::connect_tls(server, config).await?;
    Connection::open(tls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tunnel_carries_bytes_both_ways_and_the_server_sees_the_client_identity() {
    let ca = TestCa::new();
    let (server, mut seen) = hbone_server(&ca.issue(B)).await;
    let echo = echo_server().await;
    let conn = client(&ca.issue(A), server, B).await.unwrap();

    let mut tunnel = conn
        .connect(&echo.to_string(), HeaderMap::new())
        .await
        .unwrap();
    // More than the 4 MiB stream window, so flow control has to work both ways.
    let payload: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut tunnel);
    let sent = payload.clone();
    let writer = async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let (_, back) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the echo must complete");
    assert_eq!(back.len(), payload.len());
    assert!(back == payload, "echoed bytes differ");

    let (peer, authority) = seen.recv().await.unwrap();
    assert_eq!(peer, Some(A.parse().unwrap()));
    assert_eq!(authority, echo.to_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn splice_carries_a_connection_through_a_tunnel_and_passes_half_closes() {
    let ca = TestCa::new();
    let (server, _seen) = hbone_server(&ca.issue(B)).await;
    let echo = echo_server().await;
    let conn = client(&ca.issue(A), server, B).await.unwrap();
    let tunnel = conn
        .connect(&echo.to_string(), HeaderMap::new())
        .await
        .unwrap();
    // The app's connection, as ztunnel's outbound side holds it.
    let (mut app, mut proxied) = tokio::io::duplex(64 << 10);
    let splice = tokio::spawn(async move { tunnel.splice(&mut proxied).await });
    let payload: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    let (mut r, mut w) = tokio::io::split(&mut app);
    let sent = payload.clone();
    let writer = async move {
        w.write_all(&sent).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let reader = async move {
        let mut back = Vec::new();
        r.read_to_end(&mut back).await.unwrap();
        back
    };
    let (_, back) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::join!(writer, reader)
    })
    .await
    .expect("the echo must complete");
    assert!(
        back == payload,
        "echoed bytes differ ({} of {})",
        back.len(),
        payload.len()
    );
    let (up, down) = splice.await.unwrap().expect("splice ends cleanly");
    assert_eq!((up, down), (payload.len() as u64, payload.len() as u64));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tunnels_share_one_connection() {
    let ca = TestCa::new();
    let (server, _seen) = hbone_server(&ca.issue(B)).await;
    let echo = echo_server().await;
    let conn = client(&ca.issue(A), server, B).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20u8 {
        let conn = conn.clone();
        tasks.push(tokio::spawn(async move {
            let mut t = conn
                .connect(&echo.to_string(), HeaderMap::new())
                .await
                .unwrap();
            let msg = vec![i; 1000];
            t.write_all(&msg).await.unwrap();
            t.shutdown().await.unwrap();
            let mut back = Vec::new();
            t.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg);
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_carry_their_status() {
    let ca = TestCa::new();
    let (server, _seen) = hbone_server(&ca.issue(B)).await;
    let conn = client(&ca.issue(A), server, B).await.unwrap();
    match conn.connect("127.0.0.1:9999", HeaderMap::new()).await {
        Err(HboneError::Status(s)) => assert_eq!(s, StatusCode::UNAUTHORIZED),
        other => panic!("expected 401, got {:?}", other.map(|_| ())),
    }
    // A port nothing listens on: the server cannot open the upstream.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    match conn.connect(&closed.to_string(), HeaderMap::new()).await {
        Err(HboneError::Status(s)) => assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE),
        other => panic!("expected 503, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_with_an_unexpected_identity_is_refused() {
    let ca = TestCa::new();
    let (server, _seen) = hbone_server(&ca.issue(B)).await;
    let other = "spiffe://cluster.local/ns/demo/sa/someone-else";
    let err = client(&ca.issue(A), server, other)
        .await
        .err()
        .expect("must fail");
    assert!(matches!(err, HboneError::Tls(..)), "{err}");
    assert!(err.to_string().contains("none of the expected"), "{err}");
}

/// The client side of a handshake the server refuses may only notice at the first use.
async fn refused(ca_for_client: &TestCa, client_id: &str, server: SocketAddr) -> bool {
    let Ok(conn) = client(&ca_for_client.issue(client_id), server, B).await else {
        return true;
    };
    let echo = echo_server().await;
    conn.connect(&echo.to_string(), HeaderMap::new())
        .await
        .is_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_from_other_roots_or_trust_domains_are_refused() {
    let ca = TestCa::new();
    let (server, mut seen) = hbone_server(&ca.issue(B)).await;
    // Signed by a CA the server does not trust.
    assert!(refused(&TestCa::new(), A, server).await);
    // Signed by the right CA, but in another trust domain.
    assert!(refused(&ca, "spiffe://evil.example/ns/demo/sa/client", server).await);
    assert!(seen.try_recv().is_err(), "no stream may reach the handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pool_carries_many_tunnels_on_one_connection_until_forgotten() {
    let ca = TestCa::new();
    let server_cert = ca.issue(B);
    let client_cert = ca.issue(A);
    let echo = echo_server().await;
    let (server, _seen) = hbone_server(&server_cert).await;
    let pool: hbone::Pool<&'static str> = hbone::Pool::default();
    let dials = std::sync::atomic::AtomicUsize::new(0);
    let dial = || async {
        dials.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        client(&client_cert, server, B).await
    };
    let mut dialled = Vec::new();
    for _ in 0..5 {
        let (mut t, new) = pool
            .connect(&"key", &echo.to_string(), HeaderMap::new(), dial)
            .await
            .unwrap();
        dialled.push(new);
        t.write_all(b"x").await.unwrap();
        t.shutdown().await.unwrap();
        let mut back = Vec::new();
        t.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"x");
    }
    assert_eq!(dialled, vec![true, false, false, false, false]);
    assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 1);
    // A refusal does not throw the connection away.
    assert!(matches!(
        pool.connect(&"key", "127.0.0.1:9999", HeaderMap::new(), dial)
            .await,
        Err(HboneError::Status(StatusCode::UNAUTHORIZED))
    ));
    assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 1);
    // Forgotten: the next tunnel dials again.
    pool.forget(&"key");
    let (_t, new) = pool
        .connect(&"key", &echo.to_string(), HeaderMap::new(), dial)
        .await
        .unwrap();
    assert!(new);
    assert_eq!(dials.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// Limits short enough for a test to see them act.
const SHORT: ServerLimits = ServerLimits {
    handshake: Duration::from_millis(300),
    idle: Duration::from_millis(300),
};

/// Reads until the server closes the connection (EOF or reset); panics if it is still open
/// after `within`.
async fn closed_by_server(tcp: &mut TcpStream, within: Duration) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the server closed the connection in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_hello_is_closed_after_the_handshake_bound() {
    let ca = TestCa::new();
    let (server, _seen, mut ended) = hbone_server_with(&ca.issue(B), SHORT).await;
    let mut silent = TcpStream::connect(server).await.unwrap();
    closed_by_server(&mut silent, Duration::from_secs(5)).await;
    let err = ended.recv().await.unwrap().unwrap_err();
    assert!(
        err.contains("did not finish the TLS and HTTP/2 handshakes"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_hello_sent_a_byte_at_a_time_is_cut_at_the_same_bound() {
    let ca = TestCa::new();
    let (server, _seen, mut ended) = hbone_server_with(&ca.issue(B), SHORT).await;
    let mut slow = TcpStream::connect(server).await.unwrap();
    // The start of a TLS record carrying a ClientHello, one byte every 50 ms.
    let started = std::time::Instant::now();
    for byte in [
        0x16u8, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0,
    ] {
        if slow.write_all(&[byte]).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    closed_by_server(&mut slow, Duration::from_secs(5)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let err = ended.recv().await.unwrap().unwrap_err();
    assert!(err.contains("did not finish"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mtls_connection_without_streams_is_closed_when_idle_and_a_busy_one_is_not() {
    let ca = TestCa::new();
    let (server, _seen, mut ended) = hbone_server_with(&ca.issue(B), SHORT).await;
    let echo = echo_server().await;

    // A connection that carries a tunnel for longer than the idle bound stays up.
    let busy = client(&ca.issue(A), server, B).await.unwrap();
    let mut tunnel = busy
        .connect(&echo.to_string(), HeaderMap::new())
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tunnel.write_all(b"ping").await.unwrap();
        let mut back = [0u8; 4];
        tunnel.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"ping");
    }
    // One that carries nothing is closed by the server, and says why.
    let _idle = client(&ca.issue(A), server, B).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), ended.recv())
        .await
        .expect("the idle connection ends")
        .unwrap();
    assert_eq!(first, Ok(Ended::Idle));
    // The busy one is still usable: its tunnel goes on.
    tunnel.write_all(b"pong").await.unwrap();
    let mut back = [0u8; 4];
    tunnel.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"pong");
}
