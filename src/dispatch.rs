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

/// How long after its agents change a host rewrites its cluster record: changes that come
/// together (a spawn's status and activity) are written once.
const CLUSTER_PUBLISH_DELAY: std::time::Duration = std::time::Duration::from_millis(50);

/// A request another host forwarded here has its answer (stand-in connection `conn`).
pub fn peer_answer(daemon: &mut Daemon, conn: ConnId, response: crate::proto::http::Response) {
    crate::api::peer::answer(&mut daemon.for_api(), conn, response);
}

/// Sends what this host broadcast to its observers on to the cluster's other hosts.
pub fn relay_events(daemon: &mut Daemon, frames: &[std::sync::Arc<[u8]>]) {
    if frames.is_empty() {
        return;
    }
    let parts = daemon.for_api();
    parts.cluster.relay(frames);
    // What is broadcast (a status, a task's progress) may change this host's record.
    if parts.cluster.agents_changed() {
        parts
            .ctx
            .timers
            .schedule_in(CLUSTER_PUBLISH_DELAY, Timer::ClusterPublish);
    }
}

/// Frames for stand-ins of other hosts' viewers: sent to those hosts.
pub fn tunnel_frames(daemon: &mut Daemon, frames: Vec<(ConnId, Vec<u8>)>) {
    crate::api::peer::tunnel_frames(&mut daemon.for_api(), frames);
}

/// Sessions have output for the stand-ins of other hosts' viewers.
pub fn pump_tunnels(daemon: &mut Daemon, ids: &[ConnId]) {
    crate::api::peer::pump(&mut daemon.for_api(), ids);
}

/// A daemon source (slot `key`) turned ready.
pub fn source_event(daemon: &mut Daemon, key: usize, event: &mio::event::Event) {
    let (panes, ctx) = daemon.for_panes();
    match ctx.sources.get(key) {
        Some(Source::PanePipe { .. }) => panes.on_pipe_ready(ctx, key, event.is_writable()),
        Some(Source::PaneExit { session_id, .. }) => {
            let session_id = session_id.clone();
            ctx.remove_source(key);
            manager::on_process_exit(&mut daemon.for_agents(), &session_id);
        }
        Some(Source::PtyHolder { .. }) => {
            crate::agents::pty_session::on_holder_ready(&mut daemon.for_agents(), key)
        }
        Some(Source::Attach { .. }) => panes.finish_attach(ctx, key),
        Some(Source::Hook { .. }) => daemon.for_agents().on_hook_readable(key),
        Some(Source::Answer { .. }) => ctx.continue_answer(key),
        None => {}
    }
}

/// A deadline fell due.
pub fn timer(daemon: &mut Daemon, timer: Timer) {
    let (panes, ctx) = daemon.for_panes();
    match timer {
        Timer::AttachTimeout(key, serial) => panes.on_attach_timeout(ctx, key, serial),
        Timer::AnswerTimeout(key, serial) => ctx.on_answer_timeout(key, serial),
        Timer::HookTimeout(key, serial) => daemon.for_agents().on_hook_timeout(key, serial),
        Timer::ApprovalTimeout(request_id) => daemon.for_agents().on_approval_timeout(&request_id),
        Timer::ScreenCheck(session) => daemon.for_agents().on_screen_check(&session),
        Timer::IdleCheck(session) => daemon.for_agents().on_idle_check(&session),
        Timer::SubmitCheck(session, typed, attempt) => daemon
            .for_agents()
            .on_submit_check(&session, typed, attempt),
        Timer::SubmitEnter(session, serial) => panes.press_enter(ctx, &session, serial),
        Timer::InputGate(session, serial) => panes.on_input_gate(ctx, &session, serial),
        Timer::CaptureHealth => panes.check_capture_health(ctx),
        Timer::StallEnd(session, serial) => panes.on_stall_end(&session, serial),
        Timer::ReseedCheck(session) => panes.on_reseed_check(ctx, &session),
        Timer::PersistPasteMode(session) => panes.on_persist_paste_mode(ctx, &session),
        Timer::Checkpoint(session) => panes.on_checkpoint_due(ctx, &session),
        Timer::PtyExit(session) => {
            crate::agents::pty_session::output_ended(&mut daemon.for_agents(), &session)
        }
        Timer::TicketSweep => daemon.for_api().api.sweep_tickets(Instant::now()),
        Timer::TaskTimeout(task_id) => tasks::on_timeout(&mut daemon.for_tasks(), task_id),
        Timer::TaskProgress => tasks::on_progress(&mut daemon.for_tasks()),
        Timer::ClusterBeat => {
            let mut parts = daemon.for_api();
            crate::api::peer::publish(&mut parts);
            let every = parts.cluster.settings().unreachable_after / 3;
            parts.ctx.timers.schedule_in(every, Timer::ClusterBeat);
        }
        Timer::ClusterPublish => crate::api::peer::publish(&mut daemon.for_api()),
        Timer::ForwardTimeout(id) => {
            crate::api::peer::on_forward_timeout(&mut daemon.for_api(), id)
        }
    }
}

/// A WebSocket connection went away: forget its subscriptions, limits and pending acks.
pub fn ws_closed(daemon: &mut Daemon, conn: ConnId) {
    let mut parts = daemon.for_api();
    parts.panes.viewer_closed(conn);
    parts.api.ws_closed(conn);
    crate::api::peer::viewer_closed(&mut parts, conn);
}

/// Hands what panes announced to agents (output means activity; typed messages wait for
/// their CLI's confirmation; terminals that ended or vanished end their sessions).
fn pane_event(agents: &mut crate::agents::Parts<'_>, event: PaneEvent) {
    match event {
        PaneEvent::Output { session_id } => agents.on_pane_output(&session_id),
        PaneEvent::MessageTyped {
            session_id,
            id,
            prompt,
        } => agents.on_message_typed(&session_id, id, prompt),
        PaneEvent::TerminalEnded { session_id } => {
            crate::agents::pty_session::output_ended(agents, &session_id)
        }
        PaneEvent::Vanished { session_id, reason } => {
            manager::session_vanished(agents, &session_id, reason)
        }
        PaneEvent::ScreenText { session_id, text } => agents.on_screen_text(&session_id, &text),
    }
}

/// Runs the callbacks parts finished for each other, and hands the events panes and agents
/// announced to the features that follow them: panes' to agents; agents' to observers (`agent_status` and `AGENT_CRASHED`
/// messages) and tasks (which finish when their agent exits or is gone). Returns whether
/// there were any. Reactions may announce more; they are handled in the same call.
pub fn agent_events(daemon: &mut Daemon) -> bool {
    let mut any = false;
    loop {
        // Operations a part finished for another first ([`crate::ctx::Ctx::finish`]), as if
        // their callbacks had run where they finished.
        for callback in daemon.ctx().take_later() {
            callback(daemon);
            any = true;
        }
        let mut tasks = daemon.for_tasks();
        let pane_events = tasks.panes.take_events();
        let calls = tasks.agents.take_calls();
        let events = tasks.agents.take_events();
        if pane_events.is_empty() && calls.is_empty() && events.is_empty() {
            if tasks.ctx.has_later() {
                continue;
            }
            return any;
        }
        any = true;
        for event in pane_events {
            pane_event(&mut tasks.for_agents(), event);
        }
        // The tools see the whole cluster: the other hosts' agents from their records, and
        // the tickets of the cluster's queue.
        let elsewhere = if calls.is_empty() {
            crate::calls::Elsewhere::default()
        } else {
            let parts = daemon.for_api();
            crate::calls::Elsewhere {
                agents: crate::api::peer::remote_agents(&parts),
                tickets: crate::api::queue::other_views(&parts),
            }
        };
        let mut tasks = daemon.for_tasks();
        for call in calls {
            crate::calls::handle(&mut tasks, &elsewhere, call);
        }
        if !events.is_empty() {
            // Other hosts list this host's agents from its record: rewrite it soon.
            let parts = daemon.for_api();
            if parts.cluster.agents_changed() {
                parts
                    .ctx
                    .timers
                    .schedule_in(CLUSTER_PUBLISH_DELAY, Timer::ClusterPublish);
            }
        }
        let mut tasks = daemon.for_tasks();
        for event in events {
            match event {
                AgentEvent::Exited { session_id, exit } => {
                    tasks::on_agent_exit(&mut tasks, &session_id, exit)
                }
                AgentEvent::Gone { session_id, reason } => {
                    tasks::on_session_gone(&mut tasks, &session_id, &reason);
                    // A running slot may have come free.
                    tasks::schedule(&mut tasks);
                }
                other => tell_observers(tasks.ctx, other),
            }
        }
    }
}

/// What observers are told of an agent's event (every event but an exit or a session gone,
/// which tasks follow).
fn tell_observers(ctx: &mut crate::ctx::Ctx, event: AgentEvent) {
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
            ctx.broadcast(&ServerMessage::AgentStatus {
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
            ctx.broadcast(&ServerMessage::UserMessageDelivered {
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
            ctx.broadcast(&ServerMessage::ClaudeResponse {
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
            ctx.broadcast(&ServerMessage::ToolDecision {
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
            ctx.broadcast(&ServerMessage::ClaudeResponse {
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
            ctx.broadcast(&ServerMessage::AgentCrashed {
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
