//! The README's test command on a machine that lacks what the tests need: it names the
//! packages and stops, before running anything, when it may not install them.

use std::process::Command;

#[test]
fn the_test_command_names_missing_packages_it_may_not_install() {
    assert_eq!(
        orchestra::sys::effective_uid(),
        0,
        "this test hides tmux with a mount namespace and must run as root"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/run.sh");
    // A private mount namespace in which tmux is not there, and a user without sudo.
    let tmux = String::from_utf8(
        Command::new("sh")
            .args(["-c", "command -v tmux"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(!tmux.is_empty(), "tmux itself is installed here");
    let output = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "mount --bind /dev/null {tmux} && exec setpriv --reuid=65534 --regid=65534 \
             --clear-groups /bin/bash {script}"
        ))
        .env("HOME", "/nonexistent")
        .output()
        .expect("unshare and setpriv (util-linux)");
    let said = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{said}");
    assert!(
        said.contains("the tests need these packages: tmux"),
        "{said}"
    );
    assert!(said.contains("sudo apt-get install tmux"), "{said}");
    assert!(
        !String::from_utf8_lossy(&output.stdout).contains("running"),
        "nothing ran"
    );
}
