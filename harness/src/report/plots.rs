//! Plots drawn with plotters into SVG strings: boot versus restore time per scenario, and the
//! hardware-mismatch and fix-up windows. Text needs a font: DejaVu Sans from Debian's
//! fonts-dejavu-core, registered once (without it, plots are skipped with a note).

use clonesafe_metadata::{MeasurementId, ScenarioReport};
use plotters::prelude::*;
use std::sync::OnceLock;

const FONT_PATHS: &[&str] = &["/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"];

fn font_ready() -> bool {
    static READY: OnceLock<bool> = OnceLock::new();
    *READY.get_or_init(|| {
        for p in FONT_PATHS {
            if let Ok(bytes) = std::fs::read(p) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

pub fn median(v: &[f64]) -> Option<f64> {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

type Rows<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>>;

/// A chart with one row per label, read down the side (the first label at the top; row i sits at
/// y in [n-1-i, n-i)), x from 0 to `max`, and no fine mesh lines.
fn rows<'a, 'b>(root: &'a DrawingArea<SVGBackend<'b>, plotters::coord::Shift>, title: &str, x_label: &str, labels: &[String], max: f64, label_width: u32) -> Result<Rows<'a, 'b>, String> {
    let n = labels.len().max(1);
    let mut chart = ChartBuilder::on(root)
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(label_width)
        .build_cartesian_2d(0f64..max, 0f64..n as f64)
        .map_err(|e| e.to_string())?;
    let lbl = labels.to_vec();
    chart
        .configure_mesh()
        .disable_y_mesh()
        .light_line_style(WHITE)
        .y_labels(n * 2 + 1)
        .y_label_formatter(&move |y| {
            let i = y.floor() as usize;
            if (y - i as f64 - 0.5).abs() < 0.01 && i < lbl.len() { lbl[lbl.len() - 1 - i].clone() } else { String::new() }
        })
        .y_label_style(("sans-serif", 12))
        .x_desc(x_label)
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(chart)
}

/// The series' legend, lower right.
fn legend<'a, 'b: 'a>(chart: &mut Rows<'a, 'b>) -> Result<(), String> {
    chart.configure_series_labels().position(SeriesLabelPosition::LowerRight).border_style(BLACK).background_style(WHITE.mix(0.85)).draw().map_err(|e| e.to_string())
}

/// Grouped horizontal bars: one group per label (read down the side), one bar per series
/// (None values are left out).
fn bars(title: &str, x_label: &str, labels: &[String], series: &[(&str, RGBColor, Vec<Option<f64>>)]) -> Result<String, String> {
    if !font_ready() {
        return Err("no font for plot text (install fonts-dejavu-core)".into());
    }
    let max = series.iter().flat_map(|s| s.2.iter().flatten()).fold(1.0f64, |a, &b| a.max(b)) * 1.15;
    let n = labels.len().max(1);
    let mut svg = String::new();
    {
        let height = (90 + n as u32 * 22 * series.len().max(1) as u32).max(260);
        let root = SVGBackend::with_string(&mut svg, (860, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = rows(&root, title, x_label, labels, max, 230)?;
        let k = series.len() as f64;
        for (si, (name, color, vals)) in series.iter().enumerate() {
            let h = 0.8 / k;
            let color = *color;
            chart
                .draw_series(vals.iter().enumerate().filter_map(|(i, v)| {
                    v.map(|v| {
                        let row = (n - 1 - i) as f64;
                        let y0 = row + 0.9 - (si as f64 + 1.0) * h;
                        Rectangle::new([(0.0, y0), (v, y0 + h * 0.9)], color.filled())
                    })
                }))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
        }
        legend(&mut chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

pub const RED: RGBColor = RGBColor(200, 60, 60);
pub const BLUE: RGBColor = RGBColor(60, 90, 200);
pub const GREEN: RGBColor = RGBColor(40, 150, 80);

/// Dots on rows: one row per label (read down the side), per series a band of the row with one
/// dot per value; a value flagged `true` is drawn hollow (a lower bound).
pub fn dots(title: &str, x_label: &str, labels: &[String], series: &[(&str, RGBColor, Vec<Vec<(f64, bool)>>)]) -> Result<String, String> {
    if !font_ready() {
        return Err("no font for plot text (install fonts-dejavu-core)".into());
    }
    let max = series.iter().flat_map(|s| s.2.iter().flatten()).fold(10.0f64, |a, b| a.max(b.0)) * 1.1;
    let n = labels.len().max(1);
    let k = series.len().max(1) as f64;
    let mut svg = String::new();
    {
        let height = (110 + n as u32 * 30).max(260);
        let root = SVGBackend::with_string(&mut svg, (960, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = rows(&root, title, x_label, labels, max, 280)?;
        for (si, (name, color, rows)) in series.iter().enumerate() {
            let color = *color;
            let y_in_row = 0.85 - (si as f64 + 0.5) * 0.7 / k;
            chart
                .draw_series(rows.iter().enumerate().flat_map(|(i, vals)| {
                    let y = (n - 1 - i) as f64 + y_in_row;
                    vals.iter().map(move |&(x, hollow)| Circle::new((x, y), 4, if hollow { color.stroke_width(2) } else { color.filled() }))
                }))
                .map_err(|e| e.to_string())?
                .label(*name)
                .legend(move |(x, y)| Circle::new((x + 5, y), 4, color.filled()));
        }
        legend(&mut chart)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn label(s: &ScenarioReport) -> String {
    format!("{} / {}", s.recipe_label(), s.backend)
}

/// Median boot_ms and restore_ms per scenario.
pub fn boot_vs_restore(scenarios: &[ScenarioReport]) -> Result<String, String> {
    let ok: Vec<&ScenarioReport> = scenarios.iter().filter(|s| s.error.is_none()).collect();
    let labels: Vec<String> = ok.iter().map(|s| label(s)).collect();
    let f = |v: &[u64]| median(&v.iter().map(|&x| x as f64).collect::<Vec<_>>());
    let boot = ok.iter().map(|s| f(&s.timing.boot_ms)).collect();
    let restore = ok.iter().map(|s| f(&s.timing.restore_ms)).collect();
    bars("Boot versus restore (median per scenario)", "ms (QEMU start to probe ready)", &labels, &[("boot_ms", RGBColor(90, 120, 200), boot), ("restore_ms", RGBColor(230, 140, 40), restore)])
}

/// Median hardware-mismatch (NIC) window and agent fix-up window per live scenario.
pub fn windows(scenarios: &[ScenarioReport]) -> Result<String, String> {
    use MeasurementId::*;
    let live: Vec<&ScenarioReport> =
        scenarios.iter().filter(|s| s.error.is_none() && [NicWindowMs, FixupWindowMs].iter().any(|id| s.timing.measurements.contains_key(id))).collect();
    let labels: Vec<String> = live.iter().map(|s| label(s)).collect();
    let nic = live.iter().map(|s| median(&s.timing.measured(NicWindowMs))).collect();
    let fix = live.iter().map(|s| median(&s.timing.measured(FixupWindowMs))).collect();
    let dur = live.iter().map(|s| median(&s.timing.measured(FixupMs))).collect();
    bars(
        "Windows after resume (median, guest clock)",
        "ms after resume",
        &labels,
        &[
            ("until the new NIC is seen", RGBColor(200, 60, 60), nic),
            ("until the fix-up has landed", RGBColor(60, 160, 90), fix),
            ("fix-up duration", RGBColor(150, 150, 150), dur),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn bars_draw_every_label_when_a_font_exists() {
        let labels = vec!["naive / qemu".to_string(), "full / libvirt".to_string()];
        match bars("t", "ms", &labels, &[("a", RGBColor(1, 2, 3), vec![Some(10.0), None])]) {
            Ok(svg) => {
                assert!(svg.contains("<svg") && svg.contains("naive / qemu") && svg.contains("full / libvirt"));
                assert_eq!(svg.matches("#010203").count(), 2, "one bar and one legend box");
            }
            Err(e) => assert!(!font_ready(), "{e}"),
        }
    }
}

/// Lines on a logarithmic y axis: one per series of (x, y) points, x ascending. For figures that
/// span orders of magnitude (a cold boot against a pooled restore).
pub fn lines_log_y(title: &str, x_label: &str, y_label: &str, series: &[(String, RGBColor, Vec<(f64, f64)>)]) -> Result<String, String> {
    if !font_ready() {
        return Err("no font for plot text (install fonts-dejavu-core)".into());
    }
    let pts = || series.iter().flat_map(|s| s.2.iter());
    let (x0, x1) = pts().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (y0, y1) = pts().filter(|p| p.1 > 0.0).fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x0 > x1 || y0 > y1 {
        return Err("nothing to plot".into());
    }
    let pad = ((x1 - x0) * 0.05).max(0.5);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (860, 480)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d((x0 - pad)..(x1 + pad), ((y0 / 2.0)..(y1 * 2.0)).log_scale())
            .map_err(|e| e.to_string())?;
        chart.configure_mesh().x_desc(x_label).y_desc(y_label).label_style(("sans-serif", 12)).draw().map_err(|e| e.to_string())?;
        for (name, color, points) in series {
            let color = *color;
            let pts: Vec<(f64, f64)> = points.iter().copied().filter(|p| p.1 > 0.0).collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| e.to_string())?
                .label(name.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2)));
            chart.draw_series(pts.iter().map(|p| Circle::new(*p, 4, color.filled()))).map_err(|e| e.to_string())?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .border_style(BLACK)
            .background_style(WHITE.mix(0.85))
            .draw()
            .map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}
