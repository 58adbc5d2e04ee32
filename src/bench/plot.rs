//! The sweep as a picture: where the box saturates.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{BenchError, PointReport};

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
];

/// Registers a font with plotters once; its text needs one (fonts-dejavu-core, installed
/// by `make setup`). Every plot of the crate calls it first.
pub(crate) fn register_font() -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = FONTS
                .iter()
                .find_map(|p| std::fs::read(p).ok())
                .ok_or_else(|| format!("no font for the plot ({})", FONTS.join(", ")))?;
            plotters::style::register_font("sans-serif", FontStyle::Normal, bytes.leak())
                .map_err(|_| "the plot's font cannot be read".to_string())
        })
        .clone()
}

/// Two panels over the camera count: analysed vs wanted frames/s, and CPU cores used
/// with p99 frame → detection latency.
pub fn plot_sweep(points: &[PointReport], title: &str, path: &Path) -> Result<(), BenchError> {
    register_font().map_err(BenchError::Setup)?;
    let failed = |e: String| BenchError::Setup(format!("{}: {e}", path.display()));
    let root = BitMapBackend::new(path, (1200, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(e.to_string()))?;
    let root = root
        .titled(title, ("sans-serif", 22))
        .map_err(|e| failed(e.to_string()))?;
    let (left, right) = root.split_horizontally(600);
    let max_cameras = points.iter().map(|p| p.cameras).max().unwrap_or(1) as f64 * 1.05;

    let max_fps = points
        .iter()
        .map(|p| p.wanted_fps.max(p.analysed_fps))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&left)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .caption("frames per second", ("sans-serif", 18))
        .build_cartesian_2d(0.0..max_cameras, 0.0..max_fps)
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("cameras")
        .y_desc("frames/s")
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    for (name, colour, value) in [
        (
            "wanted (cameras / interval)",
            BLACK.mix(0.5),
            (|p: &PointReport| p.wanted_fps) as fn(&PointReport) -> f64,
        ),
        ("analysed", BLUE.mix(1.0), |p: &PointReport| p.analysed_fps),
    ] {
        chart
            .draw_series(LineSeries::new(
                points.iter().map(|p| (p.cameras as f64, value(p))),
                colour.stroke_width(2),
            ))
            .map_err(|e| failed(e.to_string()))?
            .label(name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(e.to_string()))?;

    let max_cores = points.iter().map(|p| p.cpu_cores).fold(1.0, f64::max) * 1.1;
    let max_latency = points
        .iter()
        .filter_map(|p| Some(p.latency_p99?.seconds()))
        .fold(2.5, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&right)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .right_y_label_area_size(55)
        .caption("CPU and latency", ("sans-serif", 18))
        .build_cartesian_2d(0.0..max_cameras, 0.0..max_cores)
        .map_err(|e| failed(e.to_string()))?
        .set_secondary_coord(0.0..max_cameras, 0.0..max_latency);
    chart
        .configure_mesh()
        .x_desc("cameras")
        .y_desc("CPU cores")
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    chart
        .configure_secondary_axes()
        .y_desc("p99 latency, s")
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|p| (p.cameras as f64, p.cpu_cores)),
            RED.stroke_width(2),
        ))
        .map_err(|e| failed(e.to_string()))?
        .label("CPU cores")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], RED));
    chart
        .draw_secondary_series(LineSeries::new(
            points
                .iter()
                .filter_map(|p| Some((p.cameras as f64, p.latency_p99?.seconds()))),
            GREEN.stroke_width(2),
        ))
        .map_err(|e| failed(e.to_string()))?
        .label("p99 frame → detection latency")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], GREEN));
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| failed(e.to_string()))?;
    root.present().map_err(|e| failed(e.to_string()))?;
    Ok(())
}
