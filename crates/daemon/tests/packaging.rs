//! What the Debian package ships for systemd (packaging/systemd/, packaging/shadowcopyd.toml,
//! docs/systemd.md) agrees with the programs: the example configuration holds every default and
//! only real settings, the units run the installed programs on the paths the daemon uses by
//! default, and `systemd-analyze verify` (Debian's systemd package; no running systemd needed)
//! accepts them.

use std::path::{Path, PathBuf};
use std::process::Command;

use shadowcopy_daemon::{DEFAULT_CONFIG, DaemonConfig};
use shadowcopy_test_support::{TempDir, workspace_binary};

/// The workspace's root.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(relative: &str) -> String {
    let path = root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The configuration with the lines that start with `prefix` and a space uncommented.
fn uncommented(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|line| {
            line.strip_prefix(prefix)
                .and_then(|rest| rest.strip_prefix(' '))
                .filter(|rest| rest.starts_with('[') || rest.contains(" = "))
                .unwrap_or(line)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_configuration_holds_every_default_and_only_real_settings() {
    let text = read("packaging/shadowcopyd.toml");
    let path = Path::new("packaging/shadowcopyd.toml");
    let as_shipped = DaemonConfig::parse(path, &text).unwrap();
    assert_eq!(
        as_shipped,
        DaemonConfig::default(),
        "as shipped, every default"
    );

    // Every `# key = value` line is a setting at its default: uncommented, nothing changes. An
    // unknown key would be refused, so a renamed setting cannot linger here.
    let defaults = uncommented(&text, "#");
    assert_ne!(defaults, text, "the file shows its settings");
    let parsed =
        DaemonConfig::parse(path, &defaults).unwrap_or_else(|error| panic!("{error}\n{defaults}"));
    assert_eq!(
        parsed,
        DaemonConfig::default(),
        "a `# key = value` line is not the default:\n{defaults}"
    );
    for key in [
        "socket",
        "state_dir",
        "expose_dir",
        "writers_dir",
        "commit_window_ms",
        "max_client_accessible_per_volume",
        "identify_timeout_s",
        "post_restore_timeout_s",
        "btrfs_snapshot_dir",
        "call_timeout_s",
    ] {
        assert!(
            defaults
                .lines()
                .any(|line| line.starts_with(&format!("{key} = "))),
            "{key} is shown"
        );
    }

    // The `## ...` examples are valid settings too.
    let examples = uncommented(&defaults, "##");
    let parsed =
        DaemonConfig::parse(path, &examples).unwrap_or_else(|error| panic!("{error}\n{examples}"));
    assert_eq!(parsed.service.backup_group.as_deref(), Some("backup"));
    assert!(parsed.metrics.listen.is_some());
    assert_eq!(parsed.providers.external.len(), 1);
    assert_eq!(parsed.previous_versions.len(), 1);
}

/// The value of every `key=` line of a unit file.
fn settings<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .collect()
}

#[test]
fn the_units_run_the_installed_programs_on_the_default_paths() {
    let defaults = DaemonConfig::default();
    let socket_unit = read("packaging/systemd/shadowcopyd.socket");
    assert_eq!(
        settings(&socket_unit, "ListenStream"),
        [defaults.service.socket.to_str().unwrap()],
        "the socket unit listens where clients look (service.socket)"
    );
    assert_eq!(
        defaults.service.socket,
        Path::new(shadowcopy_protocol::DEFAULT_SOCKET)
    );
    assert_eq!(settings(&socket_unit, "Accept"), ["no"]);

    let service = read("packaging/systemd/shadowcopyd.service");
    assert_eq!(settings(&service, "Type"), ["notify"]);
    assert_eq!(
        settings(&service, "ExecStart"),
        [format!("/usr/sbin/shadowcopyd --config {DEFAULT_CONFIG}").as_str()]
    );
    assert_eq!(
        Path::new("/var/lib").join(settings(&service, "StateDirectory")[0]),
        defaults.service.state_dir
    );
    let runtime = Path::new("/run").join(settings(&service, "RuntimeDirectory")[0]);
    assert_eq!(Some(runtime.as_path()), defaults.service.socket.parent());
    assert!(defaults.service.expose_dir.starts_with(&runtime));
    assert_eq!(
        settings(&service, "RuntimeDirectoryPreserve"),
        ["yes"],
        "stopping the service keeps the socket, exposures and freeze markers"
    );
    assert_eq!(settings(&service, "KillMode"), ["mixed"]);
    for namespacing in [
        "ProtectSystem",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "PrivateMounts",
        "PrivateNetwork",
        "ProtectKernelTunables",
        "ProtectControlGroups",
        "ReadWritePaths",
    ] {
        assert!(
            settings(&service, namespacing).is_empty(),
            "{namespacing}= would hide the daemon's mounts from the host"
        );
    }

    let writer = read("packaging/systemd/shadowcopy-writer@.service");
    assert_eq!(
        settings(&writer, "ExecStart"),
        ["/usr/bin/shadowcopy-writer run /etc/shadowcopy/standalone-writers.d/%i.toml"]
    );
    assert_ne!(
        Path::new("/etc/shadowcopy/standalone-writers.d"),
        defaults.service.writers_dir,
        "standalone declarations are not in the directory shadowcopyd hosts"
    );
    let backup = read("packaging/systemd/shadowcopy-backup@.service");
    assert_eq!(
        settings(&backup, "ExecStart"),
        ["/usr/bin/shadowcopy backup $SHADOWCOPY_BACKUP_ARGS"]
    );
    assert_eq!(
        settings(&backup, "EnvironmentFile"),
        ["/etc/shadowcopy/backup/%i.env"]
    );
    let pending = read("packaging/systemd/shadowcopy-pending-restore.service");
    assert_eq!(
        settings(&pending, "ExecStart"),
        ["/usr/bin/shadowcopy restore --apply-pending"]
    );
    assert_eq!(
        settings(&pending, "ConditionDirectoryNotEmpty"),
        [defaults
            .service
            .state_dir
            .join("pending-restores")
            .to_str()
            .unwrap()]
    );
}

#[test]
fn systemd_analyze_verify_accepts_the_units() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    assert!(
        analyze.exists(),
        "{} is missing: install Debian's systemd package (scripts/install-deps.sh --test)",
        analyze.display()
    );
    // verify checks that each ExecStart= program exists, so the copies run the programs just
    // built instead of the installed paths.
    let dir = TempDir::new("units-verify");
    let programs = [
        (
            "/usr/sbin/shadowcopyd ",
            PathBuf::from(env!("CARGO_BIN_EXE_shadowcopyd")),
        ),
        (
            "/usr/bin/shadowcopy-writer ",
            workspace_binary("shadowcopy-writer"),
        ),
        ("/usr/bin/shadowcopy ", workspace_binary("shadowcopy")),
    ];
    let mut units = Vec::new();
    for entry in std::fs::read_dir(root().join("packaging/systemd")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let mut text = std::fs::read_to_string(&path).unwrap();
        for (installed, built) in &programs {
            text = text.replace(installed, &format!("{} ", built.display()));
        }
        std::fs::write(dir.join(&name), text).unwrap();
        // A template is verified through an instance of it.
        units.push(name.replace("@.", "@example."));
    }
    units.sort();
    assert_eq!(
        units,
        [
            "shadowcopy-backup@example.service",
            "shadowcopy-backup@example.timer",
            "shadowcopy-pending-restore.service",
            "shadowcopy-writer@example.service",
            "shadowcopyd.service",
            "shadowcopyd.socket",
        ]
    );
    let output = Command::new(analyze)
        .arg("verify")
        .arg("--man=no")
        .args(units.iter().map(|unit| dir.join(unit)))
        .current_dir(&dir.0)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr).into_owned()
        + &String::from_utf8_lossy(&output.stdout);
    // Without systemd as PID 1 verify also reports on the host's own units and on what it cannot
    // read of PID 1; only what it says about ours counts.
    let ours: Vec<&str> = said
        .lines()
        .filter(|line| line.contains("shadowcopy"))
        .collect();
    assert!(ours.is_empty(), "systemd-analyze verify: {ours:#?}");
    assert!(output.status.success(), "{said}");
}
