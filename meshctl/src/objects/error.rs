//! Why the cluster refused a request, and how kubectl would prefix it.

use mesh_core::cluster_dir::ClusterDirError;

/// Why the cluster refused a request. The messages are the API server's where it has one.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{resource} {name:?} not found")]
    NotFound { resource: String, name: String },
    #[error("{resource} {name:?} already exists")]
    AlreadyExists { resource: String, name: String },
    #[error("namespaces {0:?} not found; create it first: meshctl create ns {0}, or apply a Namespace document before this object")]
    NamespaceNotFound(String),
    #[error("{0}")]
    Forbidden(String),
    /// A kind this cluster does not store; the message says which it does.
    #[error("{0}")]
    UnknownKind(String),
    /// What istiod-lite (or the API server) would refuse, with its reason.
    #[error("{0}")]
    Invalid(String),
    #[error("cannot read {path}: {reason}; fix or remove that file")]
    Unreadable { path: String, reason: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] ClusterDirError),
}

impl ApiError {
    /// kubectl's prefix for errors the API server returns: `Error from server (NotFound): `.
    pub fn kubectl_prefix(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NamespaceNotFound(_) => {
                "Error from server (NotFound): "
            }
            ApiError::AlreadyExists { .. } => "Error from server (AlreadyExists): ",
            ApiError::Forbidden(_) => "Error from server (Forbidden): ",
            _ => "error: ",
        }
    }
}
