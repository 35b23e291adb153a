//! A web browser (or another HTTP client) on the chat's port: the child
//! reads the request's head, answers it from `protocol::http`, and
//! closes. A head must arrive whole within [`HEAD_TIME`] and be at most
//! [`http::MAX_HEAD`] bytes, so a client that trickles or floods bytes
//! holds its child for a bounded time and memory.
//!
//! May use: `protocol` and `os`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, poll};

use crate::os::clock;
use crate::os::spawn::Stop;
use crate::protocol::http::{self, Failure, Head};

/// How long a request's head may take to arrive.
pub(super) const HEAD_TIME: Duration = Duration::from_secs(10);
/// How long the answer may take to leave, and the client to close after it.
const ANSWER_TIME: Duration = Duration::from_secs(2);
const LINGER_TIME: Duration = Duration::from_millis(200);

/// Serves one HTTP request on `client` (non-blocking), then closes.
pub(super) fn serve(client: &TcpStream, stop: &Stop, peer: SocketAddr) {
    let Some(response) = read_and_answer(client, stop) else {
        return;
    };
    log::debug!("{peer}: {}", first_line(&response));
    send(client, &response);
}

/// The response to the request that arrives, or `None` if the client
/// went away or the server is stopping.
fn read_and_answer(client: &TcpStream, stop: &Stop) -> Option<Vec<u8>> {
    let deadline = Instant::now() + HEAD_TIME;
    let mut head = Vec::new();
    loop {
        match http::parse(&head) {
            Head::Complete(request) => return Some(http::respond(&request)),
            Head::Malformed => return Some(http::failure(Failure::BadRequest)),
            Head::Partial if head.len() > http::MAX_HEAD => {
                return Some(http::failure(Failure::HeadTooLarge));
            }
            Head::Partial => {}
        }
        let Some(timeout) = clock::poll_timeout_until(deadline) else {
            return Some(http::failure(Failure::Timeout));
        };
        let [lifeline, terminate] = stop.poll_fds();
        let mut fds = [
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
            lifeline,
            terminate,
        ];
        match poll(&mut fds, timeout) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Ok(_) if Stop::requested(&fds[1..]) => return None,
            Ok(_) => {}
            Err(_) => return None,
        }
        // One byte past the limit is enough to know the head is too big.
        let mut chunk = [0u8; 1024];
        let room = (http::MAX_HEAD + 1 - head.len().min(http::MAX_HEAD)).min(chunk.len());
        match (&*client).read(&mut chunk[..room]) {
            Ok(0) => return None,
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
}

/// Writes the response, then closes after taking what the client still
/// sends: closing with unread input would reset the connection, and the
/// client might lose the answer.
fn send(client: &TcpStream, response: &[u8]) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_write_timeout(Some(ANSWER_TIME));
    let _ = (&*client).write_all(response);
    let _ = client.shutdown(Shutdown::Write);
    let _ = client.set_read_timeout(Some(LINGER_TIME));
    let mut sink = [0u8; 1024];
    for _ in 0..64 {
        match (&*client).read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
}

/// The status line of a response, for the log.
fn first_line(response: &[u8]) -> String {
    let end = response
        .iter()
        .position(|&b| b == b'\r')
        .unwrap_or(response.len());
    String::from_utf8_lossy(&response[..end]).into_owned()
}
