//! Signals, turned into events: a handler only sets a flag and writes a
//! byte to a self-pipe ([`SelfPipe`]); the process polls the pipe's read
//! end with its other fds and does the work outside any handler. The
//! parent takes four signals ([`Signals`]), a forked process SIGTERM, the
//! hub also SIGHUP.

use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use libc::c_int;

use nix::sys::signal::{SigHandler, Signal, signal};
use signal_hook::SigId;
use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

/// What arrived since the last look.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pending {
    /// SIGCHLD: some child changed state; reap.
    pub child_exited: bool,
    /// SIGINT or SIGTERM: shut down.
    pub terminate: bool,
    /// SIGHUP: have the hub reopen the history's segment.
    pub hangup: bool,
}

/// A pipe that becomes readable when one of its signals arrives. The
/// handler writes a byte and does nothing else; the process polls the read
/// end with its other fds and does the work in its own loop.
#[derive(Debug)]
pub(crate) struct SelfPipe {
    read: UnixStream,
    /// The numbers of the write ends the handlers hold, for the debug
    /// log (signal-hook owns them).
    write_ends: Vec<RawFd>,
}

impl SelfPipe {
    /// Installs a handler for each of `signals` that writes to a new
    /// self-pipe; returns the pipe and the handlers' ids.
    fn register(signals: &[c_int]) -> io::Result<(SelfPipe, Vec<SigId>)> {
        let (read, write) = UnixStream::pair()?;
        read.set_nonblocking(true)?;
        let mut ids = Vec::new();
        let mut write_ends = Vec::new();
        for &sig in signals {
            let end = write.try_clone()?;
            write_ends.push(end.as_raw_fd());
            ids.push(signal_hook::low_level::pipe::register(sig, end)?);
        }
        Ok((SelfPipe { read, write_ends }, ids))
    }

    /// A self-pipe for `signal` alone, for the life of the process.
    pub(crate) fn on(signal: c_int) -> io::Result<SelfPipe> {
        Ok(SelfPipe::register(&[signal])?.0)
    }

    /// The read end's number and the write ends', for the debug log.
    pub(crate) fn fd_numbers(&self) -> (RawFd, &[RawFd]) {
        (self.read.as_raw_fd(), &self.write_ends)
    }

    /// Empties the pipe: one look answers every signal so far.
    pub(crate) fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.read).read(&mut buf), Ok(n) if n > 0) {}
    }
}

impl AsFd for SelfPipe {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.read.as_fd()
    }
}

/// The parent's signals: one self-pipe, and a flag per kind to say which
/// of them woke it.
pub(crate) struct Signals {
    pipe: SelfPipe,
    child_exited: Arc<AtomicBool>,
    terminate: Arc<AtomicBool>,
    hangup: Arc<AtomicBool>,
    ids: Vec<SigId>,
}

impl Signals {
    /// Installs handlers for SIGCHLD, SIGINT, SIGTERM and SIGHUP.
    pub(crate) fn install() -> io::Result<Signals> {
        let child_exited = Arc::new(AtomicBool::new(false));
        let terminate = Arc::new(AtomicBool::new(false));
        let hangup = Arc::new(AtomicBool::new(false));
        let flags = [
            (SIGCHLD, &child_exited),
            (SIGINT, &terminate),
            (SIGTERM, &terminate),
            (SIGHUP, &hangup),
        ];
        // The flags first, so each is set by the time the byte wakes us
        // (signal-hook runs a signal's actions in the order registered).
        let mut ids = Vec::new();
        for (sig, flag) in flags {
            ids.push(signal_hook::flag::register(sig, Arc::clone(flag))?);
        }
        let (pipe, pipe_ids) = SelfPipe::register(&flags.map(|(sig, _)| sig))?;
        ids.extend(pipe_ids);
        Ok(Signals {
            pipe,
            child_exited,
            terminate,
            hangup,
            ids,
        })
    }

    /// The self-pipe's read end and write ends, for the debug log.
    pub(crate) fn fd_numbers(&self) -> (RawFd, &[RawFd]) {
        self.pipe.fd_numbers()
    }

    /// Takes the signals that arrived and empties the self-pipe.
    pub(crate) fn take(&self) -> Pending {
        self.pipe.drain();
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
    /// [`SelfPipe`]). SIGTERM (say, from `systemctl stop`, which signals every
    /// process of the service) becomes an event, so the process can still
    /// say goodbye itself.
    pub(crate) fn forget_in_child(self) -> io::Result<SelfPipe> {
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
        SelfPipe::on(SIGTERM)
    }
}

/// In a client or echo child: SIGHUP, which means "reopen the history"
/// and is the hub's business, must not end this process (its default).
///
/// Not for the hub, which takes SIGHUP through a [`SelfPipe`]:
/// signal-hook keeps the handler the parent installed for SIGHUP, and would
/// not install it again over SIG_IGN.
pub(crate) fn ignore_hangup() -> io::Result<()> {
    // SAFETY: SIG_IGN runs no code of ours in signal context.
    unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }?;
    Ok(())
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }
}
