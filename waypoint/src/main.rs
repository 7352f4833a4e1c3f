//! `waypoint`: see `app.rs` for what it does and `--help` for how to run it.

use clap::Parser;
use tracing_subscriber::prelude::*;
use tracing_subscriber::EnvFilter;

fn main() -> std::process::ExitCode {
    let config = waypoint::app::Config::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = config.worker_threads {
        builder.worker_threads(usize::from(n.max(1)));
    }
    match builder.enable_all().build() {
        Ok(rt) => rt.block_on(run(config)),
        Err(e) => {
            eprintln!("waypoint: starting the runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(config: waypoint::app::Config) -> std::process::ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if config.log_format == "json" {
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer())
            .init();
    }
    let running = match waypoint::app::start(config).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("waypoint: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("waypoint: installing the SIGTERM handler: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("waypoint stopping");
    drop(running);
    std::process::ExitCode::SUCCESS
}
