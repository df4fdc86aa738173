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
}

impl Table {
    pub fn push(&mut self, row: Row) {
        println!("  done: {}", row.workload);
        self.rows.push(row);
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
