//! The commands of the `racelab` binary, one module each, and what they share: the `out!`
//! printer, progress bars ([`output`]) and the world a run or replay happens in ([`World`]).

use std::process::ExitCode;

use racelab_scenarios::{Race, find};

/// `println!` that ends the program quietly when stdout is closed (`racelab run ... | head`)
/// instead of panicking on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

pub(crate) mod bench;
pub(crate) mod check_real;
pub(crate) mod linear;
pub(crate) mod list;
pub(crate) mod merge;
mod output;
pub(crate) mod replay;
pub(crate) mod report;
pub(crate) mod route_bench;
pub(crate) mod run;
pub(crate) mod shrink;
mod world;

pub(crate) use world::World;

/// Finds a race, or reports the unknown name (with suggestions) and the exit code to use.
fn lookup<'a>(races: &'a [Race], name: &str) -> Result<&'a Race, ExitCode> {
    find(races, name).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::from(2)
    })
}
