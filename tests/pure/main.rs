//! The tests that run in this process alone, most of them CPU-bound: the log
//! simulator, property and transcript tests of the replicated log, the fuzz seeds,
//! the planner's exhaustive and property tests, and the linearizability checker's
//! own tests. One binary: each test binary links the whole crate.

// The checker is shared with the fault tests, which use all of it; the tests here
// do not.
#[allow(dead_code)]
#[path = "../faults_common/linearizability.rs"]
mod linearizability;

mod faults_checker;
mod fuzz_seeds;
mod log_properties;
mod log_simulator;
mod log_transcripts;
mod planner_exhaustive;
mod planner_properties;
