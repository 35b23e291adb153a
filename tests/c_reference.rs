//! mpchat against the C programs in `c-reference/`: the class-lab client
//! in the chat and against both echo servers, the C echo server itself, and
//! the poll()-based chat client.
//!
//! The C programs are compiled once per test process, with `cc`, into the
//! target directory (never into the repository). Without `cc` these tests
//! fail: they are not skipped.

mod common;
use common::*;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

// Building ------------------------------------------------------------------

/// The directory holding the compiled C programs.
fn c_programs() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("c-reference");
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("c-reference");
        std::fs::create_dir_all(&dir).expect("create the C build directory");
        let pid = std::process::id();
        for name in ["client", "echo-server", "chat-client"] {
            // Build under a name of this process's own, then rename: other
            // test processes may be running the previous binary right now.
            let tmp = dir.join(format!("{name}.{pid}.tmp"));
            let out = Command::new("cc")
                .args(["-Wall", "-Wextra", "-O2", "-o"])
                .arg(&tmp)
                .arg(source.join(format!("{name}.c")))
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run `cc` to build c-reference/{name}.c: {e}; install a C compiler"
                    )
                });
            assert!(
                out.status.success(),
                "cc failed on c-reference/{name}.c ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            std::fs::rename(&tmp, dir.join(name)).expect("move the built C program");
        }
        dir
    })
}

fn c_program(name: &str) -> PathBuf {
    c_programs().join(name)
}

// Running -------------------------------------------------------------------

/// A running C program: stdin piped from the test, stdout and stderr
/// collected by threads. Killed (with its process group, if it has one)
/// when dropped, so nothing outlives a test.
struct Program {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stdout_eof: Arc<AtomicBool>,
    stderr: Arc<Mutex<Vec<u8>>>,
    stderr_eof: Arc<AtomicBool>,
    own_group: bool,
    reaped: bool,
}

fn collect(mut from: impl Read + Send + 'static, into: Arc<Mutex<Vec<u8>>>, eof: Arc<AtomicBool>) {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match from.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => into.lock().unwrap().extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        eof.store(true, Ordering::SeqCst);
    });
}

impl Program {
    fn start(name: &str, args: &[&str], own_group: bool) -> Program {
        let mut command = Command::new(c_program(name));
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if own_group {
            command.process_group(0);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let stdout_eof = Arc::new(AtomicBool::new(false));
        let stderr_eof = Arc::new(AtomicBool::new(false));
        collect(
            child.stdout.take().unwrap(),
            Arc::clone(&stdout),
            Arc::clone(&stdout_eof),
        );
        collect(
            child.stderr.take().unwrap(),
            Arc::clone(&stderr),
            Arc::clone(&stderr_eof),
        );
        Program {
            name: name.to_string(),
            stdin: child.stdin.take(),
            child,
            stdout,
            stdout_eof,
            stderr,
            stderr_eof,
            own_group,
            reaped: false,
        }
    }

    /// Types `line` (with its newline) on the program's stdin.
    fn type_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("type into {}: {e}", self.name));
    }

    fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn stdout(&self) -> Vec<u8> {
        self.stdout.lock().unwrap().clone()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until the program's stdout satisfies `condition`.
    fn wait_stdout(&self, what: &str, condition: impl Fn(&[u8]) -> bool) {
        let start = Instant::now();
        while !condition(&self.stdout.lock().unwrap()) {
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what} on {}'s stdout; have {:?}; stderr {:?}",
                self.name,
                String::from_utf8_lossy(&self.stdout()),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the program to exit, and for all of its stdout and stderr.
    fn wait_exit(&mut self) -> ExitStatus {
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                self.reaped = true;
                break status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} did not exit; stdout {:?}; stderr {:?}",
                self.name,
                String::from_utf8_lossy(&self.stdout()),
                self.stderr()
            );
            thread::sleep(Duration::from_millis(10));
        };
        wait_until(&format!("the end of {}'s output", self.name), || {
            self.stdout_eof.load(Ordering::SeqCst) && self.stderr_eof.load(Ordering::SeqCst)
        });
        status
    }
}

impl Drop for Program {
    fn drop(&mut self) {
        if self.own_group && !self.reaped {
            // The program and every child it forked.
            send_signal(-(self.child.id() as i32), libc::SIGKILL);
        } else {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Runs the class-lab client against `port` with `input` on its stdin;
/// returns its exit status and its whole stdout.
fn run_lab_client(port: u16, input: &str) -> (ExitStatus, Vec<u8>) {
    let port = port.to_string();
    let mut client = Program::start("client", &["127.0.0.1", &port], false);
    client
        .stdin
        .as_mut()
        .unwrap()
        .write_all(input.as_bytes())
        .expect("write the client's input");
    client.close_stdin();
    let status = client.wait_exit();
    (status, client.stdout())
}

/// Starts the C echo server on a free port, in its own process group;
/// returns it and its port.
fn start_c_echo_server() -> (Program, u16) {
    let server = Program::start("echo-server", &["0"], true);
    let prefix = "echo-server: listening on 0.0.0.0:";
    let start = Instant::now();
    let port = loop {
        let stderr = server.stderr();
        if let Some(line) = stderr.lines().next()
            && stderr.contains('\n')
        {
            let port = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("unexpected first line from echo-server: {line:?}"));
            break port.parse::<u16>().expect("echo-server's port");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "echo-server did not print its listening line; stderr {stderr:?}"
        );
        thread::sleep(Duration::from_millis(10));
    };
    (server, port)
}

fn start_mpchat_echo() -> Server {
    Server::spawn(&["--echo", "--bind", "127.0.0.1", "0"])
}

// Looking at output ---------------------------------------------------------

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

/// Where `needle` first occurs in `haystack` at or after `from`.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// Where the line `[HH:MM] <rest>\r\n` first occurs at or after `from`.
fn find_stamped(haystack: &[u8], rest: &str, from: usize) -> Option<usize> {
    let needle = format!("] {rest}\r\n");
    let mut at = from;
    while let Some(i) = find(haystack, needle.as_bytes(), at) {
        if i >= 6 {
            let start = i - 6;
            let stamp = String::from_utf8_lossy(&haystack[start..i + 2]);
            if start >= from && unstamp(&format!("{stamp}x")) == Some("x") {
                return Some(start);
            }
        }
        at = i + 1;
    }
    None
}

/// Asserts the lines appear in `out` in this order; a `None` stamp means
/// the line is exact, `Some` that it carries an `[HH:MM]` stamp.
fn assert_in_order(out: &[u8], lines: &[(bool, &str)]) {
    let mut at = 0;
    for &(stamped, line) in lines {
        let found = if stamped {
            find_stamped(out, line, at)
        } else {
            find(out, format!("{line}\r\n").as_bytes(), at)
        };
        match found {
            Some(i) => at = i + 1,
            None => panic!(
                "{line:?} (stamped: {stamped}) not found in order in {:?}",
                String::from_utf8_lossy(out)
            ),
        }
    }
}

// 1. The class-lab client in the chat ----------------------------------------

#[test]
fn lab_client_joins_chats_both_ways_and_leaves_with_end() {
    let server = Server::start();
    let mut bob = server.login("bob");
    let port = server.port().to_string();
    let mut alice = Program::start("client", &["127.0.0.1", &port], false);

    // The lab client sends its lines without a line end.
    alice.type_line("alice");
    bob.expect_stamped("* alice has joined the chat.");
    alice.wait_stdout("the reply to the nickname", |out| {
        count(out, b"Server: ") >= 1
    });
    assert!(
        alice
            .stdout()
            .starts_with(b"Server: Welcome to mpchat! Enter your nickname:\r\n"),
        "stdout {:?}",
        String::from_utf8_lossy(&alice.stdout())
    );

    alice.type_line("hello bob");
    bob.expect_stamped("alice: hello bob");
    alice.wait_stdout("a second reply", |out| count(out, b"Server: ") >= 2);

    bob.send_line("hi alice");
    bob.expect_stamped("bob: hi alice");
    // It reads only right after it writes, and only one read()'s worth:
    // keep typing until bob's line has shown up.
    let mut typed = 2;
    while find_stamped(&alice.stdout(), "bob: hi alice", 0).is_none() {
        assert!(
            typed < 20,
            "bob's line never reached the lab client; stdout {:?}",
            String::from_utf8_lossy(&alice.stdout())
        );
        let line = format!("still here {typed}");
        alice.type_line(&line);
        bob.expect_stamped(&format!("alice: {line}"));
        typed += 1;
        alice.wait_stdout("one more reply", |out| count(out, b"Server: ") >= typed);
    }

    alice.type_line("END");
    bob.expect_stamped("* alice has left the chat.");
    let status = alice.wait_exit();
    assert!(
        status.success(),
        "lab client: {status}; stderr {:?}",
        alice.stderr()
    );
    let out = alice.stdout();
    assert_in_order(
        &out,
        &[
            (false, "Server: Welcome to mpchat! Enter your nickname:"),
            (false, "Hello, alice! Type /help for commands."),
            (true, "* alice has joined the chat."),
            (true, "alice: hello bob"),
            (true, "bob: hi alice"),
        ],
    );
    // Nothing about alice follows her leaving.
    bob.send_line("alone");
    bob.expect_stamped("bob: alone");
}

// 2. Both echo servers look the same to the lab client ----------------------

#[test]
fn lab_client_sees_the_same_from_mpchat_echo_and_the_c_echo_server() {
    let input = "hello\ntwo words\n  spaced\tout  \nEND\n";
    let expected = "Server: hello\nServer: two words\nServer:   spaced\tout  \nServer: END\n";

    let mpchat = start_mpchat_echo();
    let (status, from_mpchat) = run_lab_client(mpchat.port(), input);
    assert!(
        status.success(),
        "lab client against mpchat --echo: {status}"
    );

    let (c_server, c_port) = start_c_echo_server();
    let (status, from_c) = run_lab_client(c_port, input);
    assert!(status.success(), "lab client against echo-server: {status}");
    drop(c_server);

    assert_eq!(
        String::from_utf8_lossy(&from_mpchat),
        String::from_utf8_lossy(&from_c),
        "mpchat --echo and echo-server differ"
    );
    assert_eq!(String::from_utf8_lossy(&from_mpchat), expected);
}

// 3. mpchat --echo echoes bytes, exactly ------------------------------------

/// Sends `data` (from a thread, so neither side's buffers can fill up and
/// block the other), half-closes, and returns everything read until EOF.
fn echo_round_trip(server: &Server, data: Vec<u8>) -> Vec<u8> {
    let stream = TcpStream::connect(server.addr).expect("connect to mpchat --echo");
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        writer.write_all(&data).expect("send to mpchat --echo");
        writer.shutdown(Shutdown::Write).expect("half-close");
    });
    let mut received = Vec::new();
    let start = Instant::now();
    let mut reader = &stream;
    loop {
        let left = DEADLINE.saturating_sub(start.elapsed());
        assert!(
            !left.is_zero(),
            "no EOF from mpchat --echo within {DEADLINE:?}; have {} bytes",
            received.len()
        );
        stream.set_read_timeout(Some(left)).unwrap();
        let mut chunk = [0u8; 8192];
        match reader.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => panic!("read from mpchat --echo: {e}"),
        }
    }
    sender.join().expect("sender thread");
    received
}

#[test]
fn mpchat_echo_returns_exactly_the_bytes_sent() {
    let server = start_mpchat_echo();
    let data = b"hello\r\nbare\rnul\0byte \xff\xfe\xfd\x01 \x1b[2J\xc3\n\r\0END\n\xff".to_vec();
    assert_eq!(echo_round_trip(&server, data.clone()), data);
    // Much more than any buffer, every byte value many times.
    let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 256) as u8).collect();
    assert_eq!(echo_round_trip(&server, big.clone()), big);
    // Nothing at all: nothing back.
    assert_eq!(echo_round_trip(&server, Vec::new()), b"");
}

// 4. The poll()-based chat client ---------------------------------------------

#[test]
fn poll_chat_client_logs_in_and_chats() {
    let server = Server::start();
    let mut bob = server.login("bob");
    let port = server.port().to_string();
    let mut alice = Program::start("chat-client", &["127.0.0.1", &port], false);
    alice
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"alice\nhello from c\n")
        .expect("write the chat client's input");
    alice.close_stdin();
    bob.expect_stamped("* alice has joined the chat.");
    bob.expect_stamped("alice: hello from c");
    bob.expect_stamped("* alice has left the chat.");
    let status = alice.wait_exit();
    assert!(
        status.success(),
        "chat-client: {status}; stderr {:?}",
        alice.stderr()
    );
    // It prints what the server sent, with "\r\n" turned into "\n".
    let out = String::from_utf8(alice.stdout()).expect("UTF-8");
    let lines: Vec<&str> = out.split_inclusive('\n').collect();
    assert_eq!(lines.len(), 4, "stdout {out:?}");
    assert_eq!(lines[0], "Welcome to mpchat! Enter your nickname:\n");
    assert_eq!(lines[1], "Hello, alice! Type /help for commands.\n");
    for (line, rest) in lines[2..]
        .iter()
        .zip(["* alice has joined the chat.", "alice: hello from c"])
    {
        let line = line.strip_suffix('\n').unwrap();
        assert_eq!(unstamp(line), Some(rest), "line {line:?}");
    }
    assert_eq!(alice.stderr(), "Connection closed by server.\n");
}
