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

/// Why the session chose its protocol, for the debug log.
enum Why {
    /// The client's first bytes said it.
    Spoke([u8; 5], usize),
    /// The client said nothing in time: people wait for the prompt.
    Silent,
    /// The client is gone, or the server stopping: the session finds out.
    Ended,
}

/// The protocol of the client on `client`, a non-blocking socket.
pub(super) fn wire(client: &TcpStream, stop: &Stop) -> Wire {
    let (wire, why) = listen(client, stop);
    if log::log_enabled!(log::Level::Debug) {
        let name = match wire {
            Wire::Line => "the line protocol",
            Wire::Json => "JSON lines",
            Wire::Http => "HTTP",
        };
        let why = match why {
            Why::Spoke(first, n) => {
                format!(
                    "its first bytes are {:?}",
                    String::from_utf8_lossy(&first[..n])
                )
            }
            Why::Silent => format!("it said nothing for {} ms", SNIFF_TIME.as_millis()),
            Why::Ended => "it closed, or the server is stopping".to_string(),
        };
        log::debug!("front end: {name} ({why})");
    }
    wire
}

fn listen(client: &TcpStream, stop: &Stop) -> (Wire, Why) {
    let deadline = Instant::now() + SNIFF_TIME;
    let mut first = [0u8; 5];
    loop {
        // A client that spoke first is known without a wait.
        match recv(client.as_raw_fd(), &mut first, MsgFlags::MSG_PEEK) {
            // At EOF or on an error the session finds out for itself.
            Ok(0) => return (Wire::Line, Why::Ended),
            Ok(n) => {
                if let Some(wire) = sniff::classify(&first[..n]) {
                    return (wire, Why::Spoke(first, n));
                }
                // The start of "GET " or "HEAD ": wait for the rest. The
                // data stays readable, so pause instead of polling.
                std::thread::sleep(Duration::from_millis(2));
                if Instant::now() >= deadline {
                    return (Wire::Line, Why::Spoke(first, n));
                }
                continue;
            }
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(_) => return (Wire::Line, Why::Ended),
        }
        match wait_for_input(client, stop, deadline) {
            Waited::Ready => {}
            Waited::TimedOut => return (Wire::Line, Why::Silent),
            Waited::Stopped => return (Wire::Line, Why::Ended),
        }
    }
}
