"""Two JAX processes on localhost (gloo, 2 fake CPU devices each) act as one 4-device mesh."""
import functools
import json
import os
import pathlib
import socket
import subprocess
import sys

import jax
import numpy as np

from r1jax import distributed, models
from tests import multihost_worker as worker

REPO = pathlib.Path(__file__).resolve().parent.parent
NUM_PROCESSES = 2
TIMEOUT_S = 180  # Generous: a loaded CI machine; an idle one takes ~15 s.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_workers() -> list[dict]:
    """Starts the processes, waits for all of them (killing the rest if one fails), parses JSON."""
    port = free_port()
    procs = []
    for process_id in range(NUM_PROCESSES):
        env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2",
                   JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO),
                   R1JAX_COORDINATOR=f"127.0.0.1:{port}",
                   R1JAX_NUM_PROCESSES=str(NUM_PROCESSES), R1JAX_PROCESS_ID=str(process_id))
        procs.append(subprocess.Popen([sys.executable, "-m", "tests.multihost_worker"], cwd=REPO,
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True))
    try:
        outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, f"worker failed (rc={p.returncode}):\n{err[-3000:]}"
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def test_two_processes_feed_halves_of_one_batch_and_match_one_process():
    results = sorted(run_workers(), key=lambda r: r["process"])
    config = models.preset(worker.PRESET)
    params = jax.jit(functools.partial(models.init_params, config))(jax.random.key(0))
    expected = float(worker.next_token_loss(config, params, worker.global_tokens(config)))
    for r in results:
        assert (r["devices"], r["local_devices"]) == (4, 2)
        assert r["global_shape"] == [worker.GLOBAL_BATCH, worker.LENGTH]
        np.testing.assert_allclose(r["loss"], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r["loaded_loss"], expected, rtol=1e-5, atol=1e-5)
    assert [r["main"] for r in results] == [True, False]


def test_launch_mode_reads_the_environment():
    assert distributed.launch_mode({}) == "single"
    assert distributed.launch_mode({"R1JAX_NUM_PROCESSES": "1"}) == "single"
    assert distributed.launch_mode({"R1JAX_NUM_PROCESSES": "4"}) == "explicit"
    assert distributed.launch_mode({"R1JAX_DISTRIBUTED": "auto"}) == "auto"
    assert distributed.launch_mode({"SLURM_NTASKS": "16"}) == "auto"
    assert not distributed.maybe_initialize({})
