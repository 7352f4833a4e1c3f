//! `mesh-cni`: reads the network configuration on stdin and the `CNI_*` environment, prints
//! the result (or the spec's error object) on stdout. See the library for what it does.

use std::io::Read;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut stdin = Vec::new();
    let inv = mesh_cni::Invocation::from_env();
    if inv.command != "VERSION" {
        if let Err(e) = std::io::stdin().read_to_end(&mut stdin) {
            eprintln!("mesh-cni: reading stdin: {e}");
            return ExitCode::FAILURE;
        }
    }
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v.get("cniVersion")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".into());
    match mesh_cni::run(&inv, &stdin) {
        Ok(Some(out)) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(e) => {
            println!("{}", e.to_json(&version));
            eprintln!("mesh-cni: {}: {}", e.msg, e.details);
            ExitCode::FAILURE
        }
    }
}
