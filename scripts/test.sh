#!/usr/bin/env bash
# The project's one test command (CI runs it through .ci/run).
#
# On a fresh Debian 12 machine, as root, with only the Rust toolchain:
# installs the system packages the end-to-end tests drive (Postfix, ...),
# then builds and runs every test of the workspace. Exits non-zero on any
# failure. Nothing is skipped: a test that needs a missing tool fails.
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages the tests use. Add to this list, never filter tests.
# postfix: tests/tests/postfix.rs; python3 (imaplib), isync (mbsync) and
# node: imapd-check/tests/imap_clients.rs; strace: deliver/tests/ordering.rs;
# openssl (s_client, test certificates) and dovecot-core (`doveadm pw`
# hashes): imapd-check/tests/imap_security.rs; dovecot-imapd:
# imapd-check/tests/imap_dovecot_parity.rs (reference SORT/THREAD) and
# tests/tests/dovecot_import.rs (the account a Dovecot import starts from);
# dovecot-sieve (Pigeonhole's sieve-test): sieve/tests/pigeonhole.rs;
# sieve-connect: imapd-check/tests/managesieve.rs; uw-mailutils (UW's
# c-client `mailutil` writes and reads the mboxes of
# tests/tests/uw_mbox_import.rs). ceph-mon ceph-osd ceph-mds ceph-fuse
# ceph-common: tests/tests/cephfs.rs (scripts/ceph-up.sh; about 35 s to
# install, 10 s to bring up, 30 s of tests).
PACKAGES=(postfix python3 isync strace openssl dovecot-core dovecot-imapd dovecot-sieve neomutt tmux offlineimap3 sieve-connect uw-mailutils ceph-mon ceph-osd ceph-mds ceph-fuse ceph-common)

t0=$(date +%s)
step() { printf '\n=== %s (%ss elapsed)\n' "$*" "$(($(date +%s) - t0))"; }

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done
# Any node (Debian's or another repository's) will do; Debian's ships npm
# separately, other builds of nodejs bundle it.
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
if ((${#missing[@]})); then
    step "installing ${missing[*]}"
    if [[ $(id -u) -ne 0 ]]; then
        echo "scripts/test.sh: missing packages ${missing[*]}; run as root (or install them) first" >&2
        exit 1
    fi
    # Postfix asks two questions at install time; answer them up front.
    debconf-set-selections <<'SEL'
postfix postfix/main_mailer_type select Local only
postfix postfix/mailname string localhost.localdomain
SEL
    apt_opts=(-q -o DPkg::Lock::Timeout=600)
    apt-get "${apt_opts[@]}" update
    DEBIAN_FRONTEND=noninteractive apt-get "${apt_opts[@]}" install -y "${missing[@]}"
fi

# The npm IMAP client the imapd-check tests drive (from the npm registry).
if [[ ! -d target/node-clients/node_modules/imapflow ]]; then
    step "npm install imapflow"
    npm install --no-audit --no-fund --prefix target/node-clients imapflow@2
fi

step "cargo build --workspace"
cargo build --workspace

step "cargo test --workspace --no-fail-fast"
cargo test --workspace --no-fail-fast

# The storage library's optional tokio feature (Watch::wait_async) is off
# in the workspace build (whose `cargo test` also builds and runs the
# library's examples, storage/tests/examples.rs): test it on.
step "storage: tokio feature, library docs"
cargo test -p mailstore --features tokio --test watch
# The crate's guide and API docs build without a warning (broken links,
# missing docs: the crate denies missing_docs).
RUSTDOCFLAGS=-Dwarnings cargo doc -p mailstore --no-deps --features tokio

step "all tests passed"
