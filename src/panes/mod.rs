//! The output path of agent panes: how tmux's pipe reaches the daemon.

pub mod attach;
