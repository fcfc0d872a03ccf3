//! Live migrations: moving one partition of a logical index between
//! placements while it is written to through the fleet. [`controller`]
//! drives a move through its phases (copy, cutover, catch-up, verify, flip)
//! with compare-and-swap writes to the migration record; [`copy`] moves the
//! documents (scroll pages, bulk writes, id sets for verification).

pub mod controller;
pub mod copy;
pub mod side;

pub use controller::{Controller, MigrationError};
