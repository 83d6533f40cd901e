//! The daemon: the loop's shared context and the parts that own the features' state.
//!
//! The loop ([`crate::server`], [`crate::dispatch`]) is the only code that holds it. Each
//! part's code gets a view of what it may reach ([`Daemon::for_agents`],
//! [`Daemon::for_tasks`], [`Daemon::for_api`], [`Daemon::for_panes`]), and a continuation
//! finds its part's view through [`Part`] (it runs on the daemon as an opaque [`World`]). It
//! never touches client sockets: HTTP replies and WebSocket frames go to the context's outboxes
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
use crate::cluster::Cluster;
use crate::config::Config;
pub use crate::ctx::{
    ATTACH_LISTENER, Ctx, Done, HOOK_LISTENER, LISTENER, LOCAL_API_LISTENER, SIGNALS, Source,
    Timer, TokenKind, WAKER, WsOutbox, conn_token, source_token, token_kind,
};
use crate::ctx::{Part, World};
use crate::jobs::Notifier;
use crate::panes::Panes;
use crate::panes::emulator::{EmulatorLimits, Emulators};
use crate::tasks::Tasks;

/// The daemon's state: the shared context and one part per feature.
pub struct Daemon {
    /// The loop's shared context.
    ctx: Ctx,
    /// Pane output and input.
    panes: Panes,
    /// Agent sessions, their hooks and conversations.
    agents: Agents,
    /// Delegated tasks.
    tasks: Tasks,
    /// The API's own state: auth, rate limits, browser logins.
    api: ApiState,
    /// The other hosts of the cluster, and the link to them.
    cluster: Cluster,
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
        notifier: Notifier<World>,
        secret: &[u8],
    ) -> Result<Daemon, String> {
        let emulator_notifier = notifier.clone();
        let emulators = Emulators::start(EmulatorLimits::of(&config.panes), move |event| {
            emulator_notifier.send(crate::ctx::then::<Panes>(move |(panes, ctx)| {
                panes.on_emulator_event(ctx, event)
            }));
        })
        .map_err(|e| format!("cannot start the emulator thread: {e}"))?;
        let tasks = Tasks::open(&config, notifier.clone())?;
        let link_notifier = notifier.clone();
        let cluster = Cluster::new(&config.cluster, secret, move |event| {
            link_notifier.send(crate::ctx::then::<ApiState>(move |mut parts| {
                crate::api::peer::on_link_event(&mut parts, event)
            }));
        })?;
        let ctx = Ctx::new(config.clone(), registry, &notifier)?;
        Ok(Daemon {
            panes: Panes::new(&config, emulators, attach_listener),
            agents: Agents::new(&config, hook_listener)?,
            tasks,
            api: ApiState::new(&config, auth)?,
            cluster,
            ctx,
        })
    }
}

impl Daemon {
    /// The shared context, for the loop's own bookkeeping (deadlines, replies, metrics).
    pub fn ctx(&mut self) -> &mut Ctx {
        &mut self.ctx
    }

    /// The panes and the context: what the loop reads pipes and delivers output with.
    pub fn for_panes(&mut self) -> (&mut Panes, &mut Ctx) {
        (&mut self.panes, &mut self.ctx)
    }

    /// What agents code may reach.
    pub fn for_agents(&mut self) -> crate::agents::Parts<'_> {
        crate::agents::Parts {
            ctx: &mut self.ctx,
            panes: &mut self.panes,
            agents: &mut self.agents,
        }
    }

    /// What tasks code may reach.
    pub fn for_tasks(&mut self) -> crate::tasks::Parts<'_> {
        crate::tasks::Parts {
            ctx: &mut self.ctx,
            panes: &mut self.panes,
            agents: &mut self.agents,
            tasks: &mut self.tasks,
        }
    }

    /// What the API may reach.
    pub fn for_api(&mut self) -> crate::api::Parts<'_> {
        crate::api::Parts {
            ctx: &mut self.ctx,
            panes: &mut self.panes,
            agents: &mut self.agents,
            tasks: &mut self.tasks,
            api: &mut self.api,
            cluster: &mut self.cluster,
        }
    }

    /// The daemon a continuation runs on.
    fn of(world: &mut World) -> &mut Daemon {
        world
            .downcast_mut::<Daemon>()
            .expect("continuations run on the daemon")
    }
}

impl Part for Panes {
    type Reach<'a> = (&'a mut Panes, &'a mut Ctx);
    fn reach(world: &mut World) -> Self::Reach<'_> {
        Daemon::of(world).for_panes()
    }
}

impl Part for Agents {
    type Reach<'a> = crate::agents::Parts<'a>;
    fn reach(world: &mut World) -> Self::Reach<'_> {
        Daemon::of(world).for_agents()
    }
}

impl Part for Tasks {
    type Reach<'a> = crate::tasks::Parts<'a>;
    fn reach(world: &mut World) -> Self::Reach<'_> {
        Daemon::of(world).for_tasks()
    }
}

impl Part for ApiState {
    type Reach<'a> = crate::api::Parts<'a>;
    fn reach(world: &mut World) -> Self::Reach<'_> {
        Daemon::of(world).for_api()
    }
}
