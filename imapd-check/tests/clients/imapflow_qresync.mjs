// imapflow (npm) with `qresync: true` against `imapd-check serve --listen`:
// a first session learns UIDVALIDITY and HIGHESTMODSEQ; another session
// flags one message and deletes another; the first comes back with
// mailboxOpen(path, { uidValidity, changedSince }) (SELECT ... (QRESYNC
// ...)) and must be told of both, then sees a live expunge as VANISHED.
// Usage: node imapflow_qresync.mjs PORT USER PASS
// Prints one JSON line with the observations; exits 1 on any failure.
import { createRequire } from 'node:module';

const require = createRequire(process.env.IMAPFLOW_DIR + '/');
const { ImapFlow } = require('imapflow');
const [port, user, pass] = process.argv.slice(2);

const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
setTimeout(() => fail('timed out'), 20000).unref();
const connect = async (qresync) => {
  const c = new ImapFlow({ host: '127.0.0.1', port: Number(port), secure: false, auth: { user, pass }, logger: false, qresync });
  await c.connect();
  return c;
};

const out = {};
const a = await connect(true);
out.enabled = [...a.enabled];
const first = await a.mailboxOpen('INBOX');
const uidValidity = first.uidValidity;
const changedSince = first.highestModseq;
await a.logout();

const b = await connect(false);
await b.mailboxOpen('INBOX');
await b.messageFlagsAdd({ uid: 2 }, ['\\Flagged'], { uid: true });
await b.messageDelete({ uid: 3 }, { uid: true });
await b.logout();

const c = await connect(true);
const expunged = [];
const flagged = [];
c.on('expunge', (e) => expunged.push({ uid: e.uid, vanished: e.vanished, earlier: !!e.earlier }));
c.on('flags', (e) => flagged.push({ uid: e.uid, flags: [...e.flags] }));
const again = await c.mailboxOpen('INBOX', { uidValidity, changedSince });
out.qresync = !!again.qresync;
out.exists = again.exists;
out.resync_expunged = [...expunged];
out.resync_flags = [...flagged];
expunged.length = 0;
const d = await connect(false);
await d.mailboxOpen('INBOX');
await d.messageDelete({ uid: 1 }, { uid: true });
await d.logout();
await c.noop();
out.live_expunged = [...expunged];
await c.logout();
console.log(JSON.stringify(out));
