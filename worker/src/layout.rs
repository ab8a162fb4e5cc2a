//! Every path the worker touches, derived from the configured data root and
//! a validated [`ServerId`]. Nothing else builds paths: user data can only be
//! reached through these functions.
//!
//! ```text
//! {data_root}/{id}/apps                    bind-mounted at /apps
//! {data_root}/{id}/apps/sistema            the system stack, rendered from its template at create
//! {data_root}/{id}/docker                  bind-mounted at /var/lib/docker
//! {data_root}/{id}/vsfleet-spec.json       the spec the container was built from
//! {data_root}/{id}-deleted-{YYYYMMDDHHMMSS}  a soft-deleted server (seed 000 §5)
//! {data_root}/.locks/{id}.lock             one job per server at a time, across processes; holds its fence
//! ```

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use vsfleet_contract::{ServerId, ServerSpec};

#[derive(Debug, Clone)]
pub struct DataRoot {
    root: PathBuf,
}

const SPEC_FILE: &str = "vsfleet-spec.json";
const ARCHIVE_MARK: &str = "-deleted-";
/// The system stack's directory under `apps`, at this name in every server.
pub const STACK_DIR: &str = "sistema";

impl DataRoot {
    /// `root` must be absolute (checked with the settings).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn server_dir(&self, id: ServerId) -> PathBuf {
        self.root.join(id.to_string())
    }

    pub fn apps_dir(&self, id: ServerId) -> PathBuf {
        self.server_dir(id).join("apps")
    }

    /// The system stack's directory (seed 000 §3.4), at `/apps/sistema`
    /// inside the server.
    pub fn stack_dir(&self, id: ServerId) -> PathBuf {
        self.apps_dir(id).join(STACK_DIR)
    }

    /// Where the stack is rendered before it is moved into `apps/` at once:
    /// outside the mounts, so the server's root never sees it half made.
    pub fn stack_staging_dir(&self, id: ServerId) -> PathBuf {
        self.server_dir(id).join(".vsfleet-stack-staging")
    }

    /// Written once the server has been given its stack: a later start of a
    /// server whose create failed before that gives it then, and only then.
    pub fn stack_given_file(&self, id: ServerId) -> PathBuf {
        self.server_dir(id).join("vsfleet-stack-given")
    }

    pub fn docker_dir(&self, id: ServerId) -> PathBuf {
        self.server_dir(id).join("docker")
    }

    pub fn spec_file(&self, id: ServerId) -> PathBuf {
        self.server_dir(id).join(SPEC_FILE)
    }

    pub fn locks_dir(&self) -> PathBuf {
        self.root.join(".locks")
    }

    pub fn lock_file(&self, id: ServerId) -> PathBuf {
        self.locks_dir().join(format!("{id}.lock"))
    }

    pub fn archive_dir(&self, id: ServerId, at: DateTime<Utc>) -> PathBuf {
        self.root.join(format!("{id}{ARCHIVE_MARK}{}", at.format("%Y%m%d%H%M%S")))
    }

    /// The server's archives, oldest first. Only names of the exact form
    /// `{id}-deleted-{14 digits}` count, so `42` never matches `420-…`.
    pub fn archives(&self, id: ServerId) -> io::Result<Vec<PathBuf>> {
        let mut found = Vec::new();
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if Self::archive_owner(name) == Some(id) && entry.file_type()?.is_dir() {
                found.push(entry.path());
            }
        }
        found.sort();
        Ok(found)
    }

    /// The server an archive directory name belongs to, if it is one.
    pub fn archive_owner(name: &str) -> Option<ServerId> {
        let (id, ts) = name.split_once(ARCHIVE_MARK)?;
        (ts.len() == 14 && ts.bytes().all(|b| b.is_ascii_digit())).then_some(())?;
        id.parse().ok()
    }

    pub fn data_exists(&self, id: ServerId) -> bool {
        self.server_dir(id).is_dir()
    }

    /// The spec written at create, for a start that carries none (one
    /// published by hand).
    pub fn read_spec(&self, id: ServerId) -> Option<ServerSpec> {
        let raw = std::fs::read(self.spec_file(id)).ok()?;
        serde_json::from_slice(&raw).ok()
    }

    /// Writes the spec atomically (temp file, then rename).
    pub fn write_spec(&self, id: ServerId, spec: &ServerSpec) -> io::Result<()> {
        let path = self.spec_file(id);
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(spec)?)?;
        std::fs::rename(tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: i64) -> ServerId {
        ServerId::new(n).unwrap()
    }

    #[test]
    fn paths_are_derived_from_the_id_under_the_root() {
        let root = DataRoot::new("/srv/SERVERS");
        assert_eq!(root.apps_dir(id(42)), PathBuf::from("/srv/SERVERS/42/apps"));
        assert_eq!(root.docker_dir(id(42)), PathBuf::from("/srv/SERVERS/42/docker"));
        assert_eq!(root.stack_dir(id(42)), PathBuf::from("/srv/SERVERS/42/apps/sistema"));
        let at = DateTime::parse_from_rfc3339("2025-12-08T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(root.archive_dir(id(42), at), PathBuf::from("/srv/SERVERS/42-deleted-20251208120000"));
    }

    #[test]
    fn archives_of_one_server_never_include_another() {
        let dir = tempfile_dir("archives");
        for name in [
            "42-deleted-20250101000000",
            "42-deleted-20260101000000",
            "420-deleted-20250101000000",
            "42-deleted-x",
            "42",
        ] {
            std::fs::create_dir_all(dir.join(name)).unwrap();
        }
        let root = DataRoot::new(&dir);
        let names: Vec<_> = root.archives(id(42)).unwrap().iter().map(|p| p.file_name().unwrap().to_owned()).collect();
        assert_eq!(names, ["42-deleted-20250101000000", "42-deleted-20260101000000"]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("vsfleet-layout-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_spec_and_the_lock_live_beside_the_data_never_in_a_mount() {
        let root = DataRoot::new("/srv/SERVERS");
        assert_eq!(root.root(), Path::new("/srv/SERVERS"));
        assert_eq!(root.spec_file(id(42)), PathBuf::from("/srv/SERVERS/42/vsfleet-spec.json"));
        assert_eq!(root.locks_dir(), PathBuf::from("/srv/SERVERS/.locks"));
        assert_eq!(root.lock_file(id(42)), PathBuf::from("/srv/SERVERS/.locks/42.lock"));
    }

    #[test]
    fn only_a_fourteen_digit_timestamp_makes_an_archive() {
        assert_eq!(DataRoot::archive_owner("42-deleted-20250101000000"), Some(id(42)));
        assert_eq!(DataRoot::archive_owner("42-deleted-2025010100000"), None, "13 digits");
        assert_eq!(DataRoot::archive_owner("42-deleted-2025010100000x"), None, "not all digits");
        assert_eq!(DataRoot::archive_owner("42"), None);
    }

    #[test]
    fn a_missing_root_has_no_archives_and_an_unreadable_one_is_an_error() {
        let dir = tempfile_dir("unreadable");
        let missing = DataRoot::new(dir.join("missing"));
        assert!(missing.archives(id(1)).unwrap().is_empty());
        std::fs::write(dir.join("file"), b"not a directory").unwrap();
        assert!(DataRoot::new(dir.join("file")).archives(id(1)).is_err());
        // An archive is a directory; a file of that name is not one.
        std::fs::write(dir.join("1-deleted-20250101000000"), b"").unwrap();
        assert!(DataRoot::new(&dir).archives(id(1)).unwrap().is_empty());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_spec_written_at_create_is_read_back_and_data_exists_follows_the_directory() {
        let dir = tempfile_dir("spec");
        let root = DataRoot::new(&dir);
        assert!(!root.data_exists(id(5)));
        assert_eq!(root.read_spec(id(5)), None);
        std::fs::create_dir_all(root.server_dir(id(5))).unwrap();
        assert!(root.data_exists(id(5)));
        let spec = ServerSpec { cpus: Some(1.5), memory_mb: Some(2048), ..Default::default() };
        root.write_spec(id(5), &spec).unwrap();
        assert_eq!(root.read_spec(id(5)), Some(spec));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
