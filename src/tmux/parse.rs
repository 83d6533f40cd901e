//! Parsing what tmux prints about panes. Pure functions over text.

use super::{PaneId, SessionName};

/// Fields printed for each pane, tab-separated, in the order [`parse_pane_line`] reads them.
pub const PANE_FORMAT: &str = "#{session_name}\t#{window_index}\t#{pane_index}\t#{pane_id}\t\
#{pane_pid}\t#{pane_dead}\t#{pane_dead_status}\t#{pane_dead_signal}\t#{window_activity}\t\
#{pid}\t#{pane_width}\t#{pane_height}\t#{@orchestra}";

/// Whether a pane's program is alive, and how it ended if not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaneState {
    /// The program is running.
    Alive,
    /// The program exited with this status.
    Exited(i32),
    /// The program was killed by this signal.
    Signaled(i32),
    /// tmux marked the pane dead but has not recorded how (tmux 3.3a loses the status of
    /// short-lived programs until its server receives SIGCHLD).
    DeadUnknown,
}

/// One pane as tmux describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaneInfo {
    /// The session's name as tmux printed it (not necessarily one of ours).
    pub session_name: String,
    /// The session, if its name has the daemon's shape.
    pub session: Option<SessionName>,
    /// Index of the pane's window.
    pub window_index: u32,
    /// Index of the pane in its window.
    pub pane_index: u32,
    /// Pane id.
    pub pane: PaneId,
    /// Pid of the pane's program.
    pub pid: u32,
    /// Liveness and exit status.
    pub state: PaneState,
    /// Last output in the window, as a Unix timestamp.
    pub activity: u64,
    /// The tmux server's pid.
    pub server_pid: u32,
    /// Pane width.
    pub width: u16,
    /// Pane height.
    pub height: u16,
    /// The session's `@orchestra` metadata option (empty when unset).
    pub metadata: String,
}

/// Parses one line printed with [`PANE_FORMAT`].
pub fn parse_pane_line(line: &str) -> Option<PaneInfo> {
    let fields: Vec<&str> = line.split('\t').collect();
    if fields.len() != 13 {
        return None;
    }
    let state = match (fields[5], fields[6], fields[7]) {
        ("0", _, _) | ("", _, _) => PaneState::Alive,
        (_, "", "") => PaneState::DeadUnknown,
        (_, status, "") => PaneState::Exited(status.parse().ok()?),
        (_, _, signal) => PaneState::Signaled(signal.parse().ok()?),
    };
    Some(PaneInfo {
        session_name: fields[0].to_string(),
        session: SessionName::parse(fields[0]),
        window_index: fields[1].parse().ok()?,
        pane_index: fields[2].parse().ok()?,
        pane: PaneId::parse(fields[3])?,
        pid: fields[4].parse().ok()?,
        state,
        activity: fields[8].parse().unwrap_or(0),
        server_pid: fields[9].parse().ok()?,
        width: fields[10].parse().unwrap_or(80),
        height: fields[11].parse().unwrap_or(24),
        metadata: fields[12].to_string(),
    })
}

/// Parses every pane line, skipping lines that do not fit the format.
pub fn parse_panes(output: &str) -> Vec<PaneInfo> {
    output.lines().filter_map(parse_pane_line).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_alive_dead_and_signalled_panes() {
        let out = "agent-shell-0123abcd\t0\t0\t%1\t100\t0\t\t\t1700000000\t50\t80\t24\t7b7d\n\
                   mine\t0\t0\t%2\t101\t1\t3\t\t1700000001\t50\t80\t24\t\n\
                   agent-x-00000000\t0\t0\t%3\t102\t1\t\t9\t1700000002\t50\t80\t24\t\n\
                   agent-x-00000001\t0\t0\t%4\t103\t1\t\t\t1700000003\t50\t80\t24\t\n\
                   broken line\n";
        let panes = parse_panes(out);
        assert_eq!(panes.len(), 4);
        assert_eq!(panes[0].state, PaneState::Alive);
        assert_eq!(
            panes[0].session.as_ref().unwrap().as_str(),
            "agent-shell-0123abcd"
        );
        assert_eq!(panes[0].metadata, "7b7d");
        assert_eq!(panes[1].state, PaneState::Exited(3));
        assert!(panes[1].session.is_none());
        assert_eq!(panes[2].state, PaneState::Signaled(9));
        assert_eq!(panes[3].state, PaneState::DeadUnknown);
        assert_eq!(panes[3].activity, 1700000003);
    }
}
