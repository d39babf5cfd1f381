r"""Starts a training run on every worker of a Cloud TPU pod slice, on several GPU hosts, or
under SLURM: prints the commands, and with --execute runs them.

    python -m launch.tpu --tpu_name=NAME --zone=ZONE [--project=P] \
        --config=configs/r1_zero.py:qwen2_5_7b --workdir=gs://BUCKET/run [--execute] \
        [-- --config.rl.beta=0.01 ...]
    python -m launch.tpu --mode=gpu --hosts=node0,node1 --config=... --workdir=...
    python -m launch.tpu --mode=slurm --num_nodes=2 --num_processes=16 --config=... --workdir=...

Flags after `--` go to launch/train.py unchanged. The steps:
  1. (--code=copy) pack the checkout (git's tracked and untracked, not ignored, files) and copy
     it to every machine, unpacked into --remote_dir (relative to the remote home);
     --code=none when the code is already there (a shared file system, an image);
  2. --setup on every machine (default: `pip install -e .` with JAX for the accelerator);
  3. `python -m launch.train --config=... --workdir=...` once per process. The trainer joins
     the others through r1jax/distributed.py, from the environment set here: on TPU
     R1JAX_DISTRIBUTED=auto (JAX asks the TPU metadata for the coordinator and process ids);
     on GPU hosts R1JAX_COORDINATOR (first host), R1JAX_NUM_PROCESSES and R1JAX_PROCESS_ID;
     under SLURM, srun's own variables.
Every process writes checkpoints, so --workdir must be one place all machines see (gs://... on
TPU, a shared file system on GPU clusters). --env KEY=VALUE adds variables for the trainer.
"""
from __future__ import annotations

import dataclasses
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

from absl import flags

from launch import cli

MODES = ("tpu", "gpu", "slurm")
# Double quotes: the setup is itself single-quoted inside the ssh commands.
DEFAULT_SETUP = {"tpu": 'pip install -e . "jax[tpu]"', "gpu": 'pip install -e . "jax[cuda12]"',
                 "slurm": 'pip install -e . "jax[cuda12]"'}
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHIVE = "r1jax-code.tar.gz"
LOCAL_ARCHIVE = os.path.join(tempfile.gettempdir(), ARCHIVE)


@dataclasses.dataclass(frozen=True)
class Step:
    """Shell commands run in parallel; the next step starts once all of them succeeded."""
    title: str
    commands: list


# ------------------------------------------------------------------------- pieces

def parse_env(items: list[str]) -> dict:
    """["KEY=VALUE", ...] -> {KEY: VALUE}, rejecting what a shell would not take as a name."""
    env = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ValueError(f"--env={item!r}: expected KEY=VALUE with KEY a variable name.")
        env[key] = value
    return env


def assignments(env: dict) -> str:
    """'K=V K2=V2' with values quoted for the shell: a prefix that sets them for one command."""
    return " ".join(f"{k}={shlex.quote(str(v))}" for k, v in env.items())


def train_command(python: str, config: str, workdir: str, extra: list[str]) -> str:
    return shlex.join([python, "-m", "launch.train", f"--config={config}",
                       f"--workdir={workdir}", *extra])


def pack_command(repo: str = REPO, archive: str = LOCAL_ARCHIVE) -> str:
    """Packs the checkout as git sees it (no workdirs, caches or other ignored files)."""
    return (f"cd {shlex.quote(repo)} && git ls-files -z --cached --others --exclude-standard "
            f"| tar czf {shlex.quote(archive)} --null -T -")


def prepare_script(remote_dir: str, setup: str, copy_code: bool) -> str:
    """On one machine: unpack the copied code (if any) into remote_dir, then run setup there."""
    parts = ["set -e"]
    if copy_code:
        parts.append(f"mkdir -p {shlex.quote(remote_dir)}")
        parts.append(f"tar xzf {ARCHIVE} -C {shlex.quote(remote_dir)}")
    parts.append(f"cd {shlex.quote(remote_dir)}")
    if setup:
        parts.append(setup)
    return "; ".join(parts)


def run_script(remote_dir: str, env: dict, command: str) -> str:
    return " ".join([f"cd {shlex.quote(remote_dir)} &&", *([assignments(env)] if env else []),
                     command])


def host_name(destination: str) -> str:
    """"user@host" -> "host", the address other processes reach the coordinator at."""
    return destination.rpartition("@")[2]


# ------------------------------------------------------------------------- plans

def gcloud_tpu(verb: str, zone, project, *args: str, command: str = "") -> str:
    """`gcloud compute tpus tpu-vm VERB ARGS --worker=all [--command=...]`, with zone and
    project when given."""
    words = ["gcloud", "compute", "tpus", "tpu-vm", verb, *args, "--worker=all"]
    if zone:
        words.append(f"--zone={zone}")
    if project:
        words.append(f"--project={project}")
    return shlex.join(words) + (f" --command={shlex.quote(command)}" if command else "")


def tpu_plan(*, tpu_name: str, zone, project, setup: str, env: dict, remote_dir: str,
             copy_code: bool, train: str) -> list[Step]:
    """Every worker of the slice runs the same command; JAX finds the others by itself."""
    if not tpu_name:
        raise ValueError("--mode=tpu needs --tpu_name.")
    ssh = lambda script: gcloud_tpu("ssh", zone, project, tpu_name, command=script)
    steps = []
    if copy_code:
        steps += [Step("Pack this checkout", [pack_command()]),
                  Step("Copy it to every worker", [gcloud_tpu(
                      "scp", zone, project, LOCAL_ARCHIVE, f"{tpu_name}:{ARCHIVE}")])]
    steps.append(Step("Unpack and set up on every worker",
                      [ssh(prepare_script(remote_dir, setup, copy_code))]))
    env = {"R1JAX_DISTRIBUTED": "auto", **env}
    steps.append(Step("Train: one process per worker", [ssh(run_script(remote_dir, env, train))]))
    return steps


def process_layout(hosts: list[str], num_processes) -> list[tuple[str, int]]:
    """(host, local rank) of each process id, host-major: processes 0..p-1 on the first host."""
    if not hosts:
        raise ValueError("--mode=gpu needs --hosts.")
    if len(set(hosts)) != len(hosts):
        raise ValueError(f"--hosts={','.join(hosts)} names a host twice: list each host once "
                         "and set --num_processes to run several processes per host.")
    num_processes = num_processes or len(hosts)
    if num_processes % len(hosts):
        raise ValueError(f"--num_processes={num_processes} is not a multiple of the "
                         f"{len(hosts)} hosts.")
    per_host = num_processes // len(hosts)
    return [(host, rank) for host in hosts for rank in range(per_host)]


def gpu_plan(*, hosts: list[str], num_processes, coordinator_port: int, setup: str, env: dict,
             remote_dir: str, copy_code: bool, train: str) -> list[Step]:
    """One ssh per process with the explicit R1JAX_* layout; several per host get a GPU each."""
    layout = process_layout(hosts, num_processes)
    per_host = len(layout) // len(hosts)
    ssh = lambda host, script: shlex.join(["ssh", host, script])
    steps = []
    if copy_code:
        steps += [Step("Pack this checkout", [pack_command()]),
                  Step("Copy it to every host",
                       [shlex.join(["scp", LOCAL_ARCHIVE, f"{h}:{ARCHIVE}"]) for h in hosts])]
    steps.append(Step("Unpack and set up on every host",
                      [ssh(h, prepare_script(remote_dir, setup, copy_code)) for h in hosts]))
    coordinator = f"{host_name(hosts[0])}:{coordinator_port}"
    commands = []
    for process_id, (host, rank) in enumerate(layout):
        process_env = {**env, "R1JAX_COORDINATOR": coordinator,
                       "R1JAX_NUM_PROCESSES": str(len(layout)),
                       "R1JAX_PROCESS_ID": str(process_id)}
        if per_host > 1:
            process_env["CUDA_VISIBLE_DEVICES"] = str(rank)
        commands.append(ssh(host, run_script(remote_dir, process_env, train)))
    steps.append(Step(f"Train: {len(layout)} processes", commands))
    return steps


def slurm_script(*, num_nodes: int, num_processes, setup: str, env: dict, remote_dir: str,
                 train: str) -> str:
    """An sbatch script: srun starts the processes; JAX reads the layout from SLURM."""
    num_processes = num_processes or num_nodes
    if num_processes % num_nodes:
        raise ValueError(f"--num_processes={num_processes} is not a multiple of "
                         f"--num_nodes={num_nodes}.")
    per_node = num_processes // num_nodes
    lines = ["#!/bin/bash", "#SBATCH --job-name=r1jax", f"#SBATCH --nodes={num_nodes}",
             f"#SBATCH --ntasks-per-node={per_node}"]
    if per_node > 1:
        lines.append("#SBATCH --gpus-per-task=1")
    lines += ["#SBATCH --output=r1jax-%j.log", "set -e",
              "# The checkout and Python environment are on a file system every node shares.",
              f"cd {shlex.quote(remote_dir)}"]
    if setup:
        lines.append(setup)
    lines += [f"export {k}={shlex.quote(str(v))}" for k, v in env.items()]
    lines.append(f"srun {train}")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------- running

FLAGS = flags.FLAGS


def define_flags():
    """The binary's flags; defined only when it runs, so that tests can import this module
    beside other binaries that define --config and --workdir too."""
    flags.DEFINE_enum("mode", "tpu", MODES, "Cloud TPU pod slice, GPU hosts over ssh, or a "
                      "SLURM batch script.")
    flags.DEFINE_string("config", None, "configs/*.py file[:variant], as launch/train.py.")
    flags.DEFINE_string("workdir", None, "The run's directory, seen by every machine.")
    flags.DEFINE_bool("execute", False, "Run the commands; otherwise only print them.")
    flags.DEFINE_string("setup", None, "Shell command run in --remote_dir on every machine "
                        "before training; '' for none. Default: pip install -e . with JAX "
                        "for the accelerator.")
    flags.DEFINE_multi_string("env", [], "KEY=VALUE for the trainer's environment (repeat).")
    flags.DEFINE_enum("code", "copy", ("copy", "none"), "copy: pack this checkout and copy "
                      "it to every machine; none: it is already in --remote_dir.")
    flags.DEFINE_string("remote_dir", "r1jax", "The checkout on every machine (relative paths "
                        "start at the remote home).")
    flags.DEFINE_string("python", "python3", "The Python on the machines: a name on PATH "
                        "or an absolute path.")
    flags.DEFINE_string("tpu_name", None, "TPU VM name (mode=tpu).")
    flags.DEFINE_string("zone", None, "TPU zone; default: gcloud's configured one.")
    flags.DEFINE_string("project", None, "GCP project; default: gcloud's configured one.")
    flags.DEFINE_list("hosts", [], "mode=gpu: ssh destinations ([user@]host); the first "
                      "runs the coordinator.")
    flags.DEFINE_integer("num_processes", None, "mode=gpu/slurm: processes in all (default: "
                         "one per host or node). Several per host each get one GPU.")
    flags.DEFINE_integer("coordinator_port", 12355, "mode=gpu: port of the coordinator on the "
                         "first host.")
    flags.DEFINE_integer("num_nodes", 1, "mode=slurm: nodes to allocate.")
    flags.DEFINE_string("slurm_script", "r1jax.sbatch", "mode=slurm: where --execute writes "
                        "the batch script it submits.")
    flags.mark_flags_as_required(["config", "workdir"])


def render(steps: list[Step]) -> str:
    out = []
    for i, step in enumerate(steps, 1):
        parallel = " (in parallel)" if len(step.commands) > 1 else ""
        out.append(f"# {i}. {step.title}{parallel}")
        out += step.commands
    return "\n".join(out) + "\n"


def execute(steps: list[Step]):
    """Runs the steps in order, the commands of a step in parallel. If one fails, the others of
    its step are stopped (the processes of a run cannot go on without it) and this exits.

    Stopping a local ssh may leave its remote process running; that process then stops with an
    error once JAX's coordination service notices the missing ones.
    """
    for step in steps:
        print(f"# {step.title}", flush=True)
        procs = [subprocess.Popen(cmd, shell=True) for cmd in step.commands]
        while True:
            codes = [p.poll() for p in procs]
            failed = next((p for p, code in zip(procs, codes) if code not in (None, 0)), None)
            if failed is not None or all(code == 0 for code in codes):
                break
            time.sleep(1)
        if failed is not None:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            sys.exit(f"{step.title}: `{failed.args}` exited with {failed.returncode}.")


def main(argv):
    run(extra=argv[1:])  # what follows `--`, for launch/train.py


def run(extra: list[str]):
    mode = FLAGS.mode
    setup = DEFAULT_SETUP[mode] if FLAGS.setup is None else FLAGS.setup
    env = parse_env(FLAGS.env)
    train = train_command(FLAGS.python, FLAGS.config, FLAGS.workdir, extra)
    if mode == "slurm":
        script = slurm_script(num_nodes=FLAGS.num_nodes, num_processes=FLAGS.num_processes,
                              setup=setup, env=env, remote_dir=FLAGS.remote_dir, train=train)
        submit = shlex.join(["sbatch", FLAGS.slurm_script])
        if not FLAGS.execute:
            print(f"# {FLAGS.slurm_script}\n{script}# Submit it:\n{submit}")
            return
        with open(FLAGS.slurm_script, "w") as f:
            f.write(script)
        execute([Step("Submit the batch script", [submit])])
        return
    if mode == "tpu":
        steps = tpu_plan(tpu_name=FLAGS.tpu_name, zone=FLAGS.zone, project=FLAGS.project,
                         setup=setup, env=env, remote_dir=FLAGS.remote_dir,
                         copy_code=FLAGS.code == "copy", train=train)
    else:
        steps = gpu_plan(hosts=FLAGS.hosts, num_processes=FLAGS.num_processes,
                         coordinator_port=FLAGS.coordinator_port, setup=setup, env=env,
                         remote_dir=FLAGS.remote_dir, copy_code=FLAGS.code == "copy",
                         train=train)
    if FLAGS.execute:
        execute(steps)
    else:
        print(render(steps), end="")


if __name__ == "__main__":
    cli.run(main, define_flags)
