//! The example bot, `scripts/bot.py`, end to end against the real server:
//! it proves its name with its secret, joins its room, answers `!time`,
//! and when its connection is dropped from the server's side it logs in
//! again and answers the `!time` it missed, exactly once.
//!
//! Needs `python3`; without it the test fails and says so, since a test
//! that passes without running the example proves nothing.

mod common;
use common::*;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

const BOT: &str = "weather";
/// 32 bytes, the shortest secret the server takes.
const SECRET: &str = "5f0c1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeef";
const ROOM: &str = "#lab2";

/// The bot's process, killed on drop even when the test fails, so no
/// bot outlives its test.
struct BotProcess {
    child: Child,
    /// Its stdout, a line at a time: one line per answer.
    answers: Receiver<String>,
    /// Its stderr, shown when the test fails.
    log: Arc<Mutex<Vec<String>>>,
}

impl BotProcess {
    fn start(server: &Server) -> BotProcess {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/bot.py");
        let mut command = Command::new("python3");
        command
            .arg(&script)
            .args(["--name", BOT, "--device", "test-box", "--room", ROOM])
            // Bounded, in case the guard below is ever bypassed.
            .args(["--max-reconnects", "5"])
            .args(["127.0.0.1", &server.port().to_string()])
            .env("MPCHAT_BOT_SECRET", SECRET)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                panic!(
                    "python3 is not installed: install python3 to run this test of scripts/bot.py"
                )
            }
            Err(e) => panic!("cannot start {command:?}: {e}"),
        };
        // Both pipes are drained by threads for the bot's whole life, so
        // it never blocks writing.
        let (tx, answers) = mpsc::channel();
        let stdout = child.stdout.take().expect("stdout is piped");
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&log);
        let stderr = child.stderr.take().expect("stderr is piped");
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        BotProcess {
            child,
            answers,
            log,
        }
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The seq of the event the bot's next answer was for.
    fn next_answer(&self) -> u64 {
        let line = match self.answers.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(e) => panic!("no answer from the bot within {DEADLINE:?} ({e})"),
        };
        line.strip_prefix("answered !time at seq ")
            .and_then(|seq| seq.parse().ok())
            .unwrap_or_else(|| panic!("unexpected line on the bot's stdout: {line:?}"))
    }

    /// Asserts that the bot prints no answer within `wait`.
    fn no_answer_within(&self, wait: Duration) {
        match self.answers.recv_timeout(wait) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(line) => panic!("the bot answered again: {line:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("the bot exited"),
        }
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        // SIGKILL ends it even while stopped (the test stops it below).
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
            eprintln!("--- the bot's log ---\n{}", log.join("\n"));
        }
    }
}

/// Whether `text` is a time of day as `HH:MM:SS`.
fn is_clock(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 8
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
        && b[2] == b':'
        && b[5] == b':'
}

/// Reads `user`'s lines up to the bot's answer, which must be the time;
/// returns the lines before it, unstamped.
fn read_answer(user: &mut Client) -> Vec<String> {
    let prefix = format!("{BOT}: ");
    let mut lines: Vec<String> = user
        .read_until(|l| unstamp(l).is_some_and(|t| t.starts_with(&prefix)))
        .iter()
        .map(|l| unstamp(l).unwrap_or(l).to_string())
        .collect();
    let answer = lines.pop().unwrap();
    let time = &answer[prefix.len()..];
    assert!(
        is_clock(time),
        "the bot's answer {answer:?} is not HH:MM:SS"
    );
    lines
}

/// The pid of the server's child that serves `nick`: its title is
/// `mpchat: <nick> <address>`.
fn child_serving(server: &Server, nick: &str) -> i32 {
    let title = format!("mpchat: {nick} ");
    let mut found = None;
    wait_until(&format!("the child serving {nick}"), || {
        found = server.pids_named("mpchat-client").into_iter().find(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.starts_with(title.as_bytes()))
        });
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn the_example_bot_answers_and_catches_up_after_a_drop() {
    let workdir = Workdir::new();
    // The server refuses a bots file that others may read.
    let bots = workdir.path().join("bots");
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&bots)
        .and_then(|mut f| writeln!(f, "{BOT} {SECRET}"))
        .expect("write the bots file");
    let server = Server::start_in(workdir, &["--bots", bots.to_str().unwrap()]);

    let mut alice = server.login("alice");
    alice.send_line(&format!("/join {ROOM}"));
    alice.expect_stamped(&format!("* alice has joined {ROOM}."));
    // Declared after the server, so it is dropped (killed) first.
    let bot = BotProcess::start(&server);
    let bot_joined = format!("* {BOT} has joined {ROOM}.");
    alice.read_until(|l| unstamp(l) == Some(&bot_joined));

    // 1. A live !time: one answer, in the room.
    alice.send_line("!time");
    let before = read_answer(&mut alice);
    assert_eq!(before, ["alice: !time"]);
    let first = bot.next_answer();

    // 2. The bot's connection dies on the server's side: its child is
    // killed. The bot is stopped meanwhile, so that the next !time is
    // surely said while it is out of the chat, whatever the machine's
    // load: it cannot come back before it is let go on.
    let child = child_serving(&server, BOT);
    send_signal(bot.pid(), libc::SIGSTOP);
    send_signal(child, libc::SIGKILL);
    let bot_left = format!("* {BOT} has left the chat.");
    alice.read_until(|l| unstamp(l) == Some(&bot_left));
    alice.send_line("!time");
    alice.expect_stamped("alice: !time");
    send_signal(bot.pid(), libc::SIGCONT);

    // It logs in again with hello's `after`, which replays #lobby only
    // (a fresh login is in #lobby only); it joins the room again, reads
    // the !time it missed from the room's history, and answers it once.
    let before = read_answer(&mut alice);
    assert!(
        before.contains(&bot_joined),
        "the answer came before the bot was back in {ROOM}: {before:?}"
    );
    let missed = bot.next_answer();
    assert!(
        missed > first,
        "after the drop the bot answered seq {missed}, an event it had seen (up to seq {first})"
    );
    // Not twice: nothing more within a moment...
    bot.no_answer_within(Duration::from_secs(1));
    // ...and for certain: the bot reads its lines in order, so a second
    // answer to anything it caught up on would come before its answer to
    // a later !time.
    alice.send_line("!time");
    let before = read_answer(&mut alice);
    assert_eq!(before, ["alice: !time"]);
    let last = bot.next_answer();
    assert!(
        last > missed,
        "the bot answered seq {last} after seq {missed}"
    );
}
