//! `mesh-echo`: `serve` runs the echo server, `get` and `grpc` are its clients; see `lib.rs`
//! for what each part does and `--help` for the flags.
//!
//! Exit codes of the clients: 0 when every answer was a success, 1 when an answer was not
//! (HTTP status outside 2xx, gRPC status not OK), 2 when the server could not be reached or the
//! arguments were wrong.

use std::io::{IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use hyper::header::{HeaderName, HeaderValue};
use mesh_core::time_text::parse_duration;
use mesh_echo::client::grpc::{CallOptions, CallOutcome};
use mesh_echo::client::http::{GetOptions, Target};
use mesh_echo::client::{self, ClientError};
use mesh_echo::Config;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "mesh-echo",
    version,
    about = "Echo server (HTTP/1.1, h2c and gRPC on one port) and its clients"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP/1.1, h2c and gRPC echo on one port.
    Serve(ServeArgs),
    /// GET a URL, printing each response's status line and body.
    Get(GetArgs),
    /// Make one mesh.echo.v1.Echo/Echo call, printing the response as JSON.
    Grpc(GrpcArgs),
    /// Forward TCP connections, plainly (the benchmark's floor for a two-hop proxy path).
    Relay(RelayArgs),
    /// Echo raw TCP: every byte back on the same connection, then FIN after the client's.
    TcpEcho(TcpEchoArgs),
}

#[derive(Args)]
struct TcpEchoArgs {
    /// TCP port to listen on.
    #[arg(long, default_value_t = 7000)]
    port: u16,
    /// Address to listen on.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    addr: IpAddr,
}

#[derive(Args)]
struct RelayArgs {
    /// LISTEN=TO, e.g. 127.0.0.1:18080=10.0.0.2:8080; repeatable. Each accepted connection is
    /// forwarded to TO by two blocking threads, one per direction.
    #[arg(long = "forward", required = true)]
    forwards: Vec<mesh_echo::relay::Forward>,
    /// event-loop: one epoll thread for every connection; threads: two blocking threads per
    /// connection.
    #[arg(long, value_enum, default_value_t = mesh_echo::relay::Mode::EventLoop)]
    mode: mesh_echo::relay::Mode,
}

#[derive(Args)]
struct ServeArgs {
    /// TCP port to listen on (0 picks a free one, logged at start).
    #[arg(long, env = "ECHO_PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "ECHO_ADDR", default_value_t = IpAddr::V4(Ipv4Addr::UNSPECIFIED))]
    addr: IpAddr,
    /// Service name reported in responses and the x-echo-service header.
    #[arg(long, env = "ECHO_NAME", default_value = "echo")]
    name: String,
    /// Service version reported in responses and the x-echo-service header.
    #[arg(long, env = "ECHO_VERSION", default_value = "v1")]
    version: String,
    /// Hostname to report instead of the kernel's (e.g. the pod name from the downward API).
    #[arg(long, env = "ECHO_HOSTNAME")]
    hostname: Option<String>,
    /// How long shutdown waits for in-flight requests.
    #[arg(long, env = "ECHO_DRAIN_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    drain_timeout: Duration,
}

#[derive(Args)]
struct GetArgs {
    /// http:// URL to GET.
    url: String,
    /// Extra request header, "name: value"; repeatable.
    #[arg(short = 'H', long = "header", value_parser = client::parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Speak HTTP/2 without TLS from the first byte (h2c prior knowledge).
    #[arg(long)]
    http2: bool,
    /// Number of requests, sent one after another on one connection.
    #[arg(long, short = 'n', default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    count: u32,
    /// Limit on connecting and on each request.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Args)]
struct GrpcArgs {
    /// Server address, host:port (or http://host:port).
    addr: String,
    /// Message to echo.
    #[arg(long, default_value = "hi")]
    message: String,
    /// Request metadata, "name: value"; repeatable.
    #[arg(short = 'H', long = "header", value_parser = client::parse_header)]
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Limit on connecting and on the call.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
}

/// The clients' exit codes (the server exits 0, or 1 when it cannot start).
const EXIT_NOT_OK: u8 = 1;
const EXIT_UNREACHABLE: u8 = 2;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => {
            init_logging("info", LogTo::Stdout);
            match serve(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-echo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Get(args) => {
            init_logging("warn", LogTo::Stderr);
            get(args).await
        }
        Command::Grpc(args) => {
            init_logging("warn", LogTo::Stderr);
            grpc(args).await
        }
        Command::TcpEcho(args) => {
            init_logging("info", LogTo::Stdout);
            match tcp_echo(args).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mesh-echo tcp-echo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Relay(args) => {
            init_logging("info", LogTo::Stdout);
            for f in &args.forwards {
                tracing::info!(listen = %f.listen, to = %f.to, "relaying");
            }
            // On a thread of its own: the relay runs its own event loop (or blocking threads),
            // outside this runtime's context.
            let (forwards, mode) = (args.forwards, args.mode);
            let relay = std::thread::spawn(move || mesh_echo::relay::run(&forwards, mode));
            match relay.join() {
                Ok(Ok(())) => ExitCode::SUCCESS,
                Ok(Err(e)) => {
                    eprintln!("mesh-echo relay: {e}");
                    ExitCode::FAILURE
                }
                Err(_) => {
                    eprintln!("mesh-echo relay: the relay thread panicked");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

enum LogTo {
    Stdout,
    Stderr,
}

/// `RUST_LOG` when set, else `default`. The clients log to stderr so stdout stays the answer.
fn init_logging(default: &str, to: LogTo) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    // Colour codes only for a person at a terminal, never in `kubectl logs` or a test's pipe.
    match to {
        LogTo::Stdout => builder.with_ansi(std::io::stdout().is_terminal()).init(),
        LogTo::Stderr => builder
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(std::io::stderr)
            .init(),
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let mut config = Config::new(args.name, args.version)?.with_drain_timeout(args.drain_timeout);
    if let Some(hostname) = args.hostname {
        config = config.with_hostname(hostname);
    }
    let requested = SocketAddr::new(args.addr, args.port);
    let listener = TcpListener::bind(requested)
        .await
        .with_context(|| format!("listening on {requested}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    // Installed before serving so a SIGTERM right after start is still a graceful exit.
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM received"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
        }
    };
    tracing::info!(
        addr = %local,
        service = config.label(),
        hostname = config.hostname(),
        "listening (HTTP/1.1, h2c, gRPC)"
    );
    mesh_echo::serve(listener, config, shutdown).await;
    tracing::info!("stopped");
    Ok(())
}

async fn tcp_echo(args: TcpEchoArgs) -> anyhow::Result<()> {
    let requested = SocketAddr::new(args.addr, args.port);
    let listener = TcpListener::bind(requested)
        .await
        .with_context(|| format!("listening on {requested}"))?;
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    tracing::info!(addr = %requested, "listening (raw TCP echo)");
    mesh_echo::tcp_echo::serve(listener, async move {
        terminate.recv().await;
    })
    .await;
    Ok(())
}

async fn get(args: GetArgs) -> ExitCode {
    let target = match Target::parse(&args.url) {
        Ok(target) => target,
        Err(e) => return client_failed(&e),
    };
    let options = GetOptions {
        headers: args.headers,
        http2: args.http2,
        count: args.count,
        timeout: args.timeout,
    };
    let mut all_ok = true;
    let result = mesh_echo::client::http::get(&target, &options, |fetched| {
        all_ok &= fetched.status.is_success();
        let mut out = std::io::stdout().lock();
        let reason = fetched.status.canonical_reason().unwrap_or("");
        let mut text = format!(
            "{} {} {reason}\n",
            mesh_echo::http::protocol(fetched.version),
            fetched.status.as_u16()
        )
        .into_bytes();
        text.extend_from_slice(&fetched.body);
        if !fetched.body.ends_with(b"\n") {
            text.push(b'\n');
        }
        // A closed stdout (`| head`) is no reason to fail the requests; ignore write errors.
        let _ = out.write_all(&text);
        let _ = out.flush();
    })
    .await;
    match result {
        Err(e) => client_failed(&e),
        Ok(()) if all_ok => ExitCode::SUCCESS,
        Ok(()) => ExitCode::from(EXIT_NOT_OK),
    }
}

async fn grpc(args: GrpcArgs) -> ExitCode {
    let options = CallOptions {
        message: args.message,
        metadata: args.headers,
        timeout: args.timeout,
    };
    match mesh_echo::client::grpc::echo(&args.addr, &options).await {
        Err(e) => client_failed(&e),
        Ok(CallOutcome::Response(response)) => match serde_json::to_string_pretty(&response) {
            Ok(json) => {
                println!("{json}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("mesh-echo: formatting the response: {e}");
                ExitCode::from(EXIT_NOT_OK)
            }
        },
        Ok(CallOutcome::Status(status)) => {
            println!(
                "grpc-status {} ({:?}): {}",
                status.code() as i32,
                status.code(),
                status.message()
            );
            ExitCode::from(EXIT_NOT_OK)
        }
    }
}

fn client_failed(error: &ClientError) -> ExitCode {
    eprintln!("mesh-echo: {error}");
    ExitCode::from(EXIT_UNREACHABLE)
}
