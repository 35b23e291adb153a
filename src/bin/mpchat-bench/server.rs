//! The server under test when `--spawn` starts it: the child in its own
//! process group, the threads that read its stderr and stdout (for the
//! "listening on" line, which some servers log to stdout, then to keep the
//! pipes from filling), and killing the whole group when the run ends,
//! however it ends. With several `--spawn`s there is one of these per
//! server, each named ("server 2") in what it logs and in its errors.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// How long a spawned server has to print its "listening on" line.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the group gets to exit after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);
/// Server stderr lines kept to explain a failure.
const KEEP_LINES: usize = 20;

pub struct Spawned {
    child: Child,
    pub pid: i32,
    pub addr: SocketAddr,
    /// "server", or with several "server 1", "server 2", ...: the prefix
    /// of its copied log lines and the subject of its errors.
    pub label: String,
    recent: Arc<Mutex<VecDeque<String>>>,
    stopped: bool,
}

impl Spawned {
    pub fn start(cmdline: &str, label: &str, echo_log: bool) -> Result<Spawned, String> {
        let mut words = cmdline.split_whitespace();
        let program = words.next().ok_or("--spawn needs a command")?;
        let mut cmd = Command::new(program);
        // Our stdout is the report (maybe JSON): the server's output never
        // goes there.
        cmd.args(words)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // calls prctl(PR_SET_PDEATHSIG), which is async-signal-safe; it
        // allocates nothing and touches no lock.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
            });
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {program}: {e}"))?;
        let pid = i32::try_from(child.id()).map_err(|_| "server pid out of range".to_string())?;
        let recent = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        let outputs: [(&str, Option<Box<dyn Read + Send>>); 2] = [
            (
                "stderr",
                child
                    .stderr
                    .take()
                    .map(|e| Box::new(e) as Box<dyn Read + Send>),
            ),
            (
                "stdout",
                child
                    .stdout
                    .take()
                    .map(|o| Box::new(o) as Box<dyn Read + Send>),
            ),
        ];
        let mut spawned = Spawned {
            child,
            pid,
            addr: SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0),
            label: label.to_string(),
            recent: Arc::clone(&recent),
            stopped: false,
        };
        for (name, pipe) in outputs {
            let Some(pipe) = pipe else {
                spawned.stop();
                return Err(format!("{label} {name} was not captured"));
            };
            let (tx, keep) = (tx.clone(), Arc::clone(&recent));
            let prefix = echo_log.then(|| label.to_string());
            if let Err(e) = thread::Builder::new()
                .name(format!("server-{name}"))
                .spawn(move || drain(pipe, tx, keep, prefix))
            {
                spawned.stop();
                return Err(format!("cannot start the {label} {name} reader: {e}"));
            }
        }
        // Only the readers hold senders now: both ending means both pipes
        // closed.
        drop(tx);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => {
                spawned.addr = addr;
                Ok(spawned)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                spawned.stop();
                Err(format!(
                    "{label} printed no \"listening on HOST:PORT\" within {} s{}",
                    START_TIMEOUT.as_secs(),
                    spawned.recent_text()
                ))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = spawned
                    .child
                    .wait()
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                spawned.stopped = true;
                Err(format!(
                    "{label} closed its output without \"listening on HOST:PORT\" ({status}){}",
                    spawned.recent_text()
                ))
            }
        }
    }

    /// The last lines the server wrote (either output), for an error
    /// message.
    pub fn recent_text(&self) -> String {
        let lines = self
            .recent
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>())
            .unwrap_or_default();
        if lines.is_empty() {
            String::new()
        } else {
            format!("; its last stderr lines:\n  {}", lines.join("\n  "))
        }
    }

    /// Whether the server's main process has exited.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// SIGTERM to the group, then SIGKILL for what is left after a grace
    /// period.
    pub fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let group = Pid::from_raw(self.pid);
        let _ = killpg(group, Signal::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        // Bounded: the wait ends at the deadline whatever the group does.
        loop {
            let main_gone = matches!(self.child.try_wait(), Ok(Some(_)) | Err(_));
            let group_gone = killpg(group, None) == Err(Errno::ESRCH);
            if main_gone && group_gone {
                return;
            }
            if Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = killpg(group, Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn drain(
    pipe: Box<dyn Read + Send>,
    tx: mpsc::Sender<SocketAddr>,
    recent: Arc<Mutex<VecDeque<String>>>,
    echo_prefix: Option<String>,
) {
    let mut tx = Some(tx);
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    // Ends at EOF, when every process of the server has closed stderr.
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf).trim_end().to_string();
        if let Some(addr) = listening_addr(&line)
            && let Some(sender) = tx.take()
        {
            let _ = sender.send(addr);
        }
        if let Some(prefix) = &echo_prefix {
            eprintln!("{prefix}: {line}");
        }
        if let Ok(mut r) = recent.lock() {
            if r.len() == KEEP_LINES {
                r.pop_front();
            }
            r.push_back(line);
        }
    }
}

/// The address in a line containing `listening on HOST:PORT`; also takes
/// `[::1]:PORT` and ngircd's `[127.0.0.1]:PORT`.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening on ")? + "listening on ".len();
    let word = line[at..].split_whitespace().next()?;
    let word = word.trim_end_matches(['.', ',', ';']);
    if let Ok(addr) = word.parse::<SocketAddr>() {
        return Some(addr);
    }
    let (host, port) = word.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some(SocketAddr::new(host.parse().ok()?, port.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_listening_lines() {
        assert_eq!(
            listening_addr("mpchat: listening on 127.0.0.1:4242"),
            Some("127.0.0.1:4242".parse().expect("addr"))
        );
        assert_eq!(
            listening_addr("echo-server: listening on 0.0.0.0:99"),
            Some("0.0.0.0:99".parse().expect("addr"))
        );
        assert_eq!(
            listening_addr("[1:0] Now listening on [127.0.0.1]:6667 (socket 7)."),
            Some("127.0.0.1:6667".parse().expect("addr"))
        );
        assert_eq!(
            listening_addr("listening on [::1]:5").map(|a| a.port()),
            Some(5)
        );
        assert_eq!(listening_addr("not listening"), None);
    }
}
