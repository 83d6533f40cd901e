//! Integration tests: the real `orchestra` binary, real tmux, real HTTP on loopback.
//!
//! One test binary (faster to link than many); each test starts its own daemon with its own
//! state directory and private tmux server, so tests run in parallel safely.

/// The backend every test's agents run on unless the test chooses (`None`: the
/// configuration's, tmux). The `pty` test target runs much of this suite with `Some("pty")`.
pub const SUITE_BACKEND: Option<&str> = None;

mod common;

mod agents;
mod approvals;
mod auth;
mod backends;
mod bounds;
mod browser;
mod churn;
mod claude;
mod cli;
mod clients;
mod cluster;
mod codex;
mod contract;
mod crowd;
mod faults;
mod flow;
mod gemini;
mod gemini_model;
mod git_hostile;
mod hooks;
mod hostile;
mod http;
mod limits;
mod load;
mod local_leaks;
mod metrics;
mod model;
mod observe;
mod restart;
mod screens;
mod secrets;
mod setup;
mod slow_work;
mod tasks;
mod trust;
mod walk;
mod web;
