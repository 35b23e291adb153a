//! Signals, turned into events for the parent's main loop.
//!
//! The handlers (installed by signal-hook) only set a flag and write a byte
//! to a self-pipe; the main loop polls the pipe's read end together with the
//! listening socket, and does the work outside any handler.

use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{SigHandler, Signal, signal};
use signal_hook::SigId;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

/// What arrived since the last look.
#[derive(Debug, Default, Clone, Copy)]
pub struct Pending {
    /// SIGCHLD: some child changed state; reap.
    pub child_exited: bool,
    /// SIGINT or SIGTERM: shut down.
    pub terminate: bool,
    /// SIGHUP: have the hub reopen the history's segment.
    pub hangup: bool,
}

/// The parent's signal handlers and the self-pipe they write to.
pub struct Signals {
    wakeup: UnixStream,
    child_exited: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl Signals {
    /// Installs handlers for SIGCHLD, SIGINT, SIGTERM and SIGHUP.
    pub fn install() -> io::Result<Signals> {
        let (wakeup, writer) = UnixStream::pair()?;
        wakeup.set_nonblocking(true)?;
        let child_exited = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let hangup = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for (sig, flag) in [
            (SIGCHLD, &child_exited),
            (SIGINT, &terminate),
            (SIGTERM, &terminate),
            (SIGHUP, &hangup),
        ] {
            // The flag first, so it is set by the time the byte wakes us.
            ids.push(signal_hook::flag::register(sig, Arc::clone(flag))?);
            ids.push(signal_hook::low_level::pipe::register(
                sig,
                writer.try_clone()?,
            )?);
        }
        Ok(Signals {
            wakeup,
            child_exited,
            terminate,
            hangup,
            ids,
        })
    }

    /// Takes the signals that arrived and empties the self-pipe.
    pub fn take(&self) -> Pending {
        let mut buf = [0u8; 64];
        while matches!((&self.wakeup).read(&mut buf), Ok(n) if n > 0) {}
        Pending {
            child_exited: self.child_exited.swap(false, Ordering::AcqRel),
            terminate: self.terminate.swap(false, Ordering::AcqRel),
            hangup: self.hangup.swap(false, Ordering::AcqRel),
        }
    }

    /// In a freshly forked process: removes the parent's handlers, which
    /// also closes their copies of the self-pipe's write end, so a signal to
    /// this process never wakes the parent; then sets what a forked process
    /// does with each signal, and returns its SIGTERM event.
    ///
    /// SIGINT is ignored: Ctrl-C on the terminal goes to the whole process
    /// group, and it is the parent's orderly shutdown that tells each client
    /// goodbye. SIGHUP is left to the job (see [`ignore_hangup`] and
    /// [`Hangup`]). SIGTERM (say, from `systemctl stop`, which signals every
    /// process of the service) becomes an event, so the process can still
    /// say goodbye itself.
    pub fn forget_in_child(self) -> io::Result<Terminate> {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
        for (sig, handler) in [
            (Signal::SIGCHLD, SigHandler::SigDfl),
            (Signal::SIGINT, SigHandler::SigIgn),
        ] {
            // SAFETY: SIG_DFL and SIG_IGN run no code of ours in signal
            // context, so no handler can break async-signal safety.
            unsafe { signal(sig, handler) }?;
        }
        Terminate::install()
    }
}

/// In a client or echo child: SIGHUP, which means "reopen the history"
/// and is the hub's business, must not end this process (its default).
///
/// Not for the hub: signal-hook keeps the handler the parent installed for
/// SIGHUP, and would not install it again over SIG_IGN.
pub fn ignore_hangup() -> io::Result<()> {
    // SAFETY: SIG_IGN runs no code of ours in signal context.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }?;
    Ok(())
}

/// SIGHUP in the hub, as a pipe that becomes readable.
#[derive(Debug)]
pub struct Hangup {
    wakeup: UnixStream,
}

impl Hangup {
    pub fn install() -> io::Result<Hangup> {
        let (wakeup, writer) = UnixStream::pair()?;
        wakeup.set_nonblocking(true)?;
        signal_hook::low_level::pipe::register(SIGHUP, writer)?;
        Ok(Hangup { wakeup })
    }

    /// Empties the pipe: one reopen answers every SIGHUP so far.
    pub fn take(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wakeup).read(&mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for Hangup {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wakeup.as_fd()
    }
}

/// SIGTERM in a forked process, as a pipe that becomes readable.
#[derive(Debug)]
pub struct Terminate {
    wakeup: UnixStream,
}

impl Terminate {
    fn install() -> io::Result<Terminate> {
        let (wakeup, writer) = UnixStream::pair()?;
        signal_hook::low_level::pipe::register(SIGTERM, writer)?;
        Ok(Terminate { wakeup })
    }
}

impl AsFd for Terminate {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wakeup.as_fd()
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.wakeup.as_fd()
    }
}
