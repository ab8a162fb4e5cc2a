//! Reconcile at scale: a synthetic inventory of 10,000 servers against the
//! database. The pure plan (time and allocations), and the whole apply
//! (load, plan, write) beside the bare `SELECT` of the same rows.
//! Goal: under 250 ms. [`measure`] does the same at any size, for the
//! scale curve (`curves.rs`).

use std::time::{Duration, Instant};

use chrono::Utc;
use vsfleet_api::reconcile::{self, HostInventory, Known};
use vsfleet_contract::{ContainerState, SeenContainer, ServerId};

use crate::alloc;
use crate::report::{Row, Spread};

const SERVERS: i64 = 10_000;

/// 1% stopped behind our back, 1% removed: 2% of `servers` change.
fn inventory(at: chrono::DateTime<Utc>, servers: i64) -> HostInventory {
    let containers = (1..=servers)
        .filter(|n| n % 100 != 0)
        .map(|n| SeenContainer {
            server_id: ServerId::new(n).unwrap(),
            container_id: format!("{n:064x}"),
            state: if n % 100 == 1 { ContainerState::Stopped } else { ContainerState::Running },
        })
        .collect();
    HostInventory { at, containers, data_dirs: (1..=servers).map(|n| ServerId::new(n).unwrap()).collect() }
}

/// Reconcile of one host of `servers` servers, measured.
pub struct Measured {
    /// The pure plan, ms.
    pub plan: Spread,
    pub plan_allocations: u64,
    /// Peak heap of one plan above what was live before, bytes.
    pub plan_heap: u64,
    /// The bare `SELECT` of the host's rows, ms.
    pub select: Spread,
    /// The first apply, 2% to change, ms.
    pub first: f64,
    /// Its peak heap above what was live before, bytes.
    pub first_heap: u64,
    /// Applies with nothing to change, ms.
    pub steady: Spread,
    /// Inserting the rows (not timed against anything).
    pub seed: Duration,
}

pub async fn measure(servers: i64, plan_runs: usize, steady_runs: usize) -> anyhow::Result<Measured> {
    let changes = (servers / 100 * 2) as usize;
    let long_ago = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
    let known: Vec<Known> = (1..=servers)
        .map(|n| Known {
            id: ServerId::new(n).unwrap(),
            status: vsfleet_contract::ServerStatus::Running,
            container_id: Some(format!("{n:064x}")),
            data_exists: true,
            updated_at: long_ago,
            busy: false,
        })
        .collect();
    let inv = inventory(Utc::now(), servers);
    let mut plan_times = Vec::new();
    let (mut plan_allocations, mut plan_heap) = (0, 0);
    for _ in 0..plan_runs {
        let before = alloc::count();
        let peak = alloc::Peak::start();
        let t0 = Instant::now();
        let plan = reconcile::plan(&known, &inv);
        plan_times.push(t0.elapsed());
        plan_allocations = alloc::count() - before;
        plan_heap = peak.stop();
        assert_eq!(plan.changes.len(), changes);
    }
    drop((known, inv));

    // The same against a real SQLite file.
    let dir = std::env::temp_dir().join(format!("vsfleet-bench-reconcile-{}-{servers}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = vsfleet_api::store::Store::open(&format!("sqlite://{}/bench.db", dir.display())).await?;
    db.migrate().await?;
    let vsfleet_api::store::Store::Sqlite(file) = &db else { unreachable!("a sqlite URL") };
    sqlx::query("INSERT INTO users (email, is_admin, created_at) VALUES ('bench@example.test', 1, $1)")
        .bind(Utc::now())
        .execute(&file.write)
        .await?;
    let t_seed = Instant::now();
    let mut tx = file.write.begin().await?;
    for n in 1..=servers {
        sqlx::query(
            "INSERT INTO servers (id, owner_id, name, host, status, container_id, data_exists, created_at, updated_at)
             VALUES ($1, 1, $2, 'bench', 'running', $3, 1, $4, $5)",
        )
        .bind(n)
        .bind(format!("server {n}"))
        .bind(format!("{n:064x}"))
        .bind(long_ago)
        .bind(long_ago)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    let seed = t_seed.elapsed();

    let mut select_times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, status FROM servers WHERE host = 'bench'").fetch_all(&file.read).await?;
        select_times.push(t0.elapsed());
        assert_eq!(rows.len(), servers as usize);
    }
    let inv = inventory(Utc::now(), servers);
    let peak = alloc::Peak::start();
    let t0 = Instant::now();
    let first = reconcile::apply(&db, "bench", &inv).await?;
    let first_apply = t0.elapsed();
    let first_heap = peak.stop();
    assert_eq!(first.changes.len(), changes);
    let mut steady = Vec::new();
    for _ in 0..steady_runs {
        let inv = inventory(Utc::now(), servers);
        let t0 = Instant::now();
        let plan = reconcile::apply(&db, "bench", &inv).await?;
        steady.push(t0.elapsed());
        assert!(plan.changes.is_empty());
    }
    db.close().await;
    std::fs::remove_dir_all(&dir)?;
    Ok(Measured {
        plan: Spread::of(&mut plan_times),
        plan_allocations,
        plan_heap,
        select: Spread::of(&mut select_times),
        first: crate::report::ms(first_apply),
        first_heap,
        steady: Spread::of(&mut steady),
        seed,
    })
}

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("reconcile: {SERVERS} servers");
    let m = measure(SERVERS, 20, 5).await?;
    let load = format!("{SERVERS} servers, 2% drifted");
    let budget = 250.0;
    Ok(vec![
        Row::new("reconcile", "plan (pure), median", &load, "ms", m.plan.median).spread(m.plan),
        Row::new("reconcile", "plan allocations per run", &load, "allocs", m.plan_allocations as f64),
        Row::new("reconcile", "apply with 200 changes (load+plan+write)", &load, "ms", m.first)
            .raw(m.select.median)
            .raw_spread(m.select)
            .goal("< 250 ms", m.first < budget),
        Row::new("reconcile", "apply, nothing to change, median", &load, "ms", m.steady.median)
            .raw(m.select.median)
            .spread(m.steady)
            .raw_spread(m.select)
            .goal("< 250 ms", m.steady.median < budget),
    ])
}
