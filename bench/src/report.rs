//! Figures, percentiles, the table and the JSON.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: &'static str,
    pub metric: String,
    /// What the scenario loads the system with.
    pub load: String,
    pub unit: &'static str,
    pub vsfleet: f64,
    /// The physical limit measured in the same run, when there is one.
    pub raw: Option<f64>,
    /// vsfleet / raw for rates and sizes; raw / vsfleet is never used.
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
}

impl Row {
    pub fn new(
        scenario: &'static str,
        metric: impl Into<String>,
        load: impl Into<String>,
        unit: &'static str,
        vsfleet: f64,
    ) -> Self {
        Self {
            scenario,
            metric: metric.into(),
            load: load.into(),
            unit,
            vsfleet,
            raw: None,
            ratio: None,
            goal: String::new(),
            met: None,
        }
    }

    pub fn raw(mut self, raw: f64) -> Self {
        self.raw = Some(raw);
        self.ratio = (raw > 0.0).then(|| self.vsfleet / raw);
        self
    }

    pub fn goal(mut self, goal: impl Into<String>, met: bool) -> Self {
        self.goal = goal.into();
        self.met = Some(met);
        self
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p99 of durations, in milliseconds.
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    (ms(at(0.5)), ms(at(0.99)))
}

pub fn print(rows: &[Row]) {
    println!(
        "{:<10} {:<44} {:>11} {:>11} {:>7} {:<7} {:<28} load",
        "scenario", "metric", "vsfleet", "raw", "ratio", "unit", "goal"
    );
    for r in rows {
        let raw = r.raw.map_or("-".into(), |v| format!("{v:.2}"));
        let ratio = r.ratio.map_or("-".into(), |v| format!("{v:.2}"));
        let goal = match r.met {
            Some(true) => format!("{} ✔", r.goal),
            Some(false) => format!("{} ✘", r.goal),
            None => r.goal.clone(),
        };
        println!(
            "{:<10} {:<44} {:>11.2} {:>11} {:>7} {:<7} {:<28} {}",
            r.scenario, r.metric, r.vsfleet, raw, ratio, r.unit, goal, r.load
        );
    }
}

pub fn write_json(path: &Path, rows: &[Row]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = serde_json::json!({
        "at": chrono::Utc::now(),
        "machine": { "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0) },
        "rows": rows,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
    Ok(())
}
