//! The daemon's side of agent hooks: the hook socket's connections, checked credentials,
//! and what each event means for the agent (its activity, a delivered prompt, a reply).
//!
//! Each connection carries one message from `orchestra hook` (see `proto::hook`). It is read
//! on the event loop without blocking, bounded in size (`hooks.max_message_bytes`), time
//! (`hooks.receive_timeout`) and number (`hooks.max_connections`); a message whose
//! credential is not a live session's is dropped. A hook can speak only for the session
//! whose credential it holds.

use std::io::{Read, Write};
use std::time::SystemTime;

use mio::Interest;

use super::AgentEvent;
use crate::daemon::{Daemon, Source, Timer};
use crate::proto::hook::{self, HookEvent, HookRequest};

impl Daemon {
    /// Accepts hooks' connections.
    pub fn on_hook_listener(&mut self) {
        loop {
            match self.hook_listener.accept() {
                Ok((stream, _)) => {
                    if self.hook_connections >= self.config.hooks.max_connections {
                        log::warn!("too many hook connections (hooks.max_connections); one closed");
                        continue;
                    }
                    self.attach_serial += 1;
                    let serial = self.attach_serial;
                    let source = Source::Hook {
                        stream,
                        received: Vec::new(),
                        serial,
                    };
                    match self.add_source(source, Interest::READABLE) {
                        Ok(key) => {
                            self.hook_connections += 1;
                            self.timers.schedule_in(
                                self.config.hooks.receive_timeout,
                                Timer::HookTimeout(key, serial),
                            );
                            // Data may have arrived before registration.
                            self.on_hook_readable(key);
                        }
                        Err(e) => log::warn!("cannot watch a hook connection: {e}"),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    log::warn!("hook socket accept failed: {e}");
                    return;
                }
            }
        }
    }

    /// Reads what a hook connection has sent; handles the message once it is complete.
    pub fn on_hook_readable(&mut self, key: usize) {
        let max = self.config.hooks.max_message_bytes;
        let Some(Source::Hook {
            stream, received, ..
        }) = self.sources.get_mut(key)
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
            return;
        }
        let decoded = hook::decode(received, max);
        // One small answer; the socket buffer takes it whole, or the hook gets none and
        // goes on (it never waits longer than its own timeout).
        let _ = stream.write_all(b"{}\n");
        self.drop_hook(key);
        match decoded {
            Ok(request) => self.on_hook_request(request),
            Err(e) => log::warn!("hook socket: {e}"),
        }
    }

    /// Drops a hook connection that took too long.
    pub fn on_hook_timeout(&mut self, key: usize, serial: u64) {
        if matches!(self.sources.get(key), Some(Source::Hook { serial: s, .. }) if *s == serial) {
            log::warn!("a hook connection sent no complete message in time; dropped");
            self.drop_hook(key);
        }
    }

    fn drop_hook(&mut self, key: usize) {
        if self.remove_source(key).is_some() {
            self.hook_connections = self.hook_connections.saturating_sub(1);
        }
    }

    fn on_hook_request(&mut self, request: HookRequest) {
        let Some(session_id) = self.hook_tokens.get(&request.token).cloned() else {
            log::warn!("hook socket: a message with an unknown credential was dropped");
            return;
        };
        log::debug!("{session_id}: {} hook", request.event.as_str());
        let Some(agent) = self.agents.get_mut(&session_id) else {
            return;
        };
        agent
            .activity
            .on_hook(request.event, &request.payload, SystemTime::now());
        match request.event {
            HookEvent::UserPromptSubmit => {
                if let Some(id) = agent.conversation.delivered() {
                    let event = AgentEvent::PromptDelivered {
                        session_id: session_id.clone(),
                        id,
                    };
                    self.agents.announce(event);
                }
            }
            HookEvent::Stop => {
                let in_reply_to = agent.conversation.answered();
                let content = request.payload["last_assistant_message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                self.agents.announce(AgentEvent::Replied {
                    session_id: session_id.clone(),
                    content,
                    in_reply_to,
                });
            }
            _ => {}
        }
        self.refresh_status(&session_id);
        self.schedule_idle_check(&session_id);
    }
}
