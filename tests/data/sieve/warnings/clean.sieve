# The "typical 10-rule script" of the delivery benchmark's LMTP+Sieve cell
# (bench/deliver_bench.sh, docs/BENCHMARKS.md): what a user writes for
# spam, mailing lists and a few senders. bench/deliver_bench.py's messages
# are made so that rules 1, 3, 4, 5 and 6 each match a tenth of them.
require ["fileinto", "mailbox", "imap4flags"];

# 1-2. Spam the filter upstream marked.
if header :is "X-Spam-Flag" "YES" {
    fileinto :create "Junk";
    stop;
}
if header :contains "Subject" ["***SPAM***", "[SPAM]"] {
    fileinto :create "Junk";
    stop;
}
# 3-4. Mailing lists into their folders.
if header :contains "List-Id" "<rust-users.lists.example.org>" {
    fileinto :create "Lists/rust-users";
    stop;
}
if header :contains "List-Id" "debian-devel.lists.debian.org" {
    fileinto :create "Lists/debian-devel";
    stop;
}
# 5. Notifications.
if address :domain :is "from" "github.example.com" {
    fileinto :create "Notifications";
    stop;
}
# 6. The boss is flagged and stays in INBOX.
if address :is "from" ["boss@example.org", "ceo@example.org"] {
    addflag "\\Flagged";
}
# 7. Invoices get a keyword.
if header :contains "Subject" ["invoice", "Rechnung"] {
    addflag "Invoice";
}
# 8. Mail to the abuse alias.
if address :localpart :is ["to", "cc"] "abuse" {
    fileinto :create "Abuse";
    stop;
}
# 9. Other bulk mail.
if anyof (header :is "Precedence" ["bulk", "junk"], exists "List-Unsubscribe") {
    fileinto :create "Bulk";
    stop;
}
# 10. Very large messages.
if size :over 20M {
    fileinto :create "Large";
    stop;
}
