//! Fuzz target of mesh-cni's input: the network configuration on stdin, as a runtime hands it
//! over for CHECK (the command that only reads) and VERSION. It must answer with a CNI error or
//! a result, never panic. `MESH_FUZZ_ITERATIONS=10000000` for a long run.

use mesh_cni::{run, Invocation};
use mesh_test_support::fuzz;

#[test]
fn the_network_configuration_takes_any_bytes() {
    let run_dir = tempfile::tempdir().unwrap();
    let conf = format!(
        r#"{{"cniVersion": "1.0.0", "name": "mesh", "type": "mesh-cni", "run_dir": "{}",
  "prevResult": {{"cniVersion": "1.0.0", "interfaces": [{{"name": "eth0", "sandbox": "/run/netns/x"}}],
    "ips": [{{"address": "10.1.0.5/24", "interface": 0, "gateway": "10.1.0.1"}}]}}}}"#,
        run_dir.path().display()
    );
    let minimal = br#"{"cniVersion": "0.4.0", "name": "n", "type": "mesh-cni"}"#;
    let check = Invocation {
        command: "CHECK".into(),
        container_id: "fuzz".into(),
        netns: "/run/netns/mesh-cni-fuzz-none".into(),
        ifname: "eth0".into(),
        args: Default::default(),
    };
    let version = Invocation {
        command: "VERSION".into(),
        ..check.clone()
    };
    fuzz("mesh-cni stdin", &[conf.as_bytes(), minimal], |input| {
        let _ = run(&check, input);
        assert!(run(&version, input).is_ok());
    });
}
