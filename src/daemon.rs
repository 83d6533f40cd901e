//! The daemon: the loop's shared context and the parts that own the features' state.
//!
//! Request handlers and job continuations get `&mut Daemon`. It never touches client
//! sockets: HTTP replies and WebSocket frames go to the context's outboxes
//! ([`Ctx::outbox`], [`Ctx::ws`]) and the server delivers them. It decides nothing: which
//! part reacts to a source, a timer, a closed connection or an agent's event is
//! [`crate::dispatch`]'s business.
//!
//! Where a pane's bytes go: the tmux pipe or pty master is a [`Source::PanePipe`] in
//! [`Ctx::sources`]. When it is readable, [`crate::dispatch::source_event`] calls
//! [`Panes::on_pipe_ready`], which reads it and appends each chunk to the pane's stream in
//! the hub, where its `terminal_output` frame is encoded once. After the loop's turn the
//! server pulls frames for each viewer ([`Panes::pull`]) and writes them; then
//! [`Panes::after_delivery`] hands the chunks to the emulator thread (and a pty session's
//! holder). The read is announced as a [`crate::panes::pane::PaneEvent::Output`], which
//! [`crate::dispatch::agent_events`] hands to agents (activity and status).
//!
//! The parts, lowest first: [`Panes`] (panes and their viewers), [`Agents`] (sessions, hooks,
//! conversations), [`Tasks`] (delegated tasks), [`ApiState`] (auth, rate limits, browser
//! logins). Each keeps its fields private to its module.

use std::sync::Arc;

use crate::agents::Agents;
use crate::api::ApiState;
use crate::config::Config;
pub use crate::ctx::{
    ATTACH_LISTENER, Ctx, Done, HOOK_LISTENER, LISTENER, LOCAL_API_LISTENER, SIGNALS, Source,
    Timer, TokenKind, WAKER, WsOutbox, conn_token, source_token, token_kind,
};
use crate::jobs::Notifier;
use crate::panes::Panes;
use crate::panes::emulator::Emulators;
use crate::tasks::Tasks;

/// The daemon's state: the shared context and one part per feature.
pub struct Daemon {
    /// The loop's shared context.
    pub(crate) ctx: Ctx,
    /// Pane output and input.
    pub(crate) panes: Panes,
    /// Agent sessions, their hooks and conversations.
    pub(crate) agents: Agents,
    /// Delegated tasks.
    pub(crate) tasks: Tasks,
    /// The API's own state: auth, rate limits, browser logins.
    pub(crate) api: ApiState,
}

impl Daemon {
    /// The daemon's state at start: worker pools, the emulator thread and the ticket store
    /// started, everything else empty. `notifier` is how workers and threads report back.
    pub fn new(
        config: Arc<Config>,
        auth: crate::api::auth::Authenticator,
        registry: mio::Registry,
        attach_listener: mio::net::UnixListener,
        hook_listener: mio::net::UnixListener,
        notifier: Notifier<Daemon>,
    ) -> Result<Daemon, String> {
        let emulator_notifier = notifier.clone();
        let emulators = Emulators::start(move |event| {
            emulator_notifier.send(crate::ctx::then(move |panes: &mut Panes, ctx| {
                panes.on_emulator_event(ctx, event)
            }));
        })
        .map_err(|e| format!("cannot start the emulator thread: {e}"))?;
        let tasks = Tasks::open(&config, notifier.clone())?;
        let ctx = Ctx::new(config.clone(), registry, &notifier)?;
        Ok(Daemon {
            panes: Panes::new(&config, emulators, attach_listener),
            agents: Agents::new(&config, hook_listener)?,
            tasks,
            api: ApiState::new(&config, auth)?,
            ctx,
        })
    }
}

impl crate::ctx::Part for Panes {
    fn of(daemon: &mut Daemon) -> (&mut Panes, &mut Ctx) {
        (&mut daemon.panes, &mut daemon.ctx)
    }
}
