"""launch/rejection_sample.py on the tiny config: SIGKILL in the middle and the same command again
give exactly an uninterrupted run's files; two processes give exactly one process's files."""
import os
import pathlib
import subprocess
import sys

import pytest

from configs import common
from r1jax.rejection import merge
from tests.test_two_process_train import environment, free_port, run_all, sigkill_when

REPO = pathlib.Path(__file__).resolve().parent.parent
TIMEOUT_S = 240
SHARDS = 8  # 16 prompts (12 addition, 4 helpful), 2 per shard

pytestmark = pytest.mark.skipif(not os.path.isdir(common.SHARED_DATA),
                                reason=f"needs the shared data sets in {common.SHARED_DATA}")


def command(workdir) -> list[str]:
    return [sys.executable, "-m", "launch.rejection_sample",
            f"--config={REPO / 'configs' / 'rejection_sampling.py'}:tiny", f"--workdir={workdir}",
            "--config.output.shard_size=2", "--noprogress"]


def outputs(workdir: pathlib.Path) -> dict[str, bytes]:
    """Every output file but the timings (stats files)."""
    files = {name: (workdir / name).read_bytes() for name in (merge.ACCEPTED, merge.REJECTED_SAMPLE)}
    for path in sorted((workdir / "shards").iterdir()):
        if not path.name.endswith("stats.json"):
            files[f"shards/{path.name}"] = path.read_bytes()
    return files


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("uninterrupted")
    run_all([(command(workdir), environment(devices=1))])
    return outputs(workdir)


def test_sigkill_then_rerun_gives_the_uninterrupted_output(uninterrupted, tmp_path):
    sigkill_when(command(tmp_path), environment(devices=1),
                 lambda: any((tmp_path / "shards").glob("*.stats.json")), "finished a shard")
    done = len(list((tmp_path / "shards").glob("*.stats.json")))
    assert 1 <= done < SHARDS and not (tmp_path / merge.ACCEPTED).exists()
    run_all([(command(tmp_path), environment(devices=1))])
    assert outputs(tmp_path) == uninterrupted
    assert len(uninterrupted) == 2 + 2 * SHARDS
    assert uninterrupted[merge.ACCEPTED]  # the general rows at least


def test_two_processes_give_the_one_process_output(uninterrupted, tmp_path):
    coordinator = f"127.0.0.1:{free_port()}"
    run_all([(command(tmp_path), environment(devices=1, R1JAX_COORDINATOR=coordinator,
                                             R1JAX_NUM_PROCESSES="2", R1JAX_PROCESS_ID=str(i)))
             for i in range(2)])
    assert outputs(tmp_path) == uninterrupted


def test_continuous_batching_on_a_two_device_mesh_gives_the_same_output(uninterrupted, tmp_path):
    """The policy's samples and the judge's replies through slots split over two devices."""
    run_all([(command(tmp_path) + ["--config.sampling.batching=continuous"],
              environment(devices=2))])
    assert outputs(tmp_path) == uninterrupted


@pytest.mark.parametrize("flag,message", [
    ("--config.sources.addition.kind=poetry",
     "sources.addition.kind='poetry': expected one of ('math', 'code', 'chat')"),
    ("--config.sampling.batching=dynamic",
     "sampling.batching='dynamic': expected one of ('static', 'continuous')"),
])
def test_bad_input_fails_at_start_up_naming_the_key(tmp_path, flag, message):
    result = subprocess.run(command(tmp_path) + [flag], cwd=REPO, env=environment(devices=1),
                            capture_output=True, text=True, timeout=TIMEOUT_S)
    assert result.returncode != 0
    assert message in result.stderr
