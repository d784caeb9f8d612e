//! Running Debian's `restic` against a repository a test made, to show that restic itself lists,
//! checks and restores what shadowcopy wrote.

use std::path::Path;
use std::process::{Command, Output};

/// Runs `restic -r repo args...` with `password` in its environment only (never a password file
/// of the machine's), and a cache next to the repository.
pub fn restic_unchecked(repo: &Path, password: &str, args: &[&str]) -> Output {
    Command::new("restic")
        .arg("-r")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", password)
        .env_remove("RESTIC_PASSWORD_FILE")
        .env("RESTIC_CACHE_DIR", repo.with_extension("restic-cache"))
        .output()
        .expect("restic is installed (scripts/install-deps.sh --test)")
}

/// Runs `restic -r repo args...`, asserts that it succeeded and returns its standard output.
pub fn restic(repo: &Path, password: &str, args: &[&str]) -> String {
    let out = restic_unchecked(repo, password, args);
    assert!(
        out.status.success(),
        "restic {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
