//! Sockets: resolving and vetting the target (loopback only unless allowed),
//! the pool of 127.x source addresses the clients are spread over, starting
//! a non-blocking connect, and raising the fd limit.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;

use nix::errno::Errno;
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, connect, setsockopt, socket,
    sockopt,
};

/// Resolves HOST:PORT to one address, preferring IPv4.
pub fn resolve(addr: &str) -> Result<SocketAddr, String> {
    let all: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .collect();
    all.iter()
        .find(|a| a.is_ipv4())
        .or(all.first())
        .copied()
        .ok_or_else(|| format!("{addr} resolves to no address"))
}

/// A server that listens on every address is reached through loopback.
pub fn connectable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), addr.port())
        }
        _ => addr,
    }
}

pub fn check_target(addr: SocketAddr, allow_remote: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(format!(
            "refusing to target {addr}: not a loopback address (pass --allow-remote to allow it)"
        ))
    }
}

/// Source addresses 127.0.1.1, 127.0.1.2, … handed out in turn, so no
/// single address carries all the connections. Empty when the target is
/// not IPv4 loopback (the kernel then picks the source).
#[derive(Debug)]
pub struct Sources {
    list: Vec<Ipv4Addr>,
    next: usize,
}

impl Sources {
    pub fn new(target: SocketAddr, count: u32) -> Sources {
        let list = match target.ip() {
            IpAddr::V4(ip) if ip.is_loopback() => (0..count)
                .map(|i| {
                    // Skip .0 and .255 in each /24: some tools treat them
                    // as network and broadcast addresses.
                    let third = 1 + i / 254;
                    let fourth = 1 + i % 254;
                    Ipv4Addr::new(127, (third >> 8) as u8, third as u8, fourth as u8)
                })
                .collect(),
            _ => Vec::new(),
        };
        Sources { list, next: 0 }
    }

    pub fn count(&self) -> usize {
        self.list.len()
    }

    fn take(&mut self) -> Option<Ipv4Addr> {
        let ip = *self.list.get(self.next % self.list.len().max(1))?;
        self.next = self.next.wrapping_add(1);
        Some(ip)
    }
}

/// Creates a non-blocking socket, binds it to the next source address and
/// starts connecting. The connect finishes (or fails) later: the socket
/// becomes writable and SO_ERROR tells which.
pub fn start_connect(target: SocketAddr, sources: &mut Sources) -> Result<TcpStream, String> {
    let family = if target.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {}", e.desc()))?;
    if let Some(src) = sources.take() {
        // Without this, bind() would pick the port now and need it unique
        // per source address alone; with it, the port is chosen at connect
        // time and only the whole 4-tuple must be unique.
        setsockopt(&fd, sockopt::IpBindAddressNoPort, &true)
            .map_err(|e| format!("IP_BIND_ADDRESS_NO_PORT: {}", e.desc()))?;
        bind(fd.as_raw_fd(), &SockaddrIn::from(SocketAddrV4::new(src, 0)))
            .map_err(|e| format!("bind {src}: {}", e.desc()))?;
    }
    // Benchmark messages must leave when written, not wait for Nagle.
    setsockopt(&fd, sockopt::TcpNoDelay, &true)
        .map_err(|e| format!("TCP_NODELAY: {}", e.desc()))?;
    let res = match target {
        SocketAddr::V4(a) => connect(fd.as_raw_fd(), &SockaddrIn::from(a)),
        SocketAddr::V6(a) => connect(fd.as_raw_fd(), &SockaddrIn6::from(a)),
    };
    match res {
        Ok(()) | Err(Errno::EINPROGRESS) | Err(Errno::EINTR) => Ok(TcpStream::from(fd)),
        Err(e) => Err(format!("connect: {}", e.desc())),
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile() -> Result<u64, String> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_NOFILE).map_err(|e| format!("getrlimit(RLIMIT_NOFILE): {e}"))?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
            .map_err(|e| format!("setrlimit(RLIMIT_NOFILE): {e}"))?;
    }
    Ok(hard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_cycle_over_loopback() {
        let mut s = Sources::new("127.0.0.1:1".parse().expect("addr"), 300);
        assert_eq!(s.take(), Some(Ipv4Addr::new(127, 0, 1, 1)));
        for _ in 0..253 {
            s.take();
        }
        assert_eq!(s.take(), Some(Ipv4Addr::new(127, 0, 2, 1)));
        let mut none = Sources::new("127.0.0.1:1".parse().expect("addr"), 0);
        assert_eq!(none.take(), None);
    }

    #[test]
    fn remote_needs_permission() {
        let remote: SocketAddr = "192.0.2.1:80".parse().expect("addr");
        assert!(check_target(remote, false).is_err());
        assert!(check_target("127.0.0.1:80".parse().expect("addr"), false).is_ok());
    }
}
