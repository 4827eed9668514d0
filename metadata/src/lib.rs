//! The machine-readable contract of clonesafe, kept apart from the engine the way nextest keeps
//! `nextest-metadata` apart from its runner (nextest-rs/nextest, `nextest-metadata/src/`): a small
//! crate that CI consumers can depend on, with no VM code in it.
//!
//! * [`vocab`]: the words every stage shares (backend, clone method, fix-up, strategy preset,
//!   check id, verdict, expectation, measurement). It sits at the bottom of the import graph, so
//!   the scenario parser, the checks and the reporters can all use it without importing each
//!   other.
//! * [`report`]: the types of `report.json`, versioned by [`SCHEMA_VERSION`], and
//!   [`report::schema`], a JSON Schema generated from those same types.
//! * [`exit_codes`]: what each exit status of `clonesafe` means.
//!
//! Compatibility rule: fields may be added; the names of existing fields never change. A change
//! that breaks a consumer bumps [`SCHEMA_VERSION`].

pub mod exit_codes;
pub mod report;
pub mod vocab;

pub use report::*;
pub use vocab::*;

/// Version of the `report.json` layout. 1: the first versioned contract (typed enums, `recipe`,
/// `schema_version`, `host.vmms`); the field names of the unversioned form are all kept.
/// 2: a check's `id` may also be an identity the scenario file declared (any snake_case id, with
/// `declared: true`), so a consumer that knew every id in advance must now expect others.
pub const SCHEMA_VERSION: u32 = 2;
