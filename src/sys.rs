//! The few system calls the standard library does not wrap: process file descriptors,
//! signals, file-descriptor passing over Unix sockets, and resource limits.
//!
//! This is the only module allowed `unsafe`; every block states why it is sound. Nothing
//! here knows about agents, tmux or HTTP.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// Opens a pidfd for `pid`: a file descriptor that becomes readable when the process exits.
/// Works for processes that are not our children. `ESRCH` means it has already gone.
pub fn pidfd_open(pid: u32) -> io::Result<OwnedFd> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ESRCH))?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1; no
    // pointers are involved.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, libc::PIDFD_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Waits up to `timeout` for a pidfd (or any descriptor) to become readable.
/// Returns `Ok(true)` when it did, `Ok(false)` on timeout.
pub fn wait_readable(fd: RawFd, timeout: Duration) -> io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
    loop {
        // SAFETY: `pfd` is a valid pollfd that lives across the call; nfds is 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n >= 0 {
            return Ok(n > 0);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Sends `signal` to process `pid`. A process that no longer exists is not an error.
pub fn kill(pid: u32, signal: libc::c_int) -> io::Result<()> {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return Ok(());
    };
    if pid <= 1 {
        // Never signal init or (with pid 0 / -1) whole process groups by accident.
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "refusing to signal pid <= 1",
        ));
    }
    // SAFETY: kill takes plain integers.
    let rc = unsafe { libc::kill(pid, signal) };
    if rc == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

/// Whether process `pid` still exists (a zombie counts as existing).
pub fn process_exists(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks for existence and permission.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Sends `payload` over `socket` with `fd` attached as `SCM_RIGHTS`.
pub fn send_fd(socket: &UnixStream, fd: RawFd, payload: &[u8]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: payload.as_ptr() as *mut libc::c_void,
        iov_len: payload.len(),
    };
    // Control buffer sized and aligned for one descriptor.
    let mut control = [0u64; 4];
    // SAFETY: CMSG_SPACE is a pure size computation.
    let space = unsafe { libc::CMSG_SPACE(size_of::<RawFd>() as u32) } as usize;
    assert!(space <= size_of_val(&control));
    // SAFETY: zeroed msghdr is a valid "empty" header; we fill in the fields we use below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = space as _;
    // SAFETY: msg_control points at `control`, which is large enough for one cmsghdr with an
    // fd payload (checked above), so CMSG_FIRSTHDR is non-null and CMSG_DATA is in bounds.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg) as *mut RawFd, fd);
    }
    loop {
        // SAFETY: msg and everything it points to outlive the call.
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return if n as usize == payload.len() {
                Ok(())
            } else {
                Err(io::Error::new(io::ErrorKind::WriteZero, "short sendmsg"))
            };
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Receives one message of at most `buf.len()` bytes from a non-blocking socket, with at most
/// one attached descriptor. Returns the byte count and the descriptor, if any. Extra
/// descriptors a misbehaving peer attaches are closed.
pub fn recv_fd(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut libc::c_void,
        iov_len: buf.len(),
    };
    let mut control = [0u64; 16];
    // SAFETY: a zeroed msghdr is valid; fields are set below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = size_of_val(&control) as _;
    // SAFETY: msg and the buffers it points to outlive the call; MSG_CMSG_CLOEXEC makes any
    // received descriptor close-on-exec.
    let n = unsafe {
        libc::recvmsg(
            socket,
            &mut msg,
            libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut received = None;
    // SAFETY: recvmsg filled `control` with msg_controllen bytes of well-formed cmsghdrs;
    // CMSG_FIRSTHDR/CMSG_NXTHDR stay within that range.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                let header = libc::CMSG_LEN(0) as usize;
                let count = ((*cmsg).cmsg_len as usize - header) / size_of::<RawFd>();
                for i in 0..count {
                    let fd = OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i)));
                    if received.is_none() {
                        received = Some(fd);
                    }
                    // Any further descriptor is dropped (closed) here.
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n as usize, received))
}

/// Sets a socket's send buffer size (`SO_SNDBUF`; the kernel doubles it for bookkeeping and
/// stops auto-tuning it).
pub fn set_send_buffer(socket: RawFd, bytes: usize) -> io::Result<()> {
    let size = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_SNDBUF,
            &size as *const libc::c_int as *const libc::c_void,
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Raises the soft limit on open file descriptors to the hard limit (a server holding many
/// connections needs more than the usual 1024). Returns the new soft limit.
pub fn raise_open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return None;
        }
        if limit.rlim_cur < limit.rlim_max {
            limit.rlim_cur = limit.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                return None;
            }
        }
    }
    Some(limit.rlim_cur)
}

/// Lowers the calling thread's scheduling priority to the given nice value (Linux threads
/// have their own nice value), so background work yields the CPU to latency-sensitive work.
pub fn lower_thread_priority(nice: i32) -> io::Result<()> {
    // SAFETY: gettid takes no arguments; setpriority takes plain integers.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, nice)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The soft limit on open file descriptors.
pub fn open_files_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    let rc = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (rc == 0).then_some(limit.rlim_cur)
}

/// Clock ticks per second for /proc CPU times.
pub fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf takes an integer name.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// Page size in bytes for /proc memory figures.
pub fn page_size() -> u64 {
    // SAFETY: sysconf takes an integer name.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 { size as u64 } else { 4096 }
}

/// Sets the file mode creation mask and returns the previous one.
pub fn set_umask(mask: u32) -> u32 {
    // SAFETY: umask takes and returns plain integers.
    unsafe { libc::umask(mask as libc::mode_t) as u32 }
}

/// The real user id of this process.
pub fn current_uid() -> u32 {
    // SAFETY: getuid cannot fail and takes no arguments.
    unsafe { libc::getuid() }
}

/// The umask this process had before [`make_created_files_private`] (none yet: `u32::MAX`).
static CHILD_UMASK: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(u32::MAX);

/// Makes every file, directory and socket this process creates from now on private to its
/// user (umask 0o077), whatever umask it was started with. The umask it had is remembered
/// for the processes it starts ([`with_original_umask`]). The daemon calls it first thing.
pub fn make_created_files_private() {
    let previous = set_umask(0o077);
    CHILD_UMASK
        .compare_exchange(
            u32::MAX,
            previous,
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
        )
        .ok();
}

/// Gives the process `command` starts the umask this process was started with (agents, their
/// tmux server, git and test commands create the user's files as the user expects), when
/// [`make_created_files_private`] changed it.
pub fn with_original_umask(command: &mut std::process::Command) -> &mut std::process::Command {
    use std::os::unix::process::CommandExt;
    let mask = CHILD_UMASK.load(std::sync::atomic::Ordering::SeqCst);
    if mask == u32::MAX {
        return command;
    }
    // SAFETY: the closure runs between fork and exec and calls only umask, which is
    // async-signal-safe, allocates nothing and cannot fail.
    unsafe {
        command.pre_exec(move || {
            libc::umask(mask as libc::mode_t);
            Ok(())
        })
    }
}

/// Number of threads this process has now (from `/proc/self/task`).
pub fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Erases `names` from this process's environment: each value is overwritten with NUL bytes
/// where it lies (for variables inherited at exec, that is the block `/proc/<pid>/environ`
/// shows), then the variable is removed. Refuses (changing nothing) unless the process has
/// exactly one thread, because the environment is not safe to change while other threads
/// may read it.
pub fn erase_env_vars(names: &[std::ffi::OsString]) -> io::Result<()> {
    let threads = thread_count()?;
    if threads != 1 {
        return Err(io::Error::other(format!(
            "{threads} threads are running; the environment can only be changed with one"
        )));
    }
    for name in names {
        let Ok(c_name) = std::ffi::CString::new(name.as_encoded_bytes()) else {
            continue;
        };
        // SAFETY: the process has one thread (checked above), so nothing reads or changes
        // the environment concurrently. getenv returns NULL or a pointer to the value's
        // NUL-terminated bytes inside writable environment memory (the initial block on the
        // stack, or memory allocated by setenv); strlen stays within that string, and we
        // overwrite only its bytes before the terminating NUL. No Rust reference points into
        // it: std::env copies values out.
        unsafe {
            let value = libc::getenv(c_name.as_ptr());
            if !value.is_null() {
                let len = libc::strlen(value);
                std::ptr::write_bytes(value, 0, len);
            }
            // SAFETY (remove_var): single-threaded, as checked above.
            std::env::remove_var(name);
        }
    }
    Ok(())
}

/// A terminal switched to raw mode (no echo, no line editing, no signals from keys, bytes
/// passed through as typed) until this value is dropped, which restores the attributes it
/// found: also when the program unwinds from a panic or leaves its loop on a signal.
pub struct RawTerminal {
    fd: RawFd,
    saved: libc::termios,
}

impl RawTerminal {
    /// Switches the terminal on `fd` to raw mode.
    pub fn enter(fd: RawFd) -> io::Result<RawTerminal> {
        // SAFETY: termios is plain old data; tcgetattr fills it or fails without touching it.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: `saved` is a valid termios to write into; `fd` is only read.
        if unsafe { libc::tcgetattr(fd, &mut saved) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw only edits the struct it is given.
        unsafe { libc::cfmakeraw(&mut raw) };
        // SAFETY: `raw` is a valid termios derived from the terminal's own.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &raw) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RawTerminal { fd, saved })
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        // SAFETY: `saved` holds the attributes tcgetattr returned for this fd.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.saved) };
    }
}

/// The size (rows, columns) of the terminal on `fd`.
pub fn terminal_size(fd: RawFd) -> io::Result<(u16, u16)> {
    // SAFETY: winsize is plain old data that TIOCGWINSZ fills in.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer it is given.
    if unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((size.ws_row, size.ws_col))
}

/// Reads from a raw descriptor (one `read(2)`).
pub fn read_fd(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: read writes at most buf.len() bytes into buf.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// Sets the window size of the terminal on `fd` (a pseudo-terminal master or slave). The
/// kernel sends `SIGWINCH` to the terminal's foreground process group when the size changes.
pub fn set_terminal_size(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let size = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer it is given.
    if unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Puts `fd` in non-blocking mode (`O_NONBLOCK`, a flag of the open file description, so
/// every process sharing the description sees it).
pub fn set_nonblocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL and F_SETFL take and return plain integers.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens the directory at the absolute `path` without following any symbolic link on the
/// way (`openat2` with `RESOLVE_NO_SYMLINKS`): the directory that is at that very path, or
/// `ELOOP` if a component is a link. `ENOSYS` on kernels before 5.6.
pub fn open_dir_no_symlinks(path: &std::path::Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: a zeroed open_how is valid (no flags); the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `path` is a NUL-terminated string and `how` a valid open_how of the size
        // passed; both outlive the call, which returns a new descriptor or -1.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                libc::AT_FDCWD,
                path.as_ptr(),
                &how as *const libc::open_how,
                size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// Makes the directory open at `dir` the process's working directory (`fchdir`).
pub fn change_dir_to(dir: &OwnedFd) -> io::Result<()> {
    // SAFETY: fchdir takes a descriptor we own; no pointers are involved.
    if unsafe { libc::fchdir(dir.as_raw_fd()) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Starts a new session with the calling process as its leader, detaching it from the
/// controlling terminal and process group of its parent.
pub fn new_session() -> io::Result<()> {
    // SAFETY: setsid takes no arguments.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// How a child process ended, as `waitpid` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    /// It exited with this status.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

/// Collects the exit status of our child `pid` if it has ended (`Ok(None)` while it runs).
pub fn reap_child(pid: u32) -> io::Result<Option<ChildExit>> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::from_raw_os_error(libc::ECHILD))?;
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid writes one int through the pointer it is given.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == 0 {
            return Ok(None);
        }
        if rc < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if libc::WIFEXITED(status) {
            return Ok(Some(ChildExit::Code(libc::WEXITSTATUS(status))));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(Some(ChildExit::Signal(libc::WTERMSIG(status))));
        }
        // Stopped or continued: not an exit.
        return Ok(None);
    }
}

/// Sends `signal` to every process of process group `pgid` (which must not be 0 or 1).
pub fn kill_group(pgid: u32, signal: libc::c_int) -> io::Result<()> {
    let pgid = libc::pid_t::try_from(pgid)
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: kill takes plain integers; a negative pid names the process group.
    if unsafe { libc::kill(-pgid, signal) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The user id of the process at the other end of a connected Unix socket (`SO_PEERCRED`).
pub fn peer_uid(socket: RawFd) -> io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` and `len` are valid for writes of the sizes given.
    let rc = unsafe {
        libc::getsockopt(
            socket,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// This process's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn passes_a_descriptor_over_a_unix_socket() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut keep, give) = UnixStream::pair().unwrap();
        send_fd(&a, give.as_raw_fd(), b"hello").unwrap();
        drop(give);
        let mut buf = [0u8; 16];
        let (n, fd) = recv_fd(b.as_raw_fd(), &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hello");
        let mut received = UnixStream::from(fd.expect("a descriptor"));
        received.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        keep.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
    }

    #[test]
    fn pidfd_reports_exit() {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg("exit 0")
            .spawn()
            .unwrap();
        let fd = pidfd_open(child.id()).unwrap();
        assert!(wait_readable(fd.as_raw_fd(), Duration::from_secs(10)).unwrap());
        child.wait().unwrap();
    }

    #[test]
    fn kill_refuses_init_and_ignores_missing() {
        assert!(kill(1, 0).is_err());
        assert!(kill(0, 0).is_err());
        assert!(kill(u32::MAX, libc::SIGTERM).is_ok());
    }
}
