//! The daemon's side of a PTY holder: starting one, connecting to one (at spawn and after a
//! restart) and the master descriptor as an event-loop source. The blocking parts run on
//! workers.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use super::Hello;
use super::auth::Key;
use super::holder::{HoldOptions, READY_TIMEOUT};
use crate::proto::pty::{FrameDecoder, Kind, encode};
use crate::sys;

/// A holder's hand-over, as the daemon receives it.
#[derive(Debug)]
pub struct Attached {
    /// Who the holder holds.
    pub hello: Hello,
    /// The pseudo-terminal's master (non-blocking).
    pub master: OwnedFd,
    /// The connection to the holder (non-blocking), for exits, checkpoints and the release.
    pub control: std::os::unix::net::UnixStream,
    /// Output the holder kept while no daemon was attached.
    pub gap: Vec<u8>,
    /// Frames that arrived after the gap (an exit, already).
    pub decoder: FrameDecoder,
}

/// Starts a holder running `options.command` (blocking; a worker's job). Returns once the
/// holder listens, with the agent's pid.
pub fn launch(exe: &Path, options: &HoldOptions) -> Result<u32, String> {
    let mut launcher = std::process::Command::new(exe);
    // The agent under the holder creates the user's files with the user's umask; the
    // holder's own socket and log get explicit private modes.
    let mut launcher = sys::with_original_umask(&mut launcher)
        .args(options.to_args(false))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the pty holder: {e}"))?;
    let mut stdout = launcher.stdout.take().expect("piped");
    let mut answer = String::new();
    // The launcher exits as soon as its holder is ready (or after READY_TIMEOUT).
    let read = sys::wait_readable(stdout.as_raw_fd(), READY_TIMEOUT + Duration::from_secs(5))
        .ok()
        .filter(|ready| *ready)
        .and_then(|_| stdout.read_to_string(&mut answer).ok());
    let _ = launcher.wait();
    if read.is_none() {
        return Err("the pty holder did not answer".into());
    }
    let line = answer.lines().next().unwrap_or("").trim();
    match line.strip_prefix("ready ") {
        Some(pid) => pid
            .parse()
            .map_err(|_| format!("the pty holder answered {line:?}")),
        None => Err(format!(
            "the pty holder failed: {}",
            line.strip_prefix("error: ").unwrap_or(line)
        )),
    }
}

/// Connects to the holder listening on `socket`, answers its challenge with `key` and takes
/// its hand-over (blocking, at most `timeout`). A holder that serves another daemon refuses.
pub fn connect(socket: &Path, key: &Key, timeout: Duration) -> Result<Attached, String> {
    let stream = std::os::unix::net::UnixStream::connect(socket)
        .map_err(|e| format!("cannot reach the pty holder at {}: {e}", socket.display()))?;
    let deadline = Instant::now() + timeout;
    let fd = stream.as_raw_fd();
    let mut decoder = FrameDecoder::new();
    let mut master = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut hello: Option<Hello> = None;
    let mut answered = false;
    loop {
        while let Some(frame) = decoder.next_frame().map_err(|e| e.to_string())? {
            match (frame.kind, &hello) {
                (Kind::Challenge, None) if !answered => {
                    let mut writer = &stream;
                    writer
                        .write_all(&encode(Kind::Auth, &key.answer(&frame.payload)))
                        .map_err(|e| format!("cannot answer the pty holder: {e}"))?;
                    answered = true;
                }
                (Kind::Refused, _) => {
                    return Err(format!(
                        "the pty holder refused the connection: {}",
                        String::from_utf8_lossy(&frame.payload)
                    ));
                }
                (Kind::Hello, None) => {
                    if !answered {
                        // A holder started by an orchestra from before holders asked for the
                        // key: taken over, so that its agent is not lost in an upgrade.
                        log::warn!(
                            "the pty holder at {} does not authenticate its clients (an older \
                             version); delete and spawn the session again to replace it",
                            socket.display()
                        );
                    }
                    hello = Some(
                        serde_json::from_slice(&frame.payload)
                            .map_err(|e| format!("the pty holder sent a bad hello: {e}"))?,
                    );
                }
                (Kind::Gap, Some(_)) => {
                    let hello = hello.take().expect("matched");
                    let master = master.ok_or("the pty holder sent no terminal")?;
                    stream
                        .set_nonblocking(true)
                        .map_err(|e| format!("cannot use the holder connection: {e}"))?;
                    sys::set_nonblocking(std::os::fd::AsRawFd::as_raw_fd(&master))
                        .map_err(|e| format!("cannot use the terminal: {e}"))?;
                    return Ok(Attached {
                        hello,
                        master,
                        control: stream,
                        gap: frame.payload,
                        decoder,
                    });
                }
                (kind, _) => return Err(format!("the pty holder sent {kind:?} out of order")),
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !sys::wait_readable(fd, left).unwrap_or(false) {
            return Err("the pty holder did not hand over in time".into());
        }
        let (n, received) = sys::recv_fd(fd, &mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the pty holder closed the connection".into());
        }
        if let Some(received) = received {
            master.get_or_insert(received);
        }
        decoder.push(&buf[..n]);
    }
}

/// Tells a holder the session is deleted, and waits (at most `timeout`) until it has killed
/// what is left of the agent and exited (blocking).
pub fn release(mut control: std::os::unix::net::UnixStream, timeout: Duration) {
    let _ = control.set_nonblocking(false);
    let _ = control.set_write_timeout(Some(timeout));
    let _ = control.set_read_timeout(Some(timeout));
    if control.write_all(&encode(Kind::Release, b"")).is_err() {
        return;
    }
    // The holder closes the connection when it exits; anything else it sends is moot.
    let mut sink = [0u8; 4096];
    while matches!(control.read(&mut sink), Ok(n) if n > 0) {}
}

/// A pseudo-terminal master registered in the event loop: reading gives the agent's output,
/// writing types into it.
#[derive(Debug)]
pub struct Master {
    file: std::fs::File,
}

impl Master {
    /// Wraps a (non-blocking) master descriptor.
    pub fn new(fd: OwnedFd) -> Master {
        Master {
            file: std::fs::File::from(fd),
        }
    }

    /// Sets the terminal's size; the agent gets `SIGWINCH` if it changed.
    pub fn resize(&self, rows: u16, cols: u16) -> std::io::Result<()> {
        sys::set_terminal_size(self.file.as_raw_fd(), rows, cols)
    }
}

impl Read for Master {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.file.read(buf)
    }
}

impl Write for Master {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl mio::event::Source for Master {
    fn register(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.file.as_raw_fd()).register(registry, token, interests)
    }

    fn reregister(
        &mut self,
        registry: &mio::Registry,
        token: mio::Token,
        interests: mio::Interest,
    ) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.file.as_raw_fd()).reregister(registry, token, interests)
    }

    fn deregister(&mut self, registry: &mio::Registry) -> std::io::Result<()> {
        mio::unix::SourceFd(&self.file.as_raw_fd()).deregister(registry)
    }
}
