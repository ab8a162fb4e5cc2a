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
    /// How the samples behind `vsfleet` spread, when it summarises several.
    pub spread: Option<Spread>,
    /// The same for `raw`.
    pub raw_spread: Option<Spread>,
}

/// The spread of the samples behind a figure, in the row's unit: a reader
/// can tell noise (overlapping ranges) from change.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Spread {
    pub n: usize,
    pub min: f64,
    /// First and third quartiles (nearest rank).
    pub q1: f64,
    pub median: f64,
    pub q3: f64,
    pub max: f64,
}

impl Spread {
    /// Of durations, in milliseconds.
    pub fn of(samples: &mut [Duration]) -> Self {
        let mut values: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
        Self::of_values(&mut values)
    }

    pub fn of_values(values: &mut [f64]) -> Self {
        assert!(!values.is_empty(), "no samples");
        values.sort_by(f64::total_cmp);
        let at = |q: f64| values[((q * values.len() as f64).ceil() as usize).clamp(1, values.len()) - 1];
        Self { n: values.len(), min: values[0], q1: at(0.25), median: at(0.5), q3: at(0.75), max: at(1.0) }
    }

    /// `min–max [q1–q3] n` in the row's unit.
    pub fn short(&self) -> String {
        format!("{}–{} [{}–{}] n={}", fig(self.min), fig(self.max), fig(self.q1), fig(self.q3), self.n)
    }
}

/// A figure with as many decimals as it needs to be read.
fn fig(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
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
            spread: None,
            raw_spread: None,
        }
    }

    pub fn raw(mut self, raw: f64) -> Self {
        self.raw = Some(raw);
        self.ratio = (raw > 0.0).then(|| self.vsfleet / raw);
        self
    }

    /// Records the spread of the samples behind `vsfleet`.
    pub fn spread(mut self, spread: Spread) -> Self {
        self.spread = Some(spread);
        self
    }

    /// Records the spread of the samples behind `raw`.
    pub fn raw_spread(mut self, spread: Spread) -> Self {
        self.raw_spread = Some(spread);
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

/// Median and p99 of durations, in milliseconds (with [`Spread::of`] for the rest).
pub fn percentiles(samples: &mut [Duration]) -> (f64, f64) {
    assert!(!samples.is_empty(), "no samples");
    samples.sort();
    let at = |q: f64| samples[((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1];
    (ms(at(0.5)), ms(at(0.99)))
}

pub fn print(rows: &[Row]) {
    println!(
        "{:<15} {:<44} {:>11} {:>11} {:>7} {:<7} {:<28} load",
        "scenario", "metric", "vsfleet", "raw", "ratio", "unit", "goal"
    );
    let mut spreads = false;
    for r in rows {
        let raw = r.raw.map_or("-".into(), |v| format!("{v:.2}"));
        let ratio = r.ratio.map_or("-".into(), |v| format!("{v:.2}"));
        let goal = match r.met {
            Some(true) => format!("{} ✔", r.goal),
            Some(false) => format!("{} ✘", r.goal),
            None => r.goal.clone(),
        };
        println!(
            "{:<15} {:<44} {:>11.2} {:>11} {:>7} {:<7} {:<28} {}",
            r.scenario, r.metric, r.vsfleet, raw, ratio, r.unit, goal, r.load
        );
        // The spread on a line of its own under its figure, so the columns stay put.
        let mut parts = Vec::new();
        if let Some(s) = &r.spread {
            parts.push(format!("vsfleet {}", s.short()));
        }
        if let Some(s) = &r.raw_spread {
            parts.push(format!("raw {}", s.short()));
        }
        if !parts.is_empty() {
            spreads = true;
            println!("{:<15} {:<44} {}", "", "  └ spread", parts.join(" · "));
        }
    }
    if spreads {
        println!("spread: min–max [interquartile range] n=samples, in the row's unit");
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
