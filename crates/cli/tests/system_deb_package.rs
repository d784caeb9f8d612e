//! The Debian package, installed system-wide on this machine (issue 8's first must-show):
//! `packaging/deb/build.sh --profile debug --no-build` packs the debug binaries already built (it
//! compiles nothing), `apt-get install ./shadowcopy_*.deb` installs the package for real, the
//! installed `/usr/sbin/shadowcopyd` starts under socket activation (`systemd-socket-activate`) at
//! the first connection to a private socket, the installed `/usr/bin/shadowcopy writers` answers
//! through it, and `apt-get purge` leaves nothing of the package behind.
//!
//! This is the one test that installs into the system (/usr/bin, /usr/sbin, /etc/shadowcopy,
//! /lib/systemd/system), hence its name. It cannot disturb the tests running beside it: they run
//! the binaries of target/ on private sockets and never look in /usr or /etc/shadowcopy, and this
//! test's daemon has its own socket, state, expose and writers directories and never touches
//! /run/shadowcopy/shadowcopyd.sock. On a machine booted with systemd, the package would start
//! shadowcopyd.socket on that default socket, where other tests expect no daemon to answer; a
//! policy-rc.d that refuses every start keeps it from doing so while the package is installed.
//! A guard purges the package (and removes that policy-rc.d) on every path, failures included.
//! It refuses to run on a machine where the package is already installed, which it would
//! otherwise purge, except under CI (`CI` set), whose machine holds only what an earlier, killed
//! run of this test left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shadowcopy_test_support::{TempDir, unix_socket_listening, wait_until};

/// The package's name.
const PACKAGE: &str = "shadowcopy";

/// The writer the test's daemon hosts, by a name no other test uses.
const WRITER: &str = "deb-install-check";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|error| panic!("cannot run {program}: {error}"))
}

fn text(output: &Output) -> String {
    format!(
        "{}\n--- stdout:\n{}\n--- stderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Whether dpkg has the package installed (any version).
fn installed() -> bool {
    let output = run("dpkg-query", &["-W", "-f=${Status}", PACKAGE]);
    output.status.success() && String::from_utf8_lossy(&output.stdout) == "install ok installed"
}

/// The installed package, purged on drop; and the policy-rc.d this test put there, removed.
struct Installed {
    policy: Option<PathBuf>,
}

impl Installed {
    /// Installs `deb` with apt, as a person would (`apt install ./shadowcopy_*.deb`): the package
    /// and its dependencies, which a Debian system already has, so the package lists are fetched
    /// only when apt cannot resolve them without.
    fn install(deb: &Path) -> Installed {
        let policy = Path::new("/usr/sbin/policy-rc.d");
        let mut guard = Installed { policy: None };
        if Path::new("/run/systemd/system").exists() && !policy.exists() {
            std::fs::write(
                policy,
                "#!/bin/sh\n# shadowcopy's package test: start nothing.\nexit 101\n",
            )
            .expect("/usr/sbin/policy-rc.d can be written");
            std::fs::set_permissions(policy, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .unwrap();
            guard.policy = Some(policy.to_owned());
        }
        let deb = deb.display().to_string();
        // No recommends: btrfs-progs, xfsprogs and restic are the tests' own packages already, and
        // anything apt added here would stay after the purge.
        let args = [
            "install",
            "-y",
            "--no-install-recommends",
            "-o",
            "DPkg::Lock::Timeout=120",
            deb.as_str(),
        ];
        let first = run("apt-get", &args);
        if !first.status.success() {
            let update = run("apt-get", &["update", "-qq"]);
            let second = run("apt-get", &args);
            assert!(
                second.status.success(),
                "apt-get install {deb} failed:\n{}\nthen apt-get update:\n{}\nthen again:\n{}",
                text(&first),
                text(&update),
                text(&second)
            );
        }
        assert!(
            installed(),
            "apt-get install {deb} left {PACKAGE} not installed"
        );
        guard
    }
}

impl Drop for Installed {
    fn drop(&mut self) {
        if installed() {
            let purge = run(
                "apt-get",
                &["purge", "-y", "-o", "DPkg::Lock::Timeout=120", PACKAGE],
            );
            if !purge.status.success() {
                eprintln!(
                    "apt-get purge {PACKAGE} failed; purge it by hand:\n{}",
                    text(&purge)
                );
            }
        }
        if let Some(policy) = &self.policy {
            let _ = std::fs::remove_file(policy);
        }
    }
}

/// `systemd-socket-activate` listening on a socket for the installed shadowcopyd; the process
/// (which becomes the daemon at the first connection) is stopped on drop.
struct Activation {
    child: Child,
}

impl Activation {
    /// The program the process runs now: the activator until the first connection, then the
    /// daemon it executed in its place.
    fn program(&self) -> Option<PathBuf> {
        std::fs::read_link(format!("/proc/{}/exe", self.child.id())).ok()
    }
}

impl Drop for Activation {
    fn drop(&mut self) {
        // SIGTERM, so that the daemon stops in order and its hosted writer goes first.
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("a pid fits in i32"));
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn deb_package_installs_system_wide_serves_writers_through_socket_activation_and_purges_clean() {
    let started = Instant::now();
    if installed() && std::env::var_os("CI").is_some() {
        // A CI machine holds no package of anyone's: this is what a killed run of this test left.
        eprintln!("{PACKAGE} is installed, left by an earlier run; purging it first");
        drop(Installed { policy: None });
    }
    assert!(
        !installed(),
        "the {PACKAGE} package is installed on this machine; this test installs and purges it, \
         so it will not run over yours: purge it first (apt-get purge {PACKAGE})"
    );
    let activate = Path::new("/usr/bin/systemd-socket-activate");
    assert!(
        activate.exists(),
        "{} is missing: install Debian's systemd package (scripts/install-deps.sh --test)",
        activate.display()
    );
    let dir = TempDir::new("deb-package");

    // The package, from the binaries of this test's own build profile, compiling nothing.
    let test = std::env::current_exe().unwrap();
    let profile_dir = test.parent().and_then(Path::parent).unwrap();
    let profile = profile_dir.file_name().unwrap().to_str().unwrap();
    let target_dir = profile_dir.parent().unwrap();
    let build = Command::new(repo_root().join("packaging/deb/build.sh"))
        .args(["--profile", profile, "--no-build", "--out"])
        .arg(dir.join("out"))
        .env("CARGO_TARGET_DIR", target_dir)
        .output()
        .expect("packaging/deb/build.sh runs");
    assert!(build.status.success(), "build.sh failed: {}", text(&build));
    let deb = PathBuf::from(String::from_utf8_lossy(&build.stdout).trim());
    let name = deb.file_name().unwrap().to_string_lossy().into_owned();
    assert!(
        name.starts_with("shadowcopy_") && name.ends_with(".deb") && deb.exists(),
        "build.sh printed {} instead of the package's path",
        deb.display()
    );
    let built = started.elapsed();

    let installing = Instant::now();
    let package = Installed::install(&deb);
    let install_time = installing.elapsed();
    let listed = run("dpkg", &["-L", PACKAGE]);
    assert!(listed.status.success(), "{}", text(&listed));
    let files: Vec<PathBuf> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .map(PathBuf::from)
        .collect();
    for path in [
        "/usr/bin/shadowcopy",
        "/usr/bin/shadowcopy-writer",
        "/usr/sbin/shadowcopyd",
        "/etc/shadowcopy/shadowcopyd.toml",
        "/etc/shadowcopy/writers.d",
        "/lib/systemd/system/shadowcopyd.socket",
        "/lib/systemd/system/shadowcopyd.service",
        "/usr/share/man/man1/shadowcopy.1.gz",
        "/usr/share/man/man1/shadowcopy-backup.1.gz",
        "/usr/share/man/man8/shadowcopyd.8.gz",
        "/usr/share/bash-completion/completions/shadowcopy",
        "/usr/share/zsh/vendor-completions/_shadowcopy",
        "/usr/share/fish/vendor_completions.d/shadowcopy.fish",
        "/usr/share/doc/shadowcopy/copyright",
        "/usr/share/doc/shadowcopy/docs/guide/README.md",
    ] {
        assert!(
            files.iter().any(|file| file == Path::new(path)) && Path::new(path).exists(),
            "{path} is not installed by the package; dpkg -L {PACKAGE}:\n{}",
            String::from_utf8_lossy(&listed.stdout)
        );
    }
    assert!(
        !files.iter().any(|file| file.ends_with("shadowcopy-fault")),
        "the test hook shadowcopy-fault is packaged"
    );

    // The installed daemon, socket-activated on a private socket, with the installed default
    // configuration and everything it writes in the test's directory.
    let socket = dir.join("shadowcopyd.sock");
    std::fs::create_dir_all(dir.join("writers.d")).unwrap();
    std::fs::write(
        dir.join("writers.d/check.toml"),
        format!(
            "kind = \"script\"\nname = \"{WRITER}\"\n[script]\nfreeze = \"true\"\nthaw = \"true\"\n\
             runtime_dir = \"{}\"\n[[script.components]]\nname = \"data\"\n\
             files = [{{ path = \"{}\" }}]\n",
            dir.join("script-frozen").display(),
            dir.join("data").display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.join("activation.log")).unwrap();
    let activation = Activation {
        child: Command::new(activate)
            .arg("-l")
            .arg(&socket)
            .arg("/usr/sbin/shadowcopyd")
            .args([
                "--config",
                "/etc/shadowcopy/shadowcopyd.toml",
                "--state-dir",
            ])
            .arg(dir.join("state"))
            .arg("--expose-dir")
            .arg(dir.join("exposed"))
            .arg("--writers-dir")
            .arg(dir.join("writers.d"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-socket-activate starts"),
    };
    let log = || std::fs::read_to_string(dir.join("activation.log")).unwrap_or_default();
    assert!(
        wait_until(Duration::from_secs(10), || unix_socket_listening(&socket)),
        "systemd-socket-activate does not listen on {}:\n{}",
        socket.display(),
        log()
    );
    assert_eq!(
        activation.program().as_deref(),
        Some(activate),
        "shadowcopyd ran before anyone connected:\n{}",
        log()
    );

    // The first connection starts the daemon; the writers it hosts are registered by the time it
    // answers, but the first answer may come while they register, so ask until it lists it.
    let answering = Instant::now();
    let mut last = None;
    let answered = wait_until(Duration::from_secs(60), || {
        let output = run(
            "/usr/bin/shadowcopy",
            &["writers", "--socket", &socket.display().to_string()],
        );
        let done = output.status.success()
            && String::from_utf8_lossy(&output.stdout)
                .contains(&format!("Writer name: '{WRITER}'"));
        last = Some(output);
        done
    });
    let last = last.expect("shadowcopy writers ran");
    assert!(
        answered,
        "/usr/bin/shadowcopy writers did not list {WRITER}: {}\nthe daemon's log:\n{}",
        text(&last),
        log()
    );
    assert_eq!(
        activation.program().as_deref(),
        Some(Path::new("/usr/sbin/shadowcopyd")),
        "the process that answered is not the installed shadowcopyd:\n{}",
        log()
    );
    assert!(
        String::from_utf8_lossy(&last.stdout).contains("State: [1] Stable"),
        "{}",
        text(&last)
    );
    let answer_time = answering.elapsed();
    drop(activation);
    assert!(
        !socket.exists() || std::os::unix::net::UnixStream::connect(&socket).is_err(),
        "the daemon still answers after SIGTERM:\n{}",
        log()
    );

    // The purge leaves nothing of the package: no file it listed, no configuration, no unit
    // enablement.
    let purging = Instant::now();
    drop(package);
    assert!(!installed(), "{PACKAGE} is still installed after the purge");
    let gone = run("dpkg", &["-L", PACKAGE]);
    assert!(
        !gone.status.success(),
        "dpkg still lists files: {}",
        text(&gone)
    );
    // Directories stay when other packages own them too (/usr/bin; /lib, which usrmerge makes a
    // link to one).
    let left: Vec<&PathBuf> = files
        .iter()
        .filter(|file| file.symlink_metadata().is_ok() && !file.is_dir())
        .collect();
    assert!(left.is_empty(), "the purge left {left:?}");
    for path in [
        "/etc/shadowcopy",
        "/usr/share/doc/shadowcopy",
        "/usr/share/shadowcopy",
    ] {
        assert!(!Path::new(path).exists(), "the purge left {path}");
    }
    let enabled = run(
        "sh",
        &[
            "-c",
            "ls /etc/systemd/system/*/shadowcopy* 2>/dev/null || true",
        ],
    );
    assert!(
        enabled.stdout.is_empty(),
        "the purge left unit enablements: {}",
        String::from_utf8_lossy(&enabled.stdout)
    );
    eprintln!(
        "package built in {built:.1?}, installed in {install_time:.1?}, answered in \
         {answer_time:.1?}, purged in {:.1?}; {:.1?} in all",
        purging.elapsed(),
        started.elapsed()
    );
}
