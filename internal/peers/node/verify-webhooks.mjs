// verify-webhooks.mjs: checks Standard Webhooks signatures with the official
// library (npm standardwebhooks), for Go tests that want an independent
// verifier of what walletsync signs.
//
// stdin: JSON lines {"secret": "whsec_…", "headers": {"webhook-id": …,
// "webhook-timestamp": …, "webhook-signature": …}, "body": "<raw body>"},
// the headers as an HTTP server received them (latin1 strings, as Node's
// http module exposes header bytes).
// stdout: one JSON line per non-blank input line, in order: {"ok": true} or
// {"ok": false, "error": "<ErrorName>: <message>"}.
//
// The library's own checks apply unchanged, the timestamp tolerance (5 min
// either way) included; and verify() JSON-parses a body whose signature
// matched, so a non-JSON body fails with a SyntaxError.
import { createInterface } from 'node:readline';
import { Webhook } from 'standardwebhooks';

function describe(err) {
  if (err instanceof Error) return `${err.name}: ${err.message}`;
  return String(err);
}

const lines = createInterface({ input: process.stdin, crlfDelay: Infinity });
for await (const line of lines) {
  if (line.trim() === '') continue;
  let out;
  try {
    let input;
    try {
      input = JSON.parse(line);
    } catch (err) {
      throw new Error(`input line is not JSON: ${err.message}`);
    }
    if (input === null || typeof input !== 'object') throw new Error('input line is not a JSON object');
    const { secret, headers, body } = input;
    if (headers === null || typeof headers !== 'object') throw new Error('input has no headers object');
    new Webhook(secret).verify(body, headers);
    out = { ok: true };
  } catch (err) {
    out = { ok: false, error: describe(err) };
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}
