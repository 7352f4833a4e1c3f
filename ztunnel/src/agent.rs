//! ztunnel's end of the node protocol (`mesh_core::node`): a unix socket the CNI plugin sends
//! one JSON request per connection to. Requests are applied on the blocking pool (they enter
//! network namespaces and touch bpffs) and answered with where the pod stands.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::node::{valid_container_id, Reply, Request};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::pods::{netns_exists, Pods};

/// A request line longer than this is refused.
const MAX_REQUEST: usize = 64 * 1024;

/// Binds the socket (replacing a stale one left by an earlier run), readable by root only.
pub fn bind(pods: &Pods) -> std::io::Result<UnixListener> {
    let path = pods.paths().socket();
    std::fs::create_dir_all(&pods.paths().run_dir)?;
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

pub async fn serve(listener: UnixListener, pods: Arc<Pods>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let pods = pods.clone();
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, pods).await {
                        tracing::warn!(error = %e, "node agent request failed");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "node agent socket accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, pods: Arc<Pods>) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let n = tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(read.take(MAX_REQUEST as u64)).read_line(&mut line),
    )
    .await
    .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request within 5s"))??;
    let reply = if n == 0 || !line.ends_with('\n') {
        refuse("the request must be one JSON line of at most 64 KiB")
    } else {
        match serde_json::from_str::<Request>(&line) {
            Err(e) => refuse(format!("not a node request: {e}")),
            Ok(request) => tokio::task::spawn_blocking(move || apply(&pods, request))
                .await
                .unwrap_or_else(|e| refuse(format!("internal error: {e}"))),
        }
    };
    let mut out = serde_json::to_vec(&reply).unwrap_or_default();
    out.push(b'\n');
    write.write_all(&out).await
}

fn refuse(error: impl Into<String>) -> Reply {
    let error = error.into();
    tracing::warn!(%error, "node agent request refused");
    Reply {
        ok: false,
        error: Some(error),
    }
}

fn apply(pods: &Pods, request: Request) -> Reply {
    match request {
        Request::Add(record) => {
            if !valid_container_id(&record.container_id) {
                return refuse(format!("invalid container id {:?}", record.container_id));
            }
            if !netns_exists(&record.netns) {
                return refuse(format!(
                    "netns {} of {}/{} cannot be opened",
                    record.netns.display(),
                    record.namespace,
                    record.name
                ));
            }
            let pod = format!("{}/{}", record.namespace, record.name);
            let state = pods.add(record);
            tracing::info!(%pod, ?state, "pod added by the CNI plugin");
            Reply {
                ok: true,
                error: None,
            }
        }
        Request::Del { container_id } => {
            let known = pods.del(&container_id);
            tracing::info!(container = %container_id, known, "pod deleted by the CNI plugin");
            Reply {
                ok: true,
                error: None,
            }
        }
    }
}
