//! The class-lab echo child (`mpchat --echo`): writes back exactly the
//! bytes it reads, nothing else, so students can compare it byte for byte
//! with the C echo server in `c-reference/`.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::AsFd;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::os::logging::fd_number;
use crate::os::spawn::Stop;

/// Echoes until the client closes or the process is told to stop.
pub(crate) fn run(client: TcpStream, stop: Stop) -> io::Result<()> {
    let mut buf = [0u8; 4096];
    loop {
        let [lifeline, terminate] = stop.poll_fds();
        let mut fds = [
            PollFd::new(client.as_fd(), PollFlags::POLLIN),
            lifeline,
            terminate,
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        if Stop::requested(&fds[1..]) {
            return Ok(());
        }
        if !fds[0].any().unwrap_or(false) {
            continue;
        }
        match (&client).read(&mut buf) {
            Ok(0) => {
                log::debug!("end of file on the client socket {}", fd_number(&client));
                return Ok(());
            }
            Ok(n) => {
                (&client).write_all(&buf[..n])?;
                log::debug!(
                    "echoed {n} bytes on the client socket {}",
                    fd_number(&client)
                );
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}
