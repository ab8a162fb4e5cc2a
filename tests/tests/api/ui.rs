//! `/ui`: the dashboard in a real headless Chromium, driven through
//! chromedriver. A user signs in, creates a server with the page's form,
//! sees it turn `running` and, after clicking stop, `stopped`, all in one
//! page load: only the page's event stream can bring those changes, so a
//! page that does not follow `/v1/events` fails here. Another user's page
//! does not list the server; an admin's lists it and the hosts. Screenshots
//! land in `target/ui-screenshots/`.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// How long the page may take to show a change (a create runs a container).
const LIVE: Duration = Duration::from_secs(60);

/// A chromedriver on a loopback port it picks itself (`--port=0`, then read
/// from what it prints). It runs in a process group of its own, which the
/// browsers it starts join: on drop the whole group is killed, so a test
/// that panics before closing its session leaves no Chromium behind.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let bin = std::env::var("CHROMEDRIVER_BIN").unwrap_or_else(|_| "chromedriver".into());
        let mut child = Command::new(&bin)
            .arg("--port=0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {bin}: {e} (scripts/test installs chromium-driver)"));
        let stdout = child.stdout.take().expect("piped");
        let (found, port) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            // Read to the end: a full pipe would stall chromedriver.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let port = line.split("started successfully on port ").nth(1);
                if let Some(port) = port.and_then(|p| p.trim().trim_end_matches('.').parse::<u16>().ok()) {
                    let _ = found.send(port);
                }
            }
        });
        let port = port.recv_timeout(Duration::from_secs(20)).expect("chromedriver says the port it listens on");
        ChromeDriver { child, url: format!("http://127.0.0.1:{port}") }
    }

    async fn browser(&self) -> Client {
        let binary = std::env::var("CHROMIUM_BIN").unwrap_or_else(|_| "/usr/bin/chromium".into());
        let Value::Object(capabilities) = json!({
            "goog:chromeOptions": {
                "binary": binary,
                // Root in a container: no sandbox; no GPU; /dev/shm may be small.
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,900"],
            }
        }) else {
            unreachable!("an object")
        };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("chromedriver starts a Chromium session")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group of a child we spawned and
        // have not reaped yet, so its id is still ours.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

/// The dashboard in one browser tab.
struct Page<'a> {
    client: Client,
    app: &'a TestApp,
}

impl Page<'_> {
    async fn until<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = tokio::time::Instant::now() + LIVE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            if tokio::time::Instant::now() >= deadline {
                let error = self.text("#error").await;
                let live = self.text("#live").await;
                panic!("the page did not show {what} within {LIVE:?}; its error line: {error:?}, stream: {live:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The text of the first element `css` matches (empty when hidden), if any.
    async fn text(&self, css: &str) -> Option<String> {
        let found = self.client.find_all(Locator::Css(css)).await.ok()?;
        found.first()?.text().await.ok()
    }

    async fn shown(&self, css: &str) -> bool {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.is_displayed().await.unwrap_or(false),
            Err(_) => false,
        }
    }

    async fn count(&self, css: &str) -> usize {
        self.client.find_all(Locator::Css(css)).await.map(|f| f.len()).unwrap_or(0)
    }

    /// Clicks `css`, finding it again if the page redrew it in between.
    async fn click(&self, css: &str) {
        self.until(&format!("a clickable {css}"), || async {
            self.client.find(Locator::Css(css)).await.ok()?.click().await.ok()
        })
        .await
    }

    async fn type_into(&self, css: &str, text: &str) {
        let field = self.client.find(Locator::Css(css)).await.unwrap_or_else(|e| panic!("{css}: {e}"));
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn sign_in(&self, token: &str) {
        self.type_into("#token", token).await;
        self.click("#sign-in").await;
        self.until("the signed-in dashboard", || async { self.shown("#create-name").await.then_some(()) }).await;
        self.until("the live stream connected", || async { (self.text("#live").await? == "live").then_some(()) }).await;
    }

    async fn sign_out(&self) {
        self.click("#sign-out").await;
        self.until("the sign-in form", || async { self.shown("#token").await.then_some(()) }).await;
    }

    async fn wait_status(&self, id: i64, want: &str) {
        let css = format!(r#"tr[data-server-id="{id}"] .status"#);
        self.until(&format!("server {id} as {want}"), || async { (self.text(&css).await? == want).then_some(()) })
            .await;
        assert_eq!(self.app.server(id).await["status"], want, "the page and the API agree");
    }

    async fn wait_job(&self, action: &str, status: &str) {
        self.until(&format!("a {action} job {status}"), || async {
            for row in self.client.find_all(Locator::Css("#job-rows tr")).await.ok()? {
                let cells = row.find_all(Locator::Css("td")).await.ok()?;
                let (Some(a), Some(s)) = (cells.get(1), cells.get(2)) else { continue };
                if a.text().await.ok()? == action && s.text().await.ok()? == status {
                    return Some(());
                }
            }
            None
        })
        .await
    }

    /// Saves what the browser shows as `target/ui-screenshots/<name>.png`.
    async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        let dir = target_dir().join("ui-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        let dir = dir.canonicalize().unwrap();
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        println!("screenshot: {}", path.display());
    }

    /// Marks this document; `still_the_same_document` fails after any reload.
    async fn mark(&self) {
        self.client.execute("window.vsfleetTestMark = 'unreloaded';", vec![]).await.unwrap();
    }

    async fn still_the_same_document(&self) {
        let mark = self.client.execute("return window.vsfleetTestMark ?? null;", vec![]).await.unwrap();
        assert_eq!(mark, "unreloaded", "the page was reloaded: what it showed did not come live");
    }
}

/// The workspace's target directory (`CARGO_TARGET_DIR`, or `target/` beside `tests/`).
fn target_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir), // an absolute one replaces the base
        None => workspace.join("target"),
    }
}

#[tokio::test]
async fn the_dashboard_shows_a_users_server_come_up_and_stop_live() {
    let app = spawn_app().await;
    let (alice, bob) = (app.create_user("alice@example.test").await, app.create_user("bob@example.test").await);

    // The files: their types, no caching without asking, a strict policy.
    for (path, kind) in [("/ui", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")] {
        let response = app.http.get(format!("http://{}{path}", app.addr)).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(kind), "{path}: {}", header("content-type"));
        assert_eq!(header("cache-control"), "no-cache", "{path}");
        assert!(header("content-security-policy").starts_with("default-src 'self'; connect-src 'self'"), "{path}");
    }

    let driver = ChromeDriver::start();
    let page = Page { client: driver.browser().await, app: &app };
    page.client.goto(&format!("http://{}/ui", app.addr)).await.unwrap();

    // A wrong token: the API's message, and still signed out.
    page.type_into("#token", "not-a-token").await;
    page.click("#sign-in").await;
    let error = page.until("the refusal", || async { page.text("#error").await.filter(|t| !t.is_empty()) }).await;
    assert!(error.starts_with("Sign-in refused: "), "{error}");
    assert!(page.shown("#token").await && !page.shown("#create-name").await);

    page.sign_in(&alice).await;
    page.mark().await;
    assert_eq!(page.count("tr[data-server-id]").await, 0, "alice has no server yet");
    assert!(page.shown("#no-servers").await);
    assert!(!page.shown("#hosts").await, "a user does not see the hosts");
    page.screenshot("signed-in").await;

    // Create through the form; the row appears with the create's answer.
    page.type_into("#create-name", "Naršyklės serveris").await;
    page.click("#create").await;
    let id: i64 = page
        .until("the new server's row", || async {
            let row = page.client.find(Locator::Css("tr[data-server-id]")).await.ok()?;
            row.attr("data-server-id").await.ok()??.parse().ok()
        })
        .await;
    let (_, listed) = app.call(Method::GET, "/v1/servers", Some(&alice), None).await;
    assert_eq!(listed["servers"][0]["id"], id, "{listed}");
    assert_eq!(listed["servers"][0]["name"], "Naršyklės serveris");

    // `running` without a reload: only the event stream brings it.
    page.wait_status(id, "running").await;
    page.click(&format!(r#"tr[data-server-id="{id}"] button[data-select]"#)).await;
    page.wait_job("create", "succeeded").await;
    assert_eq!(page.count(&format!(r#"tr[data-server-id="{id}"] button[data-action="stop"]"#)).await, 1);
    assert_eq!(page.count(&format!(r#"tr[data-server-id="{id}"] button[data-action="start"]"#)).await, 0);
    page.screenshot("running").await;

    page.click(&format!(r#"tr[data-server-id="{id}"] button[data-action="stop"]"#)).await;
    page.wait_status(id, "stopped").await;
    // The selected server's jobs follow the stream too.
    page.wait_job("stop", "succeeded").await;
    assert_eq!(page.count(&format!(r#"tr[data-server-id="{id}"] button[data-action="start"]"#)).await, 1);
    page.screenshot("stopped").await;
    page.still_the_same_document().await;

    // Bob's page does not list it; an admin's does, with the hosts.
    page.sign_out().await;
    page.sign_in(&bob).await;
    assert!(page.shown("#no-servers").await);
    assert_eq!(page.count("tr[data-server-id]").await, 0, "bob sees none of alice's servers");
    page.sign_out().await;
    page.sign_in(&app.admin_token).await;
    page.wait_status(id, "stopped").await;
    let host_row = format!(r#"tr[data-host="{}"]"#, app.host());
    page.until("the worker's host, alive", || async {
        page.text(&format!("{host_row} .badge")).await.filter(|t| t == "alive")
    })
    .await;
    page.screenshot("admin").await;
    page.still_the_same_document().await;

    page.client.close().await.unwrap();
    drop(driver);
    app.teardown().await;
}
