//! Bots: the `--bots` file, the challenge and its every failure, one
//! session per (bot, device), and what people and `mpchat status` see of
//! bots (PROTOCOL.md, "Bots").

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bot::{bot_login, challenged, mac};
use common::json::JsonClient;
use common::{Server, Workdir, run_command, wait_until};
use serde_json::{Value, json};

const WEATHER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
const CLOCK: &str = "ffeeddccbbaa99887766554433221100ffeeddccbbaa99887766554433221100";

/// Writes the bots file, owner-only, into `workdir`.
fn bots_file(workdir: &Workdir, lines: &str) -> PathBuf {
    let path = workdir.path().join("bots");
    std::fs::write(&path, lines).expect("write the bots file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A server with the bot `weather` (and any `more` lines of the file).
fn server_with_bots(more: &str, options: &[&str]) -> (Server, PathBuf) {
    let workdir = Workdir::new();
    let path = bots_file(&workdir, &format!("weather {WEATHER}\n{more}"));
    let mut args = vec!["--bots", path.to_str().unwrap()];
    args.extend_from_slice(options);
    (Server::start_in(Arc::clone(&workdir), &args), path)
}

/// The one error every failed authentication gets, then the end.
fn expect_auth_failed(client: &mut JsonClient) {
    let error = client.expect_error("auth_failed");
    assert_eq!(error["message"], "Authentication failed.", "{error}");
    client.expect_closed();
}

#[test]
fn a_bots_file_others_may_read_stops_the_start_with_one_line() {
    let workdir = Workdir::new();
    let path = bots_file(&workdir, &format!("weather {WEATHER}\n"));
    for (mode, line) in [
        (0o640, None),
        (0o604, None),
        (0o600, Some("weather 0011\n")),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if let Some(line) = line {
            std::fs::write(&path, line).unwrap();
        }
        let mut command = Command::new(common::binary());
        command.current_dir(workdir.path()).args([
            "--bots",
            path.to_str().unwrap(),
            "--bind",
            "127.0.0.1",
            "0",
        ]);
        let ran = run_command(command, common::DEADLINE).expect("mpchat runs");
        assert!(!ran.status.success(), "mode {mode:o} started");
        let said: Vec<&str> = ran
            .stderr
            .lines()
            .filter(|l| l.starts_with("mpchat:"))
            .collect();
        assert_eq!(said.len(), 1, "one line: {}", ran.stderr);
        let expected = match line {
            None => "chmod 600",
            Some(_) => ":1: the secret must be at least 32 bytes",
        };
        assert!(said[0].contains(expected), "{}", said[0]);
    }
}

#[test]
fn a_bot_that_proves_its_secret_is_a_user_marked_as_a_bot() {
    let (server, _) = server_with_bots("", &[]);
    let mut alice = server.login("alice");
    let (mut bot, welcome) = bot_login(&server, "weather", WEATHER, "pi-kitchen");
    assert_eq!(welcome["nick"], "weather");
    let join = bot.next_of_type("event");
    assert_eq!(
        (&join["kind"], &join["bot"]),
        (&json!("join"), &json!(true))
    );
    alice.expect_stamped("* weather has joined the chat.");

    bot.send(&json!({"type": "say", "text": "sunny", "id": 1}));
    let said = bot.next_of_type("event");
    assert_eq!(
        (&said["text"], &said["bot"]),
        (&json!("sunny"), &json!(true))
    );
    alice.expect_stamped("weather: sunny");
    alice.send_line("/user");
    alice.expect("Users in chat: alice, weather (bot)");
    alice.send_line("hi");
    alice.expect_stamped("alice: hi");
    let from_person = bot.next_of_type("event");
    assert_eq!(from_person["from"], "alice");
    assert!(from_person.get("bot").is_none(), "{from_person}");
    bot.send(&json!({"type": "users", "id": 2}));
    let users = bot.next_of_type("users");
    assert_eq!(
        (&users["nicks"], &users["bots"]),
        (&json!(["alice", "weather"]), &json!(["weather"]))
    );

    // The name is the bot's: no person takes it, even while it is away.
    let mut person = JsonClient::connect(&server);
    person.send(&json!({"type": "hello", "nick": "Weather"}));
    person.expect_error("nick_taken");
    bot.send(&json!({"type": "quit"}));
    bot.next_of_type("bye");
    alice.expect_stamped("* weather has left the chat.");
    person.send(&json!({"type": "hello", "nick": "weather"}));
    let error = person.expect_error("nick_taken");
    assert!(
        error["message"].as_str().unwrap().contains("bot"),
        "{error}"
    );
}

#[test]
fn every_failed_proof_gets_the_same_error_and_closes() {
    let (server, _) = server_with_bots(&format!("clock {CLOCK}\n"), &[]);
    // A wrong MAC, another bot's secret, and an unknown bot.
    for (bot, secret) in [("weather", CLOCK), ("nobody", WEATHER)] {
        let (mut client, nonce) = challenged(&server, bot, "pi");
        client.send(&json!({"type": "auth", "mac": mac(secret, bot, "pi", &nonce)}));
        expect_auth_failed(&mut client);
    }
    let (mut client, _) = challenged(&server, "weather", "pi");
    client.send(&json!({"type": "auth", "mac": "not hex"}));
    expect_auth_failed(&mut client);

    // A MAC over another nonce (one seen on an earlier connection) does
    // not open a new one: each connection has its own nonce.
    let (mut first, nonce) = challenged(&server, "weather", "pi");
    let seen = mac(WEATHER, "weather", "pi", &nonce);
    first.send(&json!({"type": "auth", "mac": seen}));
    first.next_of_type("welcome");
    first.next_of_type("event");
    let (mut replay, _) = challenged(&server, "clock", "pi");
    replay.send(&json!({"type": "auth", "mac": mac(CLOCK, "clock", "pi", &nonce)}));
    expect_auth_failed(&mut replay);
    // And a nonce answers once: a second auth has no challenge to answer.
    first.send(&json!({"type": "auth", "mac": seen, "id": 9}));
    let error = first.expect_error("bad_request");
    assert_eq!(error["id"], 9);
    let log = server.log_text();
    assert!(
        log.contains("bot nobody (device pi) from 127.0.0.1")
            && log.contains("failures from 127.0.0.1 in the last minute"),
        "failures are logged with their count:\n{log}"
    );
    assert!(
        !log.contains(WEATHER) && !log.contains(CLOCK),
        "a secret in the log"
    );
}

#[test]
fn an_address_that_failed_five_times_fails_even_with_the_right_proof() {
    let (server, _) = server_with_bots("", &[]);
    for _ in 0..5 {
        let (mut client, _) = challenged(&server, "weather", "pi");
        client.send(&json!({"type": "auth", "mac": "00"}));
        expect_auth_failed(&mut client);
    }
    let (mut client, nonce) = challenged(&server, "weather", "pi");
    client.send(&json!({"type": "auth", "mac": mac(WEATHER, "weather", "pi", &nonce)}));
    expect_auth_failed(&mut client);
    server.wait_for_log("(TooManyFailures; 5 failures from 127.0.0.1 in the last minute)");
}

#[test]
fn a_nonce_answered_after_ten_seconds_fails() {
    let (server, _) = server_with_bots("", &[]);
    let (mut client, nonce) = challenged(&server, "weather", "pi");
    let waited = Instant::now();
    // The challenge's life is ten seconds; nothing else to wait for.
    while waited.elapsed() <= Duration::from_millis(10_300) {
        assert_eq!(
            client.next_within(Duration::from_millis(500)),
            None,
            "nothing comes while the challenge waits"
        );
    }
    client.send(&json!({"type": "auth", "mac": mac(WEATHER, "weather", "pi", &nonce)}));
    expect_auth_failed(&mut client);
}

#[test]
fn the_same_device_takes_its_session_over_and_another_device_is_refused() {
    let (server, _) = server_with_bots("", &[]);
    let mut alice = server.login("alice");
    let (mut pi, _) = bot_login(&server, "weather", WEATHER, "pi");
    alice.expect_stamped("* weather has joined the chat.");
    pi.send(&json!({"type": "join", "room": "#forecast"}));
    pi.next_of_type("current");

    // Another device: refused, closed, and the first session untouched.
    let (mut laptop, nonce) = challenged(&server, "weather", "laptop");
    laptop.send(&json!({"type": "auth", "mac": mac(WEATHER, "weather", "laptop", &nonce)}));
    laptop.expect_error("already_connected");
    laptop.expect_closed();
    pi.send(&json!({"type": "say", "room": "#lobby", "text": "still here", "id": 1}));
    pi.next_of_type("ok");
    alice.expect_stamped("weather: still here");

    // The same device again (the old connection not yet found dead):
    // the new one has the session, rooms and all; nobody sees it go.
    let (mut again, welcome) = bot_login(&server, "weather", WEATHER, "pi");
    assert_eq!(
        (&welcome["rooms"], &welcome["room"]),
        (&json!(["#lobby", "#forecast"]), &json!("#forecast"))
    );
    pi.expect_error("taken_over");
    pi.expect_closed();
    again.send(&json!({"type": "say", "room": "#lobby", "text": "moved", "id": 2}));
    again.next_of_type("ok");
    // alice's next line is the message: no leave, no join between.
    alice.expect_stamped("weather: moved");
}

#[test]
fn sighup_reads_the_bots_file_again() {
    let (server, path) = server_with_bots("", &[]);
    let (mut clock, nonce) = challenged(&server, "clock", "pi");
    clock.send(&json!({"type": "auth", "mac": mac(CLOCK, "clock", "pi", &nonce)}));
    expect_auth_failed(&mut clock);

    std::fs::write(&path, format!("weather {WEATHER}\nclock {CLOCK}\n")).unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("bots: 2 bots");
    bot_login(&server, "clock", CLOCK, "pi");

    // A file gone bad keeps the bots read before.
    std::fs::write(&path, "clock 00\n").unwrap();
    server.signal(libc::SIGHUP);
    server.wait_for_log("keeping the 2 bots read before");
    bot_login(&server, "weather", WEATHER, "pi");
}

#[test]
fn a_bot_with_its_own_rate_is_not_held_to_the_flood_limit() {
    // People: 2 lines at once, then 1 a second; clock: no limit.
    let options = ["--flood-burst", "2", "--flood-rate", "1"];
    let (server, _) = server_with_bots(&format!("clock {CLOCK} 0\n"), &options);
    let (mut weather, _) = bot_login(&server, "weather", WEATHER, "pi");
    let (mut clock, _) = bot_login(&server, "clock", CLOCK, "pi");
    for bot in [&mut weather, &mut clock] {
        for i in 0..6 {
            bot.send(&json!({"type": "say", "text": format!("tick {i}"), "id": i}));
        }
    }
    // The six answers of each, in order: weather's last four dropped,
    // each told.
    let answers = |bot: &mut JsonClient| -> Vec<String> {
        let mut seen = Vec::new();
        while seen.len() < 6 {
            let line = bot.next();
            match line["type"].as_str() {
                Some("ok") => seen.push("ok".to_string()),
                Some("error") => seen.push(line["code"].as_str().unwrap().to_string()),
                _ => {}
            }
        }
        seen
    };
    assert_eq!(
        answers(&mut weather),
        ["ok", "ok", "flood", "flood", "flood", "flood"]
    );
    assert_eq!(answers(&mut clock), vec!["ok"; 6]);
}

#[test]
fn status_shows_each_user_s_protocol_and_counts_what_programs_did() {
    let (server, _) = server_with_bots("", &[]);
    let _alice = server.login("alice");
    let (_program, welcome) = JsonClient::hello(&server, "prog");
    let (_bot, _) = bot_login(&server, "weather", WEATHER, "pi");
    let (mut failed, _) = challenged(&server, "weather", "x");
    failed.send(&json!({"type": "auth", "mac": "00"}));
    expect_auth_failed(&mut failed);
    // A takeover that resumes: one of each.
    let mut again = JsonClient::connect(&server);
    let token = welcome["session"].as_str().unwrap();
    again.send(&json!({"type": "hello", "session": token, "after": 0}));
    again.next_of_type("welcome");

    let report = status(&server);
    let protocol = |nick: &str| {
        let users = report["users"].as_array().unwrap();
        let user = users.iter().find(|u| u["nick"] == nick).unwrap();
        user["protocol"].as_str().unwrap().to_string()
    };
    assert_eq!(
        [protocol("alice"), protocol("prog"), protocol("weather")],
        ["line", "json", "bot"]
    );
    assert_eq!(
        report["totals"]["programs"],
        json!({"resumes": 1, "takeovers": 1, "auth_failures": 1})
    );
    let text = status_text(&server);
    assert!(
        text.contains(
            "programs: 1 on JSON, 1 bots; resumes 1, takeovers 1, failed authentications 1"
        ),
        "{text}"
    );
}

/// `mpchat status --json` of `server`, once the report shows every user.
fn status(server: &Server) -> Value {
    let mut report = Value::Null;
    wait_until("status lists the three users", || {
        report = serde_json::from_str(&status_output(server, true)).expect("JSON");
        report["users"].as_array().is_some_and(|u| u.len() == 3)
    });
    report
}

fn status_text(server: &Server) -> String {
    status_output(server, false)
}

fn status_output(server: &Server, json: bool) -> String {
    let mut command = Command::new(common::binary());
    command.args(["status", "--port", &server.port().to_string()]);
    if json {
        command.arg("--json");
    }
    let ran = run_command(command, common::DEADLINE).expect("mpchat status runs");
    assert!(ran.status.success(), "mpchat status: {}", ran.stderr);
    ran.stdout
}
