//! Every command the README shows runs as written. Each ```sh block of README.md is run by
//! bash, in order, in a fresh folder that holds the repository's `fixtures/`, with
//! `fare-validator` and `cargo run --release --` standing for the binary under test. Only the
//! lines that run cargo itself (`cargo test`, `cargo build`, `cargo bench`) are left out:
//! this test runs inside them.

use std::path::Path;
use std::process::Command;

/// The README's ```sh blocks, each as its text.
fn sh_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in readme.lines() {
        match (&mut current, line.trim_end()) {
            (None, "```sh") => current = Some(String::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(b), l) => {
                b.push_str(l);
                b.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(current.is_none(), "README.md: a ```sh block is not closed");
    blocks
}

/// The block as bash runs it here: cargo's own commands left out, the binary named.
fn runnable(block: &str) -> String {
    block
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("cargo test")
                || l.starts_with("cargo build")
                || l.starts_with("cargo bench"))
        })
        .map(|l| l.replace("cargo run --release --", "fare-validator"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_command_the_readme_shows_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let blocks = sh_blocks(&readme);
    assert!(
        blocks.len() >= 3,
        "README.md has {} sh blocks",
        blocks.len()
    );
    let work = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(root.join("fixtures"), work.path().join("fixtures")).unwrap();
    let bin = env!("CARGO_BIN_EXE_fare-validator");
    for (i, block) in blocks.iter().enumerate() {
        let script = format!(
            "set -euo pipefail\nfare-validator() {{ {bin:?} \"$@\"; }}\n{}\n",
            runnable(block)
        );
        let out = Command::new("bash")
            .arg("-c")
            .arg(&script)
            .current_dir(work.path())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "README sh block {} failed:\n{block}\nstderr: {}",
            i + 1,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn the_readme_starts_with_the_two_commands_a_new_user_needs() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let first = &sh_blocks(&readme)[0];
    assert!(first.contains("cargo run --release -- demo"), "{first}");
    assert!(first.contains("cargo test"), "{first}");
    let ci = std::fs::read_to_string(root.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|l| l.trim() == "cargo test"),
        ".ci/run must run cargo test"
    );
}
