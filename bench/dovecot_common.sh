# Shared by bench/imap_bench.sh and bench/bigmailbox_bench.sh (sourced
# from the repository's root): their setup, loopback ports and the part of
# a private Dovecot's configuration both use. Not a script of its own.

# bench_setup OURS_DIR: as root, installs Dovecot if missing, creates the
# unprivileged user $BUSER, builds the load generator; sets LOAD, and BIN
# (OURS_DIR when given, else a fresh release build of ours).
bench_setup() {
    [[ $(id -u) -eq 0 ]] || { echo "run as root (installs packages, starts Dovecot, reads /proc)" >&2; exit 1; }
    local missing=() p
    for p in dovecot-core dovecot-imapd python3; do
        dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
    done
    if ((${#missing[@]})); then
        apt-get -q -o DPkg::Lock::Timeout=600 update
        DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 install -y --no-install-recommends "${missing[@]}"
    fi
    id "$BUSER" >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin "$BUSER"
    cargo build --release -p deliver-bench --bin imap-load
    LOAD=$PWD/target/release/imap-load
    if [[ -n $1 ]]; then
        BIN=$1
    else
        cargo build --release -p imapd-check -p tools
        BIN=$PWD/target/release
    fi
}

# Waits (up to 10 s) until something accepts connections on port $1.
wait_port() {
    for _ in $(seq 50); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && break
        sleep 0.2
    done
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# dovecot_conf WORKDIR PORT MAILUSER HOME MAIL_LOCATION: a private Dovecot
# (its runtime files and log in WORKDIR, users in WORKDIR/dovecot.passwd,
# plaintext LOGIN over loopback TCP on PORT, every user's mail owned by
# MAILUSER with the home HOME) on stdout; the caller appends its own
# settings.
dovecot_conf() {
    cat <<EOF
base_dir = $1/dovecot-run
state_dir = $1/dovecot-run/state
log_path = $1/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = dovecot
default_login_user = dovenull
passdb {
  driver = passwd-file
  args = $1/dovecot.passwd
}
userdb {
  driver = static
  args = uid=$3 gid=$3 home=$4
}
mail_location = $5
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $2
  }
}
EOF
}
