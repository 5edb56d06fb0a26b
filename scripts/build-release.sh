#!/usr/bin/env bash
# Builds the binaries a mail server installs: release mode, statically
# linked against glibc (`-C target-feature=+crt-static`), stripped.
#
# Why static: Postfix starts `deliver` once per message, and on the
# machines measured here the dynamic loader (mapping libc and libgcc_s,
# relocations, their page faults) costs about 0.3 ms of CPU and 0.6 ms of
# wall time per start, a sizeable share of a delivery (docs/BENCHMARKS.md).
# getpwuid (the default user when -d is absent) still works: a static
# glibc loads the NSS modules of the same glibc at run time, so build on
# the distribution release you deploy to.
#
# Usage: bash scripts/build-release.sh            # prints the output directory
#        INSTALL_DIR=/usr/local/bin bash scripts/build-release.sh
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
# An explicit --target keeps these flags off build scripts and proc macros
# (which cannot be static) and puts the output in target/$host/release.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C strip=symbols" \
    cargo build -q --release --target "$host" -p deliver -p tools -p imapd-check
out=target/$host/release
if [[ -n ${INSTALL_DIR:-} ]]; then
    for b in deliver idx-inspect idx-admin imapd-check; do
        install -m 0755 "$out/$b" "$INSTALL_DIR/$b"
    done
    echo "$INSTALL_DIR"
else
    echo "$out"
fi
