//! `orchestra attach SESSION`: an agent's pane in this terminal over the WebSocket, so it
//! works from any machine that reaches the API. The terminal goes raw and onto its
//! alternate screen; the daemon's screen comes first, then live output; keys go out as
//! `terminal_input`, window size changes as `resize_terminal`. A dropped connection is
//! re-opened and resumed with `since` (no output lost or repeated while the daemon's backlog
//! holds it; otherwise the daemon sends a fresh screen). The agent's output reaches the
//! terminal through [`filter::OutputFilter`], which keeps the agent on the screen (no
//! clipboard, title or keyboard-protocol changes; OSC 52 only with `--allow-clipboard`).
//! The terminal is restored however the command ends (detach key, the agent exiting, a
//! signal, an error or a panic), every mode the agent turned on included.

use crate::client::ApiStream;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use super::{Api, Failure, exit, websocket};
use crate::sys::{RawTerminal, terminal_size};

pub mod filter;

/// `orchestra attach` arguments.
#[derive(clap::Args, Debug, Clone)]
pub struct AttachArgs {
    /// Session id (sess-...).
    pub session: String,
    /// Watch only: keys other than the detach key are not sent.
    #[arg(long)]
    pub read_only: bool,
    /// Key that detaches: `ctrl-]` (the default), `ctrl-a` ... `ctrl-z`, `ctrl-\`, `ctrl-^`,
    /// `ctrl-_`, or `^X` for ctrl-X.
    #[arg(long, default_value = "ctrl-]", value_parser = parse_detach_key)]
    pub detach_key: u8,
    /// Give up reconnecting after this long without the daemon.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    pub reconnect_for: Duration,
    /// Let the agent set this terminal's clipboard (OSC 52), as tmux's `set-clipboard on`.
    #[arg(long)]
    pub allow_clipboard: bool,
}

/// Parses a detach key name into the byte the terminal sends for it.
pub fn parse_detach_key(text: &str) -> Result<u8, String> {
    let lower = text.to_ascii_lowercase();
    let key = lower
        .strip_prefix("ctrl-")
        .or_else(|| lower.strip_prefix('^'))
        .ok_or_else(|| format!("{text:?}: expected ctrl-X or ^X"))?;
    match key.as_bytes() {
        [c @ b'a'..=b'z'] => Ok(c - b'a' + 1),
        [c @ (b'[' | b'\\' | b']' | b'^' | b'_')] => Ok(c & 0x1f),
        _ => Err(format!(
            "{text:?}: expected ctrl- and a letter or one of [ \\ ] ^ _"
        )),
    }
}

const STDIN: Token = Token(0);
const SOCKET: Token = Token(1);
const RESIZED: Token = Token(2);
const STOPPED: Token = Token(3);

/// Reconnect delays; the last repeats.
const BACKOFF: [Duration; 5] = [
    Duration::from_millis(100),
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
];

/// Leaves the alternate screen (after the modes the agent turned on are reset), so the
/// shell gets back the terminal it had.
const RESTORE: &[u8] = b"\x1b[0m\x1b[?25h\x1b[?1049l";

/// Runs the attach; returns why it ended (for stderr) or a failure.
pub fn run(api: &Api, args: &AttachArgs) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    if !std::io::IsTerminal::is_terminal(&stdin) {
        return Err(Failure::new(
            exit::USAGE,
            "attach needs a terminal on standard input",
        ));
    }
    let socket = websocket(api, None)?;
    let raw = RawTerminal::enter(fd).map_err(|e| {
        Failure::new(
            exit::FAILED,
            format!("cannot put the terminal in raw mode: {e}"),
        )
    })?;
    let mut screen = AlternateScreen::enter(args.allow_clipboard);
    let mut attach = Attach {
        api,
        args,
        socket: Some(socket),
        stream: None,
        next_offset: None,
        carry: Vec::new(),
        lost_since: None,
        attempt: 0,
        output: &mut screen.output,
    };
    let ended = attach.run(fd);
    // Screen first, then the terminal's mode (also what unwinding from a panic does).
    drop(screen);
    drop(raw);
    ended
}

/// The terminal's alternate screen, left (with every mode the agent's output set through
/// `output` reset) when dropped.
struct AlternateScreen {
    output: filter::OutputFilter,
}

impl AlternateScreen {
    fn enter(allow_clipboard: bool) -> AlternateScreen {
        let mut out = std::io::stdout();
        let _ = out.write_all(b"\x1b[?1049h");
        let _ = out.flush();
        AlternateScreen {
            output: filter::OutputFilter::new(allow_clipboard),
        }
    }
}

impl Drop for AlternateScreen {
    fn drop(&mut self) {
        let mut out = std::io::stdout();
        let _ = out.write_all(&self.output.restore());
        let _ = out.write_all(RESTORE);
        let _ = out.flush();
    }
}

/// One attach's state.
struct Attach<'a> {
    api: &'a Api,
    args: &'a AttachArgs,
    socket: Option<WebSocket<ApiStream>>,
    /// The output stream and offset just past the last byte written, for `since`.
    stream: Option<String>,
    next_offset: Option<u64>,
    /// Bytes of a UTF-8 character split across two reads of the keyboard.
    carry: Vec<u8>,
    /// When the connection dropped (reconnecting since).
    lost_since: Option<Instant>,
    attempt: usize,
    /// What of the agent's output reaches the terminal.
    output: &'a mut filter::OutputFilter,
}

enum Step {
    Continue,
    End(Result<String, Failure>),
}

impl Attach<'_> {
    fn run(&mut self, fd: i32) -> Result<String, Failure> {
        let mut poll = Poll::new().map_err(io_failure)?;
        // One socket pair for window-size changes, one for the signals that end the attach;
        // the handlers write a byte to theirs.
        let (resize_reader, resize_writer) =
            std::os::unix::net::UnixStream::pair().map_err(io_failure)?;
        let (stop_reader, stop_writer) =
            std::os::unix::net::UnixStream::pair().map_err(io_failure)?;
        let mut signal_ids = vec![
            signal_hook::low_level::pipe::register(signal_hook::consts::SIGWINCH, resize_writer)
                .map_err(io_failure)?,
        ];
        for signal in [
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGHUP,
        ] {
            let writer = stop_writer.try_clone().map_err(io_failure)?;
            signal_ids
                .push(signal_hook::low_level::pipe::register(signal, writer).map_err(io_failure)?);
        }
        for (reader, token) in [(&resize_reader, RESIZED), (&stop_reader, STOPPED)] {
            reader.set_nonblocking(true).map_err(io_failure)?;
            poll.registry()
                .register(
                    &mut SourceFd(&reader.as_raw_fd()),
                    token,
                    Interest::READABLE,
                )
                .map_err(io_failure)?;
        }
        poll.registry()
            .register(&mut SourceFd(&fd), STDIN, Interest::READABLE)
            .map_err(io_failure)?;
        self.start_socket(&poll)?;
        let mut events = Events::with_capacity(16);
        let ended = loop {
            let timeout = match self.lost_since {
                Some(_) => Some(BACKOFF[self.attempt.min(BACKOFF.len() - 1)]),
                None => None,
            };
            if let Err(e) = poll.poll(&mut events, timeout) {
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break Err(io_failure(e));
            }
            if events.is_empty() && self.lost_since.is_some() {
                if let Step::End(result) = self.reconnect(&poll) {
                    break result;
                }
                continue;
            }
            let mut step = Step::Continue;
            for event in events.iter() {
                step = match event.token() {
                    STDIN => self.on_keys(fd),
                    SOCKET => self.on_socket(&poll),
                    RESIZED => {
                        drain(&resize_reader);
                        if !self.args.read_only {
                            self.send_size();
                        }
                        Step::Continue
                    }
                    STOPPED => Step::End(Ok("ended by a signal".into())),
                    _ => Step::Continue,
                };
                if matches!(step, Step::End(_)) {
                    break;
                }
            }
            if let Step::End(result) = step {
                break result;
            }
        };
        for id in signal_ids {
            signal_hook::low_level::unregister(id);
        }
        if let Some(mut socket) = self.socket.take() {
            let _ = socket.get_mut().set_nonblocking(false);
            let _ = socket.close(None);
            let _ = socket.flush();
        }
        ended
    }

    /// Subscribes on the current socket (resuming after what was written) and sends the
    /// terminal's size; registers the socket with the poller.
    fn start_socket(&mut self, poll: &Poll) -> Result<(), Failure> {
        let mut subscribe = json!({"type": "subscribe_terminal", "session_id": self.args.session});
        if let (Some(stream), Some(offset)) = (&self.stream, self.next_offset) {
            subscribe["since"] = offset.into();
            subscribe["stream"] = stream.clone().into();
        }
        self.send(&subscribe);
        if !self.args.read_only {
            self.send_size();
        }
        let Some(socket) = self.socket.as_mut() else {
            return Ok(());
        };
        socket.get_mut().set_nonblocking(true).map_err(io_failure)?;
        let fd = socket.get_ref().as_raw_fd();
        poll.registry()
            .register(
                &mut SourceFd(&fd),
                SOCKET,
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(io_failure)
    }

    fn send(&mut self, message: &Value) {
        if let Some(socket) = self.socket.as_mut() {
            // A full socket buffer keeps the frame queued in tungstenite until the next flush.
            let _ = socket.send(Message::text(message.to_string()));
        }
    }

    fn send_size(&mut self) {
        if let Ok((rows, cols)) = terminal_size(std::io::stdout().as_raw_fd())
            && rows >= 2
            && cols >= 2
        {
            let session = self.args.session.clone();
            self.send(&json!({"type": "resize_terminal", "session_id": session, "rows": rows, "cols": cols}));
        }
    }

    fn on_keys(&mut self, fd: i32) -> Step {
        // Larger than std's stdin buffer (8 KiB), so reads bypass it and nothing waits there
        // unseen by the poller; read while the terminal has more.
        let mut buf = [0u8; 16 * 1024];
        while crate::sys::wait_readable(fd, Duration::ZERO).unwrap_or(false) {
            let n = match std::io::stdin().read(&mut buf) {
                Ok(0) => return Step::End(Ok("standard input closed".into())),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Step::End(Err(io_failure(e))),
            };
            let keys = &buf[..n];
            let (keys, detach) = match keys.iter().position(|b| *b == self.args.detach_key) {
                Some(at) => (&keys[..at], true),
                None => (keys, false),
            };
            if !self.args.read_only && !keys.is_empty() && self.socket.is_some() {
                self.carry.extend_from_slice(keys);
                let text = take_complete_utf8(&mut self.carry);
                if !text.is_empty() {
                    let session = self.args.session.clone();
                    self.send(
                        &json!({"type": "terminal_input", "session_id": session, "data": text}),
                    );
                }
            }
            if detach {
                return Step::End(Ok("detached".into()));
            }
        }
        Step::Continue
    }

    fn on_socket(&mut self, poll: &Poll) -> Step {
        loop {
            let Some(socket) = self.socket.as_mut() else {
                return Step::Continue;
            };
            let message = match socket.read() {
                Ok(message) => message,
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    let _ = socket.flush();
                    return Step::Continue;
                }
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    return self.lost(poll, "closed".into());
                }
                Err(e) => return self.lost(poll, e.to_string()),
            };
            let text = match message {
                Message::Text(text) => text,
                Message::Close(frame) => {
                    let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    // Refused credentials will not get better by retrying.
                    if code == 1008 {
                        return Step::End(Err(Failure::new(
                            exit::AUTH,
                            format!("the daemon refused the token: {reason}"),
                        )));
                    }
                    return self.lost(poll, format!("closed by the daemon ({code} {reason})"));
                }
                _ => continue,
            };
            let Ok(value) = serde_json::from_str::<Value>(text.as_str()) else {
                continue;
            };
            if let Step::End(result) = self.on_message(&value) {
                return Step::End(result);
            }
        }
    }

    fn on_message(&mut self, message: &Value) -> Step {
        let ours = message["session_id"] == self.args.session.as_str();
        match message["type"].as_str() {
            Some("terminal_output") if ours => {
                let next = message["next_offset"].as_u64();
                let stream = message["stream"].as_str().map(str::to_string);
                let snapshot = message["snapshot"].as_bool().unwrap_or(false);
                let seen = !snapshot
                    && stream.is_some()
                    && stream == self.stream
                    && next.is_some_and(|n| self.next_offset.is_some_and(|have| n <= have));
                if !seen {
                    let data = message["data"].as_str().unwrap_or_default();
                    let data = self.output.filter(data.as_bytes());
                    let mut out = std::io::stdout();
                    let _ = out.write_all(&data);
                    let _ = out.flush();
                    self.stream = stream;
                    self.next_offset = next;
                }
                Step::Continue
            }
            Some("agent_status") if ours => {
                let status = message["status"].as_str().unwrap_or_default();
                let ended = !message["exit_code"].is_null() || !message["exit_signal"].is_null();
                if ended || matches!(status, "exited" | "terminated") {
                    let how = match (
                        message["exit_code"].as_i64(),
                        message["exit_signal"].as_i64(),
                    ) {
                        (Some(code), _) => format!(" with status {code}"),
                        (_, Some(signal)) => format!(" on signal {signal}"),
                        _ => String::new(),
                    };
                    let what = if status == "terminated" {
                        "was terminated"
                    } else {
                        "exited"
                    };
                    return Step::End(Ok(format!("the agent {what}{how}")));
                }
                Step::Continue
            }
            Some("error") if ours || message["session_id"].is_null() => {
                let code = message["error_code"].as_str().unwrap_or_default();
                match code {
                    "SESSION_NOT_FOUND" | "FORBIDDEN" | "INVALID_TOKEN" => {
                        Step::End(Err(super::ws_failure(message)))
                    }
                    // Other errors (a refused resize, an input queue that is full) do not end
                    // the attach.
                    _ => Step::Continue,
                }
            }
            _ => Step::Continue,
        }
    }

    /// The connection dropped: start reconnecting.
    fn lost(&mut self, poll: &Poll, why: String) -> Step {
        if let Some(socket) = self.socket.take() {
            let fd = socket.get_ref().as_raw_fd();
            let _ = poll.registry().deregister(&mut SourceFd(&fd));
        }
        log_line(&format!("connection lost ({why}); reconnecting"));
        self.lost_since = Some(Instant::now());
        self.attempt = 0;
        Step::Continue
    }

    fn reconnect(&mut self, poll: &Poll) -> Step {
        let since = self.lost_since.unwrap_or_else(Instant::now);
        match websocket(self.api, None) {
            Ok(socket) => {
                self.socket = Some(socket);
                self.lost_since = None;
                self.attempt = 0;
                log_line("reconnected");
                match self.start_socket(poll) {
                    Ok(()) => Step::Continue,
                    Err(failure) => Step::End(Err(failure)),
                }
            }
            Err(failure) if failure.code == exit::AUTH => Step::End(Err(failure)),
            Err(failure) => {
                if since.elapsed() >= self.args.reconnect_for {
                    return Step::End(Err(Failure::new(
                        exit::UNREACHABLE,
                        format!(
                            "gave up reconnecting after {}: {}",
                            humantime::format_duration(self.args.reconnect_for),
                            failure.message
                        ),
                    )));
                }
                self.attempt += 1;
                Step::Continue
            }
        }
    }
}

/// Reads everything a signal handler wrote.
fn drain(mut reader: &std::os::unix::net::UnixStream) {
    let mut buf = [0u8; 64];
    while matches!(reader.read(&mut buf), Ok(n) if n > 0) {}
}

/// A status line in the attached terminal (raw mode: explicit carriage returns).
fn log_line(text: &str) {
    let mut err = std::io::stderr();
    let _ = write!(err, "\r\n[orchestra: {text}]\r\n");
    let _ = err.flush();
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure::new(exit::FAILED, e.to_string())
}

/// Takes the longest complete UTF-8 prefix out of `carry` (invalid bytes become U+FFFD; an
/// unfinished character at the end stays for the next read).
pub fn take_complete_utf8(carry: &mut Vec<u8>) -> String {
    let keep = match std::str::from_utf8(carry) {
        Ok(_) => 0,
        Err(e) if e.error_len().is_none() => carry.len() - e.valid_up_to(),
        Err(_) => 0,
    };
    let rest = carry.split_off(carry.len() - keep);
    let text = String::from_utf8_lossy(carry).into_owned();
    *carry = rest;
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_parse_to_control_bytes() {
        assert_eq!(parse_detach_key("ctrl-]"), Ok(0x1d));
        assert_eq!(parse_detach_key("^A"), Ok(0x01));
        assert_eq!(parse_detach_key("Ctrl-Z"), Ok(0x1a));
        assert_eq!(parse_detach_key("ctrl-\\"), Ok(0x1c));
        assert!(parse_detach_key("x").is_err());
        assert!(parse_detach_key("ctrl-1").is_err());
        assert!(parse_detach_key("ctrl-ab").is_err());
    }

    #[test]
    fn keys_are_sent_as_whole_characters() {
        let mut carry = "aé".as_bytes()[..2].to_vec(); // "a" and the first byte of "é"
        assert_eq!(take_complete_utf8(&mut carry), "a");
        assert_eq!(carry, vec![0xc3]);
        carry.push(0xa9);
        assert_eq!(take_complete_utf8(&mut carry), "é");
        assert!(carry.is_empty());
        let mut bad = vec![b'x', 0xff, b'y'];
        assert_eq!(take_complete_utf8(&mut bad), "x\u{fffd}y");
    }
}
