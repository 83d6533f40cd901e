//! `orchestra pty-hold`: the small process that owns one agent's pseudo-terminal and
//! process, in the manner of `dtach` or `abduco`.
//!
//! The daemon runs `orchestra pty-hold OPTIONS -- ARGV` (the launcher), which starts the
//! holder proper (`--serve`) in a new session, waits for its "ready" line and exits, so the
//! holder is nobody's child but init's and survives the daemon. The holder:
//! - opens a pseudo-terminal of the requested size and starts ARGV on it (a session leader
//!   with the terminal as its controlling terminal);
//! - listens on its Unix socket (in the daemon's private state directory). Every connection
//!   must first answer a challenge with the holder key ([`super::auth`]): one that does not
//!   (within `HANDOVER_TIMEOUT`) is closed having received nothing but the challenge, and
//!   none of its frames is read. While a daemon is attached, every other connection is
//!   refused ([`Kind::Refused`]). A daemon that proves itself gets [`Hello`], the master
//!   descriptor and the [`Replay`] (output since the last checkpoint); the holder then stops
//!   reading the master until that daemon's connection closes, and keeps the replay current
//!   from the output the daemon forwards ([`Kind::Output`]);
//! - reaps the agent and reports its exact status ([`Kind::Exit`]);
//! - keeps the newest checkpoint a daemon sends ([`Kind::Checkpoint`]) for the next daemon,
//!   and drops the replay before it;
//! - ends when a daemon releases the session ([`Kind::Release`]): it kills what is left of
//!   the agent's process group, reaps it and removes its socket;
//! - ends the same way when its socket is gone (removed or replaced: checked every
//!   [`SOCKET_CHECK_INTERVAL`]), since no daemon could ever reach it again and its agent
//!   would run unlisted.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use super::auth::{self, Key};
use super::{Checkpoint, ExitStatus, Hello};
use crate::proto::pty::{FrameDecoder, HEADER, Kind, MAX_PAYLOAD, encode};
use crate::sys;

/// Largest checkpoint a holder keeps; bigger ones are ignored.
pub const MAX_CHECKPOINT_BYTES: usize = 4 * 1024 * 1024;
/// How long a launcher waits for its holder to be ready.
pub const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the holder gives a daemon to take the hand-over (blocking writes).
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the holder waits for the agent to die after a release's `SIGKILL`.
const RELEASE_REAP_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the holder checks that its socket is still in place.
pub const SOCKET_CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// Most connections waiting to answer the challenge at once; a newer one closes the oldest
/// (a daemon answers at once, so only silent clients are ever closed this way).
const MAX_PENDING: usize = 8;

/// What a holder is asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOptions {
    /// Where to listen.
    pub socket: PathBuf,
    /// Initial rows of the pseudo-terminal.
    pub rows: u16,
    /// Initial columns.
    pub cols: u16,
    /// Most bytes of output kept while no daemon is attached.
    pub ring_bytes: usize,
    /// Where the holder writes its own errors (its standard error).
    pub log: Option<PathBuf>,
    /// The holder key ([`super::auth`]), read once at start.
    pub key: PathBuf,
    /// The program and its arguments.
    pub command: Vec<OsString>,
}

impl HoldOptions {
    /// The arguments after `orchestra` that run a holder with these options (`serve`: the
    /// holder proper rather than its launcher).
    pub fn to_args(&self, serve: bool) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "pty-hold".into(),
            "--socket".into(),
            self.socket.clone().into(),
            "--rows".into(),
            self.rows.to_string().into(),
            "--cols".into(),
            self.cols.to_string().into(),
            "--ring-bytes".into(),
            self.ring_bytes.to_string().into(),
            "--key".into(),
            self.key.clone().into(),
        ];
        if let Some(log) = &self.log {
            args.extend(["--log".into(), log.clone().into()]);
        }
        if serve {
            args.push("--serve".into());
        }
        args.push("--".into());
        args.extend(self.command.iter().cloned());
        args
    }
}

/// The launcher: starts the holder proper, detached, and returns once it is ready (its
/// agent's pid) or failed. Returns the process exit code.
pub fn launch(options: &HoldOptions) -> i32 {
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            println!("error: cannot find the orchestra executable: {e}");
            return 1;
        }
    };
    let stderr = match &options.log {
        Some(path) => match open_log(path) {
            Ok(file) => std::process::Stdio::from(file),
            Err(e) => {
                println!("error: cannot open the holder log {}: {e}", path.display());
                return 1;
            }
        },
        None => std::process::Stdio::null(),
    };
    let child = std::process::Command::new(exe)
        .args(options.to_args(true))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(stderr)
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => {
            println!("error: cannot start the holder: {e}");
            return 1;
        }
    };
    let stdout = child.stdout.take().expect("piped");
    let ready = sys::wait_readable(stdout.as_raw_fd(), READY_TIMEOUT).unwrap_or(false);
    let mut line = String::new();
    if ready {
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
    }
    // The holder lives on; this launcher exits without waiting for it, and init reaps it.
    match line.trim_end() {
        l if l.starts_with("ready ") => {
            println!("{l}");
            0
        }
        "" => {
            println!("error: the holder did not start within {READY_TIMEOUT:?}");
            let _ = child.kill();
            1
        }
        other => {
            println!("{other}");
            1
        }
    }
}

fn open_log(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// Everything the agent printed since the last screen checkpoint, numbered with the attached
/// daemon's stream offsets: what the daemon forwards as it reads, and what the holder reads
/// itself while no daemon is attached. A restarted daemon replays it on top of the
/// checkpoint's screen and ends up exactly where the agent is. Bounded: past `capacity` the
/// oldest bytes go, and the replay is then short by `dropped` bytes.
#[derive(Debug)]
pub struct Replay {
    bytes: VecDeque<u8>,
    capacity: usize,
    /// Stream offset of the first byte held.
    start: u64,
    /// Bytes between the checkpoint and `start` that are missing.
    dropped: u64,
}

impl Replay {
    /// An empty replay keeping at most `capacity` bytes, starting at offset 0.
    pub fn new(capacity: usize) -> Replay {
        Replay {
            bytes: VecDeque::new(),
            capacity,
            start: 0,
            dropped: 0,
        }
    }

    /// The offset after the last byte held.
    pub fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// Appends output at the end (read by the holder itself).
    pub fn push(&mut self, data: &[u8]) {
        let data = if data.len() > self.capacity {
            let cut = data.len() - self.capacity;
            self.start += cut as u64;
            self.dropped += cut as u64;
            &data[cut..]
        } else {
            data
        };
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.start += overflow as u64;
        self.dropped += overflow as u64;
        self.bytes.extend(data);
    }

    /// Output a daemon read at `offset`. What continues the replay is appended; a repeat is
    /// ignored; after a hole (the daemon could not forward some) only what follows is kept,
    /// and the hole counts as dropped.
    pub fn push_at(&mut self, offset: u64, data: &[u8]) {
        let end = self.end();
        if offset.saturating_add(data.len() as u64) <= end {
            return;
        }
        if offset < end {
            return self.push(&data[(end - offset) as usize..]);
        }
        if offset > end {
            self.dropped += offset - self.start;
            self.bytes.clear();
            self.start = offset;
        }
        self.push(data);
    }

    /// A checkpoint at `offset`: the bytes before it are no longer needed.
    pub fn checkpoint(&mut self, offset: u64) {
        if offset < self.start {
            self.dropped = self.start - offset;
        } else if offset <= self.end() {
            self.bytes.drain(..(offset - self.start) as usize);
            self.start = offset;
            self.dropped = 0;
        } else {
            self.bytes.clear();
            self.start = offset;
            self.dropped = 0;
        }
    }

    /// A new daemon numbers its stream afresh: the first byte held is at `offset`.
    pub fn rebase(&mut self, offset: u64) {
        self.start = offset;
    }

    /// What it holds and how many bytes are missing before it.
    pub fn contents(&self) -> (Vec<u8>, u64) {
        (self.bytes.iter().copied().collect(), self.dropped)
    }
}

const LISTENER: Token = Token(0);
const DAEMON: Token = Token(1);
const MASTER: Token = Token(2);
const CHILD: Token = Token(3);
/// Connections waiting to answer the challenge: `PENDING + slot`.
const PENDING: usize = 16;

/// The holder proper. Returns the process exit code.
pub fn serve(options: &HoldOptions) -> i32 {
    match Holder::start(options) {
        Ok(mut holder) => {
            println!("ready {}", holder.pid);
            let _ = std::io::stdout().flush();
            let code = holder.run();
            if holder.socket_is_ours() {
                let _ = std::fs::remove_file(&options.socket);
            }
            code
        }
        Err(e) => {
            println!("error: {e}");
            let _ = std::fs::remove_file(&options.socket);
            1
        }
    }
}

/// A connection that has been sent a challenge and not answered yet.
struct Pending {
    stream: mio::net::UnixStream,
    challenge: [u8; auth::LEN],
    /// What it sent so far (at most one answer frame).
    answer: Vec<u8>,
    deadline: Instant,
}

/// The file at a path, as `(device, inode)`.
fn file_id(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

struct Holder {
    poll: Poll,
    listener: mio::net::UnixListener,
    /// Where it listens, and the socket file it made there.
    socket: PathBuf,
    socket_id: (u64, u64),
    key: Key,
    /// Connections that must answer the challenge first, by slot.
    pending: Vec<Option<Pending>>,
    /// A daemon released the session: the holder exits.
    released: bool,
    /// The attached daemon, if any, and what it sent so far.
    daemon: Option<(mio::net::UnixStream, FrameDecoder)>,
    /// Keeps the pseudo-terminal open; `master_fd` is its descriptor.
    _master: Box<dyn portable_pty::MasterPty + Send>,
    master_fd: RawFd,
    /// Whether the master is registered for reading (no daemon attached, slave still open).
    reading: bool,
    /// The master reported end of output (every slave descriptor closed).
    master_done: bool,
    pidfd: Option<OwnedFd>,
    pid: u32,
    exit: Option<ExitStatus>,
    replay: Replay,
    checkpoint: Option<String>,
}

impl Holder {
    fn start(options: &HoldOptions) -> Result<Holder, String> {
        // Out of the daemon's session and process group: signals aimed at the daemon (a
        // Ctrl-C in the terminal that runs `orchestra serve`) do not reach the agent.
        let _ = sys::new_session();
        let Some((program, args)) = options.command.split_first() else {
            return Err("no command to run".into());
        };
        let key = Key::read(&options.key)?;
        let _ = std::fs::remove_file(&options.socket);
        let listener = std::os::unix::net::UnixListener::bind(&options.socket)
            .map_err(|e| format!("cannot listen on {}: {e}", options.socket.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(&options.socket, std::fs::Permissions::from_mode(0o600));
        }
        let socket_id = file_id(&options.socket)
            .ok_or_else(|| format!("cannot find the socket {}", options.socket.display()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| format!("cannot use the socket: {e}"))?;
        let pair = portable_pty::native_pty_system()
            .openpty(portable_pty::PtySize {
                rows: options.rows.max(1),
                cols: options.cols.max(1),
                pixel_width: 0,
                pixel_height: 0,
            })
            .map_err(|e| format!("cannot open a pseudo-terminal: {e}"))?;
        let mut command = portable_pty::CommandBuilder::new(program);
        command.args(args);
        command.cwd("/");
        let child = pair
            .slave
            .spawn_command(command)
            .map_err(|e| format!("cannot start {program:?}: {e}"))?;
        drop(pair.slave);
        let pid = child.process_id().ok_or("the agent has no process id")?;
        // The child is reaped with waitpid below, never through this handle.
        drop(child);
        let master_fd = pair
            .master
            .as_raw_fd()
            .ok_or("the pseudo-terminal has no descriptor")?;
        sys::set_nonblocking(master_fd).map_err(|e| format!("cannot use the terminal: {e}"))?;
        let poll = Poll::new().map_err(|e| format!("cannot poll: {e}"))?;
        let mut listener = mio::net::UnixListener::from_std(listener);
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("cannot poll: {e}"))?;
        let pidfd = sys::pidfd_open(pid).ok();
        if let Some(fd) = &pidfd {
            poll.registry()
                .register(&mut SourceFd(&fd.as_raw_fd()), CHILD, Interest::READABLE)
                .map_err(|e| format!("cannot poll: {e}"))?;
        }
        let mut holder = Holder {
            poll,
            listener,
            socket: options.socket.clone(),
            socket_id,
            key,
            pending: (0..MAX_PENDING).map(|_| None).collect(),
            released: false,
            daemon: None,
            _master: pair.master,
            master_fd,
            reading: false,
            master_done: false,
            pidfd,
            pid,
            exit: None,
            replay: Replay::new(options.ring_bytes),
            checkpoint: None,
        };
        holder.start_reading();
        if holder.pidfd.is_none() {
            // The agent already ended (pidfd_open failed with ESRCH).
            holder.reap();
        }
        Ok(holder)
    }

    fn run(&mut self) -> i32 {
        let mut events = Events::with_capacity(16);
        let mut next_check = Instant::now() + SOCKET_CHECK_INTERVAL;
        loop {
            let now = Instant::now();
            if now >= next_check {
                if !self.socket_is_ours() {
                    eprintln!(
                        "orchestra pty-hold: {} is gone; ending the session",
                        self.socket.display()
                    );
                    self.release();
                    return 0;
                }
                next_check = now + SOCKET_CHECK_INTERVAL;
            }
            self.expire_pending(now);
            let wake = self
                .pending
                .iter()
                .flatten()
                .map(|p| p.deadline)
                .fold(next_check, Instant::min);
            let timeout = wake.saturating_duration_since(now);
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                eprintln!("orchestra pty-hold: poll failed: {e}");
                return 1;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    DAEMON => self.read_daemon(),
                    MASTER => self.read_master(),
                    CHILD => self.reap(),
                    Token(n) if n >= PENDING => self.read_pending(n - PENDING),
                    _ => {}
                }
                if self.released {
                    return 0;
                }
            }
        }
    }

    /// Whether the socket file it made is still at its path.
    fn socket_is_ours(&self) -> bool {
        file_id(&self.socket) == Some(self.socket_id)
    }

    fn start_reading(&mut self) {
        if self.reading || self.master_done {
            return;
        }
        let registered = self.poll.registry().register(
            &mut SourceFd(&self.master_fd),
            MASTER,
            Interest::READABLE,
        );
        self.reading = registered.is_ok();
        // Output may be waiting already; edge-triggered polling would not report it.
        self.read_master();
    }

    fn stop_reading(&mut self) {
        if self.reading {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&self.master_fd));
            self.reading = false;
        }
    }

    /// Reads the master into the ring until it would block.
    fn read_master(&mut self) {
        if !self.reading {
            return;
        }
        let mut buf = [0u8; 64 * 1024];
        loop {
            match sys::read_fd(self.master_fd, &mut buf) {
                Ok(0) => break self.master_finished(),
                Ok(n) => self.replay.push(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                // EIO: every slave descriptor is closed.
                Err(_) => break self.master_finished(),
            }
        }
    }

    fn master_finished(&mut self) {
        self.stop_reading();
        self.master_done = true;
    }

    /// A client connects: it is sent a challenge, and waits among the pending connections
    /// for its answer; or it is refused at once while a daemon is attached.
    fn accept(&mut self) {
        loop {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    eprintln!("orchestra pty-hold: accept failed: {e}");
                    return;
                }
            };
            if self.attached() {
                refuse(stream, "another daemon is attached");
                continue;
            }
            let Ok(challenge) = auth::challenge() else {
                continue;
            };
            // A few bytes into a fresh connection's empty buffer: a short write means the
            // client is gone already.
            let frame = encode(Kind::Challenge, &challenge);
            if !matches!(stream.write(&frame), Ok(n) if n == frame.len()) {
                continue;
            }
            let slot = match self.pending.iter().position(Option::is_none) {
                Some(slot) => slot,
                None => {
                    let oldest = (0..MAX_PENDING)
                        .min_by_key(|&i| self.pending[i].as_ref().map(|p| p.deadline))
                        .expect("slots");
                    self.drop_pending(oldest);
                    oldest
                }
            };
            if self
                .poll
                .registry()
                .register(&mut stream, Token(PENDING + slot), Interest::READABLE)
                .is_err()
            {
                continue;
            }
            self.pending[slot] = Some(Pending {
                stream,
                challenge,
                answer: Vec::with_capacity(HEADER + auth::LEN),
                deadline: Instant::now() + HANDOVER_TIMEOUT,
            });
        }
    }

    /// Whether a daemon is attached, counting one whose connection has just closed as gone.
    fn attached(&mut self) -> bool {
        if self.daemon.is_some() {
            // An earlier daemon that died has left the end of its connection to read.
            self.read_daemon();
        }
        self.daemon.is_some()
    }

    fn drop_pending(&mut self, slot: usize) -> Option<Pending> {
        let mut pending = self.pending.get_mut(slot)?.take()?;
        let _ = self.poll.registry().deregister(&mut pending.stream);
        Some(pending)
    }

    /// Closes the connections that did not answer in time.
    fn expire_pending(&mut self, now: Instant) {
        for slot in 0..MAX_PENDING {
            if matches!(&self.pending[slot], Some(p) if p.deadline <= now) {
                self.drop_pending(slot);
                eprintln!("orchestra pty-hold: closed a connection that did not authenticate");
            }
        }
    }

    /// Reads a pending connection's answer (exactly one frame, nothing after it). A right
    /// answer gets the hand-over; anything else closes the connection.
    fn read_pending(&mut self, slot: usize) {
        let Some(pending) = self.pending.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let want = HEADER + auth::LEN;
        let mut closed = false;
        while pending.answer.len() < want {
            let mut buf = [0u8; HEADER + auth::LEN];
            let room = want - pending.answer.len();
            match std::io::Read::read(&mut pending.stream, &mut buf[..room]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => pending.answer.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if pending.answer.len() < want && !closed {
            return;
        }
        let pending = self.drop_pending(slot).expect("present");
        let mut decoder = FrameDecoder::new();
        decoder.push(&pending.answer);
        let proven = matches!(
            decoder.next_frame(),
            Ok(Some(frame)) if frame.kind == Kind::Auth
                && self.key.verify(&pending.challenge, &frame.payload)
        );
        if !proven {
            eprintln!("orchestra pty-hold: refused a connection that did not authenticate");
            return;
        }
        if self.attached() {
            refuse(pending.stream, "another daemon is attached");
            return;
        }
        // Whatever the agent printed up to now goes into the gap.
        self.read_master();
        self.stop_reading();
        match self.hand_over(pending.stream) {
            Ok(mut stream) => {
                match self
                    .poll
                    .registry()
                    .register(&mut stream, DAEMON, Interest::READABLE)
                {
                    Ok(()) => self.daemon = Some((stream, FrameDecoder::new())),
                    Err(_) => self.start_reading(),
                }
            }
            Err(e) => {
                eprintln!("orchestra pty-hold: hand-over failed: {e}");
                self.start_reading();
            }
        }
    }

    /// Sends hello (with the master descriptor), then the gap.
    fn hand_over(&mut self, stream: mio::net::UnixStream) -> std::io::Result<mio::net::UnixStream> {
        let fd: OwnedFd = stream.into();
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream.set_nonblocking(false)?;
        stream.set_write_timeout(Some(HANDOVER_TIMEOUT))?;
        let (rows, cols) = sys::terminal_size(self.master_fd).unwrap_or((0, 0));
        // The replay stays until a checkpoint makes it unnecessary: if this daemon dies
        // before leaving one, the next gets the same, and more.
        let (gap, dropped) = self.replay.contents();
        let hello = Hello {
            pid: self.pid,
            holder_pid: std::process::id(),
            rows,
            cols,
            exit: self.exit,
            gap: gap.len(),
            dropped,
            checkpoint: self.checkpoint.clone(),
        };
        let hello = encode(
            Kind::Hello,
            &serde_json::to_vec(&hello).expect("serializable"),
        );
        // The descriptor rides on the first byte; the rest follows as plain stream data.
        sys::send_fd(&stream, self.master_fd, &hello[..1])?;
        let mut writer = &stream;
        writer.write_all(&hello[1..])?;
        // The ring is smaller than a frame's limit (checked when the configuration loads).
        writer.write_all(&encode(Kind::Gap, &gap[..gap.len().min(MAX_PAYLOAD)]))?;
        stream.set_nonblocking(true)?;
        Ok(mio::net::UnixStream::from_std(stream))
    }

    /// Reads the daemon's frames. Sets `released` when the holder should exit.
    fn read_daemon(&mut self) {
        let mut closed = false;
        let mut frames = Vec::new();
        if let Some((stream, decoder)) = &mut self.daemon {
            closed = super::read_into(stream, decoder);
            loop {
                match decoder.next_frame() {
                    Ok(Some(frame)) => frames.push(frame),
                    Ok(None) => break,
                    Err(e) => {
                        eprintln!("orchestra pty-hold: bad frame from the daemon: {e}");
                        closed = true;
                        break;
                    }
                }
            }
        }
        for frame in frames {
            match frame.kind {
                Kind::Checkpoint if frame.payload.len() <= MAX_CHECKPOINT_BYTES => {
                    if let Ok(checkpoint) = serde_json::from_slice::<Checkpoint>(&frame.payload) {
                        self.replay.checkpoint(checkpoint.offset);
                        self.checkpoint = String::from_utf8(frame.payload).ok();
                    }
                }
                Kind::Output if frame.payload.len() >= 8 => {
                    let (offset, data) = frame.payload.split_at(8);
                    let offset = u64::from_be_bytes(offset.try_into().expect("8 bytes"));
                    self.replay.push_at(offset, data);
                }
                Kind::Rebase if frame.payload.len() == 8 => {
                    let offset = u64::from_be_bytes(frame.payload[..].try_into().expect("8 bytes"));
                    self.replay.rebase(offset);
                }
                Kind::Release => {
                    self.release();
                    self.released = true;
                    return;
                }
                _ => {}
            }
        }
        if closed {
            if let Some((mut stream, _)) = self.daemon.take() {
                let _ = self.poll.registry().deregister(&mut stream);
            }
            // No daemon reads the terminal now: keep the agent from blocking.
            self.start_reading();
        }
    }

    /// The agent (or what is left of its process group) is killed and reaped.
    fn release(&mut self) {
        if self.exit.is_none() {
            let _ = sys::kill_group(self.pid, libc::SIGKILL);
            if let Some(fd) = &self.pidfd {
                let _ = sys::wait_readable(fd.as_raw_fd(), RELEASE_REAP_TIMEOUT);
            }
            self.reap();
        } else {
            // Background processes the agent left in its group go with the session.
            let _ = sys::kill_group(self.pid, libc::SIGKILL);
        }
    }

    /// The agent may have ended: collect its status and tell the daemon.
    fn reap(&mut self) {
        if self.exit.is_some() {
            return;
        }
        let Ok(Some(exit)) = sys::reap_child(self.pid) else {
            return;
        };
        if let Some(fd) = self.pidfd.take() {
            let _ = self
                .poll
                .registry()
                .deregister(&mut SourceFd(&fd.as_raw_fd()));
        }
        let exit = ExitStatus::from(exit);
        self.exit = Some(exit);
        if let Some((stream, _)) = &mut self.daemon {
            let frame = encode(
                Kind::Exit,
                &serde_json::to_vec(&exit).expect("serializable"),
            );
            // A few bytes on a socket the daemon drains: a short write means it is gone,
            // and the next daemon learns the status from the hello.
            let _ = stream.write_all(&frame);
        }
    }
}

/// Tells a client why it is not served (best effort: the connection is new and its buffer
/// empty) and closes it.
fn refuse(mut stream: mio::net::UnixStream, why: &str) {
    let _ = stream.write(&encode(Kind::Refused, why.as_bytes()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_replay_keeps_what_follows_the_checkpoint() {
        let mut replay = Replay::new(8);
        replay.push_at(0, b"hello ");
        replay.push_at(6, b"world");
        assert_eq!(
            replay.contents(),
            (b"lo world".to_vec(), 3),
            "8 bytes at most"
        );
        replay.checkpoint(6);
        assert_eq!(replay.contents(), (b"world".to_vec(), 0));
        // A repeat is ignored, an overlap continues where it left off.
        replay.push_at(6, b"world");
        replay.push_at(9, b"ld!");
        assert_eq!(replay.contents(), (b"world!".to_vec(), 0));
        // The holder's own reads continue the numbering.
        replay.push(b"?");
        assert_eq!(replay.end(), 13);
        // A hole: only what follows is kept, and the replay is short.
        replay.push_at(20, b"xy");
        assert_eq!(replay.contents(), (b"xy".to_vec(), 14));
        replay.checkpoint(21);
        assert_eq!(replay.contents(), (b"y".to_vec(), 0));
        // A checkpoint older than what is held leaves the replay short.
        replay.checkpoint(15);
        assert_eq!(replay.contents().1, 6);
        // A new daemon renumbers.
        replay.rebase(0);
        replay.checkpoint(0);
        replay.push_at(1, b"z");
        assert_eq!(replay.contents(), (b"yz".to_vec(), 0));
    }

    #[test]
    fn options_round_trip_through_arguments() {
        let options = HoldOptions {
            socket: "/s/x.sock".into(),
            rows: 24,
            cols: 80,
            ring_bytes: 1024,
            log: Some("/s/x.log".into()),
            key: "/s/holder.key".into(),
            command: vec![
                "/bin/orchestra".into(),
                "agent-exec".into(),
                "/s/spec".into(),
            ],
        };
        let args = options.to_args(true);
        let text: Vec<_> = args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(text[0], "pty-hold");
        assert!(text.contains(&"--serve".to_string()));
        let dashes = text.iter().position(|a| a == "--").unwrap();
        assert_eq!(
            &text[dashes + 1..],
            ["/bin/orchestra", "agent-exec", "/s/spec"]
        );
    }
}
