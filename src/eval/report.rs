//! The scored runs as a table (one row per scenario, then per-event totals) and as the
//! `--json` report.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::PathBuf;

use serde::Serialize;

use super::score::{CaseRecord, Expected, Failure, Tally};

/// One scenario's run and score.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub file: PathBuf,
    pub description: String,
    pub camera: String,
    /// Wall-clock time of the clip's first frame, as the scenario gives it.
    pub start: String,
    pub every_s: f64,
    pub clip: PathBuf,
    pub clip_s: f64,
    /// Samples analysed.
    pub samples: usize,
    pub wall_s: f64,
    pub passed: bool,
    pub failures: Vec<Failure>,
    pub events: BTreeMap<String, Tally>,
    pub expected: Vec<Expected>,
    pub cases: Vec<CaseRecord>,
}

/// One event over all scenarios.
#[derive(Debug, Clone, Serialize)]
pub struct EventTotals {
    pub event: String,
    #[serde(flatten)]
    pub tally: Tally,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub median_delay_s: Option<f64>,
    pub max_delay_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub passed: usize,
    pub failed: usize,
    pub totals: Vec<EventTotals>,
    pub scenarios: Vec<ScenarioReport>,
}

impl Report {
    pub fn new(scenarios: Vec<ScenarioReport>) -> Self {
        let mut sums: BTreeMap<String, Tally> = BTreeMap::new();
        for s in &scenarios {
            for (event, tally) in &s.events {
                sums.entry(event.clone()).or_default().add(tally);
            }
        }
        let totals = sums
            .into_iter()
            .map(|(event, tally)| EventTotals {
                precision: tally.precision(),
                recall: tally.recall(),
                median_delay_s: tally.median_delay(),
                max_delay_s: tally.max_delay(),
                event,
                tally,
            })
            .collect();
        let passed = scenarios.iter().filter(|s| s.passed).count();
        Report {
            passed,
            failed: scenarios.len() - passed,
            totals,
            scenarios,
        }
    }
}

fn percent(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{:.0} %", v * 100.0))
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("–".into(), |v| format!("{v:.0}"))
}

/// The table `cgbot eval` prints: a row per scenario (with the reason for each failure
/// beneath it), then one per event.
pub fn render_table(report: &Report) -> String {
    let mut out = String::new();
    let width = report
        .scenarios
        .iter()
        .map(|s| s.name.chars().count())
        .max()
        .unwrap_or(8)
        .max(8);
    let _ = writeln!(
        out,
        "{:<width$}  result  due  found  filed  dup  delay s  false close  missed close",
        "scenario"
    );
    for s in &report.scenarios {
        let mut t = Tally::default();
        s.events.values().for_each(|e| t.add(e));
        let _ = writeln!(
            out,
            "{:<width$}  {:<6}  {:>3}  {:>5}  {:>5}  {:>3}  {:>7}  {:>11}  {:>12}",
            s.name,
            if s.passed { "pass" } else { "FAIL" },
            t.expected,
            t.found,
            t.filed,
            t.duplicates,
            seconds(t.max_delay()),
            t.false_closes,
            t.missed_closes,
        );
        for f in &s.failures {
            let _ = writeln!(out, "{:<width$}    {}: {}", "", f.cause, f.what);
        }
    }
    let _ = writeln!(
        out,
        "\n{} of {} scenarios pass\n",
        report.passed,
        report.scenarios.len()
    );
    let _ = writeln!(
        out,
        "{:<18}  due  found  filed  correct  precision  recall  dup  delay median/max s  false close  missed close",
        "event"
    );
    for e in &report.totals {
        let t = &e.tally;
        let _ = writeln!(
            out,
            "{:<18}  {:>3}  {:>5}  {:>5}  {:>7}  {:>9}  {:>6}  {:>3}  {:>18}  {:>11}  {:>12}",
            e.event,
            t.expected,
            t.found,
            t.filed,
            t.correct,
            percent(e.precision),
            percent(e.recall),
            t.duplicates,
            format!("{} / {}", seconds(e.median_delay_s), seconds(e.max_delay_s)),
            t.false_closes,
            t.missed_closes,
        );
    }
    out
}
