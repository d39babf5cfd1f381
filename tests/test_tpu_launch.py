"""launch/tpu.py: the commands it prints for TPU pods, GPU hosts and SLURM, and --execute run for
real on localhost with stand-ins for ssh, scp and the trainer's Python."""
import os
import pathlib
import shlex
import stat
import subprocess
import sys
import time

import pytest

from launch import tpu

REPO = pathlib.Path(__file__).resolve().parent.parent


def launch(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launch.tpu", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)


def commands(output: str) -> list[str]:
    return [line for line in output.splitlines() if line and not line.startswith("#")]


def remote_words(gcloud_ssh: str) -> list[str]:
    """The words of the script a `gcloud ... ssh ... --command=SCRIPT` line runs."""
    words = shlex.split(gcloud_ssh)
    [command] = [w for w in words if w.startswith("--command=")]
    return shlex.split(command.removeprefix("--command="))


def test_tpu_dry_run_prints_copy_setup_and_train_for_every_worker():
    result = launch("--tpu_name=pod", "--zone=us-east5-a", "--project=proj",
                    "--config=configs/r1_zero.py:qwen2_5_7b", "--workdir=gs://bucket/run",
                    "--env=WANDB_MODE=offline", "--env=NOTE=two words", "--",
                    "--config.rl.beta=0.01")
    assert result.returncode == 0, result.stderr
    pack, copy, setup, train = commands(result.stdout)
    assert "git ls-files" in pack and "tar czf" in pack
    assert shlex.split(copy)[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    for line in (copy, setup, train):
        assert {"--worker=all", "--zone=us-east5-a", "--project=proj"} <= set(shlex.split(line))
    assert shlex.split(setup)[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
    assert 'pip install -e . "jax[tpu]"' in setup
    words = remote_words(train)
    assert words[:3] == ["cd", "r1jax", "&&"]
    assert words[3:6] == ["R1JAX_DISTRIBUTED=auto", "WANDB_MODE=offline", "NOTE=two words"]
    assert words[6:] == ["python3", "-m", "launch.train", "--config=configs/r1_zero.py:qwen2_5_7b",
                         "--workdir=gs://bucket/run", "--config.rl.beta=0.01"]


def test_tpu_without_code_copy_or_setup_only_trains():
    result = launch("--tpu_name=pod", "--config=configs/r1_zero.py", "--workdir=gs://b/r",
                    "--code=none", "--setup=")
    assert result.returncode == 0, result.stderr
    setup, train = commands(result.stdout)
    assert remote_words(setup) == ["set", "-e;", "cd", "r1jax"]
    assert "--zone" not in train and "R1JAX_DISTRIBUTED=auto" in remote_words(train)


def test_gpu_dry_run_gives_each_process_its_id_and_the_first_host_as_coordinator():
    result = launch("--mode=gpu", "--hosts=me@node0,node1", "--num_processes=4",
                    "--coordinator_port=9999", "--config=configs/r1_zero.py:qwen2_5_1_5b",
                    "--workdir=/shared/run", "--code=none")
    assert result.returncode == 0, result.stderr
    lines = commands(result.stdout)
    assert [shlex.split(line)[:2] for line in lines[:2]] == [["ssh", "me@node0"], ["ssh", "node1"]]
    runs = [shlex.split(line) for line in lines[2:]]
    assert [r[1] for r in runs] == ["me@node0", "me@node0", "node1", "node1"]
    for process_id, run in enumerate(runs):
        words = shlex.split(run[2])
        assert words[:3] == ["cd", "r1jax", "&&"]
        assert words[3:7] == ["R1JAX_COORDINATOR=node0:9999", "R1JAX_NUM_PROCESSES=4",
                              f"R1JAX_PROCESS_ID={process_id}",
                              f"CUDA_VISIBLE_DEVICES={process_id % 2}"]
        assert words[7:] == ["python3", "-m", "launch.train",
                             "--config=configs/r1_zero.py:qwen2_5_1_5b", "--workdir=/shared/run"]


def test_slurm_script_runs_one_task_per_gpu_under_srun():
    result = launch("--mode=slurm", "--num_nodes=2", "--num_processes=16",
                    "--config=configs/r1_zero.py", "--workdir=/shared/run", "--env=A=1")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for line in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=8", "#SBATCH --gpus-per-task=1",
                 "export A=1", 'pip install -e . "jax[cuda12]"',
                 "srun python3 -m launch.train --config=configs/r1_zero.py --workdir=/shared/run",
                 "sbatch r1jax.sbatch"):
        assert line in out.splitlines()


def test_bad_flags_fail_with_a_clear_message():
    assert "--tpu_name" in launch("--config=c.py", "--workdir=w").stderr
    assert "KEY=VALUE" in launch("--tpu_name=p", "--config=c.py", "--workdir=w",
                                 "--env=1A=b").stderr
    assert "multiple" in launch("--mode=gpu", "--hosts=a,b", "--num_processes=3",
                                "--config=c.py", "--workdir=w").stderr
    assert "names a host twice" in launch("--mode=gpu", "--hosts=a,a", "--config=c.py",
                                          "--workdir=w").stderr


def test_pack_command_takes_what_git_tracks_or_would_track(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("workdirs/\n")
    (repo / "tracked.py").write_text("")
    subprocess.run(["git", "-C", str(repo), "add", "tracked.py"], check=True)
    (repo / "new.py").write_text("")
    (repo / "workdirs").mkdir()
    (repo / "workdirs" / "big.ckpt").write_text("")
    archive = tmp_path / "code.tar.gz"
    subprocess.run(tpu.pack_command(str(repo), str(archive)), shell=True, check=True)
    listing = subprocess.run(["tar", "tzf", str(archive)], capture_output=True, text=True,
                             check=True).stdout.split()
    assert sorted(listing) == [".gitignore", "new.py", "tracked.py"]


def write_executable(path: pathlib.Path, text: str):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_gpu_execute_copies_sets_up_and_starts_every_process(tmp_path):
    """--execute with ssh/scp stand-ins that run locally (in $HOME, like ssh) and a Python that
    records how each process was started."""
    home, bin_dir, records = tmp_path / "home", tmp_path / "bin", tmp_path / "records"
    for d in (home, bin_dir, records):
        d.mkdir()
    write_executable(bin_dir / "ssh", '#!/bin/bash\ncd "$HOME" && exec bash -c "$2"\n')
    write_executable(bin_dir / "scp", '#!/bin/bash\ncp "$1" "$HOME/${2#*:}"\n')
    write_executable(bin_dir / "python-record", f"""#!/bin/bash
echo "$R1JAX_COORDINATOR $R1JAX_NUM_PROCESSES $CUDA_VISIBLE_DEVICES $PWD $*" \
    > {records}/$R1JAX_PROCESS_ID
""")
    env = dict(os.environ, HOME=str(home), TMPDIR=str(tmp_path),
               PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = launch("--mode=gpu", "--hosts=localhost", "--num_processes=2", "--execute",
                    f"--python={bin_dir / 'python-record'}", "--setup=touch setup-ran",
                    "--config=configs/r1_zero.py:tiny", "--workdir=/tmp/run", "--",
                    "--config.rl.beta=0", env=env)
    assert result.returncode == 0, result.stderr
    remote = home / "r1jax"
    assert (remote / "launch" / "train.py").is_file() and (remote / "setup-ran").is_file()
    for process_id in range(2):
        assert (records / str(process_id)).read_text().split() == [
            "localhost:12355", "2", str(process_id), str(remote), "-m", "launch.train",
            "--config=configs/r1_zero.py:tiny", "--workdir=/tmp/run", "--config.rl.beta=0"]


def test_execute_stops_the_other_processes_when_one_fails():
    start = time.perf_counter()
    with pytest.raises(SystemExit, match="exited with 3"):
        tpu.execute([tpu.Step("train", ["sleep 60", "sleep 0.2; exit 3"]),
                     tpu.Step("never", ["touch /nonexistent/never"])])
    assert time.perf_counter() - start < 30
