//! Sessions of the `pty` backend, on the daemon's side: starting a holder, taking its
//! hand-over (at spawn and after a restart), exits, screen checkpoints and resizes.
//!
//! The master descriptor is read and written like a tmux pipe ([`crate::panes::capture`],
//! [`crate::panes::typing`]); what differs lives here. Each session has three files in the
//! private `pty` directory: the holder's socket, the session's metadata (what a restarted
//! daemon needs to list it again) and the holder's error log. The holder key
//! ([`crate::pty::auth`]) is shared by all sessions and kept across restarts.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mio::Interest;

use super::Parts;
use super::error::SpawnError;
use super::meta::SessionMeta;
use super::{Agent, ExitInfo, SessionBackend, manager};
use crate::config::Config;
use crate::ctx::{Source, Timer};
use crate::net::pane_io::PaneIo;
use crate::panes::pane::PaneSpec;
use crate::panes::seed::Seed;
use crate::proto::pty::{Kind, encode};
use crate::pty::auth::{Key, key_path};
use crate::pty::holder::HoldOptions;
use crate::pty::link::{self, Attached, Master};
use crate::pty::{Checkpoint, ExitStatus};
use crate::tmux::SessionName;

/// How long an exit waits for the terminal's last output before it is announced anyway
/// (a background process may keep the terminal open after the agent ended).
pub const EXIT_OUTPUT_WAIT: Duration = Duration::from_millis(200);

/// What a spawn needs to start a holder, moved to the worker.
#[derive(Debug, Clone)]
pub struct PtySetup {
    dir: PathBuf,
    ring_bytes: usize,
    handover_timeout: Duration,
}

impl PtySetup {
    /// The configured values.
    pub fn of(config: &Config) -> PtySetup {
        PtySetup {
            dir: config.pty_dir(),
            ring_bytes: config.pty.ring_bytes,
            handover_timeout: config.pty.handover_timeout,
        }
    }
}

/// The files of one pty session.
#[derive(Debug, Clone)]
pub struct PtyFiles {
    /// The holder's socket.
    pub socket: PathBuf,
    /// The session's metadata ([`SessionMeta`], encoded).
    pub meta: PathBuf,
    /// The holder's error log.
    pub log: PathBuf,
}

impl PtyFiles {
    /// The files of `session_id` under the configured directory.
    pub fn of(config: &Config, session_id: &str) -> PtyFiles {
        PtyFiles::in_dir(&config.pty_dir(), session_id)
    }

    fn in_dir(dir: &Path, session_id: &str) -> PtyFiles {
        PtyFiles {
            socket: dir.join(format!("{session_id}.sock")),
            meta: dir.join(format!("{session_id}.meta")),
            log: dir.join(format!("{session_id}.log")),
        }
    }

    /// Removes them (blocking; a worker's job).
    pub fn remove(&self) {
        for path in [&self.socket, &self.meta, &self.log] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Starts a holder running `orchestra agent-exec SPEC` and takes its hand-over (blocking; the
/// spawn job's).
pub fn start(
    setup: &PtySetup,
    session_id: &str,
    meta: &SessionMeta,
    exe: &Path,
    spec: &Path,
    rows: u16,
    cols: u16,
) -> Result<Attached, SpawnError> {
    crate::create_private_dir(&setup.dir).map_err(SpawnError::Failed)?;
    let key = Key::load_or_create(&setup.dir).map_err(SpawnError::Failed)?;
    let files = PtyFiles::in_dir(&setup.dir, session_id);
    manager::write_private(&files.meta, meta.encode().as_bytes())
        .map_err(|e| SpawnError::Failed(format!("cannot write the session metadata: {e}")))?;
    let options = HoldOptions {
        socket: files.socket.clone(),
        rows,
        cols,
        ring_bytes: setup.ring_bytes,
        log: Some(files.log.clone()),
        key: key_path(&setup.dir),
        command: vec![exe.into(), "agent-exec".into(), spec.into()],
    };
    let pid = match link::launch(exe, &options) {
        Ok(pid) => pid,
        Err(e) => {
            files.remove();
            return Err(SpawnError::Failed(e));
        }
    };
    link::connect(&files.socket, &key, setup.handover_timeout).map_err(|e| {
        // The holder runs but cannot be reached: end its agent, so that nothing runs
        // unlisted, and let the holder go with it.
        let _ = crate::sys::kill_group(pid, libc::SIGKILL);
        files.remove();
        SpawnError::Failed(e)
    })
}

/// Adds a pty session to the registry and starts reading its terminal. `restarted`: the
/// hand-over comes from a holder that served an earlier daemon, so the screen starts from
/// its checkpoint and viewers are told about the restart.
pub fn register(
    parts: &mut Parts<'_>,
    mut agent: Agent,
    mut pane: PaneSpec,
    attached: Attached,
    restarted: bool,
) {
    manager::attach_screen_rules(parts, &mut agent);
    let Attached {
        hello,
        master,
        control,
        gap,
        decoder,
    } = attached;
    if hello.rows > 0 && hello.cols > 0 {
        pane.rows = hello.rows;
        pane.cols = hello.cols;
    }
    let (session_id, rows, cols) = (agent.id.clone(), pane.rows, pane.cols);
    parts.agents.registry.insert(agent);
    parts.panes.register(&session_id, pane);
    if restarted {
        parts.panes.open_stream(&session_id, 0);
        let (seed, reason) = restored_screen(&session_id, &hello, rows, cols);
        parts.panes.reseed(&session_id, seed, reason, false);
    } else {
        parts.panes.open_new_stream(parts.ctx, &session_id);
    }
    // The holder's replay starts where this daemon's stream takes it up; from there on the
    // daemon forwards what it reads, so the holder's replay stays current.
    let start = parts.panes.stream_end(&session_id).unwrap_or(0);
    let stream = mio::net::UnixStream::from_std(control);
    let source = Source::PtyHolder {
        session_id: session_id.clone(),
        stream,
        decoder,
        outbound: encode(Kind::Rebase, &start.to_be_bytes()),
        checkpointed: None,
    };
    let holder = match parts
        .ctx
        .add_source(source, Interest::READABLE | Interest::WRITABLE)
    {
        Ok(key) => {
            parts.panes.link_holder(&session_id, key);
            Some(key)
        }
        Err(e) => {
            log::warn!("{session_id}: cannot watch the pty holder: {e}");
            None
        }
    };
    if !gap.is_empty() {
        // Forwarded back too; the holder recognises the bytes it has.
        parts.panes.accept_output(parts.ctx, &session_id, &gap);
    }
    parts
        .panes
        .install_stream(parts.ctx, &session_id, PaneIo::Pty(Master::new(master)));
    match holder {
        // Frames that came with the hand-over (an exit) are handled like later ones.
        Some(key) => on_holder_ready(parts, key),
        None => holder_lost(parts, &session_id),
    }
    match hello.exit {
        // Ended before this daemon started: recorded as found, like a dead tmux pane.
        Some(exit) if restarted => {
            let idle_after = parts.ctx.config.sessions.idle_after;
            parts.panes.mark_exited(&session_id);
            if let Some(agent) = parts.agents.registry.get_mut(&session_id) {
                agent.exit = Some(exit_info(exit));
                agent.activity.on_exit(SystemTime::now());
                agent.reported = agent.status(SystemTime::now(), idle_after);
                agent.reported_activity = agent.activity.activity;
            }
        }
        Some(exit) => record_exit(parts, &session_id, exit_info(exit)),
        None => {}
    }
    parts.schedule_idle_check(&session_id);
}

/// The screen a restarted daemon starts a pty session's stream from: the holder's last
/// checkpoint, and why viewers see a new stream (saying so when output was lost since).
fn restored_screen(
    session_id: &str,
    hello: &crate::pty::Hello,
    rows: u16,
    cols: u16,
) -> (Seed, &'static str) {
    let screen = hello
        .checkpoint
        .as_deref()
        .and_then(|text| serde_json::from_str::<Checkpoint>(text).ok())
        .map(|c| c.screen.into_bytes())
        .unwrap_or_default();
    let reason = if hello.dropped > 0 {
        log::warn!(
            "{session_id}: the screen is restored short of {} bytes of output (more than \
             the holder keeps came after its last checkpoint)",
            hello.dropped
        );
        "daemon restarted; some output since the last screen checkpoint was lost"
    } else {
        "daemon restarted"
    };
    let seed = Seed {
        rows,
        cols,
        bytes: screen,
    };
    (seed, reason)
}

fn exit_info(exit: ExitStatus) -> ExitInfo {
    match exit {
        ExitStatus::Code(code) => ExitInfo::Code(code),
        ExitStatus::Signal(signal) => ExitInfo::Signal(signal),
    }
}

/// The holder's connection is readable or writable: exits in, queued checkpoints out.
pub fn on_holder_ready(parts: &mut Parts<'_>, key: usize) {
    let Some(Source::PtyHolder {
        session_id,
        stream,
        decoder,
        outbound,
        ..
    }) = parts.ctx.sources.get_mut(key)
    else {
        return;
    };
    let session_id = session_id.clone();
    let mut closed = crate::pty::read_into(stream, decoder);
    if !closed && crate::net::unix::write_some(stream, outbound).is_err() {
        closed = true;
    }
    let mut exits = Vec::new();
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) if frame.kind == Kind::Exit => {
                match serde_json::from_slice::<ExitStatus>(&frame.payload) {
                    Ok(exit) => exits.push(exit),
                    Err(e) => log::warn!("{session_id}: the pty holder sent a bad exit: {e}"),
                }
            }
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => {
                log::warn!("{session_id}: the pty holder sent a bad frame: {e}");
                closed = true;
                break;
            }
        }
    }
    for exit in exits {
        record_exit(parts, &session_id, exit_info(exit));
    }
    if closed {
        parts.ctx.remove_source(key);
        if parts.panes.unlink_holder(&session_id, key) {
            holder_lost(parts, &session_id);
        }
    }
}

/// The holder went away while the daemon runs (killed from outside). The agent keeps its
/// terminal through the daemon's copy of the master; its exit is watched by pid, and how it
/// ended can no longer be told.
fn holder_lost(parts: &mut Parts<'_>, session_id: &str) {
    let Some(agent) = parts.agents.registry.get(session_id) else {
        return;
    };
    if agent.exit.is_some() || agent.pending_exit.is_some() {
        return;
    }
    log::warn!("{session_id}: its pty holder is gone; watching the agent's process instead");
    if !manager::watch_exit(parts, session_id) {
        record_exit(parts, session_id, ExitInfo::Unknown);
    }
}

/// The holder reported how the agent ended. Output it printed last may still be on its way
/// through the terminal: the exit is announced when the terminal reaches its end, or after
/// [`EXIT_OUTPUT_WAIT`].
pub fn record_exit(parts: &mut Parts<'_>, session_id: &str, exit: ExitInfo) {
    let Some(agent) = parts.agents.registry.get_mut(session_id) else {
        return;
    };
    if agent.exit.is_some() || agent.pending_exit.is_some() {
        return;
    }
    agent.pending_exit = Some(exit);
    let read_before = parts.panes.get(session_id).map(|p| p.output_bytes());
    let captured = parts.panes.drain(parts.ctx, session_id);
    if parts.panes.get(session_id).map(|p| p.output_bytes()) != read_before {
        // The agent's last output counts as activity before its exit is announced.
        parts.on_pane_output(session_id);
    }
    if !captured {
        output_ended(parts, session_id);
    } else {
        parts
            .ctx
            .timers
            .schedule_in(EXIT_OUTPUT_WAIT, Timer::PtyExit(session_id.to_string()));
    }
}

/// The terminal reached its end (or the wait for it is over): announce a waiting exit.
pub fn output_ended(parts: &mut Parts<'_>, session_id: &str) {
    let Some(exit) = parts
        .agents
        .registry
        .get_mut(session_id)
        .and_then(|a| a.pending_exit.take())
    else {
        return;
    };
    manager::exited(parts, session_id, exit);
    // The final screen, for a daemon that restarts before the session is deleted.
    parts.panes.schedule_checkpoint(parts.ctx, session_id);
}

/// Finds the pty sessions an earlier daemon left (their metadata files) and takes their
/// holders' hand-over (blocking; runs once at start, before the loop). Sessions whose
/// holder is gone are forgotten. Returns how many were adopted.
pub fn adopt(parts: &mut Parts<'_>) -> usize {
    let dir = parts.ctx.config.pty_dir();
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return 0;
    };
    let mut found: Vec<(SessionMeta, PtyFiles)> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("meta") {
            continue;
        }
        let Some(meta) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| SessionMeta::decode(&text))
        else {
            log::warn!("{}: not session metadata; ignored", path.display());
            continue;
        };
        let files = PtyFiles::in_dir(&dir, &meta.id);
        if files.meta != path {
            continue;
        }
        found.push((meta, files));
    }
    found.sort_by_key(|(meta, _)| meta.created_ms);
    if found.is_empty() {
        return 0;
    }
    // Without the key no holder can be reached: their sessions are forgotten (and each
    // holder, its socket gone, ends its agent).
    let key = Key::read(&key_path(&dir));
    let mut count = 0;
    for (meta, files) in found {
        let Some(name) = meta
            .id
            .strip_prefix("sess-")
            .and_then(|rest| SessionName::parse(&format!("agent-{rest}")))
        else {
            continue;
        };
        if parts.agents.registry.get(&meta.id).is_some() {
            continue;
        }
        let timeout = parts.ctx.config.pty.handover_timeout;
        let connected = key
            .as_ref()
            .map_err(Clone::clone)
            .and_then(|key| link::connect(&files.socket, key, timeout));
        let attached = match connected {
            Ok(attached) => attached,
            Err(e) => {
                log::warn!("{}: its pty holder is gone ({e}); forgotten", meta.id);
                files.remove();
                continue;
            }
        };
        let created_at = UNIX_EPOCH + Duration::from_millis(meta.created_ms);
        let mut agent = Agent::new(
            meta.id.clone(),
            meta.agent_type.clone(),
            name,
            SessionBackend::Pty {
                holder_pid: attached.hello.holder_pid,
            },
            attached.hello.pid,
            PathBuf::from(&meta.working_dir),
            created_at,
        );
        let pane = manager::pane_spec(
            &parts.ctx.config,
            &agent,
            parts.ctx.config.tmux.height,
            parts.ctx.config.tmux.width,
        );
        manager::restore_adopted(parts, &mut agent, meta.hook_token.as_ref());
        log::info!(
            "{}: re-adopted from its pty holder (pid {})",
            agent.id,
            attached.hello.pid
        );
        register(parts, agent, pane, attached, true);
        count += 1;
    }
    count
}
