"""The cluster launcher: sbatch scripts that run on a fresh clone, launch knobs, any command, submitit (local)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from florence_lib.cli import COMMANDS, main
from florence_lib.config import ConfigError, from_dict
from florence_lib.launch.plan import NOT_LAUNCHABLE, ClusterConfig, plan_launch, time_minutes

ROOT = Path(__file__).resolve().parent.parent


def test_sbatch_creates_its_log_folder_cds_and_activates_the_environment(tmp_path: Path) -> None:
    cluster = ClusterConfig(workdir=str(tmp_path / "repo"), environment="conda activate florence", job_name="fl-x",
                            time="1-02:00:00", cpus_per_task=6, partition="a100", account="proj")
    plan = plan_launch(cluster)
    script = plan.write_sbatch(tmp_path / "job.sbatch").read_text()
    log_dir = tmp_path / "repo" / "runs" / "florence-pretrain-paper"
    assert log_dir.is_dir()  # Slurm does not create the --output folder; without it the job dies without a log
    assert f"#SBATCH --output={log_dir}/slurm-%j.out" in script
    assert f"\ncd {tmp_path / 'repo'}\nconda activate florence\n" in script
    for line in ("#SBATCH --job-name=fl-x", "#SBATCH --time=1-02:00:00", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --partition=a100", "#SBATCH --account=proj", "#SBATCH --nodes=64",
                 "#SBATCH --ntasks-per-node=8", "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
                 "srun --wait-all-nodes=1 --kill-on-bad-exit=1 python -m florence_lib pretrain --profile paper"):
        assert line in script, line
    assert "29500" not in script and "${" not in script.replace("${TORCH_EXTENSIONS_DIR:-", "")
    assert subprocess.run(["bash", "-n", str(tmp_path / "job.sbatch")]).returncode == 0
    fixed = plan_launch(ClusterConfig(master_port=12345, launcher="deepspeed", nodes=2,
                                      overrides=["data.batch_size=768"])).sbatch_script()
    assert "export MASTER_PORT=12345" in fixed and "--master_port $MASTER_PORT" in fixed
    assert "#SBATCH --ntasks-per-node=1" in fixed  # pdsh starts a node's ranks itself


def test_launch_cli_writes_sbatch_with_knobs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["launch", "pretrain", "--sbatch", str(tmp_path / "j.sbatch"), "--workdir", str(tmp_path),
                 "--time", "2:00:00", "--master-port", "23456", "--environment", "source env/bin/activate"]) == 0
    script = (tmp_path / "j.sbatch").read_text()
    assert "#SBATCH --time=2:00:00" in script and "MASTER_PORT=23456" in script and "source env/bin/activate" in script
    assert (tmp_path / "runs" / "florence-pretrain-paper").is_dir()
    with pytest.raises(SystemExit):
        main(["launch", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for flag in ("--cpus-per-task", "--master-port", "--job-name", "--time", "--environment"):
        assert flag in out
    assert "20000 + job id" in out and "[D-]HH:MM:SS" in out


@pytest.mark.parametrize("bad, message", [({"time": "3 days"}, "time: '3 days' is not [D-]HH:MM:SS"),
                                          ({"command": "lab"}, "command: 'lab' cannot be launched"),
                                          ({"master_port": 80}, "master_port: 80 is out of range")])
def test_bad_launch_options_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        from_dict(ClusterConfig, bad)


def test_any_command_launches_with_a_dry_run(capsys: pytest.CaptureFixture) -> None:
    assert time_minutes("1-02:03:04") == 1440 + 120 + 3 + 1
    for command in (c for c in COMMANDS if c not in NOT_LAUNCHABLE):
        from_dict(ClusterConfig, {"command": command})  # every registered command is accepted
    assert main(["launch", "evaluate", "--command-args", "zero-shot --dataset world", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    assert ("srun --wait-all-nodes=1 --kill-on-bad-exit=1 python -m florence_lib evaluate zero-shot --dataset world "
            "--profile smoke --run-dir runs/florence-evaluate-smoke") in out
    assert "# evaluate config (resolved):" in out and "dataset: world" in out
    assert main(["launch", "evaluate", "--command-args", "zero-shot", "--set", "no_such=1"]) == 2
    assert "no_such" in capsys.readouterr().err  # the command's own check, before anything is submitted
    assert main(["launch", "evaluate", "--command-args", "zero-shot", "--nodes", "2"]) == 2
    assert "runs as one task" in capsys.readouterr().err


def test_submitit_local_executor_runs_the_job_and_leaves_a_checkpoint(tmp_path: Path) -> None:
    from florence_lib.launch.submit import progress, submit
    from florence_lib.training.checkpoint import latest_checkpoint, load_checkpoint

    tiny = ["phases=[{name: s1, steps: 2}]", "optim.warmup_steps=0", "data.val_size=8", "data.image_size=32",
            "eval_every=0", "checkpoint_every=0"]
    plan = plan_launch(ClusterConfig(profile="smoke", workdir=str(tmp_path), time="0:10:00", overrides=tiny),
                       local_ranks=1)
    job = submit(plan, tmp_path / "submitit", cluster="local")
    assert job.result() == 0, job.stderr()
    p = progress(plan)
    assert p["last_train"]["step"] == 2 and p["records"] == 3  # two train steps + the data counts at the end
    ckpt = latest_checkpoint(tmp_path / "runs" / "florence-pretrain-smoke" / "checkpoints")
    model, config = load_checkpoint(ckpt)
    assert config["data"]["batch_size"] == plan.pretrain.data.batch_size and sum(
        t.numel() for t in model.parameters()) > 0


def test_local_dry_run_prints_the_torchrun_line_without_running(capsys: pytest.CaptureFixture) -> None:
    assert main(["launch", "pretrain", "--local", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "-m torch.distributed.run --standalone --nproc_per_node=2 -m florence_lib pretrain --profile smoke " \
           "--run-dir runs/cluster-local --config cluster/local.yaml" in out
    assert "# world 2 = 2 local ranks; batch 8 = 2 ranks" in out


def test_submit_without_slurm_refuses_instead_of_running_the_cluster_job_here(tmp_path: Path) -> None:
    import shutil

    from florence_lib.launch.submit import job_port, submit

    if shutil.which("sbatch"):
        pytest.skip("Slurm is present")
    plan = plan_launch(ClusterConfig(workdir=str(tmp_path)))
    with pytest.raises(ConfigError, match="no Slurm cluster found here"):
        submit(plan, tmp_path / "submitit")
    assert job_port("12345") == 20000 + 12345 % 20000 and job_port("4242_7") == 24242


@pytest.mark.parametrize(("command", "action"), [("detect", "train"), ("vl", "vqa"), ("video", "train")])
def test_every_adapter_dispatches_through_the_launcher(command: str, action: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["launch", command, "--command-args", action, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"srun --wait-all-nodes=1 --kill-on-bad-exit=1 python -m florence_lib {command} {action} --profile paper" in out
