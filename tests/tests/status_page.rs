//! The status page in a real headless Chromium, driven over WebDriver (chromedriver): a
//! lock taken with the SDK appears with its holder and token, its time left counts down,
//! a queued acquirer shows as a waiter and gets the lock handed on, the history says so,
//! and a released lock vanishes. Saves a screenshot (to `docs/status-page.png` with
//! `FENCED_UPDATE_SCREENSHOT=1`).
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver` (`scripts/install-chromium.sh`
//! installs Debian's packages). Without them the test prints why and passes, unless
//! `FENCED_REQUIRE_BROWSER=1` is set (CI sets it): then it fails.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client as Browser, ClientBuilder, Locator};
use fenced_client::AcquireOptions;
use fenced_tests::server::TestServer;
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free loopback port; killed when dropped.
struct ChromeDriver {
    child: Child,
    port: u16,
}

impl ChromeDriver {
    fn start() -> ChromeDriver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("chromedriver starts");
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "chromedriver listens within 60 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        ChromeDriver { child, port }
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether the browser is there; if not, fails under `FENCED_REQUIRE_BROWSER=1` and
/// otherwise says why the test does nothing.
fn browser_available() -> bool {
    let present = Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists();
    if !present {
        let required = std::env::var("FENCED_REQUIRE_BROWSER").is_ok_and(|value| value == "1");
        assert!(
            !required,
            "FENCED_REQUIRE_BROWSER=1 but {CHROMIUM} or {CHROMEDRIVER} is missing: run \
             scripts/install-chromium.sh"
        );
        eprintln!(
            "skipped: {CHROMIUM} or {CHROMEDRIVER} is missing (scripts/install-chromium.sh \
             installs them; FENCED_REQUIRE_BROWSER=1 makes this a failure)"
        );
    }
    present
}

/// A headless Chromium session with the flags this machine needs (no sandbox as root, no
/// background connections to a closed network) and a fresh profile.
async fn browser(driver: &ChromeDriver, profile: &Path) -> Browser {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                format!("--user-data-dir={}", profile.display()),
                "--window-size=1100,900",
            ],
        }),
    );
    ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a WebDriver session in headless Chromium")
}

/// The text of the first element `css` finds, or `None` if there is none.
async fn text_of(browser: &Browser, css: &str) -> Option<String> {
    let element = browser.find(Locator::Css(css)).await.ok()?;
    element.text().await.ok()
}

/// Waits up to 30 s for `check` to hold of the text of `css` (`None`: no such element).
async fn wait_text(
    browser: &Browser,
    css: &str,
    what: &str,
    check: impl Fn(Option<&str>) -> bool,
) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = text_of(browser, css).await;
        if check(text.as_deref()) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what} within 30 s; {css} reads {text:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Seconds shown in a "12.3 s" cell.
fn seconds(text: &str) -> f64 {
    text.trim_end_matches(" s")
        .parse()
        .unwrap_or_else(|_| panic!("a time left like '12.3 s': {text:?}"))
}

/// Where the screenshot goes: `docs/status-page.png` when `FENCED_UPDATE_SCREENSHOT=1`
/// (to refresh the README's picture), otherwise beside the build's other outputs, so that
/// a test run leaves the checkout unchanged.
fn screenshot_path() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives inside the workspace")
        .to_path_buf();
    if std::env::var("FENCED_UPDATE_SCREENSHOT").is_ok_and(|v| v == "1") {
        return workspace.join("docs/status-page.png");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    target.join("status-page.png")
}

// checks: none (operations)
#[tokio::test]
async fn the_status_page_shows_a_lock_counting_down_handed_on_and_gone() {
    if !browser_available() {
        return;
    }
    eprintln!("== the page loads and its event stream connects");
    let server = TestServer::start_with_admin(&[]);
    let admin: SocketAddr = server.admin_addr().expect("an admin listener");
    let driver = ChromeDriver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = browser(&driver, profile.path()).await;
    browser.goto(&format!("http://{admin}/")).await.unwrap();
    wait_text(&browser, "#conn", "the event stream connects", |text| {
        text == Some("live")
    })
    .await;
    wait_text(&browser, "#locks tbody", "an empty table", |text| {
        text.is_some_and(|text| text.contains("no lock is held"))
    })
    .await;

    eprintln!("== a lock taken with the SDK appears with its holder and token");
    let alice = server.sdk("alice@batch-1").await;
    let first = alice
        .acquire(
            "orders/compaction",
            AcquireOptions::try_once().ttl(Duration::from_secs(30)),
        )
        .await
        .unwrap();
    let row = r#"#locks tr[data-lock="orders/compaction"]"#;
    wait_text(
        &browser,
        &format!("{row} td.holder"),
        "alice's row",
        |text| text == Some("alice@batch-1"),
    )
    .await;
    let token = text_of(&browser, &format!("{row} td.token")).await;
    assert_eq!(token, Some(first.token().get().to_string()));

    eprintln!("== its time left counts down between two reads");
    let left = format!("{row} td.left");
    let before = wait_text(&browser, &left, "a time left", |text| {
        text.is_some_and(|text| text.ends_with(" s"))
    })
    .await
    .unwrap();
    assert!(seconds(&before) <= 30.0, "{before}");
    let after = wait_text(&browser, &left, "the time left to change", |text| {
        text.is_some_and(|text| text.ends_with(" s") && text != before)
    })
    .await
    .unwrap();
    eprintln!("time left read {before}, then {after}");

    eprintln!("== a queued acquirer shows as a waiter, and gets the lock handed on");
    let bob = server.sdk("bob@batch-2").await;
    let queued = tokio::spawn(async move {
        let lease = bob
            .acquire(
                "orders/compaction",
                AcquireOptions::wait(Duration::from_secs(60)).ttl(Duration::from_secs(30)),
            )
            .await
            .unwrap();
        (bob, lease)
    });
    wait_text(
        &browser,
        &format!("{row} td.waiters"),
        "one waiter",
        |text| text == Some("1"),
    )
    .await;
    let carol = server.sdk("carol@reports").await;
    let reports = carol
        .acquire(
            "reports/daily",
            AcquireOptions::try_once().ttl(Duration::from_secs(45)),
        )
        .await
        .unwrap();
    first.release().await.unwrap();
    let (_bob, second) = queued.await.unwrap();
    wait_text(
        &browser,
        &format!("{row} td.holder"),
        "bob's turn",
        |text| text == Some("bob@batch-2"),
    )
    .await;
    let handed_on = format!("handed on to token {}", second.token().get());
    wait_text(&browser, "#history", "alice's holding handed on", |text| {
        text.is_some_and(|text| text.contains(&handed_on))
    })
    .await;
    wait_text(&browser, "#events", "the events listed", |text| {
        text.is_some_and(|text| text.contains("released") && text.contains("reports/daily"))
    })
    .await;

    eprintln!("== screenshot: {}", screenshot_path().display());
    let png = browser.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    std::fs::write(screenshot_path(), png).unwrap();

    eprintln!("== released, the lock vanishes from the page");
    second.release().await.unwrap();
    reports.release().await.unwrap();
    wait_text(&browser, row, "the row gone", |text| text.is_none()).await;
    wait_text(&browser, "#locks tbody", "an empty table again", |text| {
        text.is_some_and(|text| text.contains("no lock is held"))
    })
    .await;
    browser.close().await.unwrap();
}
