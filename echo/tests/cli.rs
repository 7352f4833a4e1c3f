//! The `mesh-echo` binary as a demo runs it: `get` and `grpc` as child processes against a
//! served port (their output and exit codes), and `serve` draining a delayed request and
//! exiting cleanly on SIGTERM, and logging requests whose clients gave up.

mod harness;

use std::process::{Output, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdout, Command};

const BIN: &str = env!("CARGO_BIN_EXE_mesh-echo");

async fn run(args: &[&str]) -> Output {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(BIN).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("mesh-echo finished in time")
    .expect("mesh-echo ran");
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn get_prints_each_response_and_exits_zero() {
    let addr = harness::start().await;
    let url = format!("http://{addr}/hello");
    let output = run(&["get", &url, "--count", "2", "-H", "x-demo: cli"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let out = stdout(&output);
    assert_eq!(out.matches("HTTP/1.1 200 OK\n").count(), 2, "{out}");
    assert!(out.contains("\"x-demo\":\"cli\""), "{out}");
    assert!(out.contains("\"path\":\"/hello\""), "{out}");

    let output = run(&["get", &url, "--http2"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).starts_with("HTTP/2.0 200 OK\n"));
}

#[tokio::test]
async fn get_exits_one_on_a_non_2xx_answer() {
    let addr = harness::start().await;
    let output = run(&["get", &format!("http://{addr}/?status=503")]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).starts_with("HTTP/1.1 503 Service Unavailable\n"));

    let output = run(&["get", &format!("http://{addr}/?delay=bad")]).await;
    assert_eq!(output.status.code(), Some(1));
    assert!(stdout(&output).contains("query parameter delay \"bad\" is invalid"));
}

#[tokio::test]
async fn get_exits_two_naming_the_address_it_could_not_reach() {
    // A port that was just free: bound, then released.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    drop(listener);
    let output = run(&["get", &format!("http://{addr}/")]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!("connection to {addr} refused")),
        "{}",
        stderr(&output)
    );

    let output = run(&["get", "https://127.0.0.1/"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("only http:// URLs are supported"));
}

#[tokio::test]
async fn get_reports_a_reset_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    // Accept, read the request, then abort the connection with a RST.
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.readable().await;
            let _ = stream.set_zero_linger();
            drop(stream);
        }
    });
    let output = run(&["get", &format!("http://{addr}/")]).await;
    assert_eq!(output.status.code(), Some(2));
    // Whether the client sees the RST on its read or only a closed connection (the RST raced
    // its write) is the kernel's timing; both name the address and say no answer came.
    let err = stderr(&output);
    assert!(
        err.contains(&format!("connection to {addr} reset"))
            || err.contains(&format!(
                "connection to {addr} closed before a response arrived"
            )),
        "{err}"
    );
}

#[tokio::test]
async fn grpc_prints_json_or_the_status() {
    let addr = harness::start().await;
    let addr = addr.to_string();
    let output = run(&["grpc", &addr, "--message", "from cli", "-H", "x-demo:1"]).await;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let echo: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    assert_eq!(echo["message"], "from cli");
    assert_eq!(echo["service"], "echo");
    assert_eq!(echo["metadata"]["x-demo"], "1");
    assert!(echo["peer"]
        .as_str()
        .is_some_and(|p| p.starts_with("127.0.0.1:")));

    let output = run(&["grpc", &addr, "-H", "x-echo-grpc-status: 14"]).await;
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        stdout(&output),
        "grpc-status 14 (Unavailable): status 14 injected by echo-v1\n"
    );
}

/// `mesh-echo serve` as a child process on an ephemeral port, with its log readable.
struct ServeProcess {
    child: Child,
    log: Lines<BufReader<ChildStdout>>,
    addr: String,
}

impl ServeProcess {
    async fn start(name: &str) -> ServeProcess {
        let mut child = Command::new(BIN)
            .args(["serve", "--addr", "127.0.0.1", "--port", "0"])
            .env("ECHO_NAME", name)
            // Debug for this crate: the line saying a delayed request is being held.
            .env("RUST_LOG", "info,mesh_echo=debug")
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the server");
        let log = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let mut server = ServeProcess {
            child,
            log,
            addr: String::new(),
        };
        // The port is known once the server logs it, after binding: that is readiness.
        let line = server.wait_for("listening").await;
        server.addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("the listening line names the address")
            .to_owned();
        server
    }

    /// The next log line that contains `needle`.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let line = tokio::time::timeout_at(deadline, self.log.next_line())
                .await
                .unwrap_or_else(|_| panic!("no log line with {needle:?} in time"))
                .expect("reading the log")
                .expect("the server still running");
            if line.contains(needle) {
                return line;
            }
        }
    }
}

#[tokio::test]
async fn serve_drains_a_delayed_request_on_sigterm() {
    let mut server = ServeProcess::start("drain").await;
    let url = format!("http://{}/?delay=300ms", server.addr);
    let client = tokio::spawn(async move { run(&["get", &url]).await });
    // Once the server says it is holding the request, SIGTERM lands mid-request.
    server.wait_for("delaying the response").await;
    let pid = server.child.id().expect("server pid").to_string();
    let kill = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("kill ran");
    assert!(kill.success());

    let output = client.await.expect("client task");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("\"service\":\"drain\""));
    let status = tokio::time::timeout(Duration::from_secs(10), server.child.wait())
        .await
        .expect("server exits after draining")
        .expect("server status");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn a_request_the_client_abandons_is_still_logged() {
    let mut server = ServeProcess::start("abandon").await;
    let url = format!("http://{}/slow?delay=5s", server.addr);
    let output = run(&["get", &url, "--timeout", "100ms"]).await;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains(&format!("no response from {} within 100ms", server.addr)),
        "{}",
        stderr(&output)
    );
    let line = server.wait_for("abandoned").await;
    assert!(line.contains("path=/slow"), "{line}");
}
