#!/usr/bin/env bash
# An sshd on 127.0.0.1 that `ray up cluster-local.yaml` can treat as a remote machine,
# without touching the rest of this one.
#
#   tests/cluster/sshd-sandbox.sh start DIR [PYTHON]   # prints KEY=VALUE lines, also in DIR/env
#   tests/cluster/sshd-sandbox.sh stop DIR
#   tests/cluster/sshd-sandbox.sh check                # exit 0 if this machine can run it
#
# Needs root and Debian's openssh-server, rsync and netcat-openbsd. What makes it safe here:
#   - sshd and everything started through it (Ray included) live in their own PID namespace
#     (unshare --pid --mount-proc). `ray up` and `ray down` run a bare `ray stop` on the
#     "remote" machine, which stops every Ray process it can see: in there it sees only its own.
#     Stopping the sandbox kills the namespace's first process; the kernel then kills the rest.
#   - Every SSH session gets HOME=DIR/home and RAY_TMPDIR=DIR/tmp (sshd's ForceCommand), so
#     the remote ~/.bashrc, ~/.ray/auth_token, ~/raysweep and /tmp/ray are the sandbox's own.
#   - The "remote" Python is DIR/venv: it sees PYTHON's packages (a .pth file) but installs
#     into itself, so the cluster's `pip install ~/raysweep` leaves PYTHON's venv alone.
#   - sshd listens on a free port; ray up always dials port 22, so the config reaches it with
#     auth.ssh_proxy_command "nc 127.0.0.1 PORT" (netcat-openbsd).
set -euo pipefail

die() { echo "sshd-sandbox: $*" >&2; exit 1; }

check() {
    [ "$(id -u)" = 0 ] || die "needs root (sshd's privilege separation and unshare)"
    for tool in /usr/sbin/sshd ssh ssh-keygen rsync nc unshare; do
        command -v "$tool" >/dev/null || die "missing $tool (apt-get install openssh-server rsync netcat-openbsd)"
    done
    unshare --pid --fork --mount-proc --kill-child true 2>/dev/null || die "unshare --pid is not permitted here"
}

free_port() {
    "$1" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local dir python port
    dir=$(realpath -m "$1")
    python=${2:-python3}
    python=$(command -v "$python") || die "no python $2"
    check
    [ ! -e "$dir/sshd.pid" ] || die "$dir already has a sandbox (stop it first)"
    mkdir -p "$dir"/{etc,home/.ray,tmp}
    chmod 700 "$dir"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/etc/host_key"
    ssh-keygen -q -t ed25519 -N '' -f "$dir/client_key"
    cp "$dir/client_key.pub" "$dir/etc/authorized_keys"

    # The remote machine's Python: its own site-packages first, then PYTHON's.
    local site
    site=$("$python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    # pip comes from PYTHON's packages too, so no ensurepip; it installs into DIR/venv and
    # leaves what it finds in PYTHON's venv alone ("outside environment").
    "$python" -m venv --without-pip "$dir/venv"
    "$dir/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' \
        | { read -r own; echo "$site" > "$own/zz-sandbox-parent.pth"; }
    printf '#!%s\nimport sys\nfrom ray.scripts.scripts import main\nsys.exit(main())\n' \
        "$dir/venv/bin/python" > "$dir/venv/bin/ray"
    printf '#!%s\nimport sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n' \
        "$dir/venv/bin/python" > "$dir/venv/bin/pip"
    chmod +x "$dir/venv/bin/ray" "$dir/venv/bin/pip"

    # Read by every command ray up runs (bash --login -c -i 'source ~/.bashrc; ...').
    cat > "$dir/home/.bashrc" <<EOF
export PATH="$dir/venv/bin:\$PATH"
export RAY_TMPDIR="$dir/tmp"
export RAY_USAGE_STATS_ENABLED=0
EOF
    cat > "$dir/etc/session.sh" <<EOF
#!/bin/sh
# ForceCommand: the sandbox's HOME and temp dir for every session, then the asked command.
export HOME="$dir/home" RAY_TMPDIR="$dir/tmp"
cd "\$HOME"
if [ -n "\${SSH_ORIGINAL_COMMAND:-}" ]; then exec /bin/bash -c "\$SSH_ORIGINAL_COMMAND"; fi
exec /bin/bash --login
EOF
    chmod +x "$dir/etc/session.sh"

    port=$(free_port "$python")
    cat > "$dir/etc/sshd_config" <<EOF
Port $port
ListenAddress 127.0.0.1
HostKey $dir/etc/host_key
PidFile $dir/etc/sshd-inner.pid
AuthorizedKeysFile $dir/etc/authorized_keys
AuthenticationMethods publickey
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding yes
X11Forwarding no
PrintMotd no
MaxStartups 100
MaxSessions 100
ForceCommand $dir/etc/session.sh
EOF
    mkdir -p /run/sshd  # privilege separation directory; the package creates it only for its service
    /usr/sbin/sshd -t -f "$dir/etc/sshd_config" || die "sshd rejects $dir/etc/sshd_config"
    setsid unshare --pid --fork --mount-proc --kill-child \
        /usr/sbin/sshd -D -e -f "$dir/etc/sshd_config" > "$dir/sshd.log" 2>&1 < /dev/null &
    echo $! > "$dir/sshd.pid"
    for _ in $(seq 1 100); do
        if nc -z 127.0.0.1 "$port" 2>/dev/null; then break; fi
        kill -0 "$(cat "$dir/sshd.pid")" 2>/dev/null || die "sshd exited: $(tail -n 3 "$dir/sshd.log")"
        sleep 0.1
    done
    nc -z 127.0.0.1 "$port" || die "sshd did not listen on 127.0.0.1:$port in 10 s"
    {
        echo "SSHD_PORT=$port"
        echo "SSH_USER=$(id -un)"
        echo "SSH_KEY=$dir/client_key"
        echo "SSH_PROXY_COMMAND='nc 127.0.0.1 $port'"
        echo "REMOTE_HOME=$dir/home"
        echo "SANDBOX_PID=$(cat "$dir/sshd.pid")"
    } | tee "$dir/env"
}

stop() {
    local dir pid
    dir=$(realpath -m "$1")
    [ -f "$dir/sshd.pid" ] || return 0
    pid=$(cat "$dir/sshd.pid")
    # unshare --kill-child: ending it SIGKILLs sshd, the namespace's first process, and with
    # it every process in the namespace (Ray's included).
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$dir/sshd.pid"
}

case "${1:-}" in
    start) [ $# -ge 2 ] || die "usage: $0 start DIR [PYTHON]"; start "$2" "${3:-}" ;;
    stop) [ $# -eq 2 ] || die "usage: $0 stop DIR"; stop "$2" ;;
    check) check ;;
    *) die "usage: $0 start DIR [PYTHON] | stop DIR | check" ;;
esac
