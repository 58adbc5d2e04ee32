//! `cgbot cases …` and `cgbot outbox deliver`: reading and steering the case store.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use cgbot::backoff::Backoff;
use cgbot::cases::{operator_transition, Case, Evidence, HistoryEntry, Status};
use cgbot::sinks::{self, JsonlSink, Sink, WebhookSink};
use cgbot::store::{CaseFilter, Store};

#[derive(Subcommand)]
pub enum CasesCommand {
    /// List cases, oldest first.
    List {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        status: Option<Status>,
        #[arg(long)]
        camera: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One case with its evidence images and history.
    Show {
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// All cases (or those with a status) as CSV or JSON on stdout.
    Export {
        #[command(flatten)]
        db: DbArg,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        #[arg(long)]
        status: Option<Status>,
    },
    /// Record the city's handling: dispatched, handled, closed or reopened.
    SetStatus {
        id: String,
        status: Status,
        #[command(flatten)]
        db: DbArg,
        /// Free text kept in the case history.
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Subcommand)]
pub enum OutboxCommand {
    /// Deliver pending case events to the given sinks.
    Deliver {
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        sinks: SinkArgs,
    },
}

impl OutboxCommand {
    pub fn run(&self) -> Result<()> {
        match self {
            OutboxCommand::Deliver { db, sinks } => deliver(&db.db, sinks),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Json,
}

#[derive(Args)]
pub struct DbArg {
    /// Case database (SQLite); evidence images live in DB.evidence/ beside it.
    #[arg(long, env = "CGBOT_DB", default_value = "cgbot.db")]
    pub db: PathBuf,
}

/// Where case events go (both may be given).
#[derive(Args)]
pub struct SinkArgs {
    /// Append case events as JSON lines to this file.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,
    /// POST case events in batches to this URL.
    #[arg(long, value_name = "URL")]
    pub webhook: Option<String>,
    /// Bearer token for the webhook.
    #[arg(long, env = "CGBOT_WEBHOOK_TOKEN", hide_env_values = true)]
    pub webhook_token: Option<String>,
    /// Longest wait for the webhook to answer one batch.
    #[arg(long, default_value = "10s", value_parser = cgbot::duration::parse)]
    pub webhook_timeout: Duration,
    /// How long to keep retrying delivery before leaving events in the outbox.
    #[arg(long, default_value = "30s", value_parser = cgbot::duration::parse)]
    pub deliver_for: Duration,
}

impl SinkArgs {
    fn sinks(&self) -> Result<Vec<Box<dyn Sink>>> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if let Some(path) = &self.jsonl {
            sinks.push(Box::new(JsonlSink::open(path)?));
        }
        if let Some(url) = &self.webhook {
            sinks.push(Box::new(WebhookSink::new(
                url,
                self.webhook_token.clone(),
                self.webhook_timeout,
            )?));
        }
        Ok(sinks)
    }

    /// Delivers the outbox to every configured sink; undelivered events stay for the next run.
    pub fn deliver(&self, store: &mut Store) -> Result<()> {
        for mut sink in self.sinks()? {
            let until = Instant::now() + self.deliver_for;
            let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
            let report = sinks::deliver(store, sink.as_mut(), until, &mut backoff)?;
            eprint!(
                "{}: {} case events delivered",
                sink.name(),
                report.delivered
            );
            match report.last_error {
                Some(e) => eprintln!(
                    ", {} still in the outbox (last error: {e}); `cgbot outbox deliver` retries",
                    report.pending
                ),
                None => eprintln!(),
            }
        }
        Ok(())
    }
}

fn open(db: &Path) -> Result<Store> {
    if !db.exists() {
        bail!(
            "{}: no such case database (replay a clip with --camera and --db first)",
            db.display()
        );
    }
    Ok(Store::open(db)?)
}

pub fn run(command: CasesCommand) -> Result<()> {
    match command {
        CasesCommand::List {
            db,
            status,
            camera,
            json,
        } => {
            let cases = open(&db.db)?.cases(&CaseFilter {
                status,
                camera,
                ..CaseFilter::default()
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&cases)?);
            } else {
                print_table(&cases);
            }
        }
        CasesCommand::Show { id, db } => {
            let store = open(&db.db)?;
            let case = store
                .case(&id)?
                .with_context(|| format!("{}: no case {id}", db.db.display()))?;
            #[derive(Serialize)]
            struct Detail {
                #[serde(flatten)]
                case: Case,
                evidence: Vec<Evidence>,
                history: Vec<HistoryEntry>,
            }
            let detail = Detail {
                evidence: store.evidence(&id)?,
                history: store.history(&id)?,
                case,
            };
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        CasesCommand::Export { db, format, status } => {
            let cases = open(&db.db)?.cases(&CaseFilter {
                status,
                ..CaseFilter::default()
            })?;
            match format {
                ExportFormat::Json => println!("{}", serde_json::to_string_pretty(&cases)?),
                ExportFormat::Csv => print!("{}", to_csv(&cases)),
            }
        }
        CasesCommand::SetStatus {
            id,
            status,
            db,
            note,
        } => {
            let mut store = open(&db.db)?;
            let mut case = store.case(&id)?.with_context(|| format!("no case {id}"))?;
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64();
            store.write(&operator_transition(&mut case, status, note, now)?)?;
            println!("{} is now {}", case.id, case.status);
        }
    }
    Ok(())
}

/// `cgbot outbox deliver`: retry delivery of what earlier runs left in the outbox.
pub fn deliver(db: &Path, sinks: &SinkArgs) -> Result<()> {
    if sinks.jsonl.is_none() && sinks.webhook.is_none() {
        bail!("name a sink: --jsonl FILE and/or --webhook URL");
    }
    sinks.deliver(&mut open(db)?)
}

/// RFC 3339 in UTC, to the second.
pub fn time(unix: f64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs_f64(unix.max(0.0)))
        .to_string()
}

fn print_table(cases: &[Case]) {
    println!(
        "{:<18} {:<10} {:<18} {:<14} {:<14} {:<21} {:>8} {:>5}",
        "id", "status", "category", "camera", "zone", "first seen (UTC)", "dwell s", "conf"
    );
    for c in cases {
        println!(
            "{:<18} {:<10} {:<18} {:<14} {:<14} {:<21} {:>8.0} {:>5.2}",
            c.id,
            c.status,
            format!("{} {}", c.category.code, c.category.name),
            c.camera_id,
            c.zone_id,
            time(c.first_seen),
            c.dwell,
            c.confidence
        );
    }
    println!("{} cases", cases.len());
}

fn to_csv(cases: &[Case]) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let opt_time = |t: Option<f64>| t.map(time).unwrap_or_default();
    let mut out = String::from(
        "id,status,category_code,category_major,category_name,event,camera_id,camera_name,zone_id,\
         longitude,latitude,address,grid,first_seen,filed_at,deadline,closed_at,close_reason,dwell_s,confidence,label,x1,y1,x2,y2\n",
    );
    for c in cases {
        let l = &c.location;
        let cells = [
            c.id.clone(),
            c.status.to_string(),
            c.category.code.clone(),
            c.category.major.clone(),
            c.category.name.clone(),
            c.event.clone(),
            c.camera_id.clone(),
            c.camera_name.clone(),
            c.zone_id.clone(),
            l.longitude.map(|v| v.to_string()).unwrap_or_default(),
            l.latitude.map(|v| v.to_string()).unwrap_or_default(),
            l.address.clone().unwrap_or_default(),
            l.grid.clone().unwrap_or_default(),
            time(c.first_seen),
            opt_time(c.filed_at),
            opt_time(c.deadline),
            opt_time(c.closed_at),
            c.close_reason.clone().unwrap_or_default(),
            format!("{:.0}", c.dwell),
            format!("{:.3}", c.confidence),
            c.label.clone(),
            format!("{:.0}", c.bbox[0]),
            format!("{:.0}", c.bbox[1]),
            format!("{:.0}", c.bbox[2]),
            format!("{:.0}", c.bbox[3]),
        ];
        let row: Vec<String> = cells.iter().map(|c| field(c)).collect();
        out += &row.join(",");
        out.push('\n');
    }
    out
}
