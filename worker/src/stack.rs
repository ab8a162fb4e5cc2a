//! The system stack (seed 000 §7): every new server gets the template named
//! by `worker.system_template`, rendered into its `apps/sistema/` and brought
//! up inside it with compose at create.
//!
//! A template is a directory under `worker.templates_dir`: a
//! `docker-compose.yml` and the files it uses, with `${SERVER_ID}`,
//! `${SERVER_NAME}`, `${HOST_ID}` and `${PORT_<container port>}` replaced
//! in every text file; anything else (`${X}` for compose itself, `$${…}`)
//! is left as written. `images/*.tar` (`docker save` archives) are loaded
//! into the inner Docker before `up`, for hosts that reach no registry.
//!
//! A stack that does not come up never fails the create: the server is
//! there and running, and its owner can fix or start the stack themself;
//! the job's result carries a warning that becomes the server's `last_error`.

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use serde_json::{Value, json};
use tokio::time::Instant;
use vsfleet_contract::ServerId;
use vsfleet_contract::settings::WorkerSettings;

use crate::docker::Containers;
use crate::error::OpError;
use crate::layout::{DataRoot, STACK_DIR};

/// The compose file every template has at its top.
pub const COMPOSE_FILE: &str = "docker-compose.yml";
/// Written last into a rendered tree: it says the tree is whole (a render
/// is staged out of the server's reach and moved into place at once).
pub const MARKER: &str = ".vsfleet-rendered";
/// Archives under this directory of a template are loaded into the inner Docker.
const IMAGES_DIR: &str = "images";
/// Larger files are copied as they are: configuration is never this big,
/// and an image archive is never read whole into memory.
const RENDER_MAX_BYTES: u64 = 1 << 20;
/// Bounds on what a job's result and a server's `last_error` carry (the
/// api keeps 500 characters of a warning): a command's output keeps its
/// end, where compose says why; the whole error keeps its start.
const OUTPUT_MAX_CHARS: usize = 300;
const ERROR_MAX_CHARS: usize = 460;
/// Tries of `docker load` + `compose up` once the inner Docker answers: a
/// daemon that has just started may still be setting up its networks.
const UP_TRIES: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum StackError {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The template cannot be rendered as it is (an operator's fix).
    #[error("template: {0}")]
    Template(String),
    /// The destination holds something we will not write through.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Docker(#[from] OpError),
    #[error("{what} exited {code}: {output}")]
    Command { what: String, code: i64, output: String },
    /// `last` is why the last try failed, when one did: the reason an
    /// operator needs, where the timeout alone says nothing.
    #[error("{stage} did not finish within {secs}s{}", last.as_ref().map(|l| format!(" (last try: {l})")).unwrap_or_default())]
    TimedOut { stage: &'static str, secs: u64, last: Option<String> },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StackError {
    let path = path.to_owned();
    move |source| StackError::Io { action, path, source }
}

/// What the worker needs to give a new server its system stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    pub templates_dir: PathBuf,
    /// A validated template name (`contract::settings::is_template_name`).
    pub template: String,
    pub timeout: Duration,
    pub host_id: String,
}

impl StackConfig {
    /// `None` when no system template is configured.
    pub fn from_settings(settings: &WorkerSettings) -> Option<Self> {
        Some(Self {
            templates_dir: settings.templates_dir.clone()?,
            template: settings.system_template.clone()?,
            timeout: Duration::from_secs(settings.stack_timeout_secs),
            host_id: settings.host_id.clone(),
        })
    }

    pub fn template_dir(&self) -> PathBuf {
        self.templates_dir.join(&self.template)
    }

    /// At worker start: a template that is not there would leave every new
    /// server without its stack, so the worker refuses to start instead.
    pub fn check(&self) -> Result<(), StackError> {
        let compose = self.template_dir().join(COMPOSE_FILE);
        match fs::symlink_metadata(&compose) {
            Ok(meta) if meta.is_file() => Ok(()),
            Ok(_) => Err(StackError::Template(format!("{} is not a regular file", compose.display()))),
            Err(e) => Err(io_error("reading", &compose)(e)),
        }
    }
}

/// The values a template's placeholders take for one server.
#[derive(Debug, Clone)]
pub struct Variables {
    pub server_id: ServerId,
    /// The server's container name (`hosting-users-dind-42`): how the
    /// control plane reaches it on the servers' network.
    pub server_name: String,
    pub host_id: String,
    /// Published ports, (container port, host port).
    pub ports: Vec<(u16, u16)>,
}

impl Variables {
    /// The value of a placeholder we own; `None` leaves it to compose.
    fn lookup(&self, name: &str) -> Result<Option<String>, StackError> {
        Ok(match name {
            "SERVER_ID" => Some(self.server_id.to_string()),
            "SERVER_NAME" => Some(self.server_name.clone()),
            "HOST_ID" => Some(self.host_id.clone()),
            _ => match name.strip_prefix("PORT_").and_then(|n| n.parse::<u16>().ok().filter(|p| p.to_string() == n)) {
                Some(container) => match self.ports.iter().find(|(c, _)| *c == container) {
                    Some((_, host)) => Some(host.to_string()),
                    // Left in place, compose would read it as an unset
                    // variable and publish an empty port: say why instead.
                    None => {
                        return Err(StackError::Template(format!(
                            "${{{name}}} is used, but the server publishes no port {container}"
                        )));
                    }
                },
                None => None,
            },
        })
    }
}

/// Replaces our placeholders in `text`. `$$` is compose's escape for a
/// literal `$` and is kept, so `$${SERVER_ID}` reaches compose untouched.
pub fn render_text(text: &str, vars: &Variables) -> Result<String, StackError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push_str("$$");
            rest = tail;
            continue;
        }
        if let Some(body) = after.strip_prefix('{')
            && let Some(end) = body.find('}')
            && let Some(value) = vars.lookup(&body[..end])?
        {
            out.push_str(&value);
            rest = &body[end + 1..];
            continue;
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Renders `template` into `dest` (a server's `apps/sistema`) unless the
/// marker says it was done. Returns whether it rendered now. Blocking.
///
/// Only regular files and directories are copied; a symbolic link in the
/// template is refused (it could point anywhere on the host), and so is one
/// in `dest` (the server's owner is root inside it and could have made it).
/// Each file is written to a temporary name and renamed into place, so a
/// render killed half way leaves whole files, and one run again converges.
/// Files the owner added are never removed, nothing outside `dest` is touched.
pub fn render(template: &Path, dest: &Path, vars: &Variables) -> Result<bool, StackError> {
    let marker = dest.join(MARKER);
    match fs::symlink_metadata(&marker) {
        Ok(meta) if meta.is_file() => return Ok(false),
        Ok(_) => return Err(StackError::Refused(format!("{} is not a regular file", marker.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("reading", &marker)(e)),
    }
    let meta = fs::symlink_metadata(template).map_err(io_error("reading the template", template))?;
    if !meta.is_dir() {
        return Err(StackError::Template(format!("{} is not a directory", template.display())));
    }
    ensure_dir(dest)?;
    copy_tree(template, dest, vars)?;
    write_atomically(&marker, &mut io::Cursor::new(b"rendered from a template by vsfleet at create\n"), 0o644)?;
    Ok(true)
}

/// A directory of ours at `path`: made when missing, refused when it is
/// anything else (a symbolic link above all).
fn ensure_dir(path: &Path) -> Result<(), StackError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(StackError::Refused(format!("{} exists and is not a directory", path.display()))),
        // Not create_dir_all: a missing parent means something is wrong.
        Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(path).map_err(io_error("creating", path)),
        Err(e) => Err(io_error("reading", path)(e)),
    }
}

fn copy_tree(from: &Path, to: &Path, vars: &Variables) -> Result<(), StackError> {
    let mut entries = fs::read_dir(from)
        .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
        .map_err(io_error("listing", from))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (source, target) = (entry.path(), to.join(entry.file_name()));
        // The entry's own type: a symbolic link is not followed.
        let kind = entry.file_type().map_err(io_error("reading", &source))?;
        if kind.is_dir() {
            ensure_dir(&target)?;
            copy_tree(&source, &target, vars)?;
        } else if kind.is_file() {
            copy_file(&source, &target, vars)?;
        } else {
            return Err(StackError::Template(format!(
                "{} is not a regular file or directory (symbolic links are refused: they could point anywhere)",
                source.display()
            )));
        }
    }
    Ok(())
}

fn copy_file(source: &Path, target: &Path, vars: &Variables) -> Result<(), StackError> {
    let mut file = fs::File::open(source).map_err(io_error("reading", source))?;
    let meta = file.metadata().map_err(io_error("reading", source))?;
    let mode = meta.permissions().mode() & 0o777;
    if meta.len() > RENDER_MAX_BYTES {
        return write_atomically(target, &mut file, mode);
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.read_to_end(&mut bytes).map_err(io_error("reading", source))?;
    // Text is UTF-8 without NUL bytes; anything else (a tar archive, an
    // icon) is copied byte for byte.
    let rendered = match std::str::from_utf8(&bytes) {
        Ok(text) if !text.contains('\0') => render_text(text, vars)
            .map_err(|e| match e {
                StackError::Template(reason) => StackError::Template(format!("{}: {reason}", source.display())),
                other => other,
            })?
            .into_bytes(),
        _ => bytes,
    };
    write_atomically(target, &mut io::Cursor::new(rendered), mode)
}

/// Writes `content` to `path` through a temporary file beside it, then
/// renames it over `path`. The temporary file is created exclusively (it
/// never opens what a symbolic link points to), and a rename replaces a
/// link at `path` rather than following it.
fn write_atomically(path: &Path, content: &mut impl io::Read, mode: u32) -> Result<(), StackError> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.vsfleet-tmp"));
    // A leftover of a render that was killed; removing a link removes the link.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("removing", &tmp)(e)),
    }
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io_error("creating", &tmp))?;
    io::copy(content, &mut file).map_err(io_error("writing", &tmp))?;
    file.flush().map_err(io_error("writing", &tmp))?;
    // The umask may have narrowed the mode given at creation.
    file.set_permissions(fs::Permissions::from_mode(mode)).map_err(io_error("writing", &tmp))?;
    // Durable before the marker says the render is complete.
    file.sync_all().map_err(io_error("writing", &tmp))?;
    fs::rename(&tmp, path).map_err(io_error("renaming into place", path))
}

/// The image archives in a rendered stack (`images/*.tar`), by file name.
/// A link in place of the directory is not followed (the owner can make one).
pub fn image_archives(dest: &Path) -> Result<Vec<String>, StackError> {
    let dir = dest.join(IMAGES_DIR);
    if !fs::symlink_metadata(&dir).is_ok_and(|m| m.is_dir()) {
        return Ok(Vec::new());
    }
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_error("listing", &dir)(e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("listing", &dir))?;
        let regular = entry.file_type().map_err(io_error("reading", &entry.path()))?.is_file();
        if let Some(name) = entry.file_name().to_str()
            && regular
            && name.ends_with(".tar")
        {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Brings the rendered stack up inside a running server: waits for its
/// Docker daemon, loads the stack's image archives, `compose up -d`.
pub struct BringUp<'a> {
    pub containers: &'a Containers,
    /// The server's container.
    pub container: &'a str,
    pub timeout: Duration,
}

impl BringUp<'_> {
    pub async fn run(&self, images: &[String]) -> Result<(), StackError> {
        let deadline = Instant::now() + self.timeout;
        let last = Mutex::new(None);
        let note = |error: &StackError| *last.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{error:#}"));
        self.within(deadline, "waiting for the server's Docker daemon", &last, self.daemon_ready(note)).await?;
        let up = || async {
            for image in images {
                let path = format!("/apps/{STACK_DIR}/{IMAGES_DIR}/{image}");
                self.command(&format!("docker load -i {path}"), &["docker", "load", "-q", "-i", &path]).await?;
            }
            self.command("compose up", &["sh", "-c", &compose_up_script()]).await
        };
        let backoff = ExponentialBuilder::default().with_min_delay(Duration::from_secs(1)).with_max_times(UP_TRIES - 1);
        let retried = up.retry(backoff).sleep(tokio::time::sleep).notify(|error: &StackError, after: Duration| {
            note(error);
            tracing::info!(error = format!("{error:#}"), ?after, "system stack did not come up; trying again");
        });
        *last.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.within(deadline, "loading its images and compose up", &last, retried).await
    }

    async fn daemon_ready(&self, note: impl Fn(&StackError)) -> Result<(), StackError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(2))
            .without_max_times();
        // Retried until the deadline: the daemon starts with the server,
        // and Docker refuses an exec while the container is starting too.
        (|| self.command("docker info", &["docker", "info"]))
            .retry(backoff)
            .sleep(tokio::time::sleep)
            .notify(|error: &StackError, _| note(error))
            .await
    }

    async fn command(&self, what: &str, cmd: &[&str]) -> Result<(), StackError> {
        let out = self.containers.exec(self.container, cmd).await?;
        if out.exit_code == 0 {
            return Ok(());
        }
        let output = if out.stderr.trim().is_empty() { out.stdout } else { out.stderr };
        // One line, for a server's `last_error`.
        let output = output.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
        Err(StackError::Command { what: what.to_owned(), code: out.exit_code, output: tail(&output, OUTPUT_MAX_CHARS) })
    }

    async fn within<T>(
        &self,
        deadline: Instant,
        stage: &'static str,
        last: &Mutex<Option<String>>,
        work: impl Future<Output = Result<T, StackError>>,
    ) -> Result<T, StackError> {
        match tokio::time::timeout_at(deadline, work).await {
            Ok(result) => result,
            Err(_) => {
                let last = last.lock().unwrap_or_else(|e| e.into_inner()).take();
                Err(StackError::TimedOut { stage, secs: self.timeout.as_secs(), last })
            }
        }
    }
}

/// The compose plugin where the server has it (production images), else
/// the standalone v1 `docker-compose` (the test image: Debian's).
fn compose_up_script() -> String {
    let args = format!("-p {STACK_DIR} -f /apps/{STACK_DIR}/{COMPOSE_FILE} up -d");
    format!(
        "if docker compose version >/dev/null 2>&1; then exec docker compose {args}; \
         elif command -v docker-compose >/dev/null 2>&1; then exec docker-compose {args}; \
         else echo 'neither docker compose nor docker-compose is installed in the server' >&2; exit 127; fi"
    )
}

/// Renders the configured template for a new server and brings it up,
/// within `budget` (what is left of the job's time) when that is shorter
/// than `stack_timeout_secs`. Never fails the create: the result says what
/// happened, and a warning when the stack is not up.
pub async fn install(
    config: &StackConfig,
    root: &DataRoot,
    containers: &Containers,
    id: ServerId,
    container: &str,
    ports: &[(u16, u16)],
    budget: Option<Duration>,
) -> Value {
    let vars = Variables {
        server_id: id,
        server_name: containers.name(id),
        host_id: config.host_id.clone(),
        ports: ports.to_vec(),
    };
    let name = &config.template;
    let timeout = budget.map_or(config.timeout, |b| b.min(config.timeout));
    match install_inner(config, root, containers, container, vars, timeout).await {
        Ok(()) => {
            tracing::info!(template = %name, "system stack up");
            json!({ "system_stack": { "template": name, "status": "up" } })
        }
        Err(error) => {
            let error = head(&format!("{error:#}"), ERROR_MAX_CHARS);
            tracing::warn!(template = %name, %error, "system stack did not start; the server runs without it");
            json!({
                "system_stack": { "template": name, "status": "failed", "error": error },
                "warning": format!("system stack {name} did not start: {error}"),
            })
        }
    }
}

async fn install_inner(
    config: &StackConfig,
    root: &DataRoot,
    containers: &Containers,
    container: &str,
    vars: Variables,
    timeout: Duration,
) -> Result<(), StackError> {
    let template = config.template_dir();
    let id = vars.server_id;
    let (dest, staging, given) = (root.stack_dir(id), root.stack_staging_dir(id), root.stack_given_file(id));
    let span = tracing::Span::current();
    let rendered = tokio::task::spawn_blocking(move || {
        let _entered = span.enter();
        place(&template, &staging, &dest, &given, &vars)?;
        image_archives(&dest)
    })
    .await
    .map_err(|e| StackError::Template(format!("rendering stopped: {e}")))?;
    let images = rendered?;
    tracing::info!(images = images.len(), "system stack in place");
    BringUp { containers, container, timeout }.run(&images).await
}

/// Renders the template into `staging` (outside the server's mounts: its
/// root cannot swap a directory for a link while we write) and moves it to
/// `dest` in one rename, which never follows a link at `dest` and refuses
/// a directory the owner filled meanwhile. A `dest` already there (an
/// earlier delivery's, or the owner's own) is left as it is. Blocking.
fn place(template: &Path, staging: &Path, dest: &Path, given: &Path, vars: &Variables) -> Result<(), StackError> {
    if fs::symlink_metadata(dest).is_err() {
        // Ours alone, from an earlier delivery killed half way.
        match fs::remove_dir_all(staging) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("removing", staging)(e)),
        }
        render(template, staging, vars)?;
        fs::rename(staging, dest).map_err(io_error("moving the rendered stack to", dest))?;
    }
    write_atomically(given, &mut io::Cursor::new(b"system stack given at create\n"), 0o644)
}

/// The last `max` characters.
fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_owned();
    }
    let skip = text.char_indices().nth(count - max).map_or(0, |(i, _)| i);
    format!("…{}", &text[skip..])
}

/// The first `max` characters.
fn head(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn vars() -> Variables {
        Variables {
            server_id: ServerId::new(42).unwrap(),
            server_name: "hosting-users-dind-42".into(),
            host_id: "host7".into(),
            ports: vec![(22, 20001), (80, 20002)],
        }
    }

    /// A fresh directory of this test's own; removed by `Drop`.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let dir = std::env::temp_dir().join(format!("vsfleet-stack-{tag}-{}-{n}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// A template at `{scratch}/t`, and the server's `apps` at `{scratch}/apps`.
    fn template(scratch: &Scratch) -> (PathBuf, PathBuf) {
        let t = scratch.0.join("t");
        fs::create_dir_all(t.join("endpoint")).unwrap();
        fs::create_dir_all(t.join("images")).unwrap();
        fs::write(t.join(COMPOSE_FILE), "name: s${SERVER_ID}\nports: [\"${PORT_80}:80\"]\nx: ${X}\n").unwrap();
        fs::write(t.join("endpoint/Caddyfile"), "header X-Server ${SERVER_NAME}\n").unwrap();
        fs::write(t.join("images/app.tar"), b"ustar\0${SERVER_ID}\0\xff").unwrap();
        fs::write(t.join("run.sh"), "#!/bin/sh\necho ${HOST_ID}\n").unwrap();
        fs::set_permissions(t.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
        let apps = scratch.0.join("apps");
        fs::create_dir_all(&apps).unwrap();
        (t, apps)
    }

    #[test]
    fn known_placeholders_are_replaced_and_the_rest_left_to_compose() {
        let text = "id=${SERVER_ID} name=${SERVER_NAME} host=${HOST_ID} ssh=${PORT_22} web=${PORT_80}";
        assert_eq!(
            render_text(text, &vars()).unwrap(),
            "id=42 name=hosting-users-dind-42 host=host7 ssh=20001 web=20002"
        );
        for untouched in [
            "${X}",
            "${SERVER_ID:-1}",
            "$${SERVER_ID}",
            "$SERVER_ID",
            "cost: 5$",
            "${SERVER_ID",
            "${PORT_080}",
            "${PORT_x}",
            "$$$$",
            "ąčę ${}",
        ] {
            assert_eq!(render_text(untouched, &vars()).unwrap(), untouched);
        }
        // `$$` is one escaped `$`, then the placeholder.
        assert_eq!(render_text("$$${SERVER_ID}", &vars()).unwrap(), "$$42");
        assert_eq!(render_text("${SERVER_ID}${SERVER_ID}", &vars()).unwrap(), "4242");
    }

    #[test]
    fn a_port_the_server_does_not_publish_is_an_error_that_names_it() {
        let err = render_text("ports: [\"${PORT_443}:443\"]", &vars()).unwrap_err().to_string();
        assert!(err.contains("${PORT_443}") && err.contains("443"), "{err}");
    }

    #[test]
    fn a_template_is_rendered_text_files_only() {
        let scratch = Scratch::new("render");
        let (t, apps) = template(&scratch);
        let dest = apps.join(STACK_DIR);
        assert!(render(&t, &dest, &vars()).unwrap());
        assert_eq!(fs::read_to_string(dest.join(COMPOSE_FILE)).unwrap(), "name: s42\nports: [\"20002:80\"]\nx: ${X}\n");
        assert_eq!(
            fs::read_to_string(dest.join("endpoint/Caddyfile")).unwrap(),
            "header X-Server hosting-users-dind-42\n"
        );
        assert_eq!(fs::read(dest.join("images/app.tar")).unwrap(), b"ustar\0${SERVER_ID}\0\xff");
        assert_eq!(fs::read_to_string(dest.join("run.sh")).unwrap(), "#!/bin/sh\necho host7\n");
        assert_eq!(fs::metadata(dest.join("run.sh")).unwrap().permissions().mode() & 0o777, 0o755);
        assert!(dest.join(MARKER).is_file());
        assert_eq!(image_archives(&dest).unwrap(), ["app.tar"]);
        let leftovers: Vec<_> =
            walk(&dest).into_iter().filter(|p| p.to_string_lossy().contains("vsfleet-tmp")).collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_rendered_stack_is_left_to_its_owner_and_a_half_render_converges() {
        let scratch = Scratch::new("idempotent");
        let (t, apps) = template(&scratch);
        let dest = apps.join(STACK_DIR);
        assert!(render(&t, &dest, &vars()).unwrap());
        fs::write(dest.join(COMPOSE_FILE), "edited by the owner\n").unwrap();
        fs::write(dest.join("mine.txt"), "added by the owner\n").unwrap();
        assert!(!render(&t, &dest, &vars()).unwrap(), "rendered once, at the first create");
        assert_eq!(fs::read_to_string(dest.join(COMPOSE_FILE)).unwrap(), "edited by the owner\n");

        // Killed before the marker: a leftover temporary file, a file half done.
        fs::remove_file(dest.join(MARKER)).unwrap();
        fs::write(dest.join(format!(".{COMPOSE_FILE}.vsfleet-tmp")), "half").unwrap();
        assert!(render(&t, &dest, &vars()).unwrap());
        assert!(fs::read_to_string(dest.join(COMPOSE_FILE)).unwrap().starts_with("name: s42\n"));
        assert_eq!(fs::read_to_string(dest.join("mine.txt")).unwrap(), "added by the owner\n");
        assert!(!dest.join(format!(".{COMPOSE_FILE}.vsfleet-tmp")).exists());
        let first: Vec<_> = walk(&dest).into_iter().map(|p| (p.clone(), fs::read(&p).unwrap())).collect();
        fs::remove_file(dest.join(MARKER)).unwrap();
        assert!(render(&t, &dest, &vars()).unwrap());
        let second: Vec<_> = walk(&dest).into_iter().map(|p| (p.clone(), fs::read(&p).unwrap())).collect();
        assert_eq!(first, second);
    }

    #[test]
    fn symbolic_links_are_refused_in_the_template_and_in_the_destination() {
        let scratch = Scratch::new("links");
        let (t, apps) = template(&scratch);
        std::os::unix::fs::symlink("/etc/passwd", t.join("endpoint/passwd")).unwrap();
        let dest = apps.join(STACK_DIR);
        let err = render(&t, &dest, &vars()).unwrap_err().to_string();
        assert!(err.contains("endpoint/passwd") && err.contains("symbolic link"), "{err}");
        assert!(!dest.join(MARKER).exists());
        fs::remove_file(t.join("endpoint/passwd")).unwrap();

        // The owner is root inside the server: a link they made in place of
        // a directory is not written through.
        let outside = scratch.0.join("outside");
        fs::create_dir_all(&outside).unwrap();
        fs::remove_dir_all(dest.join("endpoint")).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("endpoint")).unwrap();
        let err = render(&t, &dest, &vars()).unwrap_err().to_string();
        assert!(err.contains("not a directory"), "{err}");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);

        let other = Scratch::new("links-whole");
        let (t, apps) = template(&other);
        std::os::unix::fs::symlink(&outside, apps.join(STACK_DIR)).unwrap();
        assert!(render(&t, &apps.join(STACK_DIR), &vars()).is_err());
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 0);
    }

    #[test]
    fn a_template_that_uses_an_unpublished_port_is_not_rendered() {
        let scratch = Scratch::new("port");
        let (t, apps) = template(&scratch);
        let vars = Variables { ports: vec![], ..vars() };
        let err = render(&t, &apps.join(STACK_DIR), &vars).unwrap_err().to_string();
        assert!(err.contains(COMPOSE_FILE) && err.contains("${PORT_80}"), "{err}");
        assert!(!apps.join(STACK_DIR).join(MARKER).exists());
    }

    #[test]
    fn a_missing_template_stops_the_worker_at_start() {
        let scratch = Scratch::new("check");
        let config = StackConfig {
            templates_dir: scratch.0.clone(),
            template: "t".into(),
            timeout: Duration::from_secs(1),
            host_id: "h".into(),
        };
        let err = config.check().unwrap_err().to_string();
        assert!(err.contains(COMPOSE_FILE), "{err}");
        template(&scratch);
        config.check().unwrap();
    }

    #[test]
    fn long_output_keeps_its_end_and_long_errors_their_start() {
        let long = format!("{}the reason", "x".repeat(1000));
        let short = tail(&long, OUTPUT_MAX_CHARS);
        assert!(short.ends_with("the reason") && short.chars().count() == OUTPUT_MAX_CHARS + 1, "{short}");
        assert_eq!(tail("ąč", 2), "ąč");
        let long = format!("the stage{}", "ž".repeat(1000));
        let short = head(&long, ERROR_MAX_CHARS);
        assert!(short.starts_with("the stage") && short.chars().count() == ERROR_MAX_CHARS + 1, "{short}");
        assert_eq!(head("ąč", 2), "ąč");
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut found = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                found.extend(walk(&path));
            } else {
                found.push(path);
            }
        }
        found
    }
}
