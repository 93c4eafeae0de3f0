"""`ray up cluster-local.yaml` for real, against an sshd on 127.0.0.1, then the documented path:
`ray dashboard` (an SSH tunnel), a job through the tunnel with the token, `ray down`.

The sshd and everything `ray up` starts through it run in their own PID namespace with their
own HOME and Ray temp dir (tests/cluster/sshd-sandbox.sh), so the bare `ray stop` that
`ray up` / `ray down` run on the "remote" machine cannot reach any other Ray on this one.
Only the machine-specific fields of cluster-local.yaml are replaced (address, SSH login, the
synced paths, ports); its setup and start commands run as shipped.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from headnode import free_port, wait_for_dashboard

from raysweep import jobs

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
SANDBOX = HERE / "sshd-sandbox.sh"
RAY = Path(sys.executable).with_name("ray")


def sandbox_unavailable() -> str | None:
    r = subprocess.run(["bash", str(SANDBOX), "check"], capture_output=True, text=True)
    return r.stderr.strip() or None if r.returncode else None


def local_config(env: dict, name: str, token_file: Path, gcs: int, dashboard: int) -> dict:
    config = yaml.safe_load((ROOT / "cluster-local.yaml").read_text())
    config["cluster_name"] = name
    config["provider"].update(head_ip="127.0.0.1", worker_ips=[])
    config["auth"] = {"ssh_user": env["SSH_USER"], "ssh_private_key": env["SSH_KEY"],
                      "ssh_proxy_command": env["SSH_PROXY_COMMAND"]}
    config["file_mounts"] = {"~/raysweep": str(ROOT), "~/.ray/auth_token": str(token_file)}
    start = config["head_start_ray_commands"]
    assert sum("--port=6379" in c for c in start) == 1, "cluster-local.yaml's head start command changed"
    # Free ports and a small share of this machine, so it runs beside other Ray instances.
    config["head_start_ray_commands"] = [
        c.replace("--port=6379", f"--port={gcs} --dashboard-port={dashboard} "
                  f"--dashboard-agent-listen-port={free_port()} --ray-client-server-port={free_port()} --num-cpus=1 "
                  f"--memory={2 * 1024**3} --object-store-memory={256 * 1024**2}")
        for c in start]
    return config


def run(cmd: list[str], env: dict, timeout: float) -> tuple[float, str]:
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    took = time.monotonic() - t0
    out = r.stdout + r.stderr
    assert r.returncode == 0, f"{' '.join(cmd[:3])} exited {r.returncode} after {took:.0f} s:\n{out[-4000:]}"
    return took, out


def remote(env: dict, command: str) -> str:
    """Run `command` on the sandboxed "remote" machine, as ray up does (login shell, ~/.bashrc)."""
    ssh = ["ssh", "-i", env["SSH_KEY"], "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=no",
           "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", f"ProxyCommand={env['SSH_PROXY_COMMAND']}",
           f"{env['SSH_USER']}@127.0.0.1", f"bash --login -c -i 'source ~/.bashrc; {command}' 2>/dev/null"]
    return subprocess.run(ssh, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL).stdout


@pytest.mark.slow
def test_ray_up_dashboard_tunnel_job_and_ray_down(tmp_path, monkeypatch):
    reason = sandbox_unavailable()
    if reason:
        pytest.skip(f"no sshd sandbox here: {reason}")
    # Short: Ray's socket paths under RAY_TMPDIR must stay below the 107-byte limit.
    box = Path(tempfile.mkdtemp(prefix="rs-sbx-", dir="/tmp"))
    name = f"raysweep-test-{secrets.token_hex(4)}"
    cli_env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_AUTH_MODE"):
        cli_env.pop(var, None)
    tunnel = None
    try:
        out = subprocess.run(["bash", str(SANDBOX), "start", str(box), sys.executable], capture_output=True,
                             text=True, timeout=120, check=True).stdout
        env = dict(line.split("=", 1) for line in out.split("\n") if "=" in line)
        env = {k: v.strip("'") for k, v in env.items()}
        token = secrets.token_hex(16)
        token_file = tmp_path / "auth_token"
        token_file.write_text(token + "\n")
        token_file.chmod(0o600)
        gcs, dashboard = free_port(), free_port()
        config_path = tmp_path / "cluster.yaml"
        config_path.write_text(yaml.safe_dump(local_config(env, name, token_file, gcs, dashboard)))

        up_s, _ = run([str(RAY), "up", "-y", "--no-config-cache", str(config_path)], cli_env, timeout=900)
        print(f"ray up: {up_s:.1f} s")
        home = Path(env["REMOTE_HOME"])
        assert (home / ".ray" / "auth_token").read_text().strip() == token  # file_mounts shipped it
        assert (home / "raysweep" / "pyproject.toml").is_file() and not (home / "raysweep" / ".venv").exists()
        assert list((box / "venv").glob("lib/python3*/site-packages/raysweep-*.dist-info")), \
            "setup_commands did not install raysweep into the remote Python"
        # docs/cluster.md's way to read the token off a running head.
        r = subprocess.run(f"'{RAY}' exec '{config_path}' 'cat ~/.ray/auth_token' | tail -n 1", shell=True,
                           env=cli_env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert r.stdout.strip() == token, r.stdout[-500:]

        # The documented way in: an SSH tunnel to the head's 127.0.0.1-only dashboard.
        local = free_port()
        tunnel = subprocess.Popen([str(RAY), "dashboard", "-p", str(local), "--remote-port", str(dashboard),
                                   str(config_path)], env=cli_env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, start_new_session=True)
        address = f"http://127.0.0.1:{local}"
        wait_for_dashboard(address, token, tunnel, timeout=60)

        monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ray/auth_token: the first call has no token
        monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
        monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
        with pytest.raises(jobs.JobError, match="needs its auth token"):
            jobs.status(address, "raysubmit_none")
        monkeypatch.setenv("RAY_AUTH_TOKEN", token)

        project = tmp_path / "proj"
        (project / "sweeps").mkdir(parents=True)
        (project / "pyproject.toml").write_text("[project]\nname = 'demo'\n")
        (project / "sweeps" / "tiny.yaml").write_text("name: tiny\n")
        marker = tmp_path / "seen.json"
        command = ("python -c \"import json, os, sys; json.dump(dict(home=os.environ['HOME'], "
                   f"python=sys.executable), open('{marker}', 'w')); print('ran-on-the-ray-up-head')\"")
        t0 = time.monotonic()
        job_id = jobs.submit(project / "sweeps" / "tiny.yaml", address, "", command=command)
        while not (state := jobs.status(address, job_id)).finished:
            assert time.monotonic() - t0 < 180, f"job still {state.status}"
            time.sleep(0.5)
        print(f"job through the tunnel, submit to {state.status}: {time.monotonic() - t0:.1f} s")
        assert state.status == "SUCCEEDED", state
        assert "ran-on-the-ray-up-head" in "".join(jobs.logs(address, job_id))
        seen = json.loads(marker.read_text())
        assert seen["home"] == str(home) and seen["python"].startswith(str(box / "venv"))

        down_s, _ = run([str(RAY), "down", "-y", str(config_path)], cli_env, timeout=300)
        print(f"ray down: {down_s:.1f} s")
        left = remote(env, "ps -e -o comm=")
        assert left and not re.search(r"raylet|gcs_server", left), f"ray down left Ray running:\n{left}"
    finally:
        if tunnel is not None:
            os.killpg(tunnel.pid, signal.SIGTERM)  # ray dashboard and its ssh child, started above
            tunnel.wait(timeout=30)
        subprocess.run(["bash", str(SANDBOX), "stop", str(box)], timeout=60)
        for state_file in Path("/tmp/ray").glob(f"cluster-{name}.*"):
            state_file.unlink()
        for cache in Path(tempfile.gettempdir()).glob("ray-config-*"):  # the launcher's config cache
            if name in cache.read_text(errors="replace"):
                cache.unlink()
        shutil.rmtree(box, ignore_errors=True)
