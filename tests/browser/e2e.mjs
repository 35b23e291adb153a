// mpchat's web page end to end, in headless Chromium: two people in
// browsers and one on nc talk in #lobby and in #lab2; every one of them
// sees the lines in the same order; a message that looks like HTML is
// shown as text; one browser reloads and resumes, with no line lost or
// repeated and no leave or join seen by the others.
//
//     node tests/browser/e2e.mjs PORT SCREENSHOT_DIR
//
// Run by tests/browser.rs against a server it started. Every wait has a
// deadline; any failure exits non-zero with what went wrong.
import { chromium } from "playwright-core";
import net from "node:net";
import assert from "node:assert/strict";

const [port, shots] = process.argv.slice(2);
const base = `http://127.0.0.1:${port}/`;
const WAIT = 10_000;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const failures = [];
try {
  await scenario();
} catch (e) {
  failures.push(e.stack || String(e));
} finally {
  await browser.close();
}
if (failures.length) {
  console.error(failures.join("\n"));
  process.exit(1);
}
console.log("ok");

/// A person on nc: lines in, lines out.
function person(nick) {
  const socket = net.connect(Number(port), "127.0.0.1");
  const lines = [];
  let rest = "";
  socket.on("data", (d) => {
    rest += d.toString();
    const parts = rest.split("\r\n");
    rest = parts.pop();
    lines.push(...parts);
  });
  socket.write(`${nick}\n`);
  return {
    lines,
    say: (text) => socket.write(`${text}\n`),
    end: () => socket.end(),
    async until(pred, what) {
      const deadline = Date.now() + WAIT;
      while (!lines.some(pred)) {
        if (Date.now() > deadline) throw new Error(`${nick} never saw ${what}; saw ${JSON.stringify(lines)}`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
  };
}

async function open(nick) {
  const page = await (await browser.newContext()).newPage();
  page.on("pageerror", (e) => failures.push(`${nick}'s page: ${e.message}`));
  await page.goto(base);
  await page.fill("#nick", nick);
  await page.click("#login button");
  await page.waitForSelector("#chat:not([hidden])", { timeout: WAIT });
  return page;
}

async function type(page, text) {
  await page.fill("#line", text);
  await page.press("#line", "Enter");
}

/// The chat lines (sender: text) of the page's current room.
function chats(page) {
  return page.$$eval("#messages li.chat", (items) =>
    items.map((li) => li.textContent.replace(/^\S+( [AP]M)? /, "")));
}

/// Waits until the page's current room shows exactly these chat lines.
async function chatsBecome(page, want, nick) {
  const deadline = Date.now() + WAIT;
  let have = await chats(page);
  while (JSON.stringify(have) !== JSON.stringify(want)) {
    if (Date.now() > deadline) {
      throw new Error(`${nick} shows ${JSON.stringify(have)}, not ${JSON.stringify(want)}`);
    }
    await new Promise((r) => setTimeout(r, 20));
    have = await chats(page);
  }
}

async function seen(page, text, nick) {
  await page.waitForFunction((t) => [...document.querySelectorAll("#messages li")]
    .some((li) => li.textContent.includes(t)), text, { timeout: WAIT })
    .catch(() => { throw new Error(`${nick} never saw ${text}`); });
}

async function scenario() {
  const ann = await open("ann");
  const cid = await open("cid");
  const bob = person("bob");
  await bob.until((l) => l.startsWith("Hello, bob!"), "the welcome");

  // #lobby: each speaks; everyone sees the same lines in the same order.
  bob.say("b1");
  await seen(ann, "bob: b1", "ann");
  await type(ann, "a1");
  await seen(cid, "ann: a1", "cid");
  await type(cid, "c1");
  await seen(ann, "cid: c1", "ann");
  await bob.until((l) => l.endsWith("cid: c1"), "c1");
  const lobby = ["bob: b1", "ann: a1", "cid: c1"];
  assert.deepEqual(await chats(ann), lobby);
  assert.deepEqual(await chats(cid), lobby);
  assert.deepEqual(bob.lines.filter((l) => /\] (ann|bob|cid): /.test(l)).map((l) => l.replace(/^\[..:..\] /, "")), lobby);

  // #lab2, and a line that looks like HTML.
  await type(ann, "/join #lab2");
  await type(cid, "/join #lab2");
  bob.say("/join #lab2");
  await seen(ann, "bob has joined #lab2", "ann");
  await seen(cid, "bob has joined #lab2", "cid");
  const trap = "<img src=x onerror=\"window.pwned=1\">";
  bob.say(trap);
  // Two clients' lines have no order between them until the server has
  // one: bob's comes back to him before ann speaks.
  await bob.until((l) => l.endsWith(`bob: ${trap}`), "the trap");
  await type(ann, "in the lab");
  await seen(cid, "ann: in the lab", "cid");
  await seen(ann, "ann: in the lab", "ann");
  for (const page of [ann, cid]) {
    assert.equal(await page.$$eval("#messages img", (l) => l.length), 0, "HTML was inserted");
    assert.equal(await page.evaluate(() => window.pwned), undefined, "a script ran");
    assert.deepEqual(await chats(page), [`bob: ${trap}`, "ann: in the lab"]);
  }
  if (shots) {
    await ann.setViewportSize({ width: 1100, height: 700 });
    await ann.screenshot({ path: `${shots}/desktop.png` });
    await ann.setViewportSize({ width: 390, height: 800 });
    await ann.screenshot({ path: `${shots}/phone.png`, fullPage: true });
  }

  // ann's tab leaves the page and comes back (a reload, with bob talking
  // while no page is there): the new page shows each room's lines again
  // (asked from the history), what was missed once, nothing twice, and
  // nobody saw ann leave or come back.
  await ann.goto("about:blank");
  bob.say("during the reload");
  await bob.until((l) => l.endsWith("bob: during the reload"), "the line");
  await ann.goto(base);
  await ann.waitForSelector("#chat:not([hidden])", { timeout: WAIT });
  bob.say("after the reload");
  await seen(ann, "bob: after the reload", "ann");
  await chatsBecome(ann, [`bob: ${trap}`, "ann: in the lab", "bob: during the reload",
    "bob: after the reload"], "ann after the reload");
  assert.equal(await ann.$$eval("#messages img", (l) => l.length), 0, "HTML was inserted");
  await ann.click("#rooms button:text-is('#lobby')");
  await chatsBecome(ann, lobby, "ann's #lobby after the reload");
  assert.ok(!bob.lines.some((l) => l.includes("ann has left")), "bob saw ann leave");
  bob.end();
}
