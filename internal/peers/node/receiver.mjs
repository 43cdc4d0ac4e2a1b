// receiver.mjs: a webhook receiver that checks every POST with the official
// Standard Webhooks library (npm standardwebhooks), for Go tests that post
// walletsync's signed deliveries to a real HTTP server written by others.
//
//   WEBHOOK_SECRET=whsec_… RECEIVER_LOG=/path/log.jsonl node receiver.mjs PORT
//
// Listens on 127.0.0.1:PORT (0: any free port) and prints {"listening": port}
// as its first stdout line once it accepts connections. Every POST, whatever
// its path: the raw body and the headers as node:http received them (latin1
// strings) go to new Webhook(secret).verify(body, headers); the answer is 204
// when it verifies, else 400 with {"error": "<ErrorName>: <message>"}.
// Before answering, one JSON line per POST is appended to RECEIVER_LOG:
// {"ok": bool, "error": string|null, "webhookId": string|null, "body": string}
// (the body decoded as UTF-8). Other methods get 405 and are not logged.
// Ends on SIGTERM or SIGINT, and by itself when its parent process is gone.
import http from 'node:http';
import { appendFileSync } from 'node:fs';
import { Webhook } from 'standardwebhooks';

function fail(msg) {
  process.stderr.write(`receiver: ${msg}\n`);
  process.exit(2);
}

function describe(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

const portArg = process.argv[2] ?? '0';
const port = Number(portArg);
if (!/^\d+$/.test(portArg) || port > 65535) fail(`usage: node receiver.mjs PORT (0 for any), got ${JSON.stringify(portArg)}`);
const secret = process.env.WEBHOOK_SECRET;
if (!secret) fail('WEBHOOK_SECRET is not set');
const logPath = process.env.RECEIVER_LOG;
if (!logPath) fail('RECEIVER_LOG is not set');
let webhook;
try {
  webhook = new Webhook(secret);
} catch (err) {
  fail(`WEBHOOK_SECRET: ${describe(err)}`);
}

function reply(res, status, obj) {
  if (obj === undefined) {
    res.writeHead(status);
    res.end();
    return;
  }
  const body = JSON.stringify(obj);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

const server = http.createServer((req, res) => {
  if (req.method !== 'POST') {
    res.setHeader('allow', 'POST');
    reply(res, 405, { error: 'POST only' });
    return;
  }
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('error', (err) => process.stderr.write(`receiver: reading a request: ${describe(err)}\n`));
  req.on('end', () => {
    const raw = Buffer.concat(chunks);
    let ok = true;
    let error = null;
    try {
      webhook.verify(raw, req.headers);
    } catch (err) {
      ok = false;
      error = describe(err);
    }
    const entry = { ok, error, webhookId: req.headers['webhook-id'] ?? null, body: raw.toString('utf8') };
    try {
      appendFileSync(logPath, JSON.stringify(entry) + '\n');
    } catch (err) {
      process.stderr.write(`receiver: writing ${logPath}: ${describe(err)}\n`);
      reply(res, 500, { error: `receiver log: ${describe(err)}` });
      return;
    }
    if (ok) reply(res, 204);
    else reply(res, 400, { error });
  });
});

server.on('error', (err) => fail(describe(err)));
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ listening: server.address().port }) + '\n');
});

function stop() {
  server.close();
  server.closeAllConnections();
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// A test that dies without ending its child leaves no server behind.
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) stop();
}, 500).unref();
