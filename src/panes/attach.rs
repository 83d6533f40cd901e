//! How a pane's pipe reaches the daemon.
//!
//! `tmux pipe-pane -I -O` runs a shell command whose standard input and output are one end
//! of a socketpair: reading it gives the pane's output, writing it types into the pane (past
//! copy mode and key bindings). The command the daemon asks for is `exec orchestra
//! pipe-attach SOCKET TOKEN_FILE`: that helper reads (and deletes) a one-time token naming
//! the pane from a private file in the state directory — never from its command line, which
//! every local user can read, nor tmux's — connects to the daemon's attach socket, hands the
//! socketpair end over with `SCM_RIGHTS` together with the token, and exits. No process is
//! left behind, and the daemon reads the pane's output from a descriptor registered in its
//! event loop.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use crate::tmux::shell_quote;

/// Bytes in an attach token (hex-encoded on the wire and in the helper's argv).
pub const TOKEN_BYTES: usize = 16;

/// A fresh random attach token.
pub fn new_token() -> String {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).expect("randomness is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fresh path for a token file in `dir` (the spawn directory, emptied at every start).
/// Its name is random too, and says nothing about the token.
pub fn token_file(dir: &Path) -> PathBuf {
    dir.join(format!("attach-{}", &new_token()[..16]))
}

/// Writes `token` to a new private file at `path` (mode 0600) for the pipe helper (blocking;
/// a worker's job).
pub fn write_token_file(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        crate::create_private_dir(dir).map_err(std::io::Error::other)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(token.as_bytes())
}

/// The shell command tmux runs for `pipe-pane` (shell-quoted; tmux format escaping is applied
/// by the tmux module). It names the token's file, never the token.
pub fn pipe_command(exe: &Path, attach_socket: &Path, token_file: &Path) -> String {
    format!(
        "exec {} pipe-attach {} {}",
        shell_quote(&exe.to_string_lossy()),
        shell_quote(&attach_socket.to_string_lossy()),
        shell_quote(&token_file.to_string_lossy())
    )
}

/// `orchestra pipe-attach SOCKET TOKEN_FILE`: reads and deletes the token file, then hands
/// standard input (the pane's pipe) to the daemon. Returns the process exit code.
pub fn run_helper(socket: &Path, token_file: &Path) -> i32 {
    let mut token = String::new();
    let read = std::fs::File::open(token_file).and_then(|file| {
        use std::io::Read;
        file.take(TOKEN_BYTES as u64 * 2 + 1)
            .read_to_string(&mut token)
    });
    let _ = std::fs::remove_file(token_file);
    if let Err(e) = read {
        eprintln!(
            "orchestra pipe-attach: cannot read the token file {}: {e}",
            token_file.display()
        );
        return 2;
    }
    let token = token.trim();
    if token.len() != TOKEN_BYTES * 2 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        eprintln!("orchestra pipe-attach: malformed token");
        return 2;
    }
    let stream = match UnixStream::connect(socket) {
        Ok(stream) => stream,
        Err(e) => {
            eprintln!(
                "orchestra pipe-attach: cannot reach the daemon at {}: {e}",
                socket.display()
            );
            return 1;
        }
    };
    match crate::sys::send_fd(&stream, 0, token.as_bytes()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("orchestra pipe-attach: cannot hand over the pipe: {e}");
            1
        }
    }
}

/// Reads the token and descriptor a helper sent on `stream`. `Ok(None)` means the message
/// has not arrived yet.
pub fn receive(
    stream: &mio::net::UnixStream,
) -> std::io::Result<Option<(String, std::os::fd::OwnedFd)>> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; TOKEN_BYTES * 2];
    match crate::sys::recv_fd(stream.as_raw_fd(), &mut buf) {
        Ok((n, Some(fd))) if n == buf.len() => {
            let token = std::str::from_utf8(&buf)
                .map_err(|_| std::io::Error::other("attach token is not text"))?;
            Ok(Some((token.to_string(), fd)))
        }
        Ok((0, None)) => Err(std::io::ErrorKind::UnexpectedEof.into()),
        Ok(_) => Err(std::io::Error::other("malformed attach message")),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_hex_of_the_right_length() {
        let token = new_token();
        assert_eq!(token.len(), TOKEN_BYTES * 2);
        assert!(token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(token, new_token());
    }

    #[test]
    fn pipe_command_quotes_paths() {
        let cmd = pipe_command(
            Path::new("/opt/my dir/orchestra"),
            Path::new("/s/it's.sock"),
            Path::new("/s/spawn/attach-ab"),
        );
        assert_eq!(
            cmd,
            "exec '/opt/my dir/orchestra' pipe-attach '/s/it'\\''s.sock' '/s/spawn/attach-ab'"
        );
    }
}
