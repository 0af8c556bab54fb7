"""``make lab``: JupyterLab serves the notebooks on loopback, with a token, and the florence_lib kernel."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from florence_lib.distributed import free_port

ROOT = Path(__file__).resolve().parent.parent


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, b""


def test_make_lab_runs_the_lab_command() -> None:
    r = subprocess.run(["make", "-n", "lab"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "-m florence_lib lab" in r.stdout, r.stdout + r.stderr


@pytest.mark.slow
def test_lab_serves_the_notebooks_on_loopback_with_a_token(tmp_path: Path) -> None:
    port, token = free_port(), secrets.token_hex(16)
    env = {**os.environ, "JUPYTER_TOKEN": token, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"), "JUPYTER_DATA_DIR": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "florence_lib", "lab", "--no-browser", "--port", str(port), "--kernel-prefix",
           str(tmp_path / "prefix")] + (["--allow-root"] if os.geteuid() == 0 else [])
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if server.poll() is not None:
                pytest.fail(f"the lab exited: {server.stderr.read().decode()[-2000:]}")
            try:
                if get(f"{base}/api/status?token={token}")[0] == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.5)
        status, body = get(f"{base}/api/contents?token={token}")
        assert status == 200
        names = {item["name"] for item in json.loads(body)["content"]}
        assert {p.name for p in (ROOT / "notebooks").glob("*.ipynb")} <= names
        assert get(f"{base}/api/contents")[0] == 403  # no token, no notebooks
        assert get(f"{base}/api/contents?token=wrong")[0] == 403
        specs = json.loads(get(f"{base}/api/kernelspecs?token={token}")[1])["kernelspecs"]
        assert specs["florence_lib"]["spec"]["argv"][0] == sys.executable
        servers = [json.loads(p.read_text()) for p in (tmp_path / "runtime").glob("jpserver-*.json")]
        assert servers and all(s["hostname"] in ("localhost", "127.0.0.1") for s in servers)
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert server.returncode is not None
