//! The markdown table, and the small statistics it needs.

use std::time::Duration;

pub struct Row {
    pub workload: String,
    pub figure: String,
    pub baseline: String,
    pub ratio: Option<f64>,
    pub goal: String,
    pub spread: String,
    pub notes: String,
}

#[derive(Default)]
pub struct Table {
    rows: Vec<Row>,
    series: Vec<Series>,
}

/// One line of the plot: a rate (and latencies) by connection count.
pub struct Series {
    pub label: String,
    /// (connections, per second, p50 ms, p99 ms); latencies 0 when unknown.
    points: Vec<(usize, f64, f64, f64)>,
}

impl Series {
    pub fn new(label: &str) -> Self {
        Self {
            label: label.to_owned(),
            points: Vec::new(),
        }
    }

    pub fn push(&mut self, connections: usize, rate: f64, p50_ms: f64, p99_ms: f64) {
        self.points.push((connections, rate, p50_ms, p99_ms));
    }

    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

impl Table {
    pub fn push(&mut self, row: Row) {
        println!("  done: {}", row.workload);
        self.rows.push(row);
    }

    pub fn plot(&mut self, series: Vec<Series>) {
        self.series.extend(series);
    }

    /// `latest.json` (every row, and the plotted series) and, when there is
    /// something to plot, `latest.svg` in `dir`.
    pub fn write(&self, dir: &std::path::Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "workload": r.workload, "figure": r.figure, "baseline": r.baseline,
                    "ratio": r.ratio, "goal": r.goal, "spread": r.spread, "notes": r.notes,
                })
            })
            .collect();
        let series: Vec<serde_json::Value> = self
            .series
            .iter()
            .map(|s| {
                let points: Vec<serde_json::Value> = s
                    .points
                    .iter()
                    .map(|&(c, rate, p50, p99)| {
                        serde_json::json!({"connections": c, "per_second": rate, "p50_ms": p50, "p99_ms": p99})
                    })
                    .collect();
                serde_json::json!({"label": s.label, "points": points})
            })
            .collect();
        let document = serde_json::json!({
            "date": chrono::Utc::now().to_rfc3339(),
            "rows": rows,
            "series": series,
        });
        std::fs::write(
            dir.join("latest.json"),
            serde_json::to_string_pretty(&document).unwrap_or_default(),
        )?;
        if !self.series.is_empty() {
            std::fs::write(dir.join("latest.svg"), svg(&self.series))?;
        }
        Ok(())
    }

    pub fn print(&self) {
        println!("\n| workload | figure | baseline (same run) | ratio | goal | spread | notes |");
        println!("|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let ratio = row.ratio.map_or("–".to_owned(), |r| format!("{r:.2}"));
            println!(
                "| {} | {} | {} | {} | {} | {} | {} |",
                row.workload, row.figure, row.baseline, ratio, row.goal, row.spread, row.notes
            );
        }
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied().unwrap_or(0.0)
}

pub fn spread(values: &[f64]) -> String {
    let lo = values.iter().copied().fold(f64::MAX, f64::min);
    let hi = values.iter().copied().fold(0.0, f64::max);
    format!("{lo:.0}–{hi:.0}")
}

/// Milliseconds at quantile `q` of `latencies`.
pub fn quantile_ms(latencies: &mut [Duration], q: f64) -> f64 {
    if latencies.is_empty() {
        return 0.0;
    }
    latencies.sort_unstable();
    let index = ((latencies.len() as f64 - 1.0) * q).round() as usize;
    latencies[index].as_secs_f64() * 1e3
}

/// What a panel plots of a point: (connections, rate, p50, p99) → values.
type Values = Box<dyn Fn(&(usize, f64, f64, f64)) -> Vec<f64>>;

const COLOURS: [&str; 4] = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"];

/// Two panels: throughput by connections (every series), and p50/p99
/// latency by connections (the series that have latencies). Connection
/// counts are spaced evenly, as the levels are.
fn svg(series: &[Series]) -> String {
    use std::fmt::Write;
    let mut levels: Vec<usize> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    levels.sort_unstable();
    levels.dedup();
    let (width, height, top, bottom, left, gap, panel) =
        (980.0, 430.0, 40.0, 330.0, 70.0, 90.0, 380.0);
    let x = |origin: f64, c: usize| {
        let i = levels.iter().position(|&l| l == c).unwrap_or(0) as f64;
        let n = (levels.len().max(2) - 1) as f64;
        origin + 20.0 + i * (panel - 40.0) / n
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#
    );
    let panels: [(&str, f64, Values); 2] = [
        ("per second", left, Box::new(|p| vec![p.1])),
        (
            "latency, ms (p50 solid, p99 dashed)",
            left + panel + gap,
            Box::new(|p| vec![p.2, p.3]),
        ),
    ];
    for (title, origin, values) in panels {
        let max = series
            .iter()
            .flat_map(|s| s.points.iter().flat_map(&values))
            .fold(0.0, f64::max)
            .max(1.0)
            * 1.1;
        let y = |v: f64| bottom - (v / max) * (bottom - top);
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" font-weight="bold">{title}</text>"#,
            origin,
            top - 14.0
        );
        for tick in 0..=4 {
            let v = max * f64::from(tick) / 4.0;
            let _ = writeln!(
                out,
                r##"<line x1="{origin}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.0}</text>"##,
                origin + panel,
                origin - 6.0,
                y(v) + 4.0,
                y = y(v)
            );
        }
        for &level in &levels {
            let _ = writeln!(
                out,
                r#"<text x="{}" y="{}" text-anchor="middle">{level}</text>"#,
                x(origin, level),
                bottom + 18.0
            );
        }
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">connections</text>"#,
            origin + panel / 2.0,
            bottom + 36.0
        );
        for (i, s) in series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            for (k, dash) in ["", r#" stroke-dasharray="5,4""#].iter().enumerate() {
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .filter_map(|p| {
                        values(p)
                            .get(k)
                            .copied()
                            .filter(|v| *v > 0.0)
                            .map(|v| (x(origin, p.0), y(v)))
                    })
                    .collect();
                if points.is_empty() {
                    continue;
                }
                let line: Vec<String> = points
                    .iter()
                    .map(|(a, b)| format!("{a:.1},{b:.1}"))
                    .collect();
                let _ = writeln!(
                    out,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2"{dash} points="{}"/>"#,
                    line.join(" ")
                );
                for (a, b) in points {
                    let _ = writeln!(
                        out,
                        r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{colour}"/>"#
                    );
                }
            }
        }
    }
    for (i, s) in series.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let row = bottom + 58.0 + i as f64 * 16.0;
        let _ = writeln!(
            out,
            r#"<rect x="{left}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{row}">{}</text>"#,
            row - 4.0,
            left + 18.0,
            s.label
                .replace('`', "")
                .replace('&', "&amp;")
                .replace('<', "&lt;")
        );
    }
    out.push_str("</svg>\n");
    out
}
