//! The suite as a picture: one row per scenario along the clip's seconds — when each
//! problem was there, when filing it was correct, and when cases were filed and closed.

use std::path::Path;

use plotters::prelude::*;

use super::{EvalError, Report};

pub fn plot_report(report: &Report, path: &Path) -> Result<(), EvalError> {
    let failed = |reason: String| EvalError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    crate::bench::plot::register_font().map_err(failed)?;
    let rows = report.scenarios.len().max(1);
    let height = 140 + 34 * rows as u32;
    let root = BitMapBackend::new(path, (1200, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let totals: Vec<String> = report
        .totals
        .iter()
        .map(|t| {
            let pct = |v: Option<f64>| v.map_or("–".into(), |v| format!("{:.0} %", v * 100.0));
            format!("{} P {} R {}", t.event, pct(t.precision), pct(t.recall))
        })
        .collect();
    let title = format!(
        "cgbot eval: {} of {} scenarios pass — {}",
        report.passed,
        report.scenarios.len(),
        totals.join(", ")
    );
    let root = root
        .titled(&title, ("sans-serif", 18))
        .map_err(|e| failed(e.to_string()))?;
    let longest = report
        .scenarios
        .iter()
        .map(|s| s.clip_s)
        .fold(10.0, f64::max)
        * 1.02;
    let names: Vec<String> = report
        .scenarios
        .iter()
        .map(|s| format!("{} {}", if s.passed { "✓" } else { "✗" }, s.name))
        .collect();
    let mut chart = ChartBuilder::on(&root)
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(230)
        .build_cartesian_2d(0.0..longest, -0.5..(rows as f64 - 0.5))
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(rows)
        .y_label_formatter(&|y| {
            let i = y.round();
            let at = (rows - 1).checked_sub(i as usize);
            match at.and_then(|at| names.get(at)) {
                Some(name) if (y - i).abs() < 0.01 && i >= 0.0 => name.clone(),
                _ => String::new(),
            }
        })
        .x_desc("seconds of the clip")
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    // Scenario `i` is drawn at y = rows - 1 - i, the first at the top.
    let row = |i: usize| (rows - 1 - i) as f64;
    let mut present = Vec::new();
    let mut due = Vec::new();
    let mut filed = Vec::new();
    let mut closed = Vec::new();
    for (i, s) in report.scenarios.iter().enumerate() {
        let y = row(i);
        for e in &s.expected {
            let colour = if e.case {
                BLUE.mix(0.25)
            } else {
                BLACK.mix(0.12)
            };
            present.push(Rectangle::new(
                [(e.present.from, y - 0.3), (e.present.until, y + 0.3)],
                colour.filled(),
            ));
            if e.case {
                due.push(Rectangle::new(
                    [
                        (e.file.from, y - 0.38),
                        (e.file.until.max(e.file.from + longest * 0.003), y + 0.38),
                    ],
                    GREEN.mix(0.7).filled(),
                ));
                if let Some(c) = e.close {
                    due.push(Rectangle::new(
                        [(c.from, y - 0.38), (c.until, y + 0.38)],
                        MAGENTA.mix(0.35).filled(),
                    ));
                }
            }
        }
        for c in &s.cases {
            if let Some(t) = c.filed {
                filed.push(TriangleMarker::new((t, y), 7, RED.filled()));
            }
            for &t in &c.closes {
                closed.push(Cross::new((t, y), 6, BLACK.stroke_width(2)));
            }
        }
    }
    let legend = |colour: RGBAColor| {
        move |(x, y): (i32, i32)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], colour.filled())
    };
    chart
        .draw_series(present)
        .map_err(|e| failed(e.to_string()))?
        .label("problem present (grey: no case due)")
        .legend(legend(BLUE.mix(0.25)));
    chart
        .draw_series(due)
        .map_err(|e| failed(e.to_string()))?
        .label("filing due (green), close due (violet)")
        .legend(legend(GREEN.mix(0.7)));
    chart
        .draw_series(filed)
        .map_err(|e| failed(e.to_string()))?
        .label("case filed")
        .legend(|(x, y)| TriangleMarker::new((x + 8, y), 6, RED.filled()));
    chart
        .draw_series(closed)
        .map_err(|e| failed(e.to_string()))?
        .label("case closed")
        .legend(|(x, y)| Cross::new((x + 8, y), 5, BLACK.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    root.present().map_err(|e| failed(e.to_string()))?;
    Ok(())
}
