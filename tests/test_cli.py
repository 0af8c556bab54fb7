"""The CLI: bad arguments exit 2 with a one-line reason; profiles and --dry-run resolve configs."""

from __future__ import annotations

import importlib
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from florence_lib.cli import COMMANDS, build_parser, main

ROOT = Path(__file__).resolve().parent.parent


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
             "launch": ["pretrain", "--nodes", "1", "--gpus-per-node", "1"], "detect": ["train"],
             "vl": ["pretrain"], "video": ["train"]}.get(command, [])
    assert main([command, *extra, "--profile", "smoke", "--dry-run"]) == 0
    assert capsys.readouterr().out.strip()


# ----------------------------------------------------------------------------------------------- help and flags
def test_top_level_help_imports_no_heavy_module() -> None:
    probe = ("import json, sys\nfrom florence_lib.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n"
             "    pass\nprint(json.dumps(sorted(m for m in ('torch', 'timm', 'sklearn', 'faiss', 'transformers', "
             "'deepspeed') if m in sys.modules)))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    *help_lines, imported = r.stdout.strip().splitlines()
    assert json.loads(imported) == []
    assert all(name in "\n".join(help_lines) for name in COMMANDS)


def test_other_ranks_draw_no_progress_bars() -> None:
    probe = ("from florence_lib.cli import quiet_other_ranks\nquiet_other_ranks()\nfrom tqdm.auto import tqdm\n"
             "print(tqdm(range(3)).disable)")
    for rank, disabled in (("1", "True"), ("0", "False")):
        env = {**os.environ, "RANK": rank}
        env.pop("TQDM_DISABLE", None)
        r = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
        assert r.stdout.strip() == disabled, (rank, r.stdout, r.stderr)


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_has_a_description_and_examples(command: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    module = importlib.import_module(COMMANDS[command])
    assert (module.__doc__ or module.HELP).strip().splitlines()[0][:40] in out
    assert f"python -m florence_lib {command} --profile smoke --dry-run" in out and "--help-config" in out


def test_help_config_lists_every_key_with_type_default_range_and_help(capsys: pytest.CaptureFixture) -> None:
    from florence_lib.config_doc import config_keys
    from florence_lib.training.config import PretrainConfig

    assert main(["pretrain", "--help-config"]) == 0
    out = capsys.readouterr().out
    assert "data.batch_size: int = 64  range >= 2\n    images per optimizer step" in out
    assert "optim.lr: float = 0.0005  range [0.0, 1.0]" in out and "phases[].steps: int" in out
    keys = [k.key for k in config_keys(PretrainConfig)]
    assert len(keys) > 30 and all(f"\n{k}: " in out for k in keys)
    assert main(["pretrain", "--profile", "smoke", "--help-config"]) == 0
    assert "(this profile: " in capsys.readouterr().out
    assert main(["curate", "--help-config"]) == 0  # without curate's required --input/--output
    assert "CurateConfig keys" in capsys.readouterr().out


def test_run_dir_help_says_what_pretrain_uses(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        main(["pretrain", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "runs/pretrain-<profile>" in out and "resumes" in out


def test_deepspeed_launchers_local_rank_flag_is_accepted(monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    """DeepSpeed's launcher runs ``python -u -m florence_lib --local_rank=N <user args>`` on every node."""
    from florence_lib.launch import ClusterConfig, plan_launch

    monkeypatch.chdir(ROOT)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    plan = plan_launch(ClusterConfig(launcher="deepspeed", nodes=2, overrides=["data.batch_size=768"]))
    line = shlex.split(plan.rank_command())
    user_args = line[line.index("--module") + 2:]
    assert user_args[0] == "pretrain" and line[line.index("--module") + 1] == "florence_lib"
    args = build_parser("pretrain").parse_args(["--local_rank=3", *user_args])
    assert args.command == "pretrain" and args.local_rank_before_command == 3
    assert build_parser("pretrain").parse_args([*user_args, "--local_rank=5"]).local_rank == 5
    assert main(["--local_rank=3", *user_args, "--dry-run"]) == 0
    assert "model: unicl_huge" in capsys.readouterr().out and os.environ["LOCAL_RANK"] == "3"


def test_torch_engine_refuses_a_multi_rank_launch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    import torch

    from florence_lib.training.engine import Engine

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["pretrain", "--profile", "smoke", "--run-dir", str(tmp_path / "run")]) == 2
    assert "distributed.engine: 'torch' trains in one process" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()  # refused before anything was written
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    engine = Engine(model, lambda m, b: (m(b["x"]).sum(), {}), opt, torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1),
                    device=torch.device("cpu"))
    with pytest.raises(RuntimeError, match="WORLD_SIZE=2"):
        engine.fit([{"x": torch.ones(1, 2)}], 1)
