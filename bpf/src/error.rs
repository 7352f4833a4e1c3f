//! The one error type of the capture library; every variant names what was being done.

use std::{io, path::PathBuf};

use aya::{maps::MapError, pin::PinError, programs::ProgramError, EbpfError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not on a bpffs mount (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },

    #[error("pod already attached: {path} exists (detach it first)")]
    AlreadyAttached { path: PathBuf },

    #[error("{context}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("loading the embedded BPF object")]
    Load(#[source] EbpfError),

    #[error("the embedded BPF object has no {kind} `{name}`")]
    MissingInObject {
        kind: &'static str,
        name: &'static str,
    },

    #[error("{context}")]
    Program {
        context: &'static str,
        #[source]
        source: ProgramError,
    },

    #[error("{context}")]
    Map {
        context: String,
        #[source]
        source: MapError,
    },

    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: PinError,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn map(context: impl Into<String>, source: MapError) -> Self {
        Self::Map {
            context: context.into(),
            source,
        }
    }
}
