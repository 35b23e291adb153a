//! A web browser (or another HTTP client) on the chat's port: the child
//! reads the request's head, answers it from `protocol::http`, and
//! closes. A head must arrive whole within [`HEAD_TIME`] and be at most
//! [`http::MAX_HEAD`] bytes, so a client that trickles or floods bytes
//! holds its child for a bounded time and memory.
//!
//! May use: `protocol` and `os`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::{Waited, wait_for_input};
use crate::os::spawn::Stop;
use crate::protocol::http::{self, Failure, Head};

/// How long a request's head may take to arrive.
pub(super) const HEAD_TIME: Duration = Duration::from_secs(10);
/// How long the answer may take to leave, and the client to close after it.
const ANSWER_TIME: Duration = Duration::from_secs(2);
const LINGER_TIME: Duration = Duration::from_millis(200);

/// What became of a browser's connection.
pub(super) enum Served {
    /// Answered and closed (or gone).
    Done,
    /// A WebSocket, upgraded: the session goes on over it, starting with
    /// these bytes the client sent after the request's head.
    WebSocket(Vec<u8>),
}

/// Serves one HTTP request on `client` (non-blocking): answers and closes,
/// or upgrades the connection to the page's WebSocket. `allowed` are the
/// origins besides the server's own whose pages may open one.
pub(super) fn serve(
    client: &TcpStream,
    stop: &Stop,
    peer: SocketAddr,
    allowed: &[String],
) -> Served {
    let Some((request, rest)) = read_request(client, stop) else {
        return Served::Done;
    };
    let response = match request {
        Ok(request) if request.path == http::WEBSOCKET_PATH => {
            match http::websocket(&request, allowed) {
                Ok(switch) => {
                    log::info!("{peer}: WebSocket");
                    return match write_all(client, &switch) {
                        true => Served::WebSocket(rest),
                        false => Served::Done,
                    };
                }
                Err(why) => http::failure(why),
            }
        }
        Ok(request) => http::respond(&request),
        Err(why) => http::failure(why),
    };
    log::debug!("{peer}: {}", first_line(&response));
    send(client, &response);
    Served::Done
}

/// The request that arrives (or why it is refused) and the bytes after
/// its head, or `None` if the client went away or the server is stopping.
fn read_request(
    client: &TcpStream,
    stop: &Stop,
) -> Option<(Result<http::Request, Failure>, Vec<u8>)> {
    let deadline = Instant::now() + HEAD_TIME;
    let mut head = Vec::new();
    loop {
        match http::parse(&head) {
            Head::Complete(request, length) => return Some((Ok(request), head.split_off(length))),
            Head::Malformed => return Some((Err(Failure::BadRequest), Vec::new())),
            Head::Partial if head.len() > http::MAX_HEAD => {
                return Some((Err(Failure::HeadTooLarge), Vec::new()));
            }
            Head::Partial => {}
        }
        match wait_for_input(client, stop, deadline) {
            Waited::Ready => {}
            Waited::TimedOut => return Some((Err(Failure::Timeout), Vec::new())),
            Waited::Stopped => return None,
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

/// Writes all of `bytes` (the socket stays non-blocking for the session
/// that follows); false if the client did not take them in time.
fn write_all(client: &TcpStream, bytes: &[u8]) -> bool {
    let _ = client.set_nonblocking(false);
    let _ = client.set_write_timeout(Some(ANSWER_TIME));
    let written = (&*client).write_all(bytes).is_ok();
    let _ = client.set_nonblocking(true);
    written
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
