//! The simulated providers the daemon loads with `providers.simulated = true`, for conformance tests.
//!
//! Each claims the volumes under one prefix and fails or hangs at one step, so that a conformance
//! run can reach every provider failure of the state machine over the wire by choosing a volume:
//! `/sim/ok/...` works, `/sim/fail-at-commit/...` fails at CommitSnapshots, and so on.
//! They hold shadow copies in memory only; they are not a stand-in for real storage.

use std::sync::Arc;

use shadowcopy_coordinator::sim::{FaultPlan, SimProvider};
use shadowcopy_coordinator::{Provider, ProviderStep};
use shadowcopy_metadata::codes;

/// Every simulated provider, one per volume prefix.
pub(crate) fn providers() -> Vec<Arc<dyn Provider>> {
    let mut providers: Vec<Arc<dyn Provider>> = vec![Arc::new(
        SimProvider::new("simulated").supporting(&["/sim/ok/"]),
    )];
    let steps = [
        ("end-prepare", ProviderStep::EndPrepareSnapshots),
        ("pre-commit", ProviderStep::PreCommitSnapshots),
        ("commit", ProviderStep::CommitSnapshots),
        ("post-commit", ProviderStep::PostCommitSnapshots),
        ("post-final-commit", ProviderStep::PostFinalCommitSnapshots),
    ];
    for (name, step) in steps {
        let failing = format!("/sim/fail-at-{name}/");
        providers.push(Arc::new(
            SimProvider::new(format!("simulated, fails at {name}"))
                .supporting(&[failing.as_str()])
                .with_faults(FaultPlan::new().fail(step, codes::VSS_E_UNEXPECTED_PROVIDER_ERROR)),
        ));
        let hanging = format!("/sim/hang-at-{name}/");
        providers.push(Arc::new(
            SimProvider::new(format!("simulated, hangs at {name}"))
                .supporting(&[hanging.as_str()])
                .with_faults(FaultPlan::new().hang(step)),
        ));
    }
    providers
}
