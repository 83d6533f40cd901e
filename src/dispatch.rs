//! Who reacts to what happens on the loop: a daemon source turning ready, a timer falling
//! due, a WebSocket connection closing, and the events agents announce.
//!
//! [`crate::daemon`] holds state and the small operations on it; the decisions of which
//! feature reacts to an event are made here, in one place. Features never call up into each
//! other: agents announce [`AgentEvent`]s on their registry, and [`agent_events`] hands them
//! to tasks after each step of the loop.

use std::time::Instant;

use crate::agents::{AgentEvent, exit_fields, manager};
use crate::daemon::{Daemon, Source, Timer};
use crate::error_code::ErrorCode;
use crate::net::ConnId;
use crate::panes::pane::PaneEvent;
use crate::tasks::lifecycle as tasks;
use crate::time::rfc3339;
use crate::wire::ws::{Action, Evidence, ServerMessage};

/// A daemon source (slot `key`) turned ready.
pub fn source_event(daemon: &mut Daemon, key: usize, event: &mio::event::Event) {
    match daemon.ctx.sources.get(key) {
        Some(Source::PanePipe { .. }) => {
            daemon
                .panes
                .on_pipe_ready(&mut daemon.ctx, key, event.is_writable());
        }
        Some(Source::PaneExit { session_id, .. }) => {
            let session_id = session_id.clone();
            daemon.ctx.remove_source(key);
            manager::on_process_exit(daemon, &session_id);
        }
        Some(Source::PtyHolder { .. }) => crate::agents::pty_session::on_holder_ready(daemon, key),
        Some(Source::Attach { .. }) => daemon.panes.finish_attach(&mut daemon.ctx, key),
        Some(Source::Hook { .. }) => daemon.on_hook_readable(key),
        Some(Source::Answer { .. }) => daemon.ctx.continue_answer(key),
        None => {}
    }
}

/// A deadline fell due.
pub fn timer(daemon: &mut Daemon, timer: Timer) {
    match timer {
        Timer::AttachTimeout(key, serial) => {
            daemon.panes.on_attach_timeout(&mut daemon.ctx, key, serial)
        }
        Timer::AnswerTimeout(key, serial) => daemon.ctx.on_answer_timeout(key, serial),
        Timer::HookTimeout(key, serial) => daemon.on_hook_timeout(key, serial),
        Timer::ApprovalTimeout(request_id) => daemon.on_approval_timeout(&request_id),
        Timer::ScreenCheck(session) => daemon.on_screen_check(&session),
        Timer::IdleCheck(session) => daemon.on_idle_check(&session),
        Timer::SubmitEnter(session, serial) => {
            daemon.panes.press_enter(&mut daemon.ctx, &session, serial)
        }
        Timer::CaptureHealth => daemon.panes.check_capture_health(&mut daemon.ctx),
        Timer::ReseedCheck(session) => daemon.panes.on_reseed_check(&mut daemon.ctx, &session),
        Timer::PersistPasteMode(session) => daemon
            .panes
            .on_persist_paste_mode(&mut daemon.ctx, &session),
        Timer::Checkpoint(session) => daemon.panes.on_checkpoint_due(&session),
        Timer::PtyExit(session) => crate::agents::pty_session::output_ended(daemon, &session),
        Timer::TicketSweep => {
            daemon.api.sweep_tickets(Instant::now());
        }
        Timer::TaskTimeout(task_id) => tasks::on_timeout(daemon, task_id),
        Timer::TaskProgress => tasks::on_progress(daemon),
    }
}

/// A WebSocket connection went away: forget its subscriptions, limits and pending acks.
pub fn ws_closed(daemon: &mut Daemon, conn: ConnId) {
    daemon.panes.viewer_closed(conn);
    daemon.api.ws_closed(conn);
}

/// Hands what panes announced to agents (output means activity; typed messages wait for
/// their CLI's confirmation; terminals that ended or vanished end their sessions).
fn pane_event(daemon: &mut Daemon, event: PaneEvent) {
    match event {
        PaneEvent::Output { session_id } => daemon.on_pane_output(&session_id),
        PaneEvent::MessageTyped { session_id, id } => {
            if let Some(agent) = daemon.agents.get_mut(&session_id) {
                agent.conversation.typed(id);
            }
        }
        PaneEvent::TerminalEnded { session_id } => {
            crate::agents::pty_session::output_ended(daemon, &session_id)
        }
        PaneEvent::Vanished { session_id, reason } => {
            manager::session_vanished(daemon, &session_id, reason)
        }
        PaneEvent::ScreenText { session_id, text } => daemon.on_screen_text(&session_id, &text),
    }
}

/// Hands the events panes and agents announced to the features that follow them: panes'
/// to agents; agents' to observers (`agent_status` and `AGENT_CRASHED`
/// messages) and tasks (which finish when their agent exits or is gone). Returns whether
/// there were any. Reactions may announce more; they are handled in the same call.
pub fn agent_events(daemon: &mut Daemon) -> bool {
    let mut any = false;
    loop {
        let pane_events = daemon.panes.take_events();
        let calls = daemon.agents.take_calls();
        let events = daemon.agents.take_events();
        if pane_events.is_empty() && calls.is_empty() && events.is_empty() {
            return any;
        }
        any = true;
        for event in pane_events {
            pane_event(daemon, event);
        }
        for call in calls {
            crate::calls::handle(daemon, call);
        }
        for event in events {
            match event {
                AgentEvent::Exited { session_id, exit } => {
                    tasks::on_agent_exit(daemon, &session_id, exit)
                }
                AgentEvent::Gone { session_id, reason } => {
                    tasks::on_session_gone(daemon, &session_id, &reason);
                    // A running slot may have come free.
                    tasks::schedule(daemon);
                }
                other => tell_observers(daemon, other),
            }
        }
    }
}

/// What observers are told of an agent's event (every event but an exit or a session gone,
/// which tasks follow).
fn tell_observers(daemon: &mut Daemon, event: AgentEvent) {
    match event {
        AgentEvent::StatusChanged {
            session_id,
            agent_type,
            status,
            activity,
            last_activity,
            exit,
        } => {
            let (exit_code, exit_signal) = exit_fields(exit);
            daemon.ctx.broadcast(&ServerMessage::AgentStatus {
                session_id: &session_id,
                agent_type: &agent_type,
                status: status.as_str(),
                last_activity: rfc3339(last_activity),
                activity: activity.activity.as_str(),
                activity_since: rfc3339(activity.since),
                evidence: Evidence {
                    source: activity.source.as_str(),
                    detail: &activity.detail,
                },
                exit_code,
                exit_signal,
            });
        }
        AgentEvent::PromptDelivered { session_id, id } => {
            daemon.ctx.broadcast(&ServerMessage::UserMessageDelivered {
                session_id: &session_id,
                id: &id,
            });
        }
        AgentEvent::ApprovalRequested {
            session_id,
            request_id,
            tool,
            summary,
            tool_input,
        } => {
            // Everything that is approved is shown whole: the command or path, and
            // every other argument.
            let mut content = format!("The agent asks permission to use {summary}");
            if crate::agents::activity::has_more_arguments(&tool_input) {
                let all = serde_json::to_string_pretty(&tool_input).unwrap_or_default();
                content.push_str(&format!("\nwith the arguments {all}"));
            }
            daemon.ctx.broadcast(&ServerMessage::ClaudeResponse {
                session_id: &session_id,
                content: &content,
                actions: vec![Action::ApproveTool {
                    request_id: &request_id,
                    tool: &tool,
                    summary: &summary,
                    tool_input: &tool_input,
                }],
                in_reply_to: None,
                timestamp: rfc3339(std::time::SystemTime::now()),
            });
        }
        AgentEvent::ToolDecided {
            session_id,
            request_id,
            decision,
        } => {
            daemon.ctx.broadcast(&ServerMessage::ToolDecision {
                session_id: &session_id,
                request_id: &request_id,
                decision,
            });
        }
        AgentEvent::Replied {
            session_id,
            content,
            in_reply_to,
        } => {
            daemon.ctx.broadcast(&ServerMessage::ClaudeResponse {
                session_id: &session_id,
                content: &content,
                actions: Vec::new(),
                in_reply_to: in_reply_to.as_ref(),
                timestamp: rfc3339(std::time::SystemTime::now()),
            });
        }
        AgentEvent::Crashed {
            session_id,
            message,
            exit,
            last_lines,
        } => {
            let (exit_code, exit_signal) = exit_fields(exit);
            daemon.ctx.broadcast(&ServerMessage::AgentCrashed {
                error_code: ErrorCode::AgentCrashed,
                message,
                session_id: &session_id,
                exit_code,
                exit_signal,
                last_lines,
            });
        }
        AgentEvent::Exited { .. } | AgentEvent::Gone { .. } => {}
    }
}
