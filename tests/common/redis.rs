//! A `redis-server` of the test's own: a free loopback port, nothing
//! saved to disk, killed when dropped (also when the test fails). A
//! machine without `redis-server` fails the test saying what to install.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::DEADLINE;

pub struct Redis {
    pub port: u16,
    child: Option<Child>,
    /// `requirepass`, if any.
    password: Option<String>,
}

impl Redis {
    pub fn start() -> Redis {
        Redis::start_with(None)
    }

    /// One that asks its clients for `password`.
    pub fn start_with_password(password: &str) -> Redis {
        Redis::start_with(Some(password.to_string()))
    }

    fn start_with(password: Option<String>) -> Redis {
        // A port the kernel just gave out and took back: free, very likely,
        // for the moment redis-server needs to take it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut redis = Redis {
            port,
            child: None,
            password,
        };
        redis.start_again();
        redis
    }

    /// The URL for `--cluster`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone with it: nothing is saved).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "redis-server is running already");
        let port = self.port.to_string();
        let mut command = Command::new("redis-server");
        command.args([
            "--port",
            &port,
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(password) = &self.password {
            command.args(["--requirepass", password]);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}): install it (apt-get install redis-server)")
            });
        self.child = Some(child);
        let deadline = Instant::now() + DEADLINE;
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server on port {port} never answered PING"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        // One that wants a password answers, but not with PONG.
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && (&reply == b"+PONG\r\n" || reply.starts_with(b"-NOAUTH"))
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}
