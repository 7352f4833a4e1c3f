//! Who is calling: every xDS and CA call carries `authorization: Bearer <token>`, and the token
//! names a caller. Without Kubernetes the tokens live in a YAML file the operator (or
//! `meshctl up`) writes; it is re-read when it changes, so tokens can be added without a
//! restart. A Kubernetes TokenReview authenticator can stand behind the same trait later.
//!
//! ```yaml
//! tokens:
//! - token: "…"          # a node's ztunnel: xDS, and certificates for pods on that node
//!   node: node1
//! - token: "…"          # a workload (e.g. a waypoint): its own identity only
//!   namespace: demo
//!   serviceAccount: waypoint
//! ```

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;
use tonic::metadata::MetadataMap;
use tonic::Status;

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    /// The ztunnel of a node.
    Node { node: String },
    /// A workload acting as itself.
    Workload {
        namespace: String,
        service_account: String,
    },
}

impl std::fmt::Display for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Caller::Node { node } => write!(f, "ztunnel of node {node}"),
            Caller::Workload {
                namespace,
                service_account,
            } => write!(f, "workload {namespace}/{service_account}"),
        }
    }
}

pub trait Authenticator: Send + Sync {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status>;
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenFile {
    #[serde(default)]
    tokens: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TokenEntry {
    token: String,
    #[serde(default)]
    node: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    service_account: Option<String>,
}

/// Tokens from a YAML file, reloaded when its modification time changes.
pub struct TokenFileAuthenticator {
    path: PathBuf,
    state: Mutex<(Option<SystemTime>, HashMap<String, Caller>)>,
}

impl TokenFileAuthenticator {
    pub fn new(path: PathBuf) -> Self {
        TokenFileAuthenticator {
            path,
            state: Mutex::new((None, HashMap::new())),
        }
    }

    fn load(&self) -> Result<HashMap<String, Caller>, String> {
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let file: TokenFile = mesh_core::cluster_dir::from_yaml(&text)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut map = HashMap::new();
        for (i, entry) in file.tokens.into_iter().enumerate() {
            let caller = match (entry.node, entry.namespace, entry.service_account) {
                (Some(node), None, None) if !node.is_empty() => Caller::Node { node },
                (None, Some(namespace), Some(service_account)) => Caller::Workload {
                    namespace,
                    service_account,
                },
                _ => {
                    return Err(format!(
                        "{}: tokens[{i}] needs either node, or namespace and serviceAccount",
                        self.path.display()
                    ))
                }
            };
            if entry.token.len() < 16 {
                return Err(format!(
                    "{}: tokens[{i}] is shorter than 16 characters",
                    self.path.display()
                ));
            }
            map.insert(entry.token, caller);
        }
        Ok(map)
    }

    fn lookup(&self, token: &str) -> Result<Option<Caller>, String> {
        let mtime = std::fs::metadata(&self.path)
            .and_then(|m| m.modified())
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.0 != Some(mtime) {
            match self.load() {
                Ok(map) => *state = (Some(mtime), map),
                Err(e) if state.0.is_some() => {
                    // Keep serving the last good token set.
                    tracing::warn!(error = %e, "cannot reload the token file; keeping the previous tokens");
                }
                Err(e) => return Err(e),
            }
        }
        // Compare every entry in full so timing does not reveal a prefix of a valid token.
        let mut found = None;
        for (known, caller) in state.1.iter() {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(caller.clone());
            }
        }
        Ok(found)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a call.
pub fn bearer_token(metadata: &MetadataMap) -> Result<&str, Status> {
    let value = metadata
        .get("authorization")
        .ok_or_else(|| Status::unauthenticated("missing authorization: Bearer <token> metadata"))?;
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
    value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Status::unauthenticated("authorization metadata must be 'Bearer <token>'"))
}

impl Authenticator for TokenFileAuthenticator {
    fn authenticate(&self, metadata: &MetadataMap) -> Result<Caller, Status> {
        let token = bearer_token(metadata)?;
        match self.lookup(token) {
            Ok(Some(caller)) => Ok(caller),
            Ok(None) => Err(Status::unauthenticated("unknown bearer token")),
            Err(e) => {
                tracing::error!(error = %e, "token file unusable; refusing every caller");
                Err(Status::unauthenticated(
                    "the control plane has no usable token file; see its log",
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn md(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    #[test]
    fn tokens_name_callers_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.yaml");
        std::fs::write(
            &path,
            "tokens:\n- token: node1-token-0123456789\n  node: node1\n- token: waypoint-token-0123456789\n  namespace: demo\n  serviceAccount: waypoint\n",
        )
        .unwrap();
        let auth = TokenFileAuthenticator::new(path.clone());
        assert_eq!(
            auth.authenticate(&md("node1-token-0123456789")).unwrap(),
            Caller::Node {
                node: "node1".into()
            }
        );
        assert_eq!(
            auth.authenticate(&md("waypoint-token-0123456789")).unwrap(),
            Caller::Workload {
                namespace: "demo".into(),
                service_account: "waypoint".into()
            }
        );
        let err = auth.authenticate(&md("nope-nope-nope-nope")).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            auth.authenticate(&MetadataMap::new()).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
        // A broken rewrite keeps the previous tokens.
        std::fs::write(&path, "tokens: [oops").unwrap();
        let f = std::fs::File::options().write(true).open(&path).unwrap();
        f.set_modified(SystemTime::now() + std::time::Duration::from_secs(5))
            .unwrap();
        assert!(auth.authenticate(&md("node1-token-0123456789")).is_ok());
    }

    #[test]
    fn a_missing_file_refuses_everyone() {
        let auth = TokenFileAuthenticator::new("/nonexistent/tokens.yaml".into());
        assert_eq!(
            auth.authenticate(&md("anything-at-all-123"))
                .unwrap_err()
                .code(),
            tonic::Code::Unauthenticated
        );
    }
}
