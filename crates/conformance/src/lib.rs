//! The conformance suite of shadowcopy: the end-to-end test scenarios of spec §22 run against a live
//! `shadowcopyd` over its socket, with scripted writers and a scripted requester.
//!
//! Spec §19 names the tools a VSS implementation is checked with: `betest` drives backups and
//! restores as a requester (TOOL-5), `vswriter` is a configurable test writer (TOOL-6), and the two
//! together are "the backbone of the conformance suite" (TOOL-8). This crate plays both roles
//! through the public libraries, so that it sees exactly what any other program sees:
//! `shadowcopy-requester` for the requester and admin calls, `shadowcopy-writer-sdk` for the test
//! writers ([`writer::TestWriter`]).
//!
//! What it offers (the binary `shadowcopy-conformance` wraps each):
//! - [`run_suite`]: the scenarios of §22 that need no real storage, against a daemon configured
//!   with `[providers] simulated = true`, whose simulated providers fail or hang at a chosen
//!   provider step by volume name (`/sim/fail-at-commit/...`). Each scenario registers its own
//!   writers with fresh class ids, so it never disturbs, and is never disturbed by, writers that
//!   others registered. Scenarios run one after another, since only one snapshot set can be in
//!   creation per host (LIMIT-4).
//! - [`run_writer_suite`]: checks a writer written by someone else that is already registered:
//!   deterministic Identify (ROLE-6), a valid WMD, a full backup of all its components, and that it
//!   recovers from an aborted backup and from a freeze held until the commit window closes.
//! - [`hold::hold_session`]: a backup of every registered writer held after DoSnapshotSet, for the
//!   test that kills the requester (TS-15, BK-END-6).
//! - [`bench::bench`]: the cost of one backup cycle through the daemon, with N SDK writers.
//!
//! Decisions:
//! - Only what the protocol shows is checked. Provider call order (TS-02) is not visible over the
//!   wire, so it is checked through its consequences: the writer events between the provider
//!   steps, the snapshot states the Admin service lists, and the error codes.
//! - Where the spec leaves a choice and ARCHITECTURE.md records one (Thaw in reverse level order,
//!   FLUSH_WRITES_TIMEOUT in PreCommit versus HOLD_WRITES_TIMEOUT later, FAILED_AT_FREEZE for a
//!   missed freeze window), the suite checks the recorded choice and says so in the reason.
//! - The daemon's commit window (CFG-10) is not visible through the protocol; pass it with
//!   `--commit-window-ms` to check it exactly, otherwise only the 10 s cap of LIMIT-5 is checked.

pub mod bench;
mod harness;
pub mod hold;
pub mod report;
mod scenarios;
pub mod writer;

use std::path::PathBuf;
use std::time::Duration;

use shadowcopy_requester::{Client, RequesterError};
use tokio::time::Instant;

use crate::harness::Harness;
use crate::report::{Report, ScenarioResult};
use crate::scenarios::Scenario;

/// The most a commit window can be (LIMIT-5, CFG-10): 10 s.
pub const LIMIT_COMMIT_WINDOW: Duration = Duration::from_secs(10);

/// How long one scenario may run before it counts as failed. The slowest scenarios wait for a
/// commit window of at most 10 s once; the rest takes well under a second.
pub const SCENARIO_LIMIT: Duration = Duration::from_secs(90);

/// What a conformance run is told.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// The daemon's socket.
    pub socket: PathBuf,
    /// Run only the scenarios whose label, name or requirement IDs contain one of these,
    /// case-insensitively; all when empty.
    pub only: Vec<String>,
    /// The daemon's commit window (`service.commit_window_ms`, CFG-10), when known; the protocol
    /// does not report it.
    pub commit_window: Option<Duration>,
}

/// The name this program gives itself in `Hello`.
const CLIENT_NAME: &str = concat!("shadowcopy-conformance ", env!("CARGO_PKG_VERSION"));

/// Connects to the daemon as the conformance requester.
pub async fn connect(socket: &std::path::Path) -> Result<Client, RequesterError> {
    Client::connect_as(socket, CLIENT_NAME).await
}

/// Runs the built-in scenarios against the daemon at `options.socket`; `on_result` sees each
/// result as soon as its scenario ends.
///
/// Fails only when the daemon cannot be reached; every failed check is a failed scenario in the
/// report.
pub async fn run_suite(
    options: &RunOptions,
    on_result: impl FnMut(&ScenarioResult),
) -> Result<Report, RequesterError> {
    let client = connect(&options.socket).await?;
    Ok(run_scenarios(
        client,
        options,
        scenarios::all(),
        None,
        "shadowcopyd",
        on_result,
    )
    .await)
}

/// Checks the registered writer named `writer` (its writer name, persistent instance name, class id
/// or instance id) with the writer scenarios; `on_result` sees each result as it ends.
pub async fn run_writer_suite(
    options: &RunOptions,
    writer: &str,
    on_result: impl FnMut(&ScenarioResult),
) -> Result<Report, RequesterError> {
    let client = connect(&options.socket).await?;
    Ok(run_scenarios(
        client,
        options,
        scenarios::external(),
        Some(writer.to_owned()),
        &format!("writer {writer}"),
        on_result,
    )
    .await)
}

/// Runs the matching scenarios one after another, each with its own harness, tag and time limit.
async fn run_scenarios(
    client: Client,
    options: &RunOptions,
    all: Vec<Scenario>,
    subject: Option<String>,
    label: &str,
    mut on_result: impl FnMut(&ScenarioResult),
) -> Report {
    let mut report = Report::new(options.socket.display().to_string(), label);
    // Unique per run, so that writer names and volume paths of two runs never meet.
    let run = shadowcopy_metadata::Guid::new_v4().simple().to_string();
    let run = &run[..8];
    for scenario in all
        .into_iter()
        .filter(|s| scenarios::matches(s, &options.only))
    {
        let tag = format!("{run}-{}", scenario.id.to_lowercase());
        let mut harness = Harness::new(
            options.socket.clone(),
            client.clone(),
            tag,
            options.commit_window,
            subject.clone(),
        );
        let started = Instant::now();
        let outcome = tokio::time::timeout(SCENARIO_LIMIT, (scenario.run)(&mut harness)).await;
        let duration = started.elapsed();
        harness.teardown().await;
        let reason = match outcome {
            Ok(Ok(())) => None,
            Ok(Err(reason)) => Some(reason),
            Err(_) => Some(format!(
                "the scenario did not finish within {} s",
                SCENARIO_LIMIT.as_secs()
            )),
        };
        let result = ScenarioResult {
            id: scenario.id.to_owned(),
            name: scenario.name.to_owned(),
            requirements: scenario
                .requirements
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            passed: reason.is_none(),
            reason,
            duration_us: u64::try_from(duration.as_micros()).unwrap_or(u64::MAX),
        };
        on_result(&result);
        report.push(result);
    }
    report
}
