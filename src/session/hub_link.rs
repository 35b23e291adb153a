//! The child's side of its connection to the hub: requests wait in an
//! outbox until the hub's socket takes them (the child never blocks on
//! the hub), and the child's own replies wait until the hub has finished
//! the requests sent before them, so the client sees every reply in the
//! order it typed the commands.
//!
//! May use: `protocol` and `os`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};

use crate::os::logging::{self, fd_number};
use crate::protocol::ipc::{self, Link, Received, ToHub};

pub(super) struct HubLink {
    link: Link,
    /// Where to reach a new hub if this one goes away.
    path: PathBuf,
    /// Requests the hub's socket has not taken yet, encoded.
    outbox: VecDeque<Vec<u8>>,
    outbox_bytes: usize,
    /// Requests sent to the hub, and how many of them it has finished.
    requests: u64,
    answered: u64,
    /// Replies of the child's own, each held until the hub has finished
    /// the requests sent before it.
    held: VecDeque<(u64, String)>,
}

impl HubLink {
    /// Connects to the hub's socket at `path`.
    pub(super) fn connect(path: &Path) -> io::Result<HubLink> {
        let link = Link::connect(path)?;
        log::debug!(
            "connect() to the hub's socket {}: fd {}",
            path.display(),
            fd_number(&link)
        );
        Ok(HubLink {
            link,
            path: path.to_path_buf(),
            outbox: VecDeque::new(),
            outbox_bytes: 0,
            requests: 0,
            answered: 0,
            held: VecDeque::new(),
        })
    }

    /// Connects again, to the hub the parent started after the last one.
    /// What the old hub was not sent is lost with what it was; the
    /// replies held for it are returned, to be told now.
    pub(super) fn reconnect(&mut self) -> io::Result<Vec<String>> {
        self.link = Link::connect(&self.path)?;
        log::debug!("connect() to the new hub: fd {}", fd_number(&self.link));
        self.outbox.clear();
        self.outbox_bytes = 0;
        self.answered = self.requests;
        Ok(self.held.drain(..).map(|(_, line)| line).collect())
    }

    /// Queues a request; it is sent by [`HubLink::send`], with the others
    /// queued by then, in one datagram.
    pub(super) fn request(&mut self, request: &ToHub) {
        let bytes = ipc::encode(request);
        self.outbox_bytes += bytes.len();
        self.outbox.push_back(bytes);
        self.requests += 1;
    }

    /// Sends queued requests as far as the hub's socket takes them,
    /// without waiting. A hub that is gone is noticed on the receiving
    /// side.
    pub(super) fn send(&mut self) -> io::Result<()> {
        while !self.outbox.is_empty() {
            let batch = ipc::next_batch(&self.outbox);
            match self.link.try_send_batch(&batch.pieces) {
                Ok(true) if log::log_enabled!(log::Level::Trace) => {
                    log_sent(&self.link, batch.pieces.len(), batch.bytes);
                }
                Ok(true) => {}
                Ok(false) => break,
                Err(e) if ipc::is_gone(&e) => break,
                Err(e) => return Err(e),
            }
            let count = batch.pieces.len();
            self.outbox_bytes -= batch.bytes;
            self.outbox.drain(..count);
        }
        Ok(())
    }

    /// Requests wait for the hub's socket.
    pub(super) fn sending(&self) -> bool {
        !self.outbox.is_empty()
    }

    /// A datagram's worth of requests waits: ask nothing more for now.
    pub(super) fn outbox_full(&self) -> bool {
        self.outbox_bytes >= ipc::MAX_DATAGRAM
    }

    /// The hub has not finished every request sent to it.
    pub(super) fn busy(&self) -> bool {
        self.answered < self.requests
    }

    /// A reply of the child's own: `Some` to tell now, or held until the
    /// hub has finished the requests before it.
    pub(super) fn in_order(&mut self, line: String) -> Option<String> {
        if self.busy() {
            self.held.push_back((self.requests, line));
            None
        } else {
            Some(line)
        }
    }

    /// The hub finished a request: the replies held for it, to be told.
    pub(super) fn done(&mut self) -> Vec<String> {
        self.answered += 1;
        let ready = self
            .held
            .iter()
            .take_while(|(after, _)| *after <= self.answered)
            .count();
        self.held.drain(..ready).map(|(_, line)| line).collect()
    }

    /// Takes one datagram from the hub into `buf`.
    pub(super) fn try_recv_into(&self, buf: &mut Vec<u8>) -> io::Result<Received<()>> {
        self.link.try_recv_into(buf)
    }

    /// Tells the hub at once that this child is leaving.
    pub(super) fn shutdown(&self) {
        log::debug!(
            "shutdown() of the hub connection {}: the hub sees it end",
            fd_number(&self.link)
        );
        self.link.shutdown();
    }
}

/// The trace's line for a datagram to the hub, out of the way of every
/// request.
#[cold]
#[inline(never)]
fn log_sent(link: &Link, requests: usize, bytes: usize) {
    log::trace!(
        "sent the hub a datagram on fd {}: {}, {bytes} bytes",
        fd_number(link),
        logging::count(requests, "request")
    );
}

impl AsFd for HubLink {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.link.as_fd()
    }
}
