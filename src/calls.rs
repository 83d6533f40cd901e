//! The daemon's tools for agents, called through `orchestra mcp` (the MCP server every agent
//! type with hooks gets) over the hook socket: `list_agents`, `get_task`, `delegate_task`,
//! `send_message` and `propose_plan`.
//!
//! A call runs in the name of the session whose credential it carries. It can read agents
//! and tasks; what it can make happen is the config's `[tools]` policy, and by default
//! (`approve`) nothing runs before a person decides: a `delegate_task` is stored as a
//! `proposed` plan of one task (decided with `approve_plan`/`reject_plan`, like
//! `propose_plan`'s), a `send_message` is held until a person answers its `approve_tool`
//! action. With `allow`, a delegated task starts at once and a message is typed at once.
//! Approvals come only from people (a `control` token or login); no tool approves.
//!
//! Every answer is one JSON line: `{"ok": true, "result": ...}` or
//! `{"ok": false, "error": "..."}`.

use serde_json::Value;

use crate::agents::history::Role;
use crate::agents::hooks::{Approval, Approved, PendingCall};
use crate::config::ToolPolicy;
use crate::panes::typing::Typing;
use crate::tasks::error::TaskError;
use crate::tasks::lifecycle::{self, DelegateParams, SESSION_REQUESTER};
use crate::tasks::{Isolation, TaskContext};
use crate::tasks::{Parts, Tasks};
use crate::time::rfc3339;
use crate::wire::tools::{
    AgentEntry, AgentList, MessageInput, MessageSent, PlannedTask, TaskDetail, TaskRef,
    TasksCreated, ToolAnswer,
};
use crate::wire::ws::{Action, ServerMessage};

/// Most tasks one plan may propose.
pub const MAX_PLAN_TASKS: usize = 20;

/// What an agent's tools see of the rest of its cluster (nothing on a single host).
#[derive(Debug, Default)]
pub struct Elsewhere {
    /// The other hosts' agents, as `GET /api/agents` lists them.
    pub agents: Vec<Value>,
    /// The tickets of the cluster's queue this host has no live copy of, as
    /// `GET /api/tasks/{id}` shows them.
    pub tickets: Vec<Value>,
}

/// Handles one call and answers it (now, or once its tasks are stored).
pub fn handle(parts: &mut Parts<'_>, elsewhere: &Elsewhere, pending: PendingCall) {
    let PendingCall {
        session_id,
        call,
        stream,
    } = pending;
    log::info!("{session_id}: calls {}", call.call);
    let arguments = call.arguments;
    let answer = match call.call.as_str() {
        "list_agents" => Ok(list_agents(parts, &elsewhere.agents)),
        "get_task" => get_task(parts, &elsewhere.tickets, &arguments),
        "send_message" => send_message(parts, &session_id, &arguments),
        "delegate_task" => {
            // Under `approve`, the task is proposed: a plan of one, shown to people whole.
            let proposed = parts.ctx.config.tools.delegate_task == ToolPolicy::Approve;
            let summary = proposed.then(String::new);
            return match delegate_params(&session_id, &arguments, proposed) {
                Ok(params) => {
                    delegate_all(parts, session_id, vec![params], Vec::new(), summary, stream)
                }
                Err(why) => parts.ctx.answer(stream, answer_line(Err(why))),
            };
        }
        "propose_plan" => {
            let summary = arguments["summary"].as_str().unwrap_or("").to_string();
            let tasks = match arguments["tasks"].as_array() {
                Some(tasks) if !tasks.is_empty() && tasks.len() <= MAX_PLAN_TASKS => tasks,
                _ => {
                    let why = format!("tasks must be a list of 1 to {MAX_PLAN_TASKS} tasks");
                    return parts.ctx.answer(stream, answer_line(Err(why)));
                }
            };
            let params: Result<Vec<_>, String> = tasks
                .iter()
                .map(|task| delegate_params(&session_id, task, true))
                .collect();
            return match params {
                Ok(params) => {
                    delegate_all(parts, session_id, params, Vec::new(), Some(summary), stream)
                }
                Err(why) => parts.ctx.answer(stream, answer_line(Err(why))),
            };
        }
        other => Err(format!("no tool {}", crate::shown(other))),
    };
    parts.ctx.answer(stream, answer_line(answer));
}

/// A tool call's answer: one JSON line.
fn answer_line(answer: Result<Value, String>) -> Vec<u8> {
    ToolAnswer::of(answer).line()
}

/// A tool's result as JSON.
fn result_of(result: impl serde::Serialize) -> Value {
    serde_json::to_value(result).expect("serializable")
}

/// This host's sessions, and in a cluster the other hosts' (`other_hosts`).
fn list_agents(parts: &Parts<'_>, other_hosts: &[Value]) -> Value {
    let now = std::time::SystemTime::now();
    let idle_after = parts.ctx.config.sessions.idle_after;
    let agents = parts
        .agents
        .sorted()
        .into_iter()
        .map(|a| AgentEntry {
            session_id: &a.id,
            agent_type: &a.agent_type,
            status: a.status(now, idle_after).as_str(),
            activity: a.activity.activity.as_str(),
            working_dir: &a.working_dir,
        })
        .collect();
    result_of(AgentList {
        agents,
        other_hosts,
    })
}

/// A ticket of this host (by task id or ticket id), or of the cluster's queue (by ticket id).
fn get_task(parts: &Parts<'_>, queued: &[Value], arguments: &Value) -> Result<Value, String> {
    let id = match &arguments["task_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => return Err("task_id is required".into()),
    };
    let Some(ticket) = parts.tasks.find(&id) else {
        let view = queued
            .iter()
            .find(|view| view["ticket_id"] == id.as_str())
            .ok_or_else(|| format!("no task {}", crate::shown(&id)))?;
        let field = |name: &str| view.get(name).cloned().unwrap_or(Value::Null);
        return Ok(serde_json::json!({
            "task_id": field("task_id"),
            "ticket_id": field("ticket_id"),
            "agent": field("agent"),
            "status": field("status"),
            "task": field("task"),
            "result": field("result"),
            "host": field("host"),
        }));
    };
    Ok(result_of(TaskDetail {
        task_id: ticket.task_id,
        ticket_id: &ticket.ticket_id,
        agent: &ticket.agent_type,
        status: ticket.status().as_str(),
        task: &ticket.task,
        result: &ticket.result,
    }))
}

fn send_message(parts: &mut Parts<'_>, from: &str, arguments: &Value) -> Result<Value, String> {
    let (Some(to), Some(content)) = (
        arguments["session_id"].as_str(),
        arguments["content"].as_str(),
    ) else {
        return Err("session_id and content are required".into());
    };
    if to == from {
        return Err("an agent cannot send a message to itself".into());
    }
    let text = format!("[from {from}] {content}");
    if parts.ctx.config.tools.send_message == ToolPolicy::Approve {
        return hold_message(parts, from, to, content, text);
    }
    parts
        .panes
        .type_input(parts.ctx, to, Typing::Message(text.clone()), None)
        .map_err(|(_, why)| why)?;
    parts.for_agents().remember(to, Role::User, text, None);
    Ok(result_of(MessageSent {
        sent: true,
        request_id: None,
        note: None,
    }))
}

/// Holds an agent's message until a person allows it (`approve_tool` with the answer's
/// `request_id`); the call is answered at once.
fn hold_message(
    parts: &mut Parts<'_>,
    from: &str,
    to: &str,
    content: &str,
    text: String,
) -> Result<Value, String> {
    if parts.agents.get(to).is_none_or(|a| a.exit.is_some()) {
        return Err(format!("no running agent session {}", crate::shown(to)));
    }
    if parts.agents.approvals_waiting() >= parts.ctx.config.hooks.max_pending_approvals {
        return Err(
            "too many requests wait for a person (hooks.max_pending_approvals); try later".into(),
        );
    }
    let request_id = format!("msg-{}", &crate::panes::attach::new_token()[..16]);
    let approval = Approval {
        request_id: request_id.clone(),
        session_id: from.to_string(),
        tool: "send_message".into(),
        summary: format!("send_message to {to}: {text}"),
        tool_input: result_of(MessageInput {
            session_id: to,
            content,
        }),
    };
    parts.for_agents().hold_for_approval(
        approval,
        Approved::Message {
            to: to.to_string(),
            text,
        },
    );
    Ok(result_of(MessageSent {
        sent: false,
        request_id: Some(&request_id),
        note: Some("held: the message is typed once a person allows it"),
    }))
}

/// The delegation a tool call asks for, in the name of `session_id`.
fn delegate_params(
    session_id: &str,
    task: &Value,
    proposed: bool,
) -> Result<DelegateParams, String> {
    let text = |key: &str| task[key].as_str().map(str::to_string);
    let agent_type = text("agent_type").ok_or("agent_type is required")?;
    let task_text = text("task").ok_or("task is required")?;
    let context: TaskContext = match task.get("context") {
        Some(context) => serde_json::from_value(context.clone())
            .map_err(|e| format!("context: {}", crate::bounded(&e.to_string())))?,
        None => TaskContext::default(),
    };
    let isolation = match task["isolation"].as_str() {
        None | Some("none") => Isolation::None,
        Some("worktree") => Isolation::Worktree,
        Some(other) => return Err(format!("unknown isolation {}", crate::shown(other))),
    };
    let test_command = match task.get("test_command") {
        Some(argv) => Some(
            serde_json::from_value::<Vec<String>>(argv.clone())
                .map_err(|_| "test_command must be an array of strings")?,
        ),
        None => None,
    };
    Ok(DelegateParams {
        agent_type,
        task: task_text,
        context,
        timeout_ms: task["timeout_ms"].as_u64(),
        working_dir: text("working_dir"),
        from_session: Some(session_id.to_string()),
        isolation,
        test_command,
        requested_by: Some(format!("{SESSION_REQUESTER}{session_id}")),
        proposed,
        ids: None,
    })
}

/// Delegates `remaining` one after the other (each is stored before the next is checked),
/// then answers with their ids; for a plan (`summary`), observers are asked to approve it.
fn delegate_all(
    parts: &mut Parts<'_>,
    session_id: String,
    mut remaining: Vec<DelegateParams>,
    created: Vec<u64>,
    summary: Option<String>,
    stream: mio::net::UnixStream,
) {
    if remaining.is_empty() {
        return finish(parts, &session_id, created, summary, stream);
    }
    let params = remaining.remove(0);
    lifecycle::delegate(
        parts,
        params,
        crate::ctx::done::<Tasks, Result<u64, TaskError>>(move |mut parts, result| match result {
            Ok(task_id) => {
                let mut created = created;
                created.push(task_id);
                delegate_all(&mut parts, session_id, remaining, created, summary, stream);
            }
            Err(error) => {
                // A plan is all or nothing: what was proposed already is withdrawn.
                if summary.is_some() && !created.is_empty() {
                    let _ = lifecycle::decide_plan(&mut parts, &created, false);
                }
                parts
                    .ctx
                    .answer(stream, answer_line(Err(error.to_string())));
            }
        }),
    );
}

fn finish(
    parts: &mut Parts<'_>,
    session_id: &str,
    created: Vec<u64>,
    summary: Option<String>,
    stream: mio::net::UnixStream,
) {
    let tasks = result_of(TasksCreated {
        tasks: created
            .iter()
            .filter_map(|id| parts.tasks.ticket(*id))
            .map(|t| TaskRef {
                task_id: t.task_id,
                ticket_id: &t.ticket_id,
                status: t.status().as_str(),
            })
            .collect(),
        note: None,
    });
    if let Some(summary) = summary {
        log::info!("{session_id}: proposes a plan of tasks {created:?}");
        let (content, described) = describe_plan(parts, session_id, &summary, &created);
        parts.ctx.broadcast(&ServerMessage::ClaudeResponse {
            session_id,
            content: &content,
            actions: vec![Action::ApprovePlan {
                button_text: "Approve",
                task_ids: &created,
                summary: &summary,
                tasks: described,
            }],
            in_reply_to: None,
            timestamp: rfc3339(std::time::SystemTime::now()),
        });
        let mut answer = tasks;
        answer["note"] = "proposed: the tasks run once a person approves the plan".into();
        parts.ctx.answer(stream, answer_line(Ok(answer)));
    } else {
        parts.ctx.answer(stream, answer_line(Ok(tasks)));
    }
}

/// What a person approves with a plan, in full and in the daemon's words: the message's
/// content (the agent's summary, quoted, then every task with its agent type, working
/// directory, isolation, test command and whole text) and each task as JSON for the
/// `approve_plan` action's `tasks`.
fn describe_plan(
    parts: &Parts<'_>,
    session_id: &str,
    summary: &str,
    created: &[u64],
) -> (String, Vec<Value>) {
    let mut content = format!("{session_id} proposes {} task(s)", created.len());
    if !summary.is_empty() {
        content.push_str(&format!(" and sums them up as {summary:?}"));
    }
    content.push_str(". Approving runs exactly this:");
    let mut described = Vec::new();
    for ticket in created.iter().filter_map(|id| parts.tasks.ticket(*id)) {
        let test_command = lifecycle::test_command_of(&parts.ctx.config, ticket);
        let tests_run = ticket.context.tests_required && test_command.is_some();
        let isolation = match ticket.isolation {
            Isolation::None => "none",
            Isolation::Worktree => "worktree",
        };
        content.push_str(&format!(
            "\n\ntask {}: agent {} in {} (isolation {isolation}, timeout {} ms)",
            ticket.task_id,
            ticket.agent_type,
            ticket.requested_dir.display(),
            ticket.timeout_ms
        ));
        match &test_command {
            Some(argv) if tests_run => {
                content.push_str(&format!("\ntest_command (runs after the agent): {argv:?}"))
            }
            Some(argv) => content.push_str(&format!(
                "\ntest_command (does not run: context.tests_required is false): {argv:?}"
            )),
            None => content.push_str("\ntest_command: none"),
        }
        let context = &ticket.context;
        if !context.files.is_empty() || !context.requirements.is_empty() {
            content.push_str(&format!(
                "\ncontext: files {:?}, requirements {:?}",
                context.files, context.requirements
            ));
        }
        content.push_str(&format!("\ntask text:\n{}", ticket.task));
        described.push(result_of(PlannedTask {
            task_id: ticket.task_id,
            agent_type: &ticket.agent_type,
            task: &ticket.task,
            working_dir: &ticket.requested_dir,
            isolation: ticket.isolation,
            context: &ticket.context,
            timeout_ms: ticket.timeout_ms,
            test_command,
            tests_run,
        }));
    }
    (content, described)
}
