#!/usr/bin/env bash
# The first thing to run: builds the binaries, delivers samples/hello.eml to
# user `demo` in the default spool (./spool, no --spool flag and no config
# needed), then shows the index with idx-inspect. Run it again to deliver
# another copy (UIDs keep counting up).
#
# Usage: bash scripts/demo.sh [--release]
set -euo pipefail
cd "$(dirname "$0")/.."

profile=debug
cargo_flags=()
if [[ ${1:-} == --release ]]; then
    profile=release
    cargo_flags=(--release)
fi
cargo build -q "${cargo_flags[@]}" -p deliver -p tools
bin=target/$profile

# Show the embedded default (./spool): ignore a spool set in the
# environment or in /etc/mailstore.conf (an empty config file = defaults).
unset MAILSTORE_SPOOL
export MAILSTORE_CONFIG=/dev/null

echo "\$ $bin/deliver --autocreate -d demo -f alice@example.org < samples/hello.eml"
"$bin/deliver" --autocreate -d demo -f alice@example.org <samples/hello.eml
echo "delivered (exit 0)"

echo
echo "\$ $bin/idx-inspect header -d demo"
"$bin/idx-inspect" header -d demo

echo
echo "\$ $bin/idx-inspect records -d demo"
"$bin/idx-inspect" records -d demo

# The newest message file: the highest UID in the INBOX directory.
inbox=spool/demo/INBOX
last=$(find "$inbox" -maxdepth 1 -name '[1-9]*.' -printf '%f\n' | sort -n | tail -1)
echo
echo "The message is the file $inbox/$last (stored with CRLF line ends, shown here without):"
echo "---"
cat "$inbox/$last" | tr -d '\r'
echo "---"
