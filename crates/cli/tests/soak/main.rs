//! A short soak run in CI (issue 7's soak, `driver.rs`): 30 backup cycles with a database under
//! load and random faults, after which nothing may have leaked and no data may be lost. The long
//! run is `cargo bench -p shadowcopy-cli --bench soak -- 500` (docs/RELIABILITY.md).

mod driver;

#[test]
fn loop_soak_of_backup_cycles_with_faults_leaks_nothing_and_loses_nothing() {
    // Seed 1 draws 5 vetoes, 1 hang and 2 killed requesters in the first 30 cycles.
    let report = driver::run("soak-ci", 30, 1);
    eprintln!("{report}");
    assert!(
        report.problems().is_empty(),
        "{:?}\n{report}",
        report.problems()
    );
    for fault in [
        "requester SIGKILL",
        "writer vetoes at Freeze",
        "writer hangs past its freeze window",
    ] {
        assert!(
            report.faults.get(fault).is_some_and(|n| *n > 0),
            "no `{fault}` was injected, so the run tested less than it claims: {report}"
        );
    }
    assert!(
        report.backups_partial > 0,
        "a veto or hang must leave a component unsaved: {report}"
    );
    assert!(report.backups_saved > 0, "{report}");
    assert!(report.backups_listed > 0, "{report}");
}
