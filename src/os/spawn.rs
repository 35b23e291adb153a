//! Birth of a process: `fork()`, and what every forked process resets.
//!
//! The lifeline is a pipe whose write end only the parent holds. Every
//! other process keeps the read end in its poll set: when the parent exits,
//! however it exits (even `kill -9`), the kernel closes the write end and
//! the read end reports EOF, and the hub and the children close down.
//! Together with SIGTERM it makes a forked process's [`Stop`].
//!
//! The login pipe works the other way round: a client child holds its
//! write end while its client has no nickname and drops it on login (or by
//! exiting), so the parent, polling the read ends, knows how many
//! connections are still logging in without ever talking to the hub.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags};
use nix::unistd::{ForkResult, Pid, pipe2};

use crate::os::logging::{self, Role};
use crate::os::signals::SelfPipe;

/// Which side of a `fork()` this is.
#[derive(Debug)]
pub(crate) enum Forked {
    Parent(Pid),
    Child,
}

/// Forks this process.
pub(crate) fn fork() -> io::Result<Forked> {
    // (Out of fds, the count cannot be read; that is no reason to stop.)
    debug_assert!(
        threads().is_none_or(|n| n == 1),
        "fork() from a process with threads: the child would hold only one"
    );
    // SAFETY: the parent process is single-threaded (no thread is ever
    // started in it), so the child is a complete copy and may go on running
    // ordinary Rust code, allocation included.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// This process's threads, as the kernel counts them.
fn threads() -> Option<usize> {
    std::fs::read_dir("/proc/self/task")
        .ok()
        .map(Iterator::count)
}

/// First steps of a freshly forked process: its role for the log (its pid
/// has changed too) and its name in `ps -o comm` and `top`.
pub(crate) fn become_role(role: Role, comm: &CStr) {
    logging::set_role(role);
    if let Err(e) = nix::sys::prctl::set_name(comm) {
        log::debug!("cannot set process name: {e}");
    }
}

/// The read end of a pipe whose only message is that its write end
/// closed: readable (EOF) once every copy of [`HeldEnd`] is gone, however
/// its holders ended.
#[derive(Debug)]
pub(crate) struct ClosedWatch(OwnedFd);

impl AsFd for ClosedWatch {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// The write end of that pipe: never written, held until closing it says
/// what it means.
#[derive(Debug)]
pub(crate) struct HeldEnd {
    write_end: OwnedFd,
}

impl AsFd for HeldEnd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.write_end.as_fd()
    }
}

/// A new such pipe, both ends close-on-exec.
fn closing_pipe() -> io::Result<(ClosedWatch, HeldEnd)> {
    let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
    Ok((ClosedWatch(read), HeldEnd { write_end: write }))
}

/// A forked process's end of the lifeline: readable once the parent is gone.
pub(crate) type Lifeline = ClosedWatch;
/// The parent's end of the lifeline.
pub(crate) type LifelineWriter = HeldEnd;
/// The parent's end of one child's login pipe: readable once that child's
/// client has logged in or the child is gone.
pub(crate) type LoginWatch = ClosedWatch;
/// A client child's end of its login pipe: dropped once the client has a
/// nickname.
pub(crate) type LoggingIn = HeldEnd;

/// Creates the lifeline pipe.
pub(crate) fn lifeline() -> io::Result<(LifelineWriter, Lifeline)> {
    let (watch, held) = closing_pipe()?;
    Ok((held, watch))
}

/// Creates a login pipe.
pub(crate) fn login_pipe() -> io::Result<(LoginWatch, LoggingIn)> {
    closing_pipe()
}

/// What tells a forked process to stop: the parent's death (the lifeline
/// ends) or SIGTERM. Each process keeps both in its poll set.
#[derive(Debug)]
pub(crate) struct Stop {
    pub lifeline: Lifeline,
    pub terminate: SelfPipe,
}

impl Stop {
    /// Poll entries for both; see [`Stop::requested`].
    pub(crate) fn poll_fds(&self) -> [PollFd<'_>; 2] {
        [
            PollFd::new(self.lifeline.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.terminate.as_fd(), PollFlags::POLLIN),
        ]
    }

    /// Both fds, for a wait set of one's own.
    pub(crate) fn fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.lifeline.as_fd(), self.terminate.as_fd()]
    }

    /// True if either entry from [`Stop::poll_fds`] fired.
    pub(crate) fn requested(fds: &[PollFd]) -> bool {
        fds.iter().any(|f| f.any().unwrap_or(false))
    }
}
