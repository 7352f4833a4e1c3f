//! `ztunnel`: see `app.rs` for what it does and `--help` for how to run it.

use clap::Parser;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

fn main() -> std::process::ExitCode {
    let config = ztunnel::app::Config::parse();
    let runtime = if config.worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(config.worker_threads.into())
            .enable_all()
            .build()
    };
    match runtime {
        Ok(rt) => rt.block_on(run(config)),
        Err(e) => {
            eprintln!("ztunnel: starting the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: ztunnel::app::Config) -> std::process::ExitCode {
    // `RUST_LOG` as a list of `target=level` directives (e.g. `info,ztunnel::inpod=debug`).
    // Targets instead of EnvFilter: no regex engine in the node proxy's resident code.
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) => spec.parse::<Targets>().unwrap_or_else(|e| {
            eprintln!("ztunnel: RUST_LOG={spec:?} is not a list of target=level directives ({e}); using info");
            Targets::new().with_default(tracing::Level::INFO)
        }),
        Err(_) => Targets::new().with_default(tracing::Level::INFO),
    };
    if config.log_format == "json" {
        tracing_subscriber::fmt()
            .json()
            .finish()
            .with(filter)
            .init();
    } else {
        tracing_subscriber::fmt().finish().with(filter).init();
    }
    let running = match ztunnel::app::start(config).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("ztunnel: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ztunnel: installing the SIGTERM handler: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    // Pods stay captured (their pins and rules outlive us): their connections wait for the
    // next ztunnel.
    tracing::info!("ztunnel stopping; captured pods stay fail-closed until it is back");
    drop(running);
    std::process::ExitCode::SUCCESS
}
