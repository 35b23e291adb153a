#!/usr/bin/env python3
"""An example mpchat bot: answers "!time" in one room with the time.

    export MPCHAT_BOT_SECRET=<its secret, hex>
    scripts/bot.py --name weather --room '#lab2' localhost 4000
    scripts/bot.py --name weather --secret-file ~/.mpchat-secret localhost 4000

The server must list the bot in its --bots file (`weather <secret>`). The
bot logs in with its name, proves it knows the secret, joins its room and
answers every "!time" said there by someone else. When the connection
drops it logs in again, with back-off, and resumes: the server replays
every event of its rooms since the last one it handled, before anything
new, so it answers each "!time" exactly once. It uses the standard
library only; PROTOCOL.md describes every line it sends and reads.

It logs to stderr; stdout gets one line per answer, for tests.
"""

import argparse
import hashlib
import hmac
import json
import os
import random
import socket
import sys
import time

# Waits between connection attempts: doubled after each failure, up to
# the maximum, so a server that is down is not hammered.
FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
# The handshake must finish within this; the server forgets a challenge
# after 10 s anyway.
HANDSHAKE_TIMEOUT_S = 10.0


def log(message):
    print(f"bot: {message}", file=sys.stderr, flush=True)


class Refused(Exception):
    """The server said no before its welcome; trying again later may work."""


class Fatal(Exception):
    """Trying again cannot help: a wrong secret, or another copy running."""


class Connection:
    """One TCP connection speaking JSON lines."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=HANDSHAKE_TIMEOUT_S)
        self.lines = self.sock.makefile("r", encoding="utf-8", newline="\n")

    def send(self, message):
        self.sock.sendall((json.dumps(message) + "\n").encode())

    def receive(self):
        line = self.lines.readline()
        if not line:
            raise ConnectionError("the server closed the connection")
        # A refusal before the session starts may be a line of plain text,
        # which json.loads rejects with a ValueError: the caller retries.
        return json.loads(line)

    def close(self):
        self.lines.close()
        self.sock.close()


class Bot:
    def __init__(self, args, secret):
        self.args = args
        self.secret = secret
        self.room = args.room.lower()  # room names ignore case
        # The newest event handled: the resume point. None until the first
        # welcome (the bot ignores what came before it started).
        self.synced = None
        self.welcomed = False

    def run(self):
        """One connection, from hello to its end (always an exception)."""
        self.welcomed = False
        conn = Connection(self.args.host, self.args.port)
        try:
            welcome = self.log_in(conn)
            self.welcomed = True
            self.serve(conn, welcome)
        finally:
            conn.close()

    def log_in(self, conn):
        # The hello goes out at once: the server tells programs by their
        # first byte, and takes a client silent for 100 ms for a person.
        # In its room at once, so that a resume replays the room too.
        hello = {
            "type": "hello",
            "bot": self.args.name,
            "device": self.args.device,
            "rooms": [self.args.room],
        }
        if self.synced is not None:
            hello["after"] = self.synced  # replays what we missed
        conn.send(hello)
        nonce = self.expect(conn, "challenge")["nonce"]
        # The MAC covers the device and a fresh nonce, so a recorded
        # answer is worth nothing on another connection.
        text = f"mpchat-bot-v1\n{self.args.name}\n{self.args.device}\n{nonce}"
        mac = hmac.new(self.secret, text.encode(), hashlib.sha256).hexdigest()
        conn.send({"type": "auth", "mac": mac})
        return self.expect(conn, "welcome")

    def expect(self, conn, wanted):
        message = conn.receive()
        if message.get("type") == "error":
            code = message.get("code")
            if code == "auth_failed":
                raise Fatal("auth_failed: check the name and secret in the server's bots file")
            # already_connected: another device of this bot is in; it may leave.
            raise Refused(f"{code}: {message.get('message')}")
        if message.get("type") != wanted:
            raise Refused(f"expected {wanted}, got {message}")
        return message

    def serve(self, conn, welcome):
        self.me = welcome["nick"].lower()
        resumed = self.synced is not None
        if not resumed:
            self.synced = welcome["seq"]
        where = f"{self.args.host}:{self.args.port} as {welcome['nick']}"
        log(f"connected to {where}" + (f", resuming after seq {self.synced}" if resumed else ""))
        # The server pings a silent client every ping_interval_s; hearing
        # nothing for much longer means the connection is dead.
        interval = welcome.get("ping_interval_s") or 0
        conn.sock.settimeout(3 * interval if interval else None)
        while True:
            message = conn.receive()
            kind = message.get("type")
            if kind == "event":
                self.on_event(conn, message)
            elif kind == "ping":
                conn.send({"type": "pong"})
            elif kind == "gap":
                after, next_ = message["after"], message["next"]
                log(f"gap: events after seq {after} and before {next_} may be lost")
            elif kind == "error":
                log(f"error {message.get('code')}: {message.get('message')}")
                if message.get("code") == "taken_over":
                    raise Fatal("another copy of this bot, with the same device, took over")
            # Other lines (current, topic, whispers...) need no answer.

    def on_event(self, conn, event):
        # Replayed and live events come in order, each once; the check
        # only guards against a server that broke that promise.
        seq = event["seq"]
        if seq > self.synced:
            self.synced = seq
            self.act(conn, event)

    def act(self, conn, event):
        if (
            event.get("kind") == "chat"
            and event.get("room", "").lower() == self.room
            and event.get("from", "").lower() != self.me
            and event.get("text", "").strip() == "!time"
        ):
            # The bot's local time: an answer the server could not give.
            now = time.strftime("%H:%M:%S")
            conn.send({"type": "say", "room": self.args.room, "text": now})
            log(f"answered !time from {event['from']} at seq {event['seq']}")
            print(f"answered !time at seq {event['seq']}", flush=True)


def read_secret(args):
    # Never from the command line: `ps` shows it to everyone.
    if args.secret_file:
        with open(args.secret_file, encoding="ascii") as f:
            text = f.readline().strip()
    else:
        text = os.environ.get("MPCHAT_BOT_SECRET", "").strip()
    if not text:
        sys.exit("bot: set MPCHAT_BOT_SECRET or give --secret-file")
    try:
        return bytes.fromhex(text)
    except ValueError:
        sys.exit("bot: the secret must be hex")


def main():
    parser = argparse.ArgumentParser(description="An mpchat bot that answers !time.")
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--name", required=True, help="its name in the server's bots file")
    parser.add_argument(
        "--device", default=socket.gethostname(), help="this machine (default: its hostname)"
    )
    parser.add_argument("--room", default="#lobby", help="where to answer (default: #lobby)")
    parser.add_argument("--secret-file", help="the secret (hex) is this file's first line")
    parser.add_argument("--max-reconnects", type=int, help="then give up (default: never)")
    args = parser.parse_args()
    bot = Bot(args, read_secret(args))

    delay = FIRST_DELAY_S
    reconnects = 0
    while True:
        try:
            bot.run()
        except Fatal as e:
            log(f"giving up: {e}")
            return 1
        # OSError: also timeouts; ValueError, KeyError: a line not as expected.
        except (OSError, ValueError, KeyError, Refused) as e:
            log(f"{'connection lost' if bot.welcomed else 'could not log in'}: {e}")
        if bot.welcomed:
            delay = FIRST_DELAY_S  # it worked: a new drop starts over
        if args.max_reconnects is not None and reconnects >= args.max_reconnects:
            log(f"giving up after {reconnects} reconnects")
            return 1
        reconnects += 1
        # Jitter: many bots dropped at once do not all come back at once.
        pause = random.uniform(delay / 2, delay)
        log(f"reconnecting in {pause:.1f} s")
        time.sleep(pause)
        delay = min(2 * delay, MAX_DELAY_S)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
