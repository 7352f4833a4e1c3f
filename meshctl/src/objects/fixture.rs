//! Test fixture: an [`Api`] over a temporary cluster directory, and `apply -f` on text.

use super::Api;

pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    pub api: Api,
}

pub(crate) fn cluster() -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = Api::new(dir.path().join("config"), dir.path().join("status"));
    Cluster { dir, api }
}

/// Runs `apply -f` on one file holding `text`; returns (ok, stdout, stderr).
pub(crate) fn apply(c: &Cluster, text: &str) -> (bool, String, String) {
    let file = c.dir.path().join("input.yaml");
    std::fs::write(&file, text).expect("write input");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let ok = c
        .api
        .apply(
            &[file.display().to_string()],
            None,
            false,
            &mut out,
            &mut err,
        )
        .expect("apply");
    (ok, utf8(out), utf8(err))
}

pub(crate) fn utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).expect("utf-8 output")
}
