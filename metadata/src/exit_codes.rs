//! Documented exit codes of `clonesafe` (shaped like nextest's `NextestExitCode`,
//! nextest-metadata/src/exit_codes.rs). Anything not listed here is a bug.

/// Every expectation of every scenario was met (also: a shard with no scenarios).
pub const OK: i32 = 0;
/// Every scenario ran, and some expectation was not met.
pub const EXPECTATION_FAILED: i32 = 1;
/// The harness could not run: bad input (scenario file, save image, --out), a missing guest or
/// tool, a scenario that needs a capability its backend lacks, or a VM that failed.
pub const HARNESS_ERROR: i32 = 2;
/// Interrupted by SIGINT (Ctrl-C); every VM the run started was torn down first.
pub const INTERRUPTED: i32 = 130;
/// Terminated by SIGTERM; every VM the run started was torn down first.
pub const TERMINATED: i32 = 143;

/// The text `--help` shows.
pub const HELP: &str = "Exit codes:
  0    every expectation in every scenario was met
  1    every scenario ran, and some expectation was not met
  2    the harness could not run (bad scenario file or input, missing guest or tool, a scenario
       that needs a capability its backend lacks, a VM that failed)
  130  interrupted (SIGINT, Ctrl-C); every VM the run started was torn down
  143  terminated (SIGTERM); every VM the run started was torn down";
