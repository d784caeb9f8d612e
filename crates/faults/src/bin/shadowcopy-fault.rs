//! `shadowcopy-fault POINT`: a fault point for shell commands, such as a script writer's event
//! commands in the fault matrix, with the rules and arm file of `SHADOWCOPY_FAULTS` (see the
//! crate's documentation). A test hook, not a tool for production.
//!
//! Exit status: 0 when no rule fired (or a `kill-pid` rule did its work), 1 when a `fail` rule
//! fired, 2 for a usage error; `hang` never returns and `kill` ends this command with SIGKILL.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [name] = args.as_slice() else {
        eprintln!(
            "usage: shadowcopy-fault POINT\n\nRuns the fault point POINT with the rules of {} \
             (and the arm file of {}). The points:",
            shadowcopy_faults::FAULTS_ENV,
            shadowcopy_faults::ARM_ENV
        );
        for point in shadowcopy_faults::POINTS {
            eprintln!("  {:<30} {}", point.name, point.place);
        }
        return ExitCode::from(2);
    };
    if !shadowcopy_faults::POINTS.iter().any(|p| p.name == name) {
        eprintln!(
            "shadowcopy-fault: there is no fault point `{name}`; run it without arguments for the \
             list"
        );
        return ExitCode::from(2);
    }
    match shadowcopy_faults::point(name) {
        Ok(()) => ExitCode::SUCCESS,
        Err(injected) => {
            eprintln!("shadowcopy-fault: {injected}");
            ExitCode::FAILURE
        }
    }
}
