//! `cgbot run`: the daemon.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use cgbot::config::RunConfig;

#[derive(Args)]
pub struct RunArgs {
    /// Daemon configuration (TOML; see the README's "Running the daemon").
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Listen address of the HTTP API, overriding the file's `api.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Check the file and the camera files it names, then exit without starting (for
    /// deployment pipelines: a ConfigMap, a package's /etc/cgbot).
    #[arg(long)]
    check: bool,
}

impl RunArgs {
    pub fn run(&self) -> Result<()> {
        let mut config = RunConfig::load(&self.config)?;
        if let Some(listen) = self.listen {
            config.api.listen = listen;
        }
        if self.check {
            let events = cgbot::rules::EventCatalogue::builtin();
            let cameras = cgbot::config::load_cameras_with(
                &config.cameras,
                &events,
                &config.camera_secrets(),
            )?;
            // The city's catalogue, calendar and code table, as the daemon loads them.
            cgbot::cases::Categories::load_city(
                config.catalogue.as_deref(),
                config.calendar.as_deref(),
                config.codes.as_deref(),
                (&events.names(), &cgbot::config::events_used(&cameras)),
            )?;
            // A shared database must be reachable (and its schema current) before a
            // deployment goes on; a SQLite file is created at the first start.
            if cgbot::store::is_postgres_url(&config.db.to_string_lossy()) {
                cgbot::store::Store::open(&config.db)?;
                println!("{}: reachable", cgbot::store::display_db(&config.db));
            }
            println!(
                "{}: valid, {} camera(s) in {}",
                self.config.display(),
                cameras.len(),
                config.cameras.display()
            );
            return Ok(());
        }
        let report = cgbot::pipeline::live::run(config, stop_signal())?;
        tracing::info!(
            frames_analysed = report.frames_analysed,
            cases_filed = report.cases_filed,
            shutdown_ms = report.shutdown.as_millis() as u64,
            "stopped"
        );
        Ok(())
    }
}

/// Completes on the first SIGTERM or SIGINT.
pub async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot catch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = terminate.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}
