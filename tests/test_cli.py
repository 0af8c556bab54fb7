"""The CLI: bad arguments exit 2 with a one-line reason; profiles and --dry-run resolve configs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from florence_lib.cli import COMMANDS, main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "florence_lib", *args], capture_output=True, text=True,
                          timeout=300)


def test_pretrain_unknown_key_exits_2_and_names_it() -> None:
    r = run_cli("pretrain", "--set", "no.such_key=1")
    assert r.returncode == 2, r.stderr
    assert "no.such_key" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_unknown_command_and_option_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["no-such-command"]) == 2
    assert main(["info", "--no-such-option"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("florence_lib: error:") for line in err)


def test_info_reports_environment(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["packages"]["torch"] == "2.14.1"
    assert report["torch_threads"] >= 1


@pytest.mark.parametrize("command", [c for c in COMMANDS if c != "info"])
def test_every_command_dry_run_prints_its_config(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    extra = {"curate": ["--input", "x.csv", "--output", "out"], "evaluate": ["zero-shot"],
             "vl": ["vqa"]}.get(command, [])
    assert main([command, *extra, "--profile", "smoke", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip()
