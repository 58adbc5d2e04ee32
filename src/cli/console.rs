//! `cgbot console`: the operators' pages over a case database, without watching cameras
//! (a review station beside the daemon, or an archive).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use cgbot::api::{self, ApiConfig};
use cgbot::console::{hash_password, ConsoleConfig, ReviewStation, Users};

#[derive(Args)]
pub struct ConsoleArgs {
    /// Case database (SQLite) the daemon writes; evidence images in DB.evidence/.
    #[arg(
        long,
        env = "CGBOT_DB",
        default_value = "cgbot.db",
        required_unless_present = "hash_password"
    )]
    db: PathBuf,
    /// The daemon's camera file or directory: names, local times, and zones to edit.
    #[arg(long, value_name = "FILE|DIR")]
    cameras: Option<PathBuf>,
    /// Where the pages are served; an address others can reach needs $CGBOT_API_TOKEN.
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: SocketAddr,
    /// Users who sign in with a password (TOML; see the README).
    #[arg(long, value_name = "FILE")]
    users: Option<PathBuf>,
    /// API token: signs in as admin, and lets programs use the API.
    #[arg(long, env = "CGBOT_API_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A session ends after this long without a request.
    #[arg(long, default_value = "8h", value_parser = cgbot::duration::parse)]
    session_ttl: Duration,
    /// How long a rejected case's place files nothing.
    #[arg(long, default_value = "7d", value_parser = cgbot::duration::parse)]
    suppress_for: Duration,
    /// Read a password on stdin and print its hash for the users file, then exit.
    #[arg(long)]
    hash_password: bool,
}

impl ConsoleArgs {
    pub fn run(&self) -> Result<()> {
        if self.hash_password {
            let mut password = String::new();
            std::io::stdin()
                .read_line(&mut password)
                .context("reading the password from stdin")?;
            let password = password.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                bail!("no password on stdin");
            }
            println!("{}", hash_password(password).map_err(anyhow::Error::msg)?);
            return Ok(());
        }
        if !cgbot::store::may_exist(&self.db) {
            bail!(
                "{}: no such case database (the daemon creates it; pass the daemon's `db`)",
                cgbot::store::display_db(&self.db)
            );
        }
        if let Some(cameras) = &self.cameras {
            if !cameras.exists() {
                bail!("{}: no such camera file or directory", cameras.display());
            }
        }
        let users = match &self.users {
            Some(path) => Users::load(path)?,
            None => Users::default(),
        };
        let token = self.token.clone().filter(|t| !t.is_empty());
        api::check_exposure(self.listen, token.as_deref()).map_err(anyhow::Error::msg)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let config = ApiConfig {
            listen: self.listen,
            token,
            db: self.db.clone(),
            console: ConsoleConfig {
                cameras: self.cameras.clone(),
                users,
                session_ttl: self.session_ttl,
                suppress_for: self.suppress_for,
            },
        };
        let view = Arc::new(ReviewStation::new(self.cameras.clone()));
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind(self.listen)
                .await
                .with_context(|| format!("cannot listen on {}", self.listen))?;
            eprintln!("console: http://{}/ (Ctrl-C stops)", listener.local_addr()?);
            api::serve(listener, config, view, super::run::stop_signal()).await?;
            Ok(())
        })
    }
}
