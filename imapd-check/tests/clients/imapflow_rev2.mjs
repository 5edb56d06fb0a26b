// imapflow (npm) in IMAP4rev2 against `imapd-check serve --listen`:
// imapflow sends ENABLE IMAP4rev2 when the server advertises it, then
// relies on rev2 behaviour: SEARCH answered by ESEARCH, UTF-8 mailbox
// names, FLAGS without \Recent, STATUS with SIZE.
// Usage: node imapflow_rev2.mjs PORT USER PASS
// Prints one JSON line with the observations; exits 1 on any failure.
import { createRequire } from 'node:module';

const require = createRequire(process.env.IMAPFLOW_DIR + '/');
const { ImapFlow } = require('imapflow');
const [port, user, pass] = process.argv.slice(2);

const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
setTimeout(() => fail('timed out'), 20000).unref();

const client = new ImapFlow({ host: '127.0.0.1', port: Number(port), secure: false, auth: { user, pass }, logger: false });
await client.connect();
const out = { enabled: [...client.enabled] };
const lock = await client.getMailboxLock('INBOX');
try {
  out.unseen = await client.search({ seen: false }, { uid: true });
  out.subject = await client.search({ subject: 'Grüße' }, { uid: true });
  out.none = await client.search({ subject: 'no such words' }, { uid: true });
  await client.messageFlagsAdd({ uid: out.unseen[0] }, ['\\Seen'], { uid: true });
  out.unseen_after = await client.search({ seen: false }, { uid: true });
  out.flags = [];
  for await (const m of client.fetch('1:*', { uid: true, flags: true })) out.flags.push([...m.flags]);
} finally {
  lock.release();
}
await client.mailboxCreate('Entwürfe');
out.folders = (await client.list()).map((m) => m.path);
out.opened = (await client.mailboxOpen('Entwürfe')).path;
const st = await client.status('INBOX', { messages: true, unseen: true });
out.status = { messages: st.messages, unseen: st.unseen };
await client.logout();
console.log(JSON.stringify(out));
