//! Whatever bytes arrive on NATS or in a request, the parsers answer with a
//! value or an error, never a panic (a panic in a worker's job task would
//! repeat on every redelivery).

use std::str::FromStr;

use proptest::prelude::*;
use vsfleet_contract::{
    HostPresence, InnerContainers, Inventory, JobEvent, JobId, JobRequest, Observed, ServerId, ServerName, Subjects,
};

fn all_parsers(bytes: &[u8]) {
    if let Ok(job) = serde_json::from_slice::<JobRequest>(bytes)
        && let Some(spec) = &job.spec
    {
        // What the worker does with a spec it was handed.
        if spec.validate().is_ok() {
            let _ = (spec.nano_cpus(), spec.memory_bytes());
        }
        let _ = (spec.nano_cpus(), spec.memory_bytes());
    }
    let _ = serde_json::from_slice::<JobEvent>(bytes);
    let _ = serde_json::from_slice::<Observed>(bytes);
    let _ = serde_json::from_slice::<Inventory>(bytes);
    let _ = serde_json::from_slice::<InnerContainers>(bytes);
    let _ = serde_json::from_slice::<HostPresence>(bytes);
    let text = String::from_utf8_lossy(bytes);
    let _ = ServerName::parse(&text);
    let _ = ServerId::from_str(&text);
    let _ = JobId::from_str(&text);
    let subjects = Subjects::new("vs").unwrap();
    let _ = subjects.parse_job(&text);
    let _ = subjects.event_kind(&text);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        all_parsers(&bytes);
    }

    #[test]
    fn arbitrary_job_payloads_never_panic(
        server_id in any::<i64>(),
        cpus in any::<f64>(),
        memory_mb in any::<u64>(),
        deadline in "[0-9TZ:.+-]{0,40}",
    ) {
        let json = format!(
            r#"{{"server_id": {server_id}, "spec": {{"cpus": {cpus:?}, "memory_mb": {memory_mb}}}, "deadline": "{deadline}"}}"#
        );
        all_parsers(json.as_bytes());
    }

    #[test]
    fn arbitrary_names_and_subjects_never_panic(text in "\\PC{0,64}", host in "[a-zA-Z0-9._*> -]{0,20}") {
        all_parsers(text.as_bytes());
        let subjects = Subjects::new("vs").unwrap();
        let _ = subjects.parse_job(&format!("vs.jobs.{host}.{text}"));
        let _ = vsfleet_contract::subjects::check_host_id(&host);
    }
}

#[test]
fn the_overflowing_spec_of_the_issue_is_refused_not_wrapped() {
    let job: JobRequest =
        serde_json::from_str(r#"{"server_id": 7, "spec": {"memory_mb": 17592186044416}}"#).expect("it parses");
    let spec = job.spec.unwrap();
    assert_eq!(spec.validate().unwrap_err().field(), "memory_mb");
    assert_eq!(spec.memory_bytes(), None, "no wrap to 0 (no limit) in any build");
}
