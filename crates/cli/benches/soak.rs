//! The soak run (docs/RELIABILITY.md): `cargo bench -p shadowcopy-cli --bench soak -- CYCLES [SEED]`
//! runs CYCLES backup cycles (500 by default) through one shadowcopyd with a database under load
//! and random faults, prints the report as a Markdown table and exits 1 if anything leaked or any
//! data was lost. Run as root, after `cargo build --workspace --bins`; the driver is shared with
//! the CI test `tests/soak/main.rs`.

#[path = "../tests/soak/driver.rs"]
mod driver;

fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let cycles = args
        .next()
        .map_or(500, |a| a.parse().expect("CYCLES is a number"));
    let seed = args
        .next()
        .map_or(0x5EED_CAFE, |a| a.parse().expect("SEED is a number"));
    let report = driver::run("soak-bench", cycles, seed);
    println!("{report}");
    let problems = report.problems();
    if !problems.is_empty() {
        eprintln!("soak: {problems:?}");
        std::process::exit(1);
    }
}
