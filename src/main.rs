//! The `cgbot` command line: parse arguments, hand each subcommand to its module in
//! `cli/`, report errors.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use cli::bench::BenchArgs;
use cli::cameras::CamerasCommand;
use cli::cases::{CasesCommand, OutboxCommand};
use cli::console::ConsoleArgs;
use cli::detect::DetectArgs;
use cli::eval::EvalArgs;
use cli::models::ModelsCommand;
use cli::replay::ReplayArgs;
use cli::run::RunArgs;
use cli::sim::SimArgs;

#[derive(Parser)]
#[command(
    name = "cgbot",
    version,
    about = "City-management camera robot: detect problems on street cameras and file them as cases"
)]
struct Cli {
    /// More log output (-v info, -vv debug); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log format on stderr: `text` for people, `json` for one JSON object a line (journald,
    /// log shippers).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// The exit status of a configuration error (`EX_CONFIG` of sysexits.h): systemd's
/// `RestartPreventExitStatus=78` stops restarting a daemon that cannot start until its
/// configuration is fixed.
const EX_CONFIG: u8 = 78;

#[derive(Subcommand)]
enum Command {
    /// Detect objects in still images.
    Detect(DetectArgs),
    /// Decode a recorded clip (MP4, MKV, raw H.264/H.265) and detect on sampled frames.
    Replay(Box<ReplayArgs>),
    /// Measure case quality: scenario clips with expected cases through the pipeline.
    Eval(Box<EvalArgs>),
    /// Cases filed by replay or the daemon.
    Cases {
        #[command(subcommand)]
        command: CasesCommand,
    },
    /// Case events waiting for delivery.
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
    /// Camera lists: what a new list changes, camera files from a city's point list.
    Cameras {
        #[command(subcommand)]
        command: CamerasCommand,
    },
    /// The model catalogue.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Measure cameras per core, stage costs, latency and memory with simulated cameras.
    Bench(Box<BenchArgs>),
    /// Watch the configured RTSP cameras and file cases: the daemon.
    Run(RunArgs),
    /// The operators' web pages over a case database, without watching cameras.
    Console(Box<ConsoleArgs>),
    /// Serve a clip as simulated RTSP street cameras, for tests, benchmarks and demos.
    Sim(SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The daemon reports its progress at info level; one-shot commands only warn.
    let base = usize::from(matches!(cli.command, Command::Run(_)));
    let default_level = ["warn", "info", "debug"][(usize::from(cli.verbose) + base).min(2)];
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match cli.log_format {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    let log_format = cli.log_format;
    let result = match cli.command {
        Command::Detect(args) => args.run(),
        Command::Replay(args) => args.run(),
        Command::Eval(args) => args.run(),
        Command::Cases { command } => cli::cases::run(command),
        Command::Outbox { command } => command.run(),
        Command::Cameras { command } => command.run(),
        Command::Models { command } => command.run(),
        Command::Run(args) => args.run(),
        Command::Bench(args) => args.run(),
        Command::Sim(args) => args.run(),
        Command::Console(args) => args.run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if log_format == LogFormat::Json {
                // One JSON line like the logs, for whatever collects them.
                tracing::error!(error = format!("{e:#}"), "exiting");
            } else {
                eprintln!("error: {e:#}");
            }
            if is_config_error(&e) {
                ExitCode::from(EX_CONFIG)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Whether `e` comes from a configuration file that cannot be used (run config, camera
/// files, users file, case catalogue): restarting will not help until it is fixed.
fn is_config_error(e: &anyhow::Error) -> bool {
    use cgbot::pipeline::live::DaemonError;
    use cgbot::pipeline::RecordingError;
    e.chain().any(|cause| {
        cause.is::<cgbot::config::ConfigError>()
            || cause.is::<cli::cameras::CheckFailed>()
            || cause.is::<cgbot::cases::CatalogueError>()
            || cause.is::<cgbot::console::UsersError>()
            || matches!(
                cause.downcast_ref::<DaemonError>(),
                Some(DaemonError::Config(_) | DaemonError::Catalogue(_) | DaemonError::Users(_))
            )
            || matches!(
                cause.downcast_ref::<RecordingError>(),
                Some(
                    RecordingError::Config(_)
                        | RecordingError::Catalogue(_)
                        | RecordingError::NoSuchCamera { .. }
                        | RecordingError::WhichCamera { .. }
                )
            )
    })
}
