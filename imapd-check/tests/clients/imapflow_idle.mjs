// imapflow (npm) against `imapd-check serve --listen`: LOGIN/AUTH, then
// getMailboxLock('INBOX') (seed 004), FETCH with envelopes, a flag change,
// and IDLE that must see a message delivered while it idles.
// Usage: node imapflow_idle.mjs PORT USER PASS [DELIVER_CMD...]
// IMAPFLOW_TLS=1: implicit TLS (trust the certificate with NODE_EXTRA_CA_CERTS).
// Prints one JSON line with the observations; exits 1 on any failure.
import { createRequire } from 'node:module';
import { execFileSync } from 'node:child_process';

const require = createRequire(process.env.IMAPFLOW_DIR + '/');
const { ImapFlow } = require('imapflow');
const [port, user, pass, ...deliverCmd] = process.argv.slice(2);
const secure = process.env.IMAPFLOW_TLS === '1';

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
setTimeout(() => fail('timed out'), 20000).unref();

const client = new ImapFlow({ host: '127.0.0.1', port: Number(port), secure, auth: { user, pass }, logger: false });
await client.connect();
const out = { authenticated: client.authenticated, secure: client.secureConnection, compressed: Boolean(client._inflate) };
const lock = await client.getMailboxLock('INBOX');
try {
  if (client.mailbox.path !== 'INBOX') fail('lock on wrong mailbox ' + client.mailbox.path);
  const msgs = [];
  for await (const m of client.fetch('1:*', { uid: true, envelope: true, flags: true })) msgs.push(m);
  out.fetched = msgs.map((m) => ({ uid: m.uid, subject: m.envelope.subject, flags: [...m.flags] }));
  await client.messageFlagsAdd({ uid: msgs[0].uid }, ['\\Flagged'], { uid: true });
  const seen = new Promise((resolve) => client.on('exists', (d) => resolve({ count: d.count, at: performance.now() })));
  const idling = client.idle();
  await sleep(300);
  const t0 = performance.now();
  if (deliverCmd.length > 0) {
    execFileSync(deliverCmd[0], deliverCmd.slice(1), { input: 'Subject: during idle\r\n\r\nhello\r\n', stdio: ['pipe', 'ignore', 'ignore'] });
  } else {
    const other = new ImapFlow({ host: '127.0.0.1', port: Number(port), secure, auth: { user, pass }, logger: false });
    await other.connect();
    await other.append('INBOX', 'Subject: during idle\r\n\r\nhello\r\n');
    await other.logout();
  }
  const t1 = performance.now();
  const ex = await seen;
  out.exists_after_idle = ex.count;
  out.notice_ms_after_delivery_returned = Math.max(0, ex.at - t1);
  out.delivery_ms = t1 - t0;
  const st = await client.status('INBOX', { messages: true });
  out.status_messages = st.messages;
  void idling;
} finally {
  lock.release();
}
await client.logout();
console.log(JSON.stringify(out));
