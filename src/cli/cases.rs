//! `cgbot cases …` and `cgbot outbox deliver`: reading and steering the case store.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use cgbot::backoff::Backoff;
use cgbot::cases::{
    Case, CodeTable, Evidence, HistoryEntry, OperatorAction, PublishedCase, RejectReason, Status,
    Suppression, SETTABLE_STATUSES,
};
use cgbot::clock::unix_now;
use cgbot::local_time::rfc3339;
use cgbot::rules::EventCatalogue;
use cgbot::sinks::{self, JsonlSink, Sink, WebhookSink};
use cgbot::store::{CaseFilter, Store};

#[derive(Subcommand)]
pub enum CasesCommand {
    /// List cases, oldest first; `OVERDUE` marks open cases past their deadline.
    List {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        status: Option<Status>,
        #[arg(long)]
        camera: Option<String>,
        /// Only open cases past their deadline.
        #[arg(long)]
        overdue: bool,
        #[arg(long)]
        json: bool,
    },
    /// One case with its evidence images and history.
    Show {
        id: String,
        #[command(flatten)]
        db: DbArg,
    },
    /// Write one evidence image (`first`, `filed-crop`, …) of a case to a file, or to
    /// stdout without `--out`: from the files beside SQLite or from PostgreSQL alike.
    Image {
        id: String,
        kind: String,
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        db: DbArg,
    },
    /// All cases (or those with a status) as CSV or JSON on stdout; times are RFC 3339
    /// in each camera's local time.
    Export {
        #[command(flatten)]
        db: DbArg,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        #[arg(long)]
        status: Option<Status>,
        /// The city platform's code table: each case's `city_code` and the table's fields
        /// (replacing those of the same name recorded with the case) come from it.
        #[arg(long, value_name = "FILE")]
        codes: Option<PathBuf>,
    },
    /// Record the city's handling: dispatched, handled, closed or reopened. A false
    /// positive is rejected with `cases reject`, a real violation confirmed with
    /// `cases confirm`.
    SetStatus {
        id: String,
        #[arg(value_parser = SettableStatus)]
        status: Status,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Reject a case as a false positive: it becomes `rejected`, and its place makes no
    /// new case of the event for `--suppress-for`.
    Reject {
        id: String,
        /// Why it is not a case.
        #[arg(long, value_parser = reject_reason())]
        reason: RejectReason,
        /// How long the place stays suppressed (0: not at all).
        #[arg(long, default_value = "7d", value_parser = cgbot::duration::parse)]
        suppress_for: Duration,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// Confirm a case as a real violation (its status stays).
    Confirm {
        id: String,
        #[command(flatten)]
        db: DbArg,
        #[command(flatten)]
        operator: OperatorArgs,
    },
    /// False-positive suppressions, newest first.
    Suppressions {
        #[command(flatten)]
        db: DbArg,
        #[arg(long)]
        camera: Option<String>,
        /// Only those in force now.
        #[arg(long)]
        active: bool,
        #[arg(long)]
        json: bool,
    },
    /// Lift a suppression: its place may file cases again.
    LiftSuppression {
        id: i64,
        #[command(flatten)]
        db: DbArg,
        /// The operator's user name, kept in the audit log.
        #[arg(long, default_value = "operator")]
        by: String,
    },
}

/// Who acts, and why.
#[derive(Args)]
pub struct OperatorArgs {
    /// Free text kept in the case history.
    #[arg(long)]
    note: Option<String>,
    /// The operator's user name, kept in the case history and the audit log.
    #[arg(long, default_value = "operator")]
    by: String,
}

/// The statuses `set-status` takes, listed in `--help`; a status that cannot be set by
/// hand is refused with what to do instead.
#[derive(Clone)]
struct SettableStatus;

impl TypedValueParser for SettableStatus {
    type Value = Status;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        _arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<Status, clap::Error> {
        let text = value.to_string_lossy();
        let hint = match text.as_ref() {
            "rejected" => {
                "; a false positive is rejected with `cgbot cases reject ID --reason REASON`"
            }
            "confirmed" => "; a real violation is confirmed with `cgbot cases confirm ID`",
            _ => "",
        };
        text.parse::<Status>()
            .ok()
            .filter(|s| s.settable_externally())
            .ok_or_else(|| {
                let names: Vec<&str> = SETTABLE_STATUSES.iter().map(|s| s.as_str()).collect();
                clap::Error::raw(
                    ErrorKind::InvalidValue,
                    format!(
                        "status `{text}` cannot be set by hand (one of {}){hint}\n",
                        names.join(", ")
                    ),
                )
                .with_cmd(cmd)
            })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(
            SETTABLE_STATUSES
                .iter()
                .map(|s| PossibleValue::new(s.as_str())),
        ))
    }
}

fn reject_reason() -> impl TypedValueParser<Value = RejectReason> {
    PossibleValuesParser::new(RejectReason::ALL.map(|r| r.as_str()))
        .try_map(|text| text.parse::<RejectReason>())
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
    /// Case database: a SQLite file (evidence images in DB.evidence/ beside it) or a
    /// postgres:// URL (evidence images inside the database).
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
    /// Sign deliveries (Standard Webhooks) with the `whsec_<base64>` secret in this file;
    /// else with `$CGBOT_WEBHOOK_SECRET` when it is set.
    #[arg(long, value_name = "FILE", requires = "webhook")]
    pub webhook_secret_file: Option<PathBuf>,
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
            sinks.push(Box::new(
                WebhookSink::new(url, self.webhook_token.clone(), self.webhook_timeout)?.signed(
                    cgbot::config::webhook_signer(self.webhook_secret_file.as_deref())?,
                ),
            ));
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
    if !cgbot::store::may_exist(db) {
        bail!(
            "{}: no such case database (replay a clip with --camera and --db first)",
            cgbot::store::display_db(db)
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
            overdue,
            json,
        } => {
            let now = unix_now();
            let cases = open(&db.db)?.cases(&CaseFilter {
                status,
                camera,
                overdue: overdue.then_some(true),
                now: Some(now),
                ..CaseFilter::default()
            })?;
            if json {
                println!("{}", serde_json::to_string_pretty(&exported(&cases, now))?);
            } else {
                print_table(&cases, now);
            }
        }
        CasesCommand::Show { id, db } => {
            let store = open(&db.db)?;
            let case = store
                .case(&id)?
                .with_context(|| format!("{}: no case {id}", cgbot::store::display_db(&db.db)))?;
            #[derive(Serialize)]
            struct Detail<'a> {
                #[serde(flatten)]
                case: PublishedCase<'a>,
                evidence: Vec<Evidence>,
                history: Vec<HistoryEntry>,
            }
            let detail = Detail {
                evidence: store.evidence(&id)?,
                history: store.history(&id)?,
                case: PublishedCase::of(&case),
            };
            println!("{}", serde_json::to_string_pretty(&detail)?);
        }
        CasesCommand::Image { id, kind, out, db } => {
            // Names, never paths: a SQLite store builds the file name from them.
            let plain = |s: &str| {
                !s.is_empty()
                    && s.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            };
            if !plain(&id) || !plain(&kind) {
                bail!("`{id}` `{kind}`: a case id and an image kind such as filed-crop");
            }
            let jpeg = open(&db.db)?.evidence_image(&id, &kind)?.with_context(|| {
                format!(
                    "{}: case {id} has no {kind} image",
                    cgbot::store::display_db(&db.db)
                )
            })?;
            match out {
                Some(path) => std::fs::write(&path, jpeg)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::Write::write_all(&mut std::io::stdout().lock(), &jpeg)?,
            }
        }
        CasesCommand::Export {
            db,
            format,
            status,
            codes,
        } => {
            let mut cases = open(&db.db)?.cases(&CaseFilter {
                status,
                ..CaseFilter::default()
            })?;
            if let Some(path) = codes {
                let events = EventCatalogue::builtin();
                let table = CodeTable::load(&path, &events.names(), &[])?;
                for case in &mut cases {
                    let Some(city) = table.city_code(&case.event, &BTreeMap::new()) else {
                        bail!(
                            "{}: case {} is of event `{}`, which the table does not know",
                            path.display(),
                            case.id,
                            case.event
                        );
                    };
                    case.city_code = Some(city.code);
                    case.city_fields.extend(city.fields);
                }
            }
            let now = unix_now();
            match format {
                ExportFormat::Json => {
                    println!("{}", serde_json::to_string_pretty(&exported(&cases, now))?)
                }
                ExportFormat::Csv => print!("{}", to_csv(&cases, now)),
            }
        }
        CasesCommand::SetStatus {
            id,
            status,
            db,
            operator,
        } => {
            let case = act(&db, &id, OperatorAction::SetStatus(status), operator, None)?;
            println!("{} is now {}", case.id, case.status);
        }
        CasesCommand::Confirm { id, db, operator } => {
            let case = act(&db, &id, OperatorAction::Confirm, operator, None)?;
            println!(
                "{} confirmed as a real violation ({})",
                case.id, case.status
            );
        }
        CasesCommand::Reject {
            id,
            reason,
            suppress_for,
            db,
            operator,
        } => {
            let action = OperatorAction::Reject(reason);
            let case = act(&db, &id, action, operator, Some(suppress_for))?;
            print!("{} is now rejected ({reason})", case.id);
            let store = open(&db.db)?;
            let suppression = store
                .suppressions(Some(&case.camera_id), None)?
                .into_iter()
                .find(|s| s.case_id == case.id);
            match suppression.filter(|_| !suppress_for.is_zero()) {
                Some(s) => println!(
                    "; zone {} makes no {} case at its place until {} (suppression {}; \
                     `cgbot cases lift-suppression {}` ends it)",
                    s.zone_id,
                    s.event,
                    time(s.until),
                    s.id,
                    s.id
                ),
                None => println!("; its place is not suppressed"),
            }
        }
        CasesCommand::Suppressions {
            db,
            camera,
            active,
            json,
        } => {
            let now = unix_now();
            let list = open(&db.db)?.suppressions(camera.as_deref(), active.then_some(now))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else {
                print_suppressions(&list, now);
            }
        }
        CasesCommand::LiftSuppression { id, db, by } => {
            let mut store = open(&db.db)?;
            let before = store.suppression(id)?;
            let s = store.lift_suppression(id, &by, unix_now())?;
            if before.is_some_and(|b| b.lifted_at.is_some()) {
                println!(
                    "suppression {id} was already lifted by {} at {}",
                    s.lifted_by.as_deref().unwrap_or("?"),
                    s.lifted_at.map(time).unwrap_or_default()
                );
            } else {
                println!(
                    "suppression {id} lifted: camera {} zone {} may file {} cases at its place again",
                    s.camera_id, s.zone_id, s.event
                );
            }
        }
    }
    Ok(())
}

/// One operator action through the store, which checks the lifecycle.
fn act(
    db: &DbArg,
    id: &str,
    action: OperatorAction,
    operator: OperatorArgs,
    suppress_for: Option<Duration>,
) -> Result<Case> {
    let mut store = open(&db.db)?;
    Ok(store.operator_action(
        id,
        action,
        &operator.by,
        operator.note,
        unix_now(),
        suppress_for.unwrap_or_default(),
    )?)
}

/// A case as `list --json` and `export` show it: with whether it is overdue now and why
/// it was rejected.
#[derive(Serialize)]
struct Exported<'a> {
    #[serde(flatten)]
    case: PublishedCase<'a>,
    overdue: bool,
    reject_reason: Option<RejectReason>,
}

fn exported(cases: &[Case], now: f64) -> Vec<Exported<'_>> {
    cases
        .iter()
        .map(|case| Exported {
            case: PublishedCase::of(case),
            overdue: case.is_overdue(now),
            reject_reason: case.reject_reason(),
        })
        .collect()
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

fn print_table(cases: &[Case], now: f64) {
    println!(
        "{:<18} {:<10} {:<18} {:<14} {:<14} {:<21} {:>8} {:>5}  due",
        "id", "status", "category", "camera", "zone", "first seen (UTC)", "dwell s", "conf"
    );
    for c in cases {
        println!(
            "{:<18} {:<10} {:<18} {:<14} {:<14} {:<21} {:>8.0} {:>5.2}  {}",
            c.id,
            c.status,
            format!("{} {}", c.category.code, c.category.name),
            c.camera_id,
            c.zone_id,
            time(c.first_seen),
            c.dwell,
            c.confidence,
            if c.is_overdue(now) { "OVERDUE" } else { "" }
        );
    }
    let overdue = cases.iter().filter(|c| c.is_overdue(now)).count();
    match overdue {
        0 => println!("{} cases", cases.len()),
        n => println!("{} cases, {n} overdue", cases.len()),
    }
}

fn print_suppressions(list: &[Suppression], now: f64) {
    println!(
        "{:>5} {:<8} {:<14} {:<14} {:<16} {:<18} {:<12} {:<21} {:>6}",
        "id", "state", "camera", "zone", "event", "case", "by", "until (UTC)", "hits"
    );
    for s in list {
        let state = if s.lifted_at.is_some() {
            "lifted"
        } else if s.is_active(now) {
            "active"
        } else {
            "expired"
        };
        println!(
            "{:>5} {:<8} {:<14} {:<14} {:<16} {:<18} {:<12} {:<21} {:>6}",
            s.id,
            state,
            s.camera_id,
            s.zone_id,
            s.event,
            s.case_id,
            s.created_by,
            time(s.until),
            s.hits
        );
    }
    println!("{} suppressions", list.len());
}

fn to_csv(cases: &[Case], now: f64) -> String {
    let field = |s: &str| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    // Cases with the city platform's codes: `city_code`, then a column per field any of
    // them has.
    let city = cases.iter().any(|c| c.city_code.is_some());
    let city_fields: BTreeSet<&str> = cases
        .iter()
        .flat_map(|c| c.city_fields.keys().map(String::as_str))
        .collect();
    let mut out = String::from(
        "id,status,category_code,category_major,category_name,event,camera_id,camera_name,zone_id,\
         longitude,latitude,address,grid,first_seen,filed_at,deadline,closed_at,close_reason,dwell_s,confidence,label,x1,y1,x2,y2,\
         overdue,verdict,reject_reason",
    );
    if city {
        out += ",city_code";
    }
    for name in &city_fields {
        out += &format!(",{}", field(name));
    }
    out.push('\n');
    for c in cases {
        let opt_time = |t: Option<f64>| t.map(|t| rfc3339(t, c.utc_offset)).unwrap_or_default();
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
            rfc3339(c.first_seen, c.utc_offset),
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
            c.is_overdue(now).to_string(),
            c.verdict
                .as_ref()
                .map(|v| v.kind.to_string())
                .unwrap_or_default(),
            c.reject_reason().map(|r| r.to_string()).unwrap_or_default(),
        ];
        let city_code = city.then(|| field(c.city_code.as_deref().unwrap_or_default()));
        let row: Vec<String> = cells
            .iter()
            .map(|c| field(c))
            .chain(city_code)
            .chain(
                city_fields
                    .iter()
                    .map(|name| field(c.city_fields.get(*name).map_or("", String::as_str))),
            )
            .collect();
        out += &row.join(",");
        out.push('\n');
    }
    out
}
