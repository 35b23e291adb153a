// mpchat's page: a JSON client of the chat (PROTOCOL.md) over the
// server's WebSocket at /ws. What anyone types is only ever shown as
// text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);

// What survives a reload of the page (sessionStorage: this tab only), so
// that the new page takes the session over, or resumes, without a gap or
// a duplicate.
const saved = JSON.parse(sessionStorage.getItem("mpchat") || "{}");
const state = {
  nick: saved.nick || "",
  token: saved.token || "",
  lastSeq: saved.lastSeq ?? null,
  rooms: new Map(), // name -> { unread, lines: [elements], seqs: Set of event seqs shown }
  current: "#lobby",
  historyLeft: 0, // events still to come of a history answer

  socket: null,
  stopped: false, // no more reconnecting (quit, kicked, taken over)
  delay: 1000,
};

function save() {
  sessionStorage.setItem("mpchat", JSON.stringify({
    nick: state.nick, token: state.token, lastSeq: state.lastSeq,
    rooms: [...state.rooms.keys()],
  }));
}

function setStatus(text) {
  $("status").textContent = text;
}

// ---- the connection ---------------------------------------------------

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/ws`);
  state.socket = socket;
  setStatus("connecting…");
  socket.onopen = () => sayHello();
  socket.onmessage = (e) => receive(JSON.parse(e.data));
  socket.onclose = () => {
    if (state.socket !== socket) return;
    state.socket = null;
    if (state.stopped) {
      setStatus("disconnected");
      return;
    }
    // Back off, with jitter, so a server that restarts is not stormed.
    const wait = state.delay * (0.5 + Math.random() / 2);
    state.delay = Math.min(state.delay * 2, 30000);
    setStatus(`connection lost; trying again in ${Math.round(wait / 1000)} s`);
    setTimeout(connect, wait);
  };
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) {
    state.socket.send(JSON.stringify(message));
  }
}

function sayHello() {
  const hello = { type: "hello" };
  if (state.token) {
    hello.session = state.token; // takes over a session still open
  } else {
    hello.nick = state.nick;
    hello.rooms = (saved.rooms || []).filter((r) => r !== "#lobby");
  }
  if (state.lastSeq !== null) hello.after = state.lastSeq;
  send(hello);
}

// ---- what the server says ---------------------------------------------

function receive(m) {
  switch (m.type) {
    case "welcome": return welcome(m);
    case "event": return event(m);
    case "whisper": return whisper(m);
    case "current": return switchTo(m.room);
    case "users": return showUsers(m);
    case "ping": return send({ type: "pong" });
    case "gap": return note(state.current, "Some messages may be missing here.", "error");
    case "notice": return note(state.current, m.text);
    case "error": return error(m);
    case "bye": state.stopped = true; return note(state.current, "Bye.");
    case "rooms":
      return m.rooms.forEach((r) => note(state.current,
        `${r.room}: ${r.users} user${r.users === 1 ? "" : "s"}${r.topic ? " – " + r.topic : ""}`));
    case "topic":
      return note(m.room, m.topic ? `Topic of ${m.room}: ${m.topic}` : `${m.room} has no topic.`);
    case "scheduled": return note(state.current, `Message scheduled for ${m.due}.`);
    case "schedule_list":
      if (!m.scheduled.length) return note(state.current, "You have no scheduled messages.");
      return m.scheduled.forEach((s) => note(state.current, `${s.number}. ${s.due} ${s.text}`));
    case "cancelled": return note(state.current, `Scheduled message ${m.number} cancelled.`);
    case "removed":
      forgetRoom(m.room);
      return note(state.current, `You have been removed from ${m.room} by ${m.by}.`);
    case "history":
      state.historyLeft = m.count;
      // The page's own requests fill its rooms quietly; /history says so.
      if (m.id !== "page") note(state.current, `${m.count} earlier lines of ${m.room} are shown in place.`);
      return undefined;
    default: return undefined; // "ok" needs nothing shown
  }
}

function welcome(m) {
  state.nick = m.nick;
  state.token = m.session;
  state.delay = 1000;
  if (state.lastSeq === null) state.lastSeq = m.seq;
  m.rooms.forEach(room);
  $("login").hidden = true;
  $("chat").hidden = false;
  setStatus(`connected as ${m.nick}`);
  switchTo(m.room);
  save();
  $("line").focus();
  // A new page (a login, a reload) shows each room's recent lines, as
  // telnet shows them; a page that kept its lines got what it missed
  // from the resume.
  m.rooms.filter((r) => room(r).seqs.size === 0).forEach(askHistory);
}

function askHistory(name) {
  send({ type: "history", room: name, count: 50, id: "page" });
}

function error(m) {
  if (m.code === "unknown_session") {
    // The old session is gone: log in again, in the same rooms.
    state.token = "";
    return sayHello();
  }
  if (["taken_over", "kicked", "too_many_errors", "auth_failed"].includes(m.code)) {
    state.stopped = true;
  }
  if ($("chat").hidden) {
    $("login-error").textContent = m.message;
    state.token = "";
    return undefined;
  }
  return note(state.current, m.message, "error");
}

function event(e) {
  // The events of a history answer are old: shown in place, nothing else.
  if (state.historyLeft > 0) {
    state.historyLeft -= 1;
    return show(e, true);
  }
  // A resume replays events after lastSeq; anything older is a duplicate.
  if (state.lastSeq !== null && e.seq <= state.lastSeq) return undefined;
  state.lastSeq = e.seq;
  save();
  const mine = e.from.toLowerCase() === state.nick.toLowerCase();
  if (mine && e.kind === "join") {
    room(e.room);
    askHistory(e.room);
  }
  if (mine && e.kind === "part") forgetRoom(e.room);
  if (mine && e.kind === "rename") state.nick = e.to;
  show(e, false);
  if (e.room === state.current && e.kind !== "chat" && e.kind !== "me") {
    send({ type: "users" }); // who is here may have changed
  }
  return undefined;
}

function show(e, old) {
  const who = e.bot ? `${e.from} (bot)` : e.from;
  const texts = {
    chat: null,
    me: `* ${who} ${e.text}`,
    scheduled: `[scheduled by ${who}] ${e.text}`,
    join: `* ${who} has joined ${e.room}.`,
    part: `* ${who} has left ${e.room}.`,
    leave: `* ${who} has left the chat.`,
    rename: `* ${who} is now ${e.to}.`,
    kick: `* ${who} was kicked by ${e.by}.`,
    removed: `* ${who} was removed from ${e.room} by ${e.by}.`,
    topic: `* ${who} set the topic: ${e.text}`,
    owner: `* ${who} is now the owner of ${e.room}.`,
  };
  const kind = e.kind === "chat" ? "chat" : e.kind === "me" ? "action" : "info";
  line(e.room, e.ts, e.kind === "chat" ? who : null, texts[e.kind] ?? e.text, kind,
    { seq: e.seq, old });
}

function whisper(w) {
  const mine = w.from.toLowerCase() === state.nick.toLowerCase();
  const text = mine ? `[to ${w.to}] ${w.text}` : `[from ${w.from}] ${w.text}`;
  line(state.current, w.ts, null, text, "whisper");
}

// ---- rooms and lines --------------------------------------------------

function room(name) {
  if (!state.rooms.has(name)) state.rooms.set(name, { unread: 0, lines: [], seqs: new Set() });
  showRooms();
  return state.rooms.get(name);
}

function forgetRoom(name) {
  state.rooms.delete(name);
  showRooms();
}

function switchTo(name) {
  state.current = name;
  room(name).unread = 0;
  $("room-name").textContent = name;
  const list = $("messages");
  list.replaceChildren(...state.rooms.get(name).lines);
  list.lastElementChild?.scrollIntoView({ block: "end" });
  showRooms();
  send({ type: "users" });
}

function showRooms() {
  const items = [...state.rooms.entries()].map(([name, r]) => {
    const li = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = r.unread ? `${name} (${r.unread})` : name;
    if (r.unread) button.setAttribute("aria-label", `${name}, ${r.unread} unread`);
    if (name === state.current) button.setAttribute("aria-current", "true");
    button.onclick = () => send({ type: "join", room: name });
    li.append(button);
    return li;
  });
  $("rooms").replaceChildren(...items);
}

function showUsers(m) {
  if (m.room.toLowerCase() !== state.current.toLowerCase()) return;
  const items = m.nicks.map((nick, i) => {
    const li = document.createElement("li");
    li.textContent = nick;
    if (i === 0) li.append(" (owner)");
    if (m.bots.includes(nick)) li.append(" (bot)");
    return li;
  });
  $("users").replaceChildren(...items);
}

/// One line of a room: time, sender, text; all as text nodes. An event's
/// line has its seq: shown once, and an old one (from history) goes in
/// its place among the others, without counting as unread.
function line(roomName, ts, from, text, kind, { seq = null, old = false } = {}) {
  const r = room(roomName);
  if (seq !== null && r.seqs.has(seq)) return;
  const li = document.createElement("li");
  li.className = kind;
  const time = document.createElement("time");
  const at = new Date(ts);
  time.dateTime = at.toISOString();
  time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  li.append(time, " ");
  if (from) {
    const b = document.createElement("b");
    b.textContent = from;
    li.append(b, ": ");
  }
  li.append(text);
  if (seq !== null) {
    li.seq = seq;
    r.seqs.add(seq);
  }
  const place = old ? r.lines.findIndex((l) => l.seq > seq) : -1;
  const before = place >= 0 ? r.lines[place] : null;
  if (place >= 0) {
    r.lines.splice(place, 0, li);
  } else {
    r.lines.push(li);
  }
  if (roomName === state.current) {
    $("messages").insertBefore(li, before);
    if (!old) li.scrollIntoView({ block: "end" });
  }
  if (r.lines.length > 500) {
    const gone = r.lines.shift();
    r.seqs.delete(gone.seq);
    gone.remove();
  }
  if (roomName !== state.current && !old) {
    r.unread += 1;
    showRooms();
  }
}

function note(roomName, text, kind = "info") {
  line(roomName, Date.now(), null, text, kind);
}

// ---- what the user types ----------------------------------------------

const HELP = [
  "/join #room, /part [#room], /rooms, /users [#room], /topic [text]",
  "/whisper <nick> <message> (or /w), /me <action>, /nick <newnick>, /kick <nick>",
  "/schedule HH:MM|+SECONDS <message>, /schedule list, /schedule cancel N",
  "/history [N], /help, /quit",
];

function command(text) {
  if (!text.startsWith("/")) return { type: "say", text, room: state.current };
  const [word, ...rest] = text.slice(1).split(/\s+/);
  const arg = rest.join(" ");
  switch (word.toLowerCase()) {
    case "join": return { type: "join", room: rest[0] };
    case "part": return rest[0] ? { type: "part", room: rest[0] } : { type: "part" };
    case "rooms": return { type: "rooms" };
    case "user": case "users": return rest[0] ? { type: "users", room: rest[0] } : { type: "users" };
    case "topic": return arg ? { type: "topic", text: arg } : { type: "topic" };
    case "w": case "whisper": return { type: "whisper", to: rest[0], text: rest.slice(1).join(" ") };
    case "me": return { type: "me", text: arg, room: state.current };
    case "nick": case "rename": return { type: "rename", nick: rest[0] };
    case "kick": return { type: "kick", nick: rest[0] };
    case "history": return rest[0] ? { type: "history", count: Number(rest[0]) } : { type: "history" };
    case "quit": return { type: "quit" };
    case "schedule":
      if (rest[0] === "list") return { type: "schedule_list" };
      if (rest[0] === "cancel") return { type: "schedule_cancel", number: Number(rest[1]) };
      if (rest[0]?.startsWith("+")) {
        return { type: "schedule", in_s: Number(rest[0].slice(1)), text: rest.slice(1).join(" ") };
      }
      return { type: "schedule", at: rest[0], text: rest.slice(1).join(" ") };
    case "help": HELP.forEach((h) => note(state.current, h)); return null;
    default: note(state.current, `Unknown command: /${word}. Type /help for commands.`, "error");
      return null;
  }
}

$("login").onsubmit = (e) => {
  e.preventDefault();
  state.nick = $("nick").value.trim();
  state.token = "";
  state.stopped = false;
  $("login-error").textContent = "";
  if (state.socket) sayHello(); else connect();
};

$("say").onsubmit = (e) => {
  e.preventDefault();
  const text = $("line").value.trim();
  if (!text) return;
  const message = command(text);
  if (message) send(message);
  $("line").value = "";
};

// A reloaded page takes its session back at once.
if (state.token || state.nick) {
  $("nick").value = state.nick;
  connect();
}
