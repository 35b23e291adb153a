// The peer scripts/bench.sh measures mpchat's WebSocket side against: a
// chat server the way the browser chat systems mpchat comes from are built,
// one Node.js process with the `ws` package (and its native `bufferutil`,
// as its README recommends) broadcasting each message to every client.
// Benchmark only; not part of mpchat.
//
// It speaks the part of mpchat's JSON messages (PROTOCOL.md) that
// `mpchat-bench --proto ws` uses, so both servers do the same work:
// `hello` -> `welcome` (nicknames unique) and a `join` event to everyone;
// `say` -> one `chat` event, serialised once and sent to every client,
// the sender included, in one global order; `ping` -> `pong`; a bad
// message -> an `error`. One room, `#lobby`. Messages over 8 KiB are
// refused as mpchat refuses them.
//
//   node scripts/ws-peer/server.mjs [PORT]    (0 or none: any free port)
//
// Listens on 127.0.0.1 only and prints `listening on 127.0.0.1:PORT`.

import { createServer } from 'node:http';
import { WebSocketServer, WebSocket } from 'ws';

const ROOM = '#lobby';
const port = Number(process.argv[2] ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  console.error(`ws-peer: bad port: ${process.argv[2]}`);
  process.exit(2);
}

const http = createServer((req, res) => {
  res.writeHead(404, { 'Content-Type': 'text/plain', Connection: 'close' });
  res.end('Not found\n');
});
const wss = new WebSocketServer({ server: http, path: '/ws', maxPayload: 8192 });
const nicks = new Set();
let seq = 0;

function broadcast(fields) {
  seq += 1;
  const event = JSON.stringify({ type: 'event', seq, ts: Date.now(), room: ROOM, ...fields });
  for (const client of wss.clients) {
    if (client.readyState === WebSocket.OPEN) client.send(event);
  }
}

wss.on('connection', (ws) => {
  let nick = null;
  const reply = (obj) => ws.send(JSON.stringify(obj));
  ws.on('error', () => {});
  ws.on('message', (data, isBinary) => {
    let msg;
    try {
      msg = isBinary ? null : JSON.parse(data.toString());
    } catch {
      msg = null;
    }
    if (msg === null || typeof msg !== 'object') {
      return reply({ type: 'error', code: 'bad_json', message: 'not a JSON object' });
    }
    if (msg.type === 'ping') return reply({ type: 'pong', id: msg.id });
    if (nick === null) {
      if (msg.type !== 'hello' || typeof msg.nick !== 'string' || msg.nick === '') {
        return reply({ type: 'error', code: 'bad_request', message: 'say hello first' });
      }
      if (nicks.has(msg.nick)) {
        return reply({ type: 'error', code: 'nick_taken', message: 'nickname in use' });
      }
      nick = msg.nick;
      nicks.add(nick);
      reply({ type: 'welcome', nick, session: '', seq, rooms: [ROOM] });
      return broadcast({ kind: 'join', from: nick });
    }
    if (msg.type === 'say' && typeof msg.text === 'string') {
      return broadcast({ kind: 'chat', from: nick, text: msg.text });
    }
    if (msg.type === 'quit') return ws.close(1000);
    reply({ type: 'error', code: 'unknown_type', message: `unknown type ${msg.type}` });
  });
  ws.on('close', () => {
    if (nick === null) return;
    nicks.delete(nick);
    broadcast({ kind: 'leave', from: nick });
  });
});

for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(0));

http.listen(port, '127.0.0.1', () => {
  console.error(`listening on 127.0.0.1:${http.address().port}`);
});
