mod common;
use common::*;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------
// Helpers local to this file.
// ---------------------------------------------------------------------------

const WELCOME: &str = "Welcome to mpchat! Enter your nickname:";

/// The `/help` reply, line for line (render::HELP).
const HELP: &[&str] = &[
    "Commands:",
    "/whisper <nick> <message> (or /w) - private message to one user",
    "/user [#room] (or /users) - list the users in the chat or in a room",
    "/rename <newnick> (or /nick) - change your nickname",
    "/kick <nick> - disconnect a user, or remove them from a room (room owner only)",
    "/join #room - join a room (creating it) and talk there",
    "/part [#room] - leave a room",
    "/rooms - list the rooms",
    "/topic [text] - show or set the room's topic (owner)",
    "/schedule HH:MM <message> or /schedule +SECONDS <message> - send later",
    "/schedule list, /schedule cancel N - your pending scheduled messages",
    "/me <action> - describe what you do",
    "/history [N] - the last N public lines (default 50, at most 200)",
    "/help - this list",
    "/quit (or END) - leave the chat",
];

const USAGE_SCHEDULE: &str = "Usage: /schedule HH:MM <message> or /schedule +SECONDS <message>";

fn not_allowed(nick: &str) -> String {
    format!("Nickname \"{nick}\" is not allowed: use letters, digits, '_', '-' or '.'.")
}

fn too_long(nick: &str) -> String {
    format!("Nickname \"{nick}\" is too long (at most 16 characters).")
}

/// A refused nickname at the prompt: the reason and the prompt, one line.
fn reprompt(reason: &str) -> String {
    format!("{reason} Enter your nickname:")
}

/// The ordering trick: `speaker` says `text` publicly, and the very next
/// line each of `speaker` and `others` reads must be that chat line. Proves
/// that nothing else was delivered to them before it.
fn next_is_chat(speaker: &mut Client, speaker_nick: &str, others: &mut [&mut Client], text: &str) {
    speaker.send_line(text);
    let expected = format!("{speaker_nick}: {text}");
    speaker.expect_stamped(&expected);
    for other in others.iter_mut() {
        other.expect_stamped(&expected);
    }
}

/// Local broken-down time, through the C library like the server does.
fn local_tm(t: SystemTime) -> libc::tm {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs() as libc::time_t;
    // SAFETY: an all-zero tm is a valid value; localtime_r writes only it.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    tm
}

fn hhmmss(t: SystemTime) -> String {
    let tm = local_tm(t);
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

fn same_day(a: SystemTime, b: SystemTime) -> bool {
    let (a, b) = (local_tm(a), local_tm(b));
    (a.tm_year, a.tm_yday) == (b.tm_year, b.tm_yday)
}

/// `HH:MM:SS`, all digits.
fn is_hhmmss(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b[2] == b':'
        && b[5] == b':'
        && [0, 1, 3, 4, 6, 7].iter().all(|&i| b[i].is_ascii_digit())
}

/// The `when` of a `Message scheduled for WHEN.` line, checked to be
/// `HH:MM:SS` or `tomorrow HH:MM:SS`.
fn confirmation_when(line: &str) -> String {
    let when = line
        .strip_prefix("Message scheduled for ")
        .and_then(|rest| rest.strip_suffix('.'))
        .unwrap_or_else(|| panic!("not a schedule confirmation: {line:?}"));
    let time = when.strip_prefix("tomorrow ").unwrap_or(when);
    assert!(is_hhmmss(time), "bad time in confirmation {line:?}");
    when.to_string()
}

/// Sends `/schedule +SECONDS text` and checks the confirmation names the
/// due time the server must have computed: its clock read somewhere between
/// our send and our receipt, plus `seconds`. Returns the `when` shown.
fn schedule_in(client: &mut Client, seconds: u64, text: &str) -> String {
    let before = SystemTime::now();
    client.send_line(&format!("/schedule +{seconds} {text}"));
    let line = client.read_line();
    let after = SystemTime::now();
    let when = confirmation_when(&line);
    let delay = Duration::from_secs(seconds);
    let first = before.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let last = after.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let mut allowed = Vec::new();
    for s in first..=last {
        let due = UNIX_EPOCH + Duration::from_secs(s) + delay;
        for now in [before, after] {
            let prefix = if same_day(due, now) { "" } else { "tomorrow " };
            allowed.push(format!("{prefix}{}", hhmmss(due)));
        }
    }
    assert!(
        allowed.contains(&when),
        "confirmation {line:?} for +{seconds}; expected one of {allowed:?}"
    );
    when
}

/// Reads the welcome prompt of a fresh connection.
fn connect_prompted(server: &Server) -> Client {
    let mut client = server.connect();
    client.expect(WELCOME);
    client
}

// ---------------------------------------------------------------------------
// 1. Connect and register.
// ---------------------------------------------------------------------------

#[test]
fn welcome_hello_and_join_announced_to_everyone() {
    let server = Server::start();
    let mut alice = server.connect();
    alice.expect(WELCOME);
    alice.send_line("alice");
    alice.expect("Hello, alice! Type /help for commands.");
    alice.expect_stamped("* alice has joined the chat.");

    let mut bob = server.connect();
    bob.expect(WELCOME);
    bob.send_line("bob");
    bob.expect("Hello, bob! Type /help for commands.");
    bob.expect_stamped("* bob has joined the chat.");
    alice.expect_stamped("* bob has joined the chat.");

    next_is_chat(&mut bob, "bob", &mut [&mut alice], "hi all");
}

// ---------------------------------------------------------------------------
// 2. Nickname rules.
// ---------------------------------------------------------------------------

#[test]
fn valid_nicknames_are_accepted() {
    let server = Server::start();
    let sixteen_accented = "é".repeat(16); // 16 chars, 32 bytes
    let names = [
        "José",
        "Ωmega",
        "x",
        "a.b-c_9",
        "sixteen_chars_ok",
        sixteen_accented.as_str(),
    ];
    let mut clients: Vec<Client> = Vec::new();
    for name in names {
        let client = server.login(name);
        for earlier in clients.iter_mut() {
            earlier.expect_stamped(&format!("* {name} has joined the chat."));
        }
        clients.push(client);
    }
    clients[0].send_line("/users");
    clients[0].expect(&format!("Users in chat: {}", names.join(", ")));
}

#[test]
fn invalid_nicknames_are_refused_with_reason_and_prompt() {
    let server = Server::start();
    // Four bad tries each, then a good name still works.
    let mut c = connect_prompted(&server);
    for bad in ["a b", "/alice", "*bob", "[x]"] {
        c.send_line(bad);
        c.expect(&reprompt(&not_allowed(bad)));
    }
    c.send_line("carol");
    c.expect("Hello, carol! Type /help for commands.");
    c.expect_stamped("* carol has joined the chat.");

    // Length counts characters, not bytes: 16 are fine (see above), 17 not.
    let seventeen_accented = "é".repeat(17);
    let mut d = connect_prompted(&server);
    for (bad, reason) in [
        ("al!ce", not_allowed("al!ce")),
        ("seventeen_chars_x", too_long("seventeen_chars_x")),
        (seventeen_accented.as_str(), too_long(&seventeen_accented)),
        ("smile😀", not_allowed("smile😀")),
    ] {
        d.send_line(bad);
        d.expect(&reprompt(&reason));
    }
    d.send_line("dave");
    d.expect("Hello, dave! Type /help for commands.");
    d.expect_stamped("* dave has joined the chat.");
    c.expect_stamped("* dave has joined the chat.");
}

#[test]
fn five_invalid_nicknames_end_the_session() {
    let server = Server::start();
    let mut c = connect_prompted(&server);
    for bad in ["a b", "/x", "*y", "[z]"] {
        c.send_line(bad);
        c.expect(&reprompt(&not_allowed(bad)));
    }
    c.send_line("way_too_long_nickname");
    c.expect(&too_long("way_too_long_nickname"));
    c.expect("Too many invalid nicknames; goodbye.");
    c.expect_closed();
}

#[test]
fn blank_lines_at_the_prompt_are_not_tries() {
    let server = Server::start();
    let mut c = connect_prompted(&server);
    for bad in ["a b", "/x", "*y", "[z]"] {
        c.send_line(bad);
        c.expect(&reprompt(&not_allowed(bad)));
    }
    // Four tries used; five blank lines would end the session if they
    // counted, and none of them gets any reply.
    c.send_bytes(b"\n\n   \n\t\n\r\n");
    c.send_line("dave");
    c.expect("Hello, dave! Type /help for commands.");
    c.expect_stamped("* dave has joined the chat.");
}

// ---------------------------------------------------------------------------
// 3. Unique nicknames, without regard to case.
// ---------------------------------------------------------------------------

#[test]
fn nickname_in_use_regardless_of_case() {
    let server = Server::start();
    let mut holder = server.login("Alice");
    let mut c = connect_prompted(&server);
    c.send_line("alice");
    c.expect("Nickname \"alice\" is already in use. Enter your nickname:");
    c.send_line("ALICE");
    c.expect("Nickname \"ALICE\" is already in use. Enter your nickname:");
    // The holder noticed nothing: the next thing it reads is its own chat.
    next_is_chat(&mut holder, "Alice", &mut [], "still me");
    // The refused client is still at the prompt and can pick another name.
    c.send_line("bob");
    c.expect("Hello, bob! Type /help for commands.");
    c.expect_stamped("* bob has joined the chat.");
    holder.expect_stamped("* bob has joined the chat.");
    next_is_chat(&mut holder, "Alice", &mut [&mut c], "welcome bob");
    c.send_line("/users");
    c.expect("Users in chat: Alice, bob");
}

// ---------------------------------------------------------------------------
// 4. Login timeout.
// ---------------------------------------------------------------------------

#[test]
fn login_times_out() {
    let server = Server::start_with(&["--login-timeout", "1"]);
    let start = Instant::now();
    let mut c = server.connect();
    c.expect(WELCOME);
    c.expect("Login timed out.");
    c.expect_closed();
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "timed out after only {:?}",
        start.elapsed()
    );
    // The server is still fine for others.
    let _alice = server.login("alice");
}

#[test]
fn login_deadline_counts_from_connect_despite_bad_names() {
    let server = Server::start_with(&["--login-timeout", "3"]);
    let start = Instant::now();
    let mut c = server.connect();
    c.expect(WELCOME);
    // Keep the client busy with bad names (pacing only; correctness does
    // not depend on these waits). If each try restarted the clock, the
    // timeout would come 3 s after the last try, at 5 s or later; the last
    // try leaves a second before the real deadline.
    for i in 1..=4u32 {
        let at = start + Duration::from_millis(500 * u64::from(i));
        if let Some(wait) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        c.send_line("bad name");
        c.expect(&reprompt(&not_allowed("bad name")));
    }
    c.expect("Login timed out.");
    c.expect_closed();
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_secs(3), "too early: {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(4600),
        "deadline not counted from connect: timed out after {elapsed:?}"
    );
}

#[test]
fn an_idle_user_is_disconnected_and_talking_keeps_a_user() {
    let server = Server::start_with(&["--idle-timeout", "3"]);
    // Before the nicknames are sent: each user's clock starts after this.
    let logged_in = Instant::now();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    // Bob says something after a second (pacing only), which moves his
    // deadline; Alice says nothing.
    std::thread::sleep(Duration::from_secs(1));
    bob.send_line("still here");
    bob.expect_stamped("bob: still here");
    alice.expect_stamped("bob: still here");
    alice.expect("Disconnected: idle for too long.");
    alice.expect_closed();
    let alice_cut = logged_in.elapsed();
    assert!(
        alice_cut >= Duration::from_secs(3),
        "too early: {alice_cut:?}"
    );
    bob.expect_stamped("* alice has left the chat.");
    bob.expect_stamped("* bob is now the room owner.");
    bob.expect("Disconnected: idle for too long.");
    bob.expect_closed();
    let bob_cut = logged_in.elapsed();
    assert!(
        bob_cut >= Duration::from_secs(4),
        "bob's line did not count: cut after {bob_cut:?}"
    );
}

#[test]
fn client_sockets_use_tcp_keepalive() {
    let server = Server::start();
    let mut c = server.connect();
    c.expect(WELCOME);
    let client_port = c.stream().local_addr().unwrap().port();
    // The server's end of this connection in /proc/net/tcp: its timer
    // column reads 02 (keepalive) and the time left, in clock ticks.
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let port_of = |field: &str| u16::from_str_radix(field.rsplit(':').next().unwrap(), 16).unwrap();
    let row = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| port_of(f[1]) == server.port() && port_of(f[2]) == client_port)
        .expect("the server's socket for this client");
    let (timer, left) = row[5].split_once(':').expect("tr:tm->when");
    assert_eq!(timer, "02", "no keepalive timer: {row:?}");
    let ticks = u64::from_str_radix(left, 16).unwrap();
    let hz = 100; // USER_HZ, what /proc reports in
    assert!(
        (60 * hz..=120 * hz).contains(&ticks),
        "keepalive due in {} s, not within 120 s",
        ticks / hz
    );
}

// ---------------------------------------------------------------------------
// 5. Chat lines.
// ---------------------------------------------------------------------------

#[test]
fn chat_reaches_every_registered_user_but_not_unregistered() {
    let server = Server::start();
    let mut lurker = connect_prompted(&server);
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("hello everyone");
    alice.expect_stamped("alice: hello everyone");
    bob.expect_stamped("alice: hello everyone");
    bob.send_line("hi alice");
    bob.expect_stamped("bob: hi alice");
    alice.expect_stamped("bob: hi alice");

    // The unregistered connection got none of it: the first thing after
    // the welcome is its own hello.
    lurker.send_line("carol");
    lurker.expect("Hello, carol! Type /help for commands.");
    lurker.expect_stamped("* carol has joined the chat.");
    alice.expect_stamped("* carol has joined the chat.");
    bob.expect_stamped("* carol has joined the chat.");
}

// ---------------------------------------------------------------------------
// 6. Whisper.
// ---------------------------------------------------------------------------

#[test]
fn whisper_reaches_only_the_target() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);

    alice.send_line("/whisper bob psst, a secret");
    alice.expect_stamped("[Whisper to bob] psst, a secret");
    bob.expect_stamped("[Whisper from alice] psst, a secret");

    bob.send_line("/w alice got it");
    bob.expect_stamped("[Whisper to alice] got it");
    alice.expect_stamped("[Whisper from bob] got it");

    // Carol saw neither whisper; alice and bob got nothing more either.
    next_is_chat(
        &mut carol,
        "carol",
        &mut [&mut alice, &mut bob],
        "what are you two up to?",
    );
}

#[test]
fn whisper_errors() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("/whisper zed hello");
    alice.expect("User 'zed' not found.");
    alice.send_line("/w zed hello");
    alice.expect("User 'zed' not found.");
    for bad in ["/whisper bob", "/whisper", "/w bob", "/w"] {
        alice.send_line(bad);
        alice.expect("Usage: /whisper <nick> <message>");
    }
    // Bob got nothing from any of that.
    next_is_chat(&mut alice, "alice", &mut [&mut bob], "never mind");
}

// ---------------------------------------------------------------------------
// 7. User list.
// ---------------------------------------------------------------------------

#[test]
fn users_lists_in_join_order() {
    let server = Server::start();
    // Not alphabetical, so join order is what is checked.
    let [mut zoe, mut alice, mut mike] = server.login_all(["zoe", "alice", "mike"]);

    zoe.send_line("/users");
    zoe.expect("Users in chat: zoe, alice, mike");
    mike.send_line("/user");
    mike.expect("Users in chat: zoe, alice, mike");
    // Only the asker got the list.
    next_is_chat(&mut alice, "alice", &mut [&mut zoe, &mut mike], "ok");
}

// ---------------------------------------------------------------------------
// 8. Rename.
// ---------------------------------------------------------------------------

#[test]
fn rename_announced_and_old_name_freed() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("/rename alicia");
    let line = "* User \"alice\" has changed their nickname to \"alicia\".";
    alice.expect_stamped(line);
    bob.expect_stamped(line);

    bob.send_line("/nick robert");
    let line = "* User \"bob\" has changed their nickname to \"robert\".";
    bob.expect_stamped(line);
    alice.expect_stamped(line);

    // The old names are free for new logins.
    let mut new_alice = server.login("alice");
    alice.expect_stamped("* alice has joined the chat.");
    bob.expect_stamped("* alice has joined the chat.");
    let mut new_bob = server.login("bob");
    for c in [&mut alice, &mut bob, &mut new_alice] {
        c.expect_stamped("* bob has joined the chat.");
    }
    new_bob.send_line("/users");
    new_bob.expect("Users in chat: alicia, robert, alice, bob");

    // The new name is used from now on, by the room and by the session.
    next_is_chat(
        &mut alice,
        "alicia",
        &mut [&mut bob, &mut new_alice, &mut new_bob],
        "new name",
    );
    alice.send_line("/quit");
    alice.expect("Bye, alicia.");
    alice.expect_closed();
    for c in [&mut bob, &mut new_alice, &mut new_bob] {
        c.expect_stamped("* alicia has left the chat.");
        c.expect_stamped("* robert is now the room owner.");
    }
}

#[test]
fn rename_refusals() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("/rename bob");
    alice.expect("Nickname \"bob\" is already in use.");
    alice.send_line("/nick BOB");
    alice.expect("Nickname \"BOB\" is already in use.");
    alice.send_line("/rename a b");
    alice.expect(&not_allowed("a b"));
    alice.send_line("/nick *star");
    alice.expect(&not_allowed("*star"));
    alice.send_line("/rename seventeen_chars_x");
    alice.expect(&too_long("seventeen_chars_x"));
    alice.send_line("/rename");
    alice.expect("Usage: /rename <newnick>");
    alice.send_line("/nick");
    alice.expect("Usage: /rename <newnick>");

    // Nothing changed and bob noticed nothing.
    next_is_chat(&mut alice, "alice", &mut [&mut bob], "still alice");
    bob.send_line("/users");
    bob.expect("Users in chat: alice, bob");
}

// ---------------------------------------------------------------------------
// 9. Kick.
// ---------------------------------------------------------------------------

#[test]
fn kick_rules_and_success() {
    let server = Server::start();
    let [mut alice, mut bob, mut carol] = server.login_all(["alice", "bob", "carol"]);

    bob.send_line("/kick carol");
    bob.expect("Only the room owner can kick.");
    alice.send_line("/kick alice");
    alice.expect("You cannot kick yourself.");
    alice.send_line("/kick x");
    alice.expect("User 'x' not found.");
    // None of that reached anyone else.
    next_is_chat(&mut alice, "alice", &mut [&mut bob, &mut carol], "order!");

    alice.send_line("/kick bob");
    alice.expect_stamped("* bob was kicked by alice.");
    carol.expect_stamped("* bob was kicked by alice.");
    bob.expect("You have been kicked from the chat.");
    bob.expect_closed();

    // Bob's session is over before this round trip to the room, so a
    // "has left" line for him would come before the reply or the chat.
    alice.send_line("/users");
    alice.expect("Users in chat: alice, carol");
    next_is_chat(&mut alice, "alice", &mut [&mut carol], "back to work");
    next_is_chat(&mut carol, "carol", &mut [&mut alice], "ok");
}

// ---------------------------------------------------------------------------
// 10. Owner hand-over.
// ---------------------------------------------------------------------------

/// alice owns; zoe joined before bob, so zoe is the heir (neither the
/// alphabetically first nor the newest).
fn owner_leaves(leave: impl FnOnce(Client)) {
    let server = Server::start();
    let [alice, mut zoe, mut bob] = server.login_all(["alice", "zoe", "bob"]);

    leave(alice);
    for c in [&mut zoe, &mut bob] {
        c.expect_stamped("* alice has left the chat.");
        c.expect_stamped("* zoe is now the room owner.");
    }

    bob.send_line("/kick zoe");
    bob.expect("Only the room owner can kick.");
    zoe.send_line("/kick bob");
    zoe.expect_stamped("* bob was kicked by zoe.");
    bob.expect("You have been kicked from the chat.");
    bob.expect_closed();
    zoe.send_line("/users");
    zoe.expect("Users in chat: zoe");
}

#[test]
fn owner_quits_longest_connected_takes_over() {
    owner_leaves(|mut alice| {
        alice.send_line("/quit");
        alice.expect("Bye, alice.");
        alice.expect_closed();
    });
}

#[test]
fn owner_disconnects_longest_connected_takes_over() {
    owner_leaves(drop);
}

// ---------------------------------------------------------------------------
// 11. /me
// ---------------------------------------------------------------------------

#[test]
fn me_action_to_everyone() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("/me waves");
    alice.expect_stamped("* alice waves");
    bob.expect_stamped("* alice waves");
    bob.send_line("/me waves back  at alice");
    bob.expect_stamped("* bob waves back  at alice");
    alice.expect_stamped("* bob waves back  at alice");
}

// ---------------------------------------------------------------------------
// 12. /help
// ---------------------------------------------------------------------------

#[test]
fn help_lists_commands() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("/help");
    for line in HELP {
        alice.expect(line);
    }
    // Exactly those lines, and only to the asker.
    next_is_chat(&mut alice, "alice", &mut [&mut bob], "thanks");
}

// ---------------------------------------------------------------------------
// 13. Leaving.
// ---------------------------------------------------------------------------

#[test]
fn quit_says_bye_and_others_see_left() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    bob.send_line("/quit");
    bob.expect("Bye, bob.");
    bob.expect_closed();
    alice.expect_stamped("* bob has left the chat.");
    // Bob did not own the room: no hand-over line.
    next_is_chat(&mut alice, "alice", &mut [], "bye bob");
}

#[test]
fn end_line_quits() {
    let server = Server::start();
    let [mut alice, mut carol] = server.login_all(["alice", "carol"]);
    // Only a line that is exactly END quits.
    next_is_chat(&mut carol, "carol", &mut [&mut alice], "END of story");
    carol.send_line("END");
    carol.expect("Bye, carol.");
    carol.expect_closed();
    alice.expect_stamped("* carol has left the chat.");
    next_is_chat(&mut alice, "alice", &mut [], "alone");
}

#[test]
fn end_at_nickname_prompt_says_bye() {
    let server = Server::start();
    let mut alice = server.login("alice");
    let mut c = connect_prompted(&server);
    c.send_line("END");
    c.expect("Bye.");
    c.expect_closed();
    // The room never heard of it.
    next_is_chat(&mut alice, "alice", &mut [], "anyone?");
}

// ---------------------------------------------------------------------------
// 14. Unknown commands and usage lines.
// ---------------------------------------------------------------------------

#[test]
fn unknown_command_and_usage_lines() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    alice.send_line("/dance");
    alice.expect("Unknown command: /dance. Type /help for commands.");
    alice.send_line("/dance wildly");
    alice.expect("Unknown command: /dance. Type /help for commands.");
    alice.send_line("/me");
    alice.expect("Usage: /me <action>");
    alice.send_line("/kick");
    alice.expect("Usage: /kick <nick>");
    next_is_chat(&mut alice, "alice", &mut [&mut bob], "done");
}

// ---------------------------------------------------------------------------
// 15. Replies in typing order.
// ---------------------------------------------------------------------------

#[test]
fn burst_replies_come_in_typed_order() {
    let server = Server::start();
    let mut alice = server.login("alice");
    alice.send_bytes(b"/bogus\n/users\n/help\nhi\n");
    alice.expect("Unknown command: /bogus. Type /help for commands.");
    alice.expect("Users in chat: alice");
    for line in HELP {
        alice.expect(line);
    }
    alice.expect_stamped("alice: hi");
    next_is_chat(&mut alice, "alice", &mut [], "end of burst");
}

#[test]
fn burst_mixing_room_and_local_replies_then_end() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    bob.send_bytes(
        b"/w zed yo\n/me\n/users\n/kick\n/me dances\n/nick\n/w alice psst\n/dance\nbye\nEND\n",
    );
    bob.expect("User 'zed' not found.");
    bob.expect("Usage: /me <action>");
    bob.expect("Users in chat: alice, bob");
    bob.expect("Usage: /kick <nick>");
    bob.expect_stamped("* bob dances");
    bob.expect("Usage: /rename <newnick>");
    bob.expect_stamped("[Whisper to alice] psst");
    bob.expect("Unknown command: /dance. Type /help for commands.");
    bob.expect_stamped("bob: bye");
    bob.expect("Bye, bob.");
    bob.expect_closed();

    alice.expect_stamped("* bob dances");
    alice.expect_stamped("[Whisper from bob] psst");
    alice.expect_stamped("bob: bye");
    alice.expect_stamped("* bob has left the chat.");
}

// ---------------------------------------------------------------------------
// 16. Scheduled messages.
// ---------------------------------------------------------------------------

#[test]
fn schedule_in_seconds_is_delivered_to_everyone() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    schedule_in(&mut alice, 1, "hello");
    bob.expect_stamped("[Scheduled by alice] hello");
    alice.expect_stamped("[Scheduled by alice] hello");
    // Delivered once, and no longer pending.
    alice.send_line("/schedule list");
    alice.expect("You have no scheduled messages.");
    next_is_chat(&mut alice, "alice", &mut [&mut bob], "that was me");
}

#[test]
fn scheduled_message_outlives_its_author() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);
    schedule_in(&mut alice, 3, "from beyond");
    alice.send_line("/quit");
    alice.expect("Bye, alice.");
    alice.expect_closed();
    bob.expect_stamped("* alice has left the chat.");
    bob.expect_stamped("* bob is now the room owner.");
    bob.expect_stamped("[Scheduled by alice] from beyond");
}

#[test]
fn schedule_list_and_cancel() {
    let server = Server::start();
    let [mut alice, mut bob] = server.login_all(["alice", "bob"]);

    alice.send_line("/schedule list");
    alice.expect("You have no scheduled messages.");
    let first = schedule_in(&mut alice, 3600, "first one");
    let second = schedule_in(&mut alice, 7200, "second one");

    alice.send_line("/schedule list");
    alice.expect("Your scheduled messages (2):");
    alice.expect(&format!("1. {first} first one"));
    alice.expect(&format!("2. {second} second one"));

    // The list is per user.
    bob.send_line("/schedule list");
    bob.expect("You have no scheduled messages.");

    alice.send_line("/schedule cancel 3");
    alice.expect("You have no scheduled message number 3.");
    alice.send_line("/schedule cancel 1");
    alice.expect("Scheduled message 1 cancelled.");
    alice.send_line("/schedule list");
    alice.expect("Your scheduled messages (1):");
    alice.expect(&format!("1. {second} second one"));
    alice.send_line("/schedule cancel 2");
    alice.expect("You have no scheduled message number 2.");
    // Bob cannot cancel alice's.
    bob.send_line("/schedule cancel 1");
    bob.expect("You have no scheduled message number 1.");
    alice.send_line("/schedule cancel 1");
    alice.expect("Scheduled message 1 cancelled.");
    alice.send_line("/schedule list");
    alice.expect("You have no scheduled messages.");

    next_is_chat(&mut alice, "alice", &mut [&mut bob], "all clear");
}

#[test]
fn schedule_at_most_ten_pending() {
    let server = Server::start();
    let mut alice = server.login("alice");
    for i in 1..=10 {
        schedule_in(&mut alice, 3600, &format!("note {i}"));
    }
    alice.send_line("/schedule +3600 note 11");
    alice.expect("You already have 10 scheduled messages.");
    alice.send_line("/schedule list");
    alice.expect("Your scheduled messages (10):");
    for i in 1..=10 {
        let line = alice.read_line();
        let rest = line
            .strip_prefix(&format!("{i}. "))
            .unwrap_or_else(|| panic!("list item {i}: {line:?}"));
        let (when, text) = rest
            .rsplit_once(" note ")
            .unwrap_or_else(|| panic!("list item {i}: {line:?}"));
        let time = when.strip_prefix("tomorrow ").unwrap_or(when);
        assert!(is_hhmmss(time), "list item {i}: {line:?}");
        assert_eq!(text, i.to_string(), "list item {i}: {line:?}");
    }
    // Cancelling one frees a slot.
    alice.send_line("/schedule cancel 10");
    alice.expect("Scheduled message 10 cancelled.");
    schedule_in(&mut alice, 3600, "note 11");
    alice.send_line("/schedule +3600 note 12");
    alice.expect("You already have 10 scheduled messages.");
}

#[test]
fn schedule_bad_forms_get_usage() {
    let server = Server::start();
    let mut alice = server.login("alice");
    for bad in [
        "/schedule",
        "/schedule 25:00 x",
        "/schedule 24:00 x",
        "/schedule 12:60 x",
        "/schedule +0 x",
        "/schedule +86401 x",
        "/schedule +-5 x",
        "/schedule noon x",
        "/schedule 12:00",
        "/schedule +5",
    ] {
        alice.send_line(bad);
        alice.expect(USAGE_SCHEDULE);
    }
    // The code's own usage line for a bad cancel.
    alice.send_line("/schedule cancel x");
    alice.expect("Usage: /schedule cancel N");
    // Nothing was scheduled by any of it.
    alice.send_line("/schedule list");
    alice.expect("You have no scheduled messages.");
    // The limits themselves are accepted.
    schedule_in(&mut alice, 86_400, "a day");
}

#[test]
fn schedule_at_clock_time_is_confirmed() {
    let server = Server::start();
    let mut alice = server.login("alice");
    let before = SystemTime::now();
    // Two to three minutes from now, as HH:MM.
    let target = local_tm(before + Duration::from_secs(180));
    let (h, m) = (target.tm_hour, target.tm_min);
    alice.send_line(&format!("/schedule {h:02}:{m:02} coffee time"));
    let line = alice.read_line();
    let after = SystemTime::now();
    let time = format!("{h:02}:{m:02}:00");
    let today = format!("Message scheduled for {time}.");
    let tomorrow = format!("Message scheduled for tomorrow {time}.");
    let target_day = (target.tm_year, target.tm_yday);
    let day = |t: SystemTime| {
        let tm = local_tm(t);
        (tm.tm_year, tm.tm_yday)
    };
    let allowed: Vec<&String> = if day(before) == day(after) {
        // The server's clock read the same day as ours.
        if target_day == day(before) {
            vec![&today]
        } else {
            vec![&tomorrow]
        }
    } else {
        // Midnight passed during the exchange: either is right.
        vec![&today, &tomorrow]
    };
    assert!(
        allowed.contains(&&line),
        "got {line:?}, expected one of {allowed:?}"
    );
    let when = confirmation_when(&line);
    alice.send_line("/schedule list");
    alice.expect("Your scheduled messages (1):");
    alice.expect(&format!("1. {when} coffee time"));
}
