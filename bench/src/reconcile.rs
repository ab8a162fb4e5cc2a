//! Reconcile at scale: a synthetic inventory of 10,000 servers against the
//! database. The pure plan (time and allocations), and the whole apply
//! (load, plan, write) beside the bare `SELECT` of the same rows.
//! Goal: under 250 ms.

use std::time::{Duration, Instant};

use chrono::Utc;
use vsfleet_api::reconcile::{self, HostInventory, Known};
use vsfleet_contract::{ContainerState, SeenContainer, ServerId};

use crate::alloc;
use crate::report::{Row, ms, percentiles};

const SERVERS: i64 = 10_000;

fn inventory(at: chrono::DateTime<Utc>) -> HostInventory {
    // 1% stopped behind our back, 1% removed.
    let containers = (1..=SERVERS)
        .filter(|n| n % 100 != 0)
        .map(|n| SeenContainer {
            server_id: ServerId::new(n).unwrap(),
            container_id: format!("{n:064x}"),
            state: if n % 100 == 1 { ContainerState::Stopped } else { ContainerState::Running },
        })
        .collect();
    HostInventory { at, containers, data_dirs: (1..=SERVERS).map(|n| ServerId::new(n).unwrap()).collect() }
}

pub async fn run() -> anyhow::Result<Vec<Row>> {
    eprintln!("reconcile: {SERVERS} servers");
    let long_ago = chrono::DateTime::from_timestamp(1_000, 0).unwrap();
    let known: Vec<Known> = (1..=SERVERS)
        .map(|n| Known {
            id: ServerId::new(n).unwrap(),
            status: vsfleet_contract::ServerStatus::Running,
            container_id: Some(format!("{n:064x}")),
            data_exists: true,
            updated_at: long_ago,
            busy: false,
        })
        .collect();
    let inv = inventory(Utc::now());
    let mut plan_times = Vec::new();
    let mut allocations = 0;
    for _ in 0..20 {
        let before = alloc::count();
        let t0 = Instant::now();
        let plan = reconcile::plan(&known, &inv);
        plan_times.push(t0.elapsed());
        allocations = alloc::count() - before;
        assert_eq!(plan.changes.len(), 200);
    }
    let (plan50, _) = percentiles(&mut plan_times);

    // The same against a real SQLite file.
    let dir = std::env::temp_dir().join(format!("vsfleet-bench-reconcile-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let db = vsfleet_api::store::Store::open(&format!("sqlite://{}/bench.db", dir.display())).await?;
    db.migrate().await?;
    let vsfleet_api::store::Store::Sqlite(file) = &db else { unreachable!("a sqlite URL") };
    sqlx::query("INSERT INTO users (email, is_admin, created_at) VALUES ('bench@example.test', 1, $1)")
        .bind(Utc::now())
        .execute(&file.write)
        .await?;
    let mut tx = file.write.begin().await?;
    for n in 1..=SERVERS {
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

    let mut select_times = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, status FROM servers WHERE host = 'bench'").fetch_all(&file.read).await?;
        select_times.push(t0.elapsed());
        assert_eq!(rows.len(), SERVERS as usize);
    }
    let (select50, _) = percentiles(&mut select_times);
    let t0 = Instant::now();
    let first = reconcile::apply(&db, "bench", &inventory(Utc::now())).await?;
    let first_apply = t0.elapsed();
    assert_eq!(first.changes.len(), 200);
    let mut steady = Vec::new();
    for _ in 0..5 {
        let t0 = Instant::now();
        let plan = reconcile::apply(&db, "bench", &inventory(Utc::now())).await?;
        steady.push(t0.elapsed());
        assert!(plan.changes.is_empty());
    }
    let (steady50, _) = percentiles(&mut steady);
    db.close().await;
    std::fs::remove_dir_all(&dir)?;

    let load = format!("{SERVERS} servers, 2% drifted");
    let budget = Duration::from_millis(250);
    Ok(vec![
        Row::new("reconcile", "plan (pure), median", &load, "ms", plan50),
        Row::new("reconcile", "plan allocations per run", &load, "allocs", allocations as f64),
        Row::new("reconcile", "apply with 200 changes (load+plan+write)", &load, "ms", ms(first_apply))
            .raw(select50)
            .goal("< 250 ms", first_apply < budget),
        Row::new("reconcile", "apply, nothing to change, median", &load, "ms", steady50)
            .raw(select50)
            .goal("< 250 ms", steady50 < 250.0),
    ])
}
