//! The web page end to end in a real browser: headless Chromium, driven
//! by Playwright (tests/browser/e2e.mjs, which says what it checks),
//! against the real server.
//!
//! Needs `chromium` (Debian's) and the npm packages of tests/browser;
//! `.ci/run` installs both. Without them this test fails and says what to
//! install: a browser test that passes without a browser proves nothing.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Server;

/// Long enough for Chromium to start on a busy machine; the scenario
/// itself takes a few seconds.
const BROWSER_DEADLINE: Duration = Duration::from_secs(120);

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// What is missing to run the browser, as the command that installs it.
fn missing() -> Vec<&'static str> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser");
    let mut missing = Vec::new();
    if !Path::new(&chromium()).exists() {
        missing.push("apt-get install chromium (or set CHROMIUM to a Chromium binary)");
    }
    if Command::new("node").arg("--version").output().is_err() {
        missing.push("apt-get install nodejs npm");
    }
    if !dir.join("node_modules/playwright-core").exists() {
        missing.push("npm ci --prefix tests/browser");
    }
    missing
}

/// Kills the browser's driver (and so the browser) even if the test fails.
struct Driver(std::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn two_browsers_and_nc_talk_in_two_rooms_and_a_reload_resumes() {
    let missing = missing();
    assert!(
        missing.is_empty(),
        "to run the browser test: {}",
        missing.join("; ")
    );
    let server = Server::start();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/e2e.mjs");
    let shots = server.workdir().path().to_path_buf();
    let child = Command::new("node")
        .arg(&script)
        .arg(server.port().to_string())
        .arg(&shots)
        .env("CHROMIUM", chromium())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node");
    let mut driver = Driver(child);
    let started = Instant::now();
    let status = loop {
        if let Some(status) = driver.0.try_wait().expect("wait for node") {
            break status;
        }
        assert!(
            started.elapsed() < BROWSER_DEADLINE,
            "the browser test took over {BROWSER_DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    let mut err = String::new();
    use std::io::Read;
    if let Some(mut s) = driver.0.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    if let Some(mut s) = driver.0.stderr.take() {
        let _ = s.read_to_string(&mut err);
    }
    assert!(
        status.success(),
        "the browser test failed:\n{err}\n{out}\nserver log:\n{}",
        server.log_text()
    );
    assert_eq!(out.trim(), "ok");
    for shot in ["desktop.png", "phone.png"] {
        let size = std::fs::metadata(shots.join(shot)).map_or(0, |m| m.len());
        assert!(size > 1000, "no screenshot {shot}");
    }
}
