//! Much of the integration suite (`tests/it/`) again, with every agent type on the `pty`
//! backend: everything an agent does (lifecycle, streaming, typing, hooks, the real Claude
//! Code, Gemini and Codex CLIs, tasks, restarts, faults) must work the same as on tmux.
//! Tests whose subject is tmux itself pin `tmux` and so run on it in both targets. Modules without agents (auth,
//! HTTP limits, the web login, the contract and metrics) run once, in `it`; `backends` and
//! the browser test run both backends themselves.

/// Every test's agents run on the `pty` backend unless the test chooses.
pub const SUITE_BACKEND: Option<&str> = Some("pty");

#[path = "it/common.rs"]
mod common;

#[path = "it/agents.rs"]
mod agents;
#[path = "it/claude.rs"]
mod claude;
#[path = "it/cli.rs"]
mod cli;
#[path = "it/codex.rs"]
mod codex;
#[path = "it/faults.rs"]
mod faults;
#[path = "it/gemini.rs"]
mod gemini;
#[path = "it/gemini_model.rs"]
mod gemini_model;
#[path = "it/hooks.rs"]
mod hooks;
#[path = "it/hostile.rs"]
mod hostile;
#[path = "it/load.rs"]
mod load;
#[path = "it/model.rs"]
mod model;
#[path = "it/observe.rs"]
mod observe;
#[path = "it/restart.rs"]
mod restart;
#[path = "it/secrets.rs"]
mod secrets;
#[path = "it/slow_work.rs"]
mod slow_work;
#[path = "it/tasks.rs"]
mod tasks;
