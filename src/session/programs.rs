//! The session of a program: JSON lines (`PROTOCOL.md`). The session loop,
//! the backlog and the hub link are the same as a person's; what differs
//! is here: what a line asks for, the `id` each answer carries, the
//! heartbeat, and the welcome with its session token.
//!
//! May use: `protocol` and `os`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{End, Phase, ProgramOptions, Session, Step, farewell};
use crate::os::scoreboard;
use crate::protocol::command::{self, Request};
use crate::protocol::framing::Line;
use crate::protocol::ipc::{BotProof, Format, Memberships, ToHub};
use crate::protocol::json::{self, Action, Hello, Refusal, Who};
use crate::protocol::render::{self, LOBBY};
use crate::protocol::reply::{Code, Reply};

/// Bad lines in a row after which the session ends: a client that sends
/// only garbage is not a client of ours.
pub(super) const MAX_BAD_LINES: u32 = 10;
/// Silence, in ping intervals, after which a program is taken for gone.
const SILENCE_LIMIT: f64 = 2.5;
/// Random bytes in a session token (128 bits).
const TOKEN_BYTES: usize = 16;
/// Random bytes in a bot's nonce (64 hex digits).
const NONCE_BYTES: usize = 32;
/// How long a nonce may be answered.
const NONCE_LIFETIME: Duration = Duration::from_secs(10);

/// A challenge sent to a bot, waiting for its MAC. There is at most one
/// per connection, and it is taken by the first answer, right or wrong.
struct Challenge {
    bot: String,
    device: String,
    nonce: String,
    sent: Instant,
    after: Option<u64>,
    rooms: Vec<String>,
}

/// A request sent to the hub, waiting for the hub to finish it.
struct Asked {
    /// The client's `id`, echoed in the answer.
    id: Option<Value>,
    /// The hub said something in answer; else the client gets `ok`.
    answered: bool,
    /// It is a `hello`: a new hub is asked it again.
    login: bool,
}

/// What the child keeps for a JSON client.
pub(super) struct JsonState {
    /// Requests the hub has not finished, oldest first.
    asked: VecDeque<Asked>,
    /// The `id` of the line being carried out, for the child's own
    /// answers to it.
    line_id: Option<Value>,
    /// Bad lines in a row.
    bad_lines: u32,
    ping_interval: Duration,
    /// The ping was sent for the silence that began then (the time of the
    /// client's last input).
    pinged_for: Option<Instant>,
    resume_max: usize,
    /// The session's token, from the OS's random source.
    token: String,
    /// A bot's challenge, until it answers.
    challenge: Option<Challenge>,
    /// The device, once a bot is in.
    device: Option<String>,
}

impl JsonState {
    pub(super) fn new(options: &ProgramOptions) -> JsonState {
        JsonState {
            asked: VecDeque::new(),
            line_id: None,
            bad_lines: 0,
            ping_interval: options.ping_interval,
            pinged_for: None,
            resume_max: options.resume_max,
            token: String::new(),
            challenge: None,
            device: None,
        }
    }

    /// The session's token, for a new hub.
    pub(super) fn token(&self) -> Option<String> {
        (!self.token.is_empty()).then(|| self.token.clone())
    }

    /// A bot's device, for a new hub.
    pub(super) fn device(&self) -> Option<String> {
        self.device.clone()
    }

    /// The hub answers the oldest request: its `id`, once.
    fn answer(&mut self) -> Option<Value> {
        let asked = self.asked.front_mut()?;
        asked.answered = true;
        asked.id.clone()
    }
}

/// `n` random bytes from the OS, as hex; empty if the OS has none (a
/// session with an empty token can never be taken over, and a bot's
/// empty nonce is refused).
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    if let Err(e) = getrandom::fill(&mut bytes) {
        log::error!("no random bytes from the OS: {e}");
        return String::new();
    }
    hex::encode(bytes)
}

impl Session {
    /// A line from a program. Out of line, as the rest of a program's
    /// handling: its frames stay off a person's session's stack.
    #[inline(never)]
    pub(super) fn json_line(&mut self, line: Line) -> Step {
        if line.truncated {
            let message = format!("line longer than {} bytes", json::MAX_JSON_LINE);
            return Step::Done(self.bad_line(None, Code::LineTooLong, &message));
        }
        if line.bytes.iter().all(u8::is_ascii_whitespace) {
            return Step::Done(None);
        }
        let (id, action) = json::parse(&line.bytes);
        let action = match action {
            Ok(action) => action,
            Err(Refusal { code, message }) => {
                return Step::Done(self.bad_line(id.as_ref(), code, &message));
            }
        };
        let must_wait = self.hub_busy()
            && (matches!(self.phase, Phase::Login { .. }) || action == Action::Quit);
        if must_wait {
            return Step::Wait(line);
        }
        self.json.bad_lines = 0;
        self.json.line_id = id;
        let end = self.json_action(action);
        self.json.line_id = None;
        Step::Done(end)
    }

    /// A line that asks for nothing: its error, and the end of the session
    /// after too many in a row.
    fn bad_line(&mut self, id: Option<&Value>, code: Code, message: &str) -> Option<End> {
        self.reply(json::error(code, message, id));
        self.json.bad_lines += 1;
        if self.json.bad_lines >= MAX_BAD_LINES {
            log::info!("{}: too many bad lines", self.peer);
            return farewell(Code::TooManyErrors, "Too many bad lines; goodbye.");
        }
        None
    }

    fn json_action(&mut self, action: Action) -> Option<End> {
        let logged_in = matches!(self.phase, Phase::Chat { .. });
        match action {
            Action::Ping => self.reply(json::bare("pong", self.json.line_id.as_ref())),
            Action::Pong => {}
            Action::Quit => {
                let id = self.json.line_id.clone();
                let line = match &self.phase {
                    Phase::Chat { nick, .. } => {
                        log::info!("{} ({nick}) quit", self.peer);
                        render::bye(nick)
                    }
                    Phase::Login { .. } => "Bye.".to_string(),
                };
                return Some(End::Quit { line, id });
            }
            Action::Hello(_) if logged_in => {
                self.json_refusal(Code::AlreadyLoggedIn, "You are logged in already.");
            }
            Action::Hello(hello) => return self.hello(hello),
            Action::Auth(mac) => return self.auth(mac),
            Action::Request(_) if !logged_in => {
                self.json_refusal(Code::NotLoggedIn, "Say hello first.");
            }
            Action::Request(request) => {
                if !self.flood_allows() {
                    return None;
                }
                if let Request::Rename(nick) = &request
                    && let Err(reason) = command::check_nick(nick)
                {
                    self.json_refusal(Code::BadNick, &reason);
                    return None;
                }
                self.ask(false);
                self.request(ToHub::Request(request));
            }
        }
        None
    }

    /// A `hello`: a login, a takeover, or a bot's first step.
    fn hello(&mut self, Hello { who, after, rooms }: Hello) -> Option<End> {
        let (nick, takeover) = match who {
            Who::Nick(nick) => (nick, None),
            Who::Session { token, nick } => (nick.unwrap_or_default(), Some(token)),
            Who::Bot { bot, device } => {
                let nonce = random_hex(NONCE_BYTES);
                self.reply(json::challenge(&nonce, self.json.line_id.as_ref()));
                self.json.challenge = Some(Challenge {
                    bot,
                    device,
                    nonce,
                    sent: Instant::now(),
                    after,
                    rooms,
                });
                return None;
            }
        };
        if takeover.is_none()
            && let Err(reason) = command::check_nick(&nick)
        {
            let id = self.json.line_id.clone();
            return self.refuse_nick(Code::BadNick, reason, id.as_ref());
        }
        self.ask(true);
        self.json.token = random_hex(TOKEN_BYTES);
        self.log_in(ToHub::Login {
            nick,
            addr: self.peer.to_string(),
            format: Format::Json,
            after,
            token: self.json.token(),
            takeover,
            bot: None,
            rooms,
            web: self.is_web(),
        });
        None
    }

    /// A bot's answer to its challenge; the hub checks the MAC. Any
    /// failure ends the session, with the same error whatever it was.
    fn auth(&mut self, mac: String) -> Option<End> {
        let Some(challenge) = self.json.challenge.take() else {
            self.json_refusal(Code::BadRequest, "No challenge to answer: say hello first.");
            return None;
        };
        if challenge.nonce.is_empty() || challenge.sent.elapsed() > NONCE_LIFETIME {
            log::info!("{}: bot {} answered too late", self.peer, challenge.bot);
            scoreboard::bump(&self.totals.auth_failures);
            return farewell(Code::AuthFailed, render::AUTH_FAILED);
        }
        self.ask(true);
        self.json.token = random_hex(TOKEN_BYTES);
        self.json.device = Some(challenge.device.clone());
        self.log_in(ToHub::Login {
            nick: challenge.bot,
            addr: self.peer.to_string(),
            format: Format::Json,
            after: challenge.after,
            token: self.json.token(),
            takeover: None,
            bot: Some(BotProof {
                device: challenge.device,
                nonce: challenge.nonce,
                mac,
            }),
            rooms: challenge.rooms,
            web: self.is_web(),
        });
        None
    }

    /// Notes the line being carried out as a request to the hub.
    fn ask(&mut self, login: bool) {
        let id = self.json.line_id.clone();
        self.json.asked.push_back(Asked {
            id,
            answered: false,
            login,
        });
    }

    /// An error answering the line being carried out, in order with the
    /// hub's answers to the lines before it.
    pub(super) fn json_refusal(&mut self, code: Code, message: &str) {
        let line = json::error(code, message, self.json.line_id.as_ref());
        self.reply(line);
    }

    /// The hub refused the login it was answering. A bot is not let try
    /// again on the same connection.
    pub(super) fn nick_refused(&mut self, code: Code, reason: String) -> Option<End> {
        let id = self.json.answer();
        if matches!(code, Code::AuthFailed | Code::AlreadyConnected) {
            self.json.device = None;
            return farewell(code, reason);
        }
        self.refuse_nick(code, reason, id.as_ref())
    }

    /// One of the hub's replies, with the `id` of the request it answers.
    #[inline(never)]
    pub(super) fn json_reply(&mut self, reply: &Reply, answering: bool) {
        let id = if answering { self.json.answer() } else { None };
        if let Some(line) = json::reply(reply, id.as_ref()) {
            self.tell(&line);
        }
    }

    /// The hub finished the oldest request: one that had an `id` and got
    /// no answer of its own is answered `ok`.
    pub(super) fn json_request_done(&mut self) {
        if let Some(Asked {
            id: Some(id),
            answered: false,
            ..
        }) = self.json.asked.pop_front()
        {
            self.tell(&json::bare("ok", Some(&id)));
        }
    }

    /// The hub went away with requests unfinished: each that had an `id`
    /// is answered with an error, as it may not have been carried out. A
    /// `hello` is asked again.
    pub(super) fn requests_lost(&mut self) {
        let asked = std::mem::take(&mut self.json.asked);
        for asked in asked {
            if asked.login {
                self.json.asked.push_back(asked);
            } else if let Some(id) = asked.id {
                let message = "The server restarted before this was done; send it again.";
                self.tell(&json::error(Code::ServerBusy, message, Some(&id)));
            }
        }
    }

    /// The `welcome`, answering the `hello`, with the session's rooms.
    #[inline(never)]
    pub(super) fn welcome(&mut self, nick: &str, seq: u64, rooms: Option<&Memberships>) {
        let id = self.json.answer();
        let (names, current) = match rooms {
            Some(m) => (
                m.rooms.iter().map(|(r, _)| r.as_str()).collect(),
                m.current.as_str(),
            ),
            None => (vec![LOBBY], LOBBY),
        };
        let line = json::welcome(
            &json::Welcome {
                nick,
                session: &self.json.token,
                seq,
                bot: self.json.device.is_some(),
                rooms: names,
                room: current,
                ping_interval_s: self.json.ping_interval.as_secs(),
                max_line: json::MAX_JSON_LINE,
                resume_max: self.json.resume_max,
            },
            id.as_ref(),
        );
        self.tell(&line);
    }

    /// When the heartbeat next has something to do: ping a program that
    /// has been silent for an interval, or give up on one silent for
    /// [`SILENCE_LIMIT`] intervals.
    pub(super) fn heartbeat_deadline(&self) -> Option<Instant> {
        if self.format != Format::Json
            || !matches!(self.phase, Phase::Chat { .. })
            || self.json.ping_interval.is_zero()
        {
            return None;
        }
        let interval = self.json.ping_interval;
        if self.json.pinged_for == Some(self.last_input) {
            Some(self.last_input + interval.mul_f64(SILENCE_LIMIT))
        } else {
            Some(self.last_input + interval)
        }
    }

    /// Pings a silent program, or ends its session.
    pub(super) fn heartbeat(&mut self, now: Instant) -> Option<End> {
        let deadline = self.heartbeat_deadline()?;
        if now < deadline {
            return None;
        }
        if self.json.pinged_for == Some(self.last_input) {
            log::info!("{}: no answer to pings", self.peer);
            let message = format!(
                "No line from you for {} s; disconnected.",
                self.json.ping_interval.mul_f64(SILENCE_LIMIT).as_secs_f64()
            );
            return farewell(Code::PingTimeout, message);
        }
        self.json.pinged_for = Some(self.last_input);
        self.tell(&json::bare("ping", None));
        None
    }
}
