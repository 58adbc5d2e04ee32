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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Detect objects in still images.
    Detect(DetectArgs),
    /// Decode a recorded clip (MP4, MKV, raw H.264/H.265) and detect on sampled frames.
    Replay(Box<ReplayArgs>),
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
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level)),
        )
        .init();
    let result = match cli.command {
        Command::Detect(args) => args.run(),
        Command::Replay(args) => args.run(),
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
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
