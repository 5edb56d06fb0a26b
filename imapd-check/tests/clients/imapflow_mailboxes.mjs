// imapflow (npm) against `imapd-check serve --listen`: what a mail client
// does with the mailbox extensions at login: ID (server name), NAMESPACE,
// LIST with SPECIAL-USE and LIST-STATUS (client.list with statusQuery),
// GETQUOTAROOT (client.getQuota), and APPEND to the Sent folder it found.
// Usage: node imapflow_mailboxes.mjs PORT USER PASS
// Prints one JSON line with the observations; exits 1 on any failure.
import { createRequire } from 'node:module';

const require = createRequire(process.env.IMAPFLOW_DIR + '/');
const { ImapFlow } = require('imapflow');
const [port, user, pass] = process.argv.slice(2);

const fail = (msg) => { console.error('FAIL: ' + msg); process.exit(1); };
setTimeout(() => fail('timed out'), 20000).unref();

const client = new ImapFlow({ host: '127.0.0.1', port: Number(port), secure: false, auth: { user, pass }, logger: false });
client.on('log', () => {});
await client.connect();
const out = {
  server_name: client.serverInfo && client.serverInfo.name,
  namespace: client.namespace,
};
const boxes = await client.list({ statusQuery: { messages: true, unseen: true } });
out.mailboxes = boxes.map((b) => ({ path: b.path, specialUse: b.specialUse || null, messages: b.status ? b.status.messages : null }));
const sentBox = boxes.find((b) => b.specialUse === '\\Sent');
if (!sentBox) fail('no \\Sent mailbox found');
await client.append(sentBox.path, 'Subject: sent by imapflow\r\n\r\nhello\r\n', ['\\Seen']);
const st = await client.status(sentBox.path, { messages: true });
out.sent_after_append = st.messages;
out.quota = await client.getQuota('INBOX');
await client.logout();
console.log(JSON.stringify(out));
