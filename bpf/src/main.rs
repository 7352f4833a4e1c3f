//! `loader`: enrols a pod netns in capture, removes it again, and shows its counters.
//!
//! ```text
//! loader attach --netns /run/netns/NAME --pin-dir /sys/fs/bpf/MESH/POD --pod-ip A.B.C.D [--fail-open]
//! loader detach --pin-dir /sys/fs/bpf/MESH/POD
//! loader stats  --pin-dir /sys/fs/bpf/MESH/POD
//! ```

use std::{net::Ipv4Addr, path::PathBuf, process::ExitCode};

use anyhow::{bail, Context, Result};
use mesh_bpf::{pod, PinDir, PodSpec, Stats};

const USAGE: &str = "usage:
  mesh-bpf attach --netns PATH --pin-dir DIR --pod-ip IPV4 [--fail-open]
  mesh-bpf detach --pin-dir DIR
  mesh-bpf stats  --pin-dir DIR";

enum Command {
    Attach(PodSpec),
    Detach(PinDir),
    Stats(PinDir),
}

fn main() -> ExitCode {
    match parse(std::env::args().skip(1)).and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mesh-bpf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Attach(spec) => {
            pod::attach(&spec).with_context(|| format!("attaching to {}", spec.netns.display()))?;
            println!(
                "attached netns={} pod_ip={} fail_closed={} pins={}",
                spec.netns.display(),
                spec.pod_ip,
                spec.fail_closed,
                spec.pin_dir.path().display()
            );
        }
        Command::Detach(pins) => {
            let removed = pod::detach(&pins)?;
            let what = if removed {
                "detached"
            } else {
                "nothing pinned at"
            };
            println!("{what} {}", pins.path().display());
        }
        Command::Stats(pins) => println!("{}", Stats::read(&pins)?),
    }
    Ok(())
}

fn parse(mut args: impl Iterator<Item = String>) -> Result<Command> {
    let Some(verb) = args.next() else {
        bail!("{USAGE}")
    };
    let (mut netns, mut pin_dir, mut pod_ip, mut fail_closed) = (None, None, None, true);
    while let Some(flag) = args.next() {
        let mut value = || args.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--netns" => netns = Some(PathBuf::from(value()?)),
            "--pin-dir" => pin_dir = Some(PinDir::new(value()?)),
            "--pod-ip" => {
                let v = value()?;
                pod_ip = Some(
                    v.parse::<Ipv4Addr>()
                        .with_context(|| format!("--pod-ip {v}"))?,
                );
            }
            "--fail-open" => fail_closed = false,
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let pin_dir = pin_dir.context("--pin-dir is required")?;
    Ok(match verb.as_str() {
        "attach" => Command::Attach(PodSpec {
            netns: netns.context("--netns is required")?,
            pin_dir,
            pod_ip: pod_ip.context("--pod-ip is required")?,
            fail_closed,
        }),
        "detach" => Command::Detach(pin_dir),
        "stats" => Command::Stats(pin_dir),
        other => bail!("unknown command {other}\n{USAGE}"),
    })
}
