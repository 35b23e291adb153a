//! Several servers sharing their rooms through Redis (`--cluster`): each
//! runs as `mpchat` does alone, and a room's lines go through its Redis
//! stream, so users on every server see them once and in one order. Every
//! test has its own `redis-server`.

mod common;

use std::process::Command;

use common::redis::Redis;
use common::{Client, DEADLINE, Server, binary, run_command};

fn server(redis: &Redis, name: &str) -> Server {
    Server::start_with(&["--cluster", &redis.url(), "--server-name", name])
}

fn status_text(server: &Server) -> String {
    let mut command = Command::new(binary());
    command.args(["status", "--port", &server.port().to_string()]);
    run_command(command, DEADLINE)
        .expect("run mpchat status")
        .stdout
}

/// The cluster line of `mpchat status`.
fn status_line(server: &Server) -> String {
    let text = status_text(server);
    text.lines()
        .find(|l| l.starts_with("cluster: "))
        .unwrap_or_else(|| panic!("no cluster line in {text}"))
        .to_string()
}

/// Logs `nick` in and reads up to its own join: in a cluster that line
/// comes back through Redis, and others' lines may come before it.
fn log_in(server: &Server, nick: &str) -> Client {
    let mut client = server.connect();
    client.send_line(nick);
    client.expect("Welcome to mpchat! Enter your nickname:");
    client.expect(&format!("Hello, {nick}! Type /help for commands."));
    let own = format!("* {nick} has joined the chat.");
    client.read_until(|l| unstamped(l) == own);
    client
}

/// Servers `one` and `two`, both linked.
fn linked_pair(redis: &Redis) -> (Server, Server) {
    let (one, two) = (server(redis, "one"), server(redis, "two"));
    linked(&one);
    linked(&two);
    (one, two)
}

/// Waits until the server's hub has both connections to Redis up.
fn linked(server: &Server) {
    server.wait_for_log("cluster: the link to the other servers is up");
}

/// The chat lines `client` gets until it has seen `last`, in order.
fn chat_until(client: &mut Client, last: &str) -> Vec<String> {
    chat_until_all(client, &[last])
}

/// The chat lines `client` gets until it has seen each of `lasts`.
fn chat_until_all(client: &mut Client, lasts: &[&str]) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    while !lasts.iter().all(|l| seen.iter().any(|s| s == l)) {
        let line = client.read_line();
        // Joins and the like are this server's own; chat lines (and
        // actions) are the cluster's.
        if let Some((_, rest)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) {
            let text = rest
                .trim_start_matches("#lab ")
                .trim_start_matches("#lobby ");
            let news = ["has joined", "has left", "room owner"];
            if !news.iter().any(|n| text.contains(n)) {
                seen.push(text.to_string());
            }
        }
    }
    seen
}

#[test]
fn three_servers_share_two_rooms_in_one_order() {
    let redis = Redis::start();
    let servers = [
        server(&redis, "one"),
        server(&redis, "two"),
        server(&redis, "three"),
    ];
    servers.iter().for_each(linked);
    let mut users: Vec<Client> = ["ann", "bob", "cid"]
        .iter()
        .zip(&servers)
        .map(|(nick, s)| log_in(s, nick))
        .collect();
    // Everyone talks at once, in #lobby.
    for round in 0..20 {
        for (user, nick) in users.iter_mut().zip(["ann", "bob", "cid"]) {
            user.send_line(&format!("{nick} {round}"));
        }
    }
    for (user, nick) in users.iter_mut().zip(["ann", "bob", "cid"]) {
        user.send_line(&format!("{nick} end"));
    }
    let ends = ["ann: ann end", "bob: bob end", "cid: cid end"];
    let lobby: Vec<Vec<String>> = users.iter_mut().map(|u| chat_until_all(u, &ends)).collect();
    assert_eq!(lobby[0].len(), 63, "{:?}", lobby[0]);
    assert_eq!(lobby[0], lobby[1], "server two's order");
    assert_eq!(lobby[0], lobby[2], "server three's order");
    for nick in ["ann", "bob", "cid"] {
        let mine: Vec<&String> = lobby[0].iter().filter(|l| l.starts_with(nick)).collect();
        assert_eq!(mine.len(), 21, "{nick}'s lines");
    }
    // A second room: its lines reach its members only, in one order.
    for user in &mut users[..2] {
        user.send_line("/join #lab");
    }
    for (i, user) in users[..2].iter_mut().enumerate() {
        for n in 0..10 {
            user.send_line(&format!("lab {i} {n}"));
        }
    }
    users[2].send_line("lobby again");
    users[0].send_line("/me leaves the lab");
    users[1].send_line("/me leaves the lab");
    // Each room has its own order; how two rooms' lines interleave may
    // differ from server to server.
    let lab: Vec<Vec<String>> = users[..2]
        .iter_mut()
        .map(|u| {
            let ends = ["* ann leaves the lab", "* bob leaves the lab"];
            let seen = chat_until_all(u, &ends);
            seen.into_iter().filter(|l| l.contains("lab")).collect()
        })
        .collect();
    assert_eq!(lab[0], lab[1]);
    assert_eq!(
        lab[0].iter().filter(|l| l.contains(": lab ")).count(),
        20,
        "{:?}",
        lab[0]
    );
    let cid = chat_until(&mut users[2], "cid: lobby again");
    assert!(
        !cid.iter().any(|l| l.contains("lab")),
        "#lab reached cid: {cid:?}"
    );
}

/// A process's CPU time so far (user and system), in clock ticks
/// (10 ms each on Linux).
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("the hub's stat");
    // After the command's closing parenthesis: state is field 3, utime
    // and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

const DOWN: &str =
    "* The link to the other servers is down; you are talking to this server's users only.";
const BACK: &str = "* The link to the other servers is back.";

#[test]
fn without_redis_each_server_goes_on_with_its_own_users_and_says_so() {
    let mut redis = Redis::start();
    let (one, two) = linked_pair(&redis);
    let mut ann = log_in(&one, "ann");
    let mut cid = log_in(&one, "cid");
    let mut bob = log_in(&two, "bob");
    ann.send_line("before");
    for user in [&mut ann, &mut cid, &mut bob] {
        chat_until(user, "ann: before");
    }

    redis.stop();
    let stopped = std::time::Instant::now();
    // Told once, on both servers.
    for user in [&mut ann, &mut cid, &mut bob] {
        user.read_until(|l| l == DOWN);
    }
    ann.send_line("while apart");
    chat_until(&mut cid, "ann: while apart");
    assert_eq!(
        status_line(&one),
        "cluster: this server is one; link to the others down: serving this server's users alone"
    );
    // Waiting to reconnect, the hub sleeps: over a second, it uses a
    // fraction of what a loop that spins would (a whole core), also once
    // the times it would have renewed leases and said it was there (every
    // 2 s) have gone by.
    common::wait_until("the presence's time to pass", || {
        stopped.elapsed().as_millis() >= 2500
    });
    let hub = one.pids_named("mpchat-hub")[0];
    let (cpu_before, since) = (cpu_ticks(hub), std::time::Instant::now());
    common::wait_until("a second to pass", || since.elapsed().as_secs() >= 1);
    let used = cpu_ticks(hub) - cpu_before;
    assert!(
        used * 4 < since.elapsed().as_millis() as u64 / 10,
        "the hub used {used} ticks in {:?}",
        since.elapsed()
    );

    redis.start_again();
    let mut since = Vec::new();
    for user in [&mut ann, &mut cid, &mut bob] {
        let lines = user.read_until(|l| l == BACK);
        assert!(!lines.iter().any(|l| l == DOWN), "told twice: {lines:?}");
        since.push(lines);
    }
    assert_eq!(
        status_line(&two),
        "cluster: this server is two; link to the others up"
    );
    bob.send_line("after");
    for user in [&mut ann, &mut cid] {
        chat_until(user, "bob: after");
    }
    let seen_by_bob = chat_until(&mut bob, "bob: after");
    assert_eq!(seen_by_bob, ["bob: after"], "{seen_by_bob:?} {since:?}");
    // The new Redis is empty (nothing is saved): both servers noticed,
    // and read its streams from their start, without a line twice.
    for server in [&one, &two] {
        assert!(
            server.log_text().contains("Redis lost its data"),
            "{}",
            server.log_text()
        );
    }
    ann.send_line("last");
    assert_eq!(chat_until(&mut bob, "ann: last"), ["ann: last"]);
}

#[test]
fn a_server_whose_redis_is_not_there_serves_its_own_users() {
    let mut redis = Redis::start();
    redis.stop();
    let one = server(&redis, "one");
    let mut ann = log_in(&one, "ann");
    let mut bob = log_in(&one, "bob");
    ann.send_line("anyone?");
    let seen = chat_until(&mut bob, "ann: anyone?");
    assert_eq!(seen, ["ann: anyone?"]);
    one.wait_for_log("cannot read from Redis");
    // When Redis comes, the server joins the cluster without a word.
    redis.start_again();
    linked(&one);
    let two = server(&redis, "two");
    linked(&two);
    let mut cid = log_in(&two, "cid");
    ann.send_line("now with two");
    assert_eq!(
        chat_until(&mut cid, "ann: now with two"),
        ["ann: now with two"]
    );
}

#[test]
fn a_nickname_is_one_user_s_across_the_servers() {
    let redis = Redis::start();
    let (one, two) = linked_pair(&redis);
    let mut ann = log_in(&one, "ann");
    // Each server's status names the others, with their users.
    common::wait_until("server two's status to show server one's user", || {
        status_text(&two).contains("other servers: one (1 user)")
    });
    // Taken on server one: refused on server two, with the usual answer.
    let mut other = two.connect();
    other.read_line();
    other.send_line("ANN");
    other.expect("Nickname \"ANN\" is already in use. Enter your nickname:");
    // Two people asking for the same new name at once, one on each
    // server: exactly one gets it.
    let mut askers: Vec<Client> = [&one, &two].iter().map(|s| s.connect()).collect();
    for asker in &mut askers {
        asker.read_line();
    }
    for asker in &mut askers {
        asker.send_line("zoe");
    }
    let answers: Vec<String> = askers.iter_mut().map(Client::read_line).collect();
    let won = answers
        .iter()
        .filter(|a| a.starts_with("Hello, zoe!"))
        .count();
    assert_eq!(won, 1, "{answers:?}");
    assert_eq!(
        answers
            .iter()
            .filter(|a| a.contains("already in use"))
            .count(),
        1,
        "{answers:?}"
    );
    // Free again once its holder leaves.
    ann.send_line("/quit");
    ann.read_until(|l| l.starts_with("Bye"));
    log_in_once_free(&mut other, "ann");
    // A rename takes the new name's lease first: a name held on the
    // other server is refused, and what was typed after it waits for it.
    let mut watcher = log_in(&one, "wes");
    other.send_line("/nick wes");
    other.send_line("after the refusal");
    let seen = other.read_until(|l| l.ends_with("ann: after the refusal"));
    assert!(
        seen.iter()
            .any(|l| l == "Nickname \"wes\" is already in use."),
        "{seen:?}"
    );
    // A free one: taken, told everywhere, and the old name is free.
    other.send_line("/nick annie");
    other.send_line("after the rename");
    other.read_until(|l| l.ends_with("annie: after the rename"));
    watcher
        .read_until(|l| unstamped(l) == "* User \"ann\" has changed their nickname to \"annie\".");
    watcher.send_line("/whisper annie found you");
    other.read_until(|l| unstamped(l) == "[Whisper from wes] found you");
    let mut again = one.connect();
    again.read_line();
    again.send_line("annie");
    again.expect("Nickname \"annie\" is already in use. Enter your nickname:");
    log_in_once_free(&mut again, "ann");
}

/// Asks for `nick` until it is given: a server gives a name back a moment
/// after its user left (its hub tells Redis after the turn).
fn log_in_once_free(client: &mut Client, nick: &str) {
    let refused = format!("Nickname \"{nick}\" is already in use. Enter your nickname:");
    let deadline = std::time::Instant::now() + DEADLINE;
    loop {
        client.send_line(nick);
        let answer = client.read_line();
        if answer.starts_with(&format!("Hello, {nick}!")) {
            return;
        }
        assert_eq!(answer, refused);
        assert!(std::time::Instant::now() < deadline, "{nick} never free");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// The line after the stamp.
fn unstamped(line: &str) -> &str {
    common::unstamp(line).unwrap_or(line)
}

#[test]
fn users_on_other_servers_are_in_the_rooms_and_can_be_whispered_to_and_kicked() {
    let redis = Redis::start();
    let (one, two) = linked_pair(&redis);
    let mut ann = log_in(&one, "ann");
    let mut bob = log_in(&two, "bob");
    ann.read_until(|l| unstamped(l) == "* bob has joined the chat.");
    ann.send_line("/users");
    ann.read_until(|l| l == "Users in chat: ann, bob");
    // A room made on one server, joined from the other.
    ann.send_line("/join #lab");
    ann.read_until(|l| unstamped(l) == "* ann has joined #lab.");
    // Server two hears of it a moment after server one tells ann.
    common::wait_until("server two to know #lab and its user", || {
        let text = status_text(&two);
        let mut rows = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>());
        rows.any(|row| row.starts_with(&["#lab", "1"]))
    });
    bob.send_line("/rooms");
    bob.read_until(|l| l.contains("#lab") && l.contains("1 user"));
    bob.send_line("/join #lab");
    ann.read_until(|l| unstamped(l) == "* bob has joined #lab.");
    // ann came first: she owns #lab on both servers, and her topic is
    // the room's everywhere.
    bob.send_line("/topic Lab two");
    bob.read_until(|l| l == "Only the owner of #lab can set its topic.");
    ann.send_line("/topic Lab one");
    for user in [&mut ann, &mut bob] {
        user.read_until(|l| unstamped(l) == "* ann set the topic of #lab: Lab one");
    }
    bob.send_line("/topic");
    bob.expect("Topic of #lab: Lab one");
    ann.send_line("/users");
    ann.expect("Users in #lab: ann, bob");
    // Whispers both ways.
    ann.send_line("/whisper BOB psst");
    ann.read_until(|l| unstamped(l) == "[Whisper to bob] psst");
    bob.read_until(|l| unstamped(l) == "[Whisper from ann] psst");
    bob.send_line("/w ann hi back");
    ann.read_until(|l| unstamped(l) == "[Whisper from bob] hi back");
    // ann leaves #lab: bob, on the other server, owns it now.
    ann.send_line("/part #lab");
    bob.read_until(|l| unstamped(l) == "* bob is now the owner of #lab.");
    bob.send_line("/topic Lab two");
    bob.read_until(|l| unstamped(l) == "* bob set the topic of #lab: Lab two");
    // ann owns the lobby on her server; her kick is carried out on bob's.
    ann.send_line("/join #lobby");
    ann.send_line("/kick bob");
    bob.read_until(|l| l == "You have been kicked from the chat.");
    bob.expect_closed();
    ann.read_until(|l| unstamped(l) == "* bob was kicked by ann.");
    ann.send_line("/users");
    ann.read_until(|l| l == "Users in chat: ann");
    ann.send_line("/whisper bob are you there");
    ann.read_until(|l| l == "User 'bob' not found.");
}

#[test]
fn a_server_killed_without_a_word_frees_its_nicknames_within_the_lease() {
    let redis = Redis::start();
    let (one, two) = linked_pair(&redis);
    let mut dan = log_in(&two, "dan");
    let _ann = log_in(&one, "ann");
    dan.read_until(|l| unstamped(l) == "* ann has joined the chat.");
    // The whole of server one, parent, hub and children, at once.
    common::send_signal(-one.pid(), libc::SIGKILL);
    let killed = std::time::Instant::now();
    // Asked again every second: refused while the lease lasts, then given.
    let mut tries = 0;
    loop {
        tries += 1;
        assert!(
            killed.elapsed() < std::time::Duration::from_secs(45),
            "ann still taken 45 s after her server died"
        );
        let mut asker = two.connect();
        asker.read_line();
        asker.send_line("ann");
        if asker.read_line().starts_with("Hello, ann!") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
    let freed = killed.elapsed();
    assert!(tries > 1, "ann was free at once: the lease was not held");
    assert!(
        freed >= std::time::Duration::from_secs(15),
        "freed {freed:?} after the kill: the lease is 30 s, renewed every 10"
    );
    // And she left the rooms of the server that is still there.
    dan.read_until(|l| unstamped(l) == "* ann has left the chat.");
    assert!(killed.elapsed() < std::time::Duration::from_secs(45));
}

#[test]
fn redis_s_password_can_come_from_a_file_and_a_wrong_one_is_said() {
    let redis = Redis::start_with_password("s3cret-pass");
    let files = common::Workdir::new();
    let write = |name: &str, text: &str| {
        let path = files.path().join(name);
        std::fs::write(&path, text).expect("write the password file");
        path.to_str().expect("a UTF-8 path").to_string()
    };
    let (good, wrong) = (write("good", "s3cret-pass\n"), write("wrong", "guess\n"));
    let with = |name: &str, file: &str| {
        Server::start_with(&[
            "--cluster",
            &redis.url(),
            "--server-name",
            name,
            "--cluster-password-file",
            file,
        ])
    };
    let one = with("one", &good);
    linked(&one);
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", one.pid())).expect("cmdline");
    assert!(
        !String::from_utf8_lossy(&cmdline).contains("s3cret"),
        "the password shows in ps"
    );
    // A wrong password: the server serves its users alone and says why.
    let two = with("two", &wrong);
    two.wait_for_log("cluster: cannot read from Redis");
    assert!(
        two.log_text().contains("Password authentication failed"),
        "{}",
        two.log_text()
    );
    log_in(&two, "ann");
    // A file that is not there: one line, and no server.
    let mut command = Command::new(binary());
    command.args(["0", "--cluster", &redis.url(), "--cluster-password-file"]);
    command.arg(files.path().join("missing"));
    let ran = run_command(command, DEADLINE).expect("run mpchat");
    assert!(!ran.status.success());
    assert!(ran.stderr.contains("cannot read"), "{}", ran.stderr);
    assert!(
        ran.stderr.contains("--cluster-password-file"),
        "{}",
        ran.stderr
    );
}

/// The `chat` events `client` gets until the one whose text is `last`,
/// each as (seq, text); other events are skipped.
fn json_chat_until_all(
    client: &mut common::json::JsonClient,
    lasts: &[&str],
) -> Vec<(u64, String)> {
    let mut seen: Vec<(u64, String)> = Vec::new();
    while !lasts.iter().all(|l| seen.iter().any(|(_, s)| s == l)) {
        let event = client.next();
        if event["type"] == "event" && event["kind"] == "chat" {
            let seq = event["seq"].as_u64().expect("a numeric seq");
            let text = event["text"].as_str().expect("a text").to_string();
            seen.push((seq, text));
        }
    }
    seen
}

#[test]
fn a_json_client_resumes_on_another_server_from_the_seq_it_had() {
    use common::json::JsonClient;
    let redis = Redis::start();
    let (one, two) = linked_pair(&redis);
    let mut bob = log_in(&one, "bob");
    let mut cid = log_in(&two, "cid");
    let (mut ann, _) = JsonClient::hello(&one, "ann");
    for n in 1..=5 {
        bob.send_line(&format!("m{n}"));
    }
    let before = json_chat_until_all(&mut ann, &["m5"]);
    assert_eq!(before.len(), 5, "{before:?}");
    let last_seq = before[4].0;
    // Gone; the room talks on, on both servers.
    drop(ann);
    for n in 6..=8 {
        bob.send_line(&format!("m{n}"));
    }
    cid.send_line("c1");
    bob.send_line("m9");
    chat_until_all(&mut cid, &["bob: m9", "cid: c1"]);
    // Back on the other server, from the seq it had: what it missed,
    // once, in the room's order, and nothing it had.
    let mut again = JsonClient::connect(&two);
    again.send(&serde_json::json!({"type": "hello", "nick": "ann2", "after": last_seq}));
    // Sent before the login is through (its nickname's lease is asked
    // for first): carried out after it, not lost.
    again.send(&serde_json::json!({"type": "say", "text": "back"}));
    let welcome = again.next();
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    // c1 and m9 go through two servers' writers, so either may be first.
    let missed = json_chat_until_all(&mut again, &["m9", "c1"]);
    let texts: Vec<&str> = missed.iter().map(|(_, t)| t.as_str()).collect();
    let on_one: Vec<&str> = texts.iter().copied().filter(|t| *t != "c1").collect();
    assert_eq!(on_one, ["m6", "m7", "m8", "m9"], "{missed:?}");
    assert!(texts.contains(&"c1"), "{missed:?}");
    assert!(missed.iter().all(|(seq, _)| *seq > last_seq), "{missed:?}");
    assert!(missed.windows(2).all(|w| w[0].0 < w[1].0), "{missed:?}");
    chat_until(&mut cid, "ann2: back");
}

const WEATHER: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

/// A server of the cluster that knows the bot `weather`.
fn server_with_bot(redis: &Redis, name: &str, bots: &std::path::Path) -> Server {
    let bots = bots.to_str().expect("a UTF-8 path");
    Server::start_with(&[
        "--cluster",
        &redis.url(),
        "--server-name",
        name,
        "--bots",
        bots,
    ])
}

/// `weather` answers its challenge on `device`: the welcome, or the
/// error it gets.
fn bot_try(server: &Server, device: &str) -> (common::json::JsonClient, serde_json::Value) {
    use common::bot::{challenged, mac};
    let (mut client, nonce) = challenged(server, "weather", device);
    let auth = mac(WEATHER, "weather", device, &nonce);
    client.send(&serde_json::json!({"type": "auth", "mac": auth}));
    let answer = client.next();
    (client, answer)
}

#[test]
fn a_bot_that_comes_back_on_another_server_ends_its_session_on_the_first() {
    use std::os::unix::fs::PermissionsExt;
    let redis = Redis::start();
    let files = common::Workdir::new();
    let bots = files.path().join("bots");
    std::fs::write(&bots, format!("weather {WEATHER}\n")).expect("write the bots file");
    std::fs::set_permissions(&bots, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (one, two) = (
        server_with_bot(&redis, "one", &bots),
        server_with_bot(&redis, "two", &bots),
    );
    linked(&one);
    linked(&two);
    let mut wes = log_in(&two, "wes");
    let (mut first, welcome) = bot_try(&one, "pi");
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    wes.read_until(|l| unstamped(l) == "* weather has joined the chat.");
    // Another device, on the other server: refused, and nothing changes.
    let (_, refused) = bot_try(&two, "laptop");
    assert_eq!(refused["code"], "already_connected", "{refused}");
    // The same device on the other server (its old connection lingering):
    // refused once while the first server ends the old session, then in.
    let (_, answer) = bot_try(&two, "pi");
    assert_eq!(answer["code"], "already_connected", "{answer}");
    let ended = first.next_of_type("error");
    assert_eq!(ended["code"], "taken_over", "{ended}");
    let deadline = std::time::Instant::now() + DEADLINE;
    let mut second = loop {
        let (client, answer) = bot_try(&two, "pi");
        if answer["type"] == "welcome" {
            break client;
        }
        assert_eq!(answer["code"], "already_connected", "{answer}");
        assert!(std::time::Instant::now() < deadline, "never let in on two");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    wes.read_until(|l| unstamped(l) == "* weather has left the chat.");
    wes.read_until(|l| unstamped(l) == "* weather has joined the chat.");
    second.send(&serde_json::json!({"type": "say", "text": "sunny"}));
    wes.read_until(|l| unstamped(l) == "weather: sunny");
}
