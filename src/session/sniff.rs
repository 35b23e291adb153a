//! Which protocol the client speaks: the child waits a moment for the
//! client to speak first, and looks at its first bytes without taking
//! them (the session reads them as usual).
//!
//! May use: `protocol` and `os`.

use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use nix::sys::socket::{MsgFlags, recv};

use super::{Waited, wait_for_input};
use crate::os::spawn::Stop;
use crate::protocol::sniff::{self, Wire};

/// How long a silent client is given to speak first. Programs send their
/// `hello` at once; people's clients wait for the prompt, which they get
/// this much later. (A JSON line or HTTP request that takes longer to
/// arrive is taken for a person's nickname: its client gets the prompt
/// and an error for its line, and can reconnect.)
pub(super) const SNIFF_TIME: Duration = Duration::from_millis(100);

/// The protocol of the client on `client`, a non-blocking socket.
pub(super) fn wire(client: &TcpStream, stop: &Stop) -> Wire {
    let deadline = Instant::now() + SNIFF_TIME;
    let mut first = [0u8; 5];
    loop {
        // A client that spoke first is known without a wait.
        match recv(client.as_raw_fd(), &mut first, MsgFlags::MSG_PEEK) {
            // At EOF or on an error the session finds out for itself.
            Ok(0) => return Wire::Line,
            Ok(n) => {
                if let Some(wire) = sniff::classify(&first[..n]) {
                    return wire;
                }
                // The start of "GET " or "HEAD ": wait for the rest. The
                // data stays readable, so pause instead of polling.
                std::thread::sleep(Duration::from_millis(2));
                if Instant::now() >= deadline {
                    return Wire::Line;
                }
                continue;
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(_) => return Wire::Line,
        }
        match wait_for_input(client, stop, deadline) {
            Waited::Ready => {}
            Waited::TimedOut | Waited::Stopped => return Wire::Line,
        }
    }
}
