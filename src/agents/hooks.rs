//! The daemon's side of agent hooks: the hook socket's connections, checked credentials,
//! and what each event means for the agent (its activity, a delivered prompt, a reply).
//!
//! Each connection carries one message from `orchestra hook` (see `proto::hook`). It is read
//! on the event loop without blocking, bounded in size (`hooks.max_message_bytes`), time
//! (`hooks.receive_timeout`, and `hooks.idle_timeout` of silence) and number
//! (`hooks.max_connections`, and `hooks.max_connections_per_session` once the credential at
//! the start of a message has arrived); a message whose credential is not a live session's
//! is dropped. A hook can speak only for the session whose credential it holds, and one
//! session holds at most `hooks.max_pending_approvals_per_session` permission requests.

use std::io::Read;
use std::time::{Instant, SystemTime};

use mio::Interest;

use super::AgentEvent;
use super::Parts;
use crate::ctx::{Source, Timer};
use crate::proto::hook::{self, CallRequest, HookEvent, HookRequest, SocketMessage};

impl Parts<'_> {
    /// Accepts hooks' connections.
    pub fn on_hook_listener(&mut self) {
        while let Some(stream) = crate::net::unix::accept_one(&self.agents.hook_listener, "hook") {
            if self.agents.hook_connections >= self.ctx.config.hooks.max_connections
                && !self.drop_oldest_anonymous_hook()
            {
                log::warn!("too many hook connections (hooks.max_connections); one closed");
                continue;
            }
            self.ctx.attach_serial += 1;
            let serial = self.ctx.attach_serial;
            let now = Instant::now();
            let source = Source::Hook {
                stream,
                received: Vec::new(),
                serial,
                session: None,
                opened: now,
                active: now,
            };
            match self.ctx.add_source(source, Interest::READABLE) {
                Ok(key) => {
                    self.agents.hook_connections += 1;
                    let hooks = &self.ctx.config.hooks;
                    self.ctx.timers.schedule_in(
                        hooks.idle_timeout.min(hooks.receive_timeout),
                        Timer::HookTimeout(key, serial),
                    );
                    // Data may have arrived before registration.
                    self.on_hook_readable(key);
                }
                Err(e) => log::warn!("cannot watch a hook connection: {e}"),
            }
        }
    }

    /// Makes room for a new hook connection: closes the oldest one whose credential has not
    /// arrived (a session's own connections are bounded by its quota instead). False if
    /// every open one has its session.
    fn drop_oldest_anonymous_hook(&mut self) -> bool {
        let oldest = self
            .ctx
            .sources
            .iter()
            .filter_map(|(key, source)| match source {
                Source::Hook {
                    serial,
                    session: None,
                    ..
                } => Some((*serial, key)),
                _ => None,
            })
            .min();
        match oldest {
            Some((_, key)) => {
                log::warn!(
                    "too many hook connections (hooks.max_connections); the oldest one that \
                     has not sent a credential was closed"
                );
                self.drop_hook(key);
                true
            }
            None => false,
        }
    }

    /// Reads what a hook connection has sent; handles the message once it is complete.
    pub fn on_hook_readable(&mut self, key: usize) {
        let max = self.ctx.config.hooks.max_message_bytes;
        let Some(Source::Hook {
            stream,
            received,
            active,
            ..
        }) = self.ctx.sources.get_mut(key)
        else {
            return;
        };
        let mut chunk = [0u8; 16 * 1024];
        let complete = loop {
            match stream.read(&mut chunk) {
                Ok(0) => break true,
                Ok(n) => {
                    if received.len() + n > max {
                        log::warn!(
                            "a hook message is longer than hooks.max_message_bytes; dropped"
                        );
                        self.drop_hook(key);
                        return;
                    }
                    received.extend_from_slice(&chunk[..n]);
                    *active = Instant::now();
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::debug!("hook connection failed: {e}");
                    self.drop_hook(key);
                    return;
                }
            }
        };
        if !complete {
            self.identify_hook(key);
            return;
        }
        let Some(Source::Hook {
            stream,
            received,
            session,
            ..
        }) = self.ctx.remove_source(key)
        else {
            return;
        };
        self.forget_hook(session.as_deref());
        match hook::decode_message(&received, max) {
            Ok(SocketMessage::Call(call)) => {
                match self.agents.hook_tokens.get(&call.token).cloned() {
                    // Answered by the tools' handler once the loop step is done.
                    Some(session_id) => self.agents.calls.push(PendingCall {
                        session_id,
                        call,
                        stream,
                    }),
                    None => {
                        log::warn!("hook socket: a call with an unknown credential was refused");
                        self.ctx.answer(
                            stream,
                            b"{\"ok\":false,\"error\":\"unknown credential\"}\n".to_vec(),
                        );
                    }
                }
            }
            Ok(SocketMessage::Hook(request)) => match self.on_hook_request(request) {
                // The answer comes when a person decides (or the wait times out).
                Ok(Some(approval)) => self.hold_for_approval(approval, Approved::Hook(stream)),
                Ok(None) => self.ctx.answer(stream, b"{}\n".to_vec()),
                Err(why) => self.ctx.answer(stream, hook::refusal(&why)),
            },
            Err(e) => {
                self.ctx.answer(stream, b"{}\n".to_vec());
                log::warn!("hook socket: {e}");
            }
        }
    }

    /// Counts an unfinished message's connection against its session's quota as soon as its
    /// credential has arrived; refuses it past `hooks.max_connections_per_session`, or when
    /// the credential is not a live session's.
    fn identify_hook(&mut self, key: usize) {
        let Some(Source::Hook {
            received,
            session: None,
            ..
        }) = self.ctx.sources.get(key)
        else {
            return;
        };
        let hook::Prefix::Credential(token) = hook::credential_prefix(received) else {
            return;
        };
        let Some(session_id) = self.agents.hook_tokens.get(token).cloned() else {
            log::warn!("hook socket: a connection with an unknown credential was refused");
            self.refuse_hook(key, "unknown credential");
            return;
        };
        let quota = self.ctx.config.hooks.max_connections_per_session;
        let open = self
            .agents
            .hook_sessions
            .get(&session_id)
            .copied()
            .unwrap_or(0);
        if open >= quota {
            log::warn!(
                "{session_id}: too many unfinished hook connections \
                 (hooks.max_connections_per_session); one refused"
            );
            self.refuse_hook(
                key,
                &format!(
                    "too many unfinished hook connections of this session \
                     (hooks.max_connections_per_session is {quota})"
                ),
            );
            return;
        }
        *self
            .agents
            .hook_sessions
            .entry(session_id.clone())
            .or_default() += 1;
        if let Some(Source::Hook { session, .. }) = self.ctx.sources.get_mut(key) {
            *session = Some(session_id);
        }
    }

    /// Closes a hook connection with a refusal that says why.
    fn refuse_hook(&mut self, key: usize, why: &str) {
        if let Some(Source::Hook {
            stream, session, ..
        }) = self.ctx.remove_source(key)
        {
            self.forget_hook(session.as_deref());
            self.ctx.answer(stream, hook::refusal(why));
        }
    }

    /// A hook connection is gone: it no longer counts against the limits.
    fn forget_hook(&mut self, session: Option<&str>) {
        self.agents.hook_connections = self.agents.hook_connections.saturating_sub(1);
        if let Some(session) = session
            && let Some(open) = self.agents.hook_sessions.get_mut(session)
        {
            *open -= 1;
            if *open == 0 {
                self.agents.hook_sessions.remove(session);
            }
        }
    }

    /// Drops a hook connection that has been silent for `hooks.idle_timeout`, or has not
    /// finished its message within `hooks.receive_timeout`; otherwise looks again later.
    pub fn on_hook_timeout(&mut self, key: usize, serial: u64) {
        if !matches!(self.ctx.sources.get(key), Some(Source::Hook { serial: s, .. }) if *s == serial)
        {
            return;
        }
        // What arrived while the loop was busy elsewhere counts: read it before judging.
        self.on_hook_readable(key);
        let Some(Source::Hook {
            serial: s,
            opened,
            active,
            ..
        }) = self.ctx.sources.get(key)
        else {
            return;
        };
        if *s != serial {
            return;
        }
        let now = Instant::now();
        let hooks = &self.ctx.config.hooks;
        let (whole, idle) = (
            *opened + hooks.receive_timeout,
            *active + hooks.idle_timeout,
        );
        if now >= whole {
            log::warn!("a hook connection sent no complete message in time; dropped");
        } else if now >= idle {
            log::warn!("a hook connection was silent for hooks.idle_timeout; dropped");
        } else {
            let at = whole.min(idle);
            self.ctx
                .timers
                .schedule(at, Timer::HookTimeout(key, serial));
            return;
        }
        self.drop_hook(key);
    }

    fn drop_hook(&mut self, key: usize) {
        if let Some(Source::Hook { session, .. }) = self.ctx.remove_source(key) {
            self.forget_hook(session.as_deref());
        }
    }

    /// Applies a hook event to its session. Returns the permission request to hold, for a
    /// `PermissionRequest` that observers may answer, or why it is refused (the session has
    /// `hooks.max_pending_approvals_per_session` waiting).
    fn on_hook_request(&mut self, request: HookRequest) -> Result<Option<Approval>, String> {
        let Some(session_id) = self.agents.hook_tokens.get(&request.token).cloned() else {
            log::warn!("hook socket: a message with an unknown credential was dropped");
            return Ok(None);
        };
        log::debug!("{session_id}: {} hook", request.event.as_str());
        *self
            .ctx
            .metrics
            .hook_events
            .entry(request.event.as_str())
            .or_default() += 1;
        let Some(agent) = self.agents.registry.get_mut(&session_id) else {
            return Ok(None);
        };
        agent
            .activity
            .on_hook(request.event, &request.payload, SystemTime::now());
        if let Some(cli_session) = request.payload["session_id"].as_str() {
            super::resume::saw_cli_session(self, &session_id, cli_session);
        }
        if request.event == HookEvent::SessionStart {
            self.panes.cli_started(self.ctx, &session_id);
        }
        let Some(agent) = self.agents.registry.get_mut(&session_id) else {
            return Ok(None);
        };
        // A CLI whose confirmation dialogs are answered by keys (Gemini CLI) reports the
        // call before the dialog (`PreToolUse`), and the dialog (`Notification`); once any
        // later event arrives, the dialog is gone.
        let keyed = self
            .ctx
            .config
            .agents
            .get(&agent.agent_type)
            .is_some_and(|t| t.hooks == Some(crate::config::HookStyle::Gemini));
        let (mut held, mut refused, mut asked) = (None, None, None);
        match request.event {
            HookEvent::PreToolUse if keyed => agent.last_tool = Some(request.payload.clone()),
            HookEvent::PostToolUse if keyed => agent.last_tool = None,
            HookEvent::Notification
                if keyed && request.payload["notification_type"] == "ToolPermission" =>
            {
                // The call its BeforeTool hook reported; else what the dialog itself says.
                let call = agent.last_tool.take().unwrap_or_else(|| {
                    let details = &request.payload["details"];
                    serde_json::json!({
                        "tool_name": details["title"].as_str().unwrap_or("a tool"),
                        "tool_input": {"command": details["command"]},
                    })
                });
                asked = Some(Approval {
                    request_id: format!("perm-{}", &crate::panes::attach::new_token()[..16]),
                    session_id: session_id.clone(),
                    tool: call["tool_name"].as_str().unwrap_or("a tool").to_string(),
                    summary: super::activity::approval_summary(&call),
                    tool_input: call["tool_input"].clone(),
                });
            }
            HookEvent::UserPromptSubmit => {
                if let Some(id) = agent.conversation.delivered() {
                    let event = AgentEvent::PromptDelivered {
                        session_id: session_id.clone(),
                        id,
                    };
                    self.agents.registry.announce(event);
                }
            }
            HookEvent::Stop => {
                let in_reply_to = agent.conversation.answered();
                // Claude Code's name for the turn's reply, then Gemini CLI's (AfterAgent).
                let content = request.payload["last_assistant_message"]
                    .as_str()
                    .or(request.payload["prompt_response"].as_str())
                    .unwrap_or_default()
                    .to_string();
                self.agents.registry.announce(AgentEvent::Replied {
                    session_id: session_id.clone(),
                    content: content.clone(),
                    in_reply_to: in_reply_to.clone(),
                });
                self.remember(
                    &session_id,
                    super::history::Role::Agent,
                    content,
                    in_reply_to,
                );
            }
            HookEvent::PermissionRequest => {
                let quota = self.ctx.config.hooks.max_pending_approvals_per_session;
                let waiting = self
                    .agents
                    .approvals
                    .values()
                    .filter(|(approval, _)| approval.session_id == session_id)
                    .count();
                if waiting >= quota {
                    log::warn!(
                        "{session_id}: too many permission requests waiting \
                         (hooks.max_pending_approvals_per_session); one refused"
                    );
                    refused = Some(format!(
                        "too many permission requests of this session are waiting \
                         (hooks.max_pending_approvals_per_session is {quota})"
                    ));
                } else if self.agents.approvals.len() < self.ctx.config.hooks.max_pending_approvals
                {
                    held = Some(Approval {
                        request_id: format!("perm-{}", &crate::panes::attach::new_token()[..16]),
                        session_id: session_id.clone(),
                        tool: request.payload["tool_name"]
                            .as_str()
                            .unwrap_or("a tool")
                            .to_string(),
                        summary: super::activity::approval_summary(&request.payload),
                        tool_input: request.payload["tool_input"].clone(),
                    });
                } else {
                    log::warn!(
                        "{session_id}: too many permission requests waiting \
                         (hooks.max_pending_approvals); the agent asks in its terminal"
                    );
                }
            }
            _ => {}
        }
        if keyed && request.event != HookEvent::Notification {
            self.forget_keyed_approvals(&session_id);
        }
        if let Some(approval) = asked {
            // Nothing else is typed while the dialog is up (an Enter would pick its first
            // choice); the answer is typed once the dialog is on the screen and still.
            let hooks = &self.ctx.config.hooks;
            let (settle, wait) = (hooks.prompt_settle, hooks.prompt_wait);
            self.panes
                .hold_input_for_dialog(self.ctx, &session_id, settle, wait);
            let waiting = self
                .agents
                .approvals
                .values()
                .filter(|(a, _)| a.session_id == session_id)
                .count();
            let quota = self.ctx.config.hooks.max_pending_approvals_per_session;
            if waiting < quota
                && self.agents.approvals.len() < self.ctx.config.hooks.max_pending_approvals
            {
                self.hold_for_approval(approval, Approved::Keys);
            }
        }
        self.refresh_status(&session_id);
        self.schedule_idle_check(&session_id);
        match refused {
            Some(why) => Err(why),
            None => Ok(held),
        }
    }

    /// Keeps a request until an observer decides (a permission request's connection, or an
    /// agent's message to type), and asks them with everything it would do.
    pub fn hold_for_approval(&mut self, approval: Approval, approved: Approved) {
        log::info!(
            "{}: asks permission for {} ({})",
            approval.session_id,
            crate::bounded(&approval.summary),
            approval.request_id
        );
        self.ctx.timers.schedule_in(
            self.ctx.config.hooks.approval_timeout,
            Timer::ApprovalTimeout(approval.request_id.clone()),
        );
        self.agents
            .registry
            .announce(AgentEvent::ApprovalRequested {
                session_id: approval.session_id.clone(),
                request_id: approval.request_id.clone(),
                tool: approval.tool.clone(),
                summary: approval.summary.clone(),
                tool_input: approval.tool_input.clone(),
            });
        self.agents
            .approvals
            .insert(approval.request_id.clone(), (approval, approved));
    }

    /// A person answered a permission request. Fails when there is no such request of that
    /// session (answered already, expired, or never asked).
    pub fn decide_tool(
        &mut self,
        session_id: &str,
        request_id: &str,
        allow: bool,
        message: Option<&str>,
    ) -> Result<(), String> {
        match self.agents.approvals.get(request_id) {
            Some((approval, _)) if approval.session_id == session_id => {}
            _ => {
                return Err(format!(
                    "no permission request {} of {} is waiting (answered, expired or unknown)",
                    crate::shown(request_id),
                    crate::shown(session_id)
                ));
            }
        }
        let (approval, approved) = self.agents.approvals.remove(request_id).expect("checked");
        let done = match approved {
            Approved::Hook(stream) => {
                self.ctx
                    .answer(stream, hook::permission_answer(allow, message));
                Ok(())
            }
            Approved::Message { to, text } if allow => self
                .panes
                .type_input(
                    self.ctx,
                    &to,
                    crate::panes::typing::Typing::Message(text.clone()),
                    None,
                )
                .map(|()| self.remember(&to, super::history::Role::User, text, None))
                .map_err(|(_, why)| format!("allowed, but the message was not typed: {why}")),
            Approved::Message { .. } => Ok(()),
            // The dialog's first choice ("Allow once"), or Esc, which cancels the call.
            Approved::Keys => {
                let key: &[u8] = if allow { b"1" } else { b"\x1b" };
                let typed = self
                    .panes
                    .answer_dialog(self.ctx, &approval.session_id, key)
                    .map_err(|why| format!("the answer was not typed: {why}"));
                if !allow
                    && typed.is_ok()
                    && let Some(agent) = self.agents.registry.get_mut(&approval.session_id)
                {
                    agent.activity.on_turn_cancelled(SystemTime::now());
                    self.refresh_status(&approval.session_id);
                }
                typed
            }
        };
        log::info!(
            "{}: permission for {} {}",
            approval.session_id,
            crate::bounded(&approval.summary),
            if allow { "allowed" } else { "denied" }
        );
        self.agents.registry.announce(AgentEvent::ToolDecided {
            session_id: approval.session_id,
            request_id: approval.request_id,
            decision: if allow { "allow" } else { "deny" },
        });
        done
    }

    /// The CLI went on past its dialogs (answered in its terminal, or cancelled), or a
    /// person typed into its terminal while one was up: their requests are no longer asked,
    /// and input held for them flows.
    pub fn forget_keyed_approvals(&mut self, session_id: &str) {
        let gone: Vec<String> = self
            .agents
            .approvals
            .iter()
            .filter(|(_, (a, how))| a.session_id == session_id && matches!(how, Approved::Keys))
            .map(|(id, _)| id.clone())
            .collect();
        if !gone.is_empty() {
            self.panes.release_input(self.ctx, session_id);
        }
        for request_id in gone {
            self.agents.approvals.remove(&request_id);
            self.agents.registry.announce(AgentEvent::ToolDecided {
                session_id: session_id.to_string(),
                request_id,
                decision: "expired",
            });
        }
    }

    /// Nobody answered in time: the hook lets the CLI ask in its own terminal.
    pub fn on_approval_timeout(&mut self, request_id: &str) {
        let Some((approval, approved)) = self.agents.approvals.remove(request_id) else {
            return;
        };
        // A held message is dropped; a hook lets its CLI ask; a dialog stays for the
        // terminal, and input held behind it flows again.
        match approved {
            Approved::Hook(stream) => self.ctx.answer(stream, b"{}\n".to_vec()),
            Approved::Keys => self.panes.release_input(self.ctx, &approval.session_id),
            Approved::Message { .. } => {}
        }
        log::info!(
            "{}: nobody answered the request for {} in time (a CLI asks in its terminal, a \
             held message is dropped)",
            approval.session_id,
            crate::bounded(&approval.summary)
        );
        self.agents.registry.announce(AgentEvent::ToolDecided {
            session_id: approval.session_id,
            request_id: approval.request_id,
            decision: "expired",
        });
    }
}

/// A tool call an agent made, waiting to be handled, with the connection to answer on.
#[derive(Debug)]
pub struct PendingCall {
    /// The session that calls (its credential was checked).
    pub session_id: String,
    /// The call.
    pub call: CallRequest,
    /// Where the answer goes.
    pub stream: mio::net::UnixStream,
}

/// What a person's decision on a held request acts on.
#[derive(Debug)]
pub enum Approved {
    /// A permission request of an agent's CLI: its hook waits on this connection for the
    /// answer.
    Hook(mio::net::UnixStream),
    /// An agent's `send_message`: typed into `to` once allowed, dropped otherwise.
    Message {
        /// The session to type into.
        to: String,
        /// The exact text to type.
        text: String,
    },
    /// A confirmation dialog on the CLI's screen (Gemini CLI): answered by typing its key.
    Keys,
}

/// A tool permission an agent's CLI asked for, or an agent's tool call held by
/// `[tools]`, waiting for a person.
#[derive(Debug, Clone)]
pub struct Approval {
    /// Its id in `approve_tool` actions and answers.
    pub request_id: String,
    /// The session that asks.
    pub session_id: String,
    /// The tool.
    pub tool: String,
    /// The call in full: the tool and its main argument, never cut.
    pub summary: String,
    /// Every argument of the call, as the agent's CLI gave them.
    pub tool_input: serde_json::Value,
}
