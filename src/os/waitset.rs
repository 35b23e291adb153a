//! A client child's wait in its session: one epoll set over the client's
//! socket, the hub's, and the two fds of a stop (lifeline, SIGTERM pipe),
//! kept from one wait to the next.
//!
//! Why not `poll`, as everywhere else: `poll` hands the kernel every fd
//! and takes it off its wait queue again on each call, and a child in a
//! busy room waits once for every line that wakes it: with 1000 children
//! that is a thousand times per line. epoll registers each fd once and
//! changes only what changes (the client's and the hub's interests, which
//! the session recomputes before each wait). Level-triggered, so it
//! answers what `poll` would.
//!
//! The epoll fd is the child's own (CLOEXEC), made after the fork; it is
//! the one fd of the session that exists only in that child.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use nix::errno::Errno;
use nix::poll::{PollFlags, PollTimeout};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

const CLIENT: u64 = 0;
const HUB: u64 = 1;
const STOP: u64 = 2;

/// What one wait found.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    /// The client's socket, as `poll` would say it (POLLIN, POLLOUT,
    /// POLLHUP, POLLERR).
    pub client: PollFlags,
    pub hub: PollFlags,
    /// The parent is gone or SIGTERM came.
    pub stop: bool,
}

/// One registered fd: which it is (its number, to notice a new hub
/// connection) and what it is watched for.
#[derive(Debug, Clone, Copy)]
struct Watched {
    fd: RawFd,
    events: EpollFlags,
}

#[derive(Debug)]
pub(crate) struct WaitSet {
    epoll: Epoll,
    client: Option<Watched>,
    hub: Option<Watched>,
}

impl WaitSet {
    /// A set that watches `stop` (the lifeline and the SIGTERM pipe) for
    /// good; the client and the hub join at the first [`WaitSet::wait`].
    pub(crate) fn new(stop: [BorrowedFd<'_>; 2]) -> io::Result<WaitSet> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for fd in stop {
            epoll.add(fd, EpollEvent::new(EpollFlags::EPOLLIN, STOP))?;
        }
        Ok(WaitSet {
            epoll,
            client: None,
            hub: None,
        })
    }

    /// The hub connection was replaced: its old fd left the set when it
    /// was closed, and the new one may have the same number.
    pub(crate) fn hub_replaced(&mut self) {
        self.hub = None;
    }

    /// Waits until the client's socket or the hub's is ready for what is
    /// asked of it (or ends), a stop comes, or `timeout` passes.
    pub(crate) fn wait(
        &mut self,
        client: (BorrowedFd<'_>, PollFlags),
        hub: (BorrowedFd<'_>, PollFlags),
        timeout: PollTimeout,
    ) -> io::Result<Ready> {
        self.client = watch(&self.epoll, self.client, client, CLIENT)?;
        self.hub = watch(&self.epoll, self.hub, hub, HUB)?;
        let mut events = [EpollEvent::empty(); 4];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        let mut ready = Ready {
            client: PollFlags::empty(),
            hub: PollFlags::empty(),
            stop: false,
        };
        for event in &events[..n] {
            let flags = to_poll(event.events());
            match event.data() {
                CLIENT => ready.client = flags,
                HUB => ready.hub = flags,
                _ => ready.stop = true,
            }
        }
        Ok(ready)
    }
}

/// Adds `fd` to the set, or changes what it is watched for, when that
/// differs from what is registered.
fn watch(
    epoll: &Epoll,
    now: Option<Watched>,
    (fd, wanted): (BorrowedFd<'_>, PollFlags),
    token: u64,
) -> io::Result<Option<Watched>> {
    let want = Watched {
        fd: fd.as_raw_fd(),
        events: to_epoll(wanted),
    };
    let mut event = EpollEvent::new(want.events, token);
    match now {
        Some(w) if w.fd == want.fd && w.events == want.events => return Ok(now),
        Some(w) if w.fd == want.fd => epoll.modify(fd.as_fd(), &mut event)?,
        _ => match epoll.add(fd.as_fd(), event) {
            Err(Errno::EEXIST) => epoll.modify(fd.as_fd(), &mut event)?,
            other => other?,
        },
    }
    Ok(Some(want))
}

fn to_epoll(flags: PollFlags) -> EpollFlags {
    let mut out = EpollFlags::empty();
    if flags.contains(PollFlags::POLLIN) {
        out |= EpollFlags::EPOLLIN;
    }
    if flags.contains(PollFlags::POLLOUT) {
        out |= EpollFlags::EPOLLOUT;
    }
    out
}

fn to_poll(flags: EpollFlags) -> PollFlags {
    let pairs = [
        (EpollFlags::EPOLLIN, PollFlags::POLLIN),
        (EpollFlags::EPOLLOUT, PollFlags::POLLOUT),
        (EpollFlags::EPOLLHUP, PollFlags::POLLHUP),
        (EpollFlags::EPOLLERR, PollFlags::POLLERR),
    ];
    pairs
        .iter()
        .filter(|(e, _)| flags.contains(*e))
        .fold(PollFlags::empty(), |acc, (_, p)| acc | *p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn answers_as_poll_would_and_follows_changed_interests() {
        let (stop_r, _stop_w) = UnixStream::pair().unwrap();
        let (lifeline, _held) = UnixStream::pair().unwrap();
        let (client, mut peer) = UnixStream::pair().unwrap();
        let (hub, mut hub_peer) = UnixStream::pair().unwrap();
        let mut set = WaitSet::new([lifeline.as_fd(), stop_r.as_fd()]).unwrap();
        let zero = PollTimeout::ZERO;
        let quiet = set
            .wait(
                (client.as_fd(), PollFlags::POLLIN),
                (hub.as_fd(), PollFlags::POLLIN),
                zero,
            )
            .unwrap();
        assert!(quiet.client.is_empty() && quiet.hub.is_empty() && !quiet.stop);
        // Asked for room to write: a fresh socket has it.
        let out = set
            .wait(
                (client.as_fd(), PollFlags::POLLOUT),
                (hub.as_fd(), PollFlags::POLLIN),
                zero,
            )
            .unwrap();
        assert_eq!(out.client, PollFlags::POLLOUT);
        peer.write_all(b"x").unwrap();
        hub_peer.write_all(b"y").unwrap();
        // Level-triggered: unread input is reported on every wait.
        for _ in 0..2 {
            let r = set
                .wait(
                    (client.as_fd(), PollFlags::POLLIN),
                    (hub.as_fd(), PollFlags::POLLIN),
                    zero,
                )
                .unwrap();
            assert_eq!((r.client, r.hub), (PollFlags::POLLIN, PollFlags::POLLIN));
        }
        // Not asked for input: not told of it.
        let r = set
            .wait(
                (client.as_fd(), PollFlags::empty()),
                (hub.as_fd(), PollFlags::POLLIN),
                zero,
            )
            .unwrap();
        assert!(r.client.is_empty());
        // A new hub connection, maybe under the old one's number.
        drop(hub);
        drop(hub_peer);
        let (hub, mut hub_peer) = UnixStream::pair().unwrap();
        set.hub_replaced();
        hub_peer.write_all(b"z").unwrap();
        let r = set
            .wait(
                (client.as_fd(), PollFlags::empty()),
                (hub.as_fd(), PollFlags::POLLIN),
                zero,
            )
            .unwrap();
        assert_eq!(r.hub, PollFlags::POLLIN);
        // The peer's end closing is reported even when nothing is asked.
        drop(peer);
        let r = set
            .wait(
                (client.as_fd(), PollFlags::empty()),
                (hub.as_fd(), PollFlags::empty()),
                zero,
            )
            .unwrap();
        assert!(r.client.contains(PollFlags::POLLHUP), "{:?}", r.client);
        drop(_held);
        let r = set
            .wait(
                (client.as_fd(), PollFlags::empty()),
                (hub.as_fd(), PollFlags::empty()),
                zero,
            )
            .unwrap();
        assert!(r.stop);
    }
}
