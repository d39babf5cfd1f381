"""Code reward: run a completion's Python program against the example's tests, in a sandbox.

Reward (registered as `code`, field `tests`: per example a list of Python snippets, each raising
on failure): the fraction of tests passed, or with `all_or_nothing` 1.0 only if all pass. The
program is the last fenced ```python block of the `<answer>` (else of the text after
`</think>`, else of the completion); without a fence, that text itself.

How a test runs (code_tests.py): the harness parses each assert test and splits it into the
program values it needs (probes: `add(1, 2)`, `escaped`) and the checks on them (`== 3`). The
sandboxed child runs the program once (`__name__` is not "__main__", so an
`if __name__ == "__main__":` block does not run), then computes the probes, in test order, and
sends each value back as plain data (None, bool, int, float, str, and lists, tuples, dicts, sets
of them); the harness checks the asserts in its own process. The program never sees a test, an
expected value or the harness's state, so it cannot forge a pass (by writing result lines from
the caller's frame, emptying the test list, returning an object whose `__eq__` is always true,
or redefining names the tests use): the most it can do is choose what its functions return.
A program that raises passes no test; a run killed by a limit keeps the tests whose probes were
answered before. Only a failure of the sandbox itself, or a test outside the subset the harness
evaluates (code_tests.UnsupportedTest: loops, `def`, attribute calls, ...), is a reward error
(NaN); timeouts and crashes are the program's fault and score what passed.

What the sandbox does (one child process per run, `run_many` runs them on a thread pool):
- modes, picked once by a self-test (`sandbox_mode`; logged): "namespace" runs the child under
  `unshare --mount --net --pid --fork --mount-proc` (needs root or CAP_SYS_ADMIN), with private
  tmpfs /tmp, /var/tmp, /dev/shm (writes there vanish with the run) and a new /proc;
  "rlimit" is the fallback where namespaces are refused;
- as root, the program runs as a user id of its own (one of UID_SLOTS from UID_BASE, claimed
  with a lock file, so that concurrent runs, in this process or another, never share one):
  RLIMIT_NPROC then holds a fork bomb (root ignores it), the program cannot signal, ptrace or
  read the environment of other users' processes, and cannot write where only root can;
  afterwards every process of that uid is killed (`kill -9 -1` as that uid), daemons included;
- limits: wall clock (`timeout_s`, from when the sandbox is set up and the program starts to the
  end of the tests), RLIMIT_CPU, RLIMIT_AS (memory), RLIMIT_FSIZE,
  RLIMIT_NPROC, no core files; stdout + stderr + results over `max_output_bytes` kill the run;
  a killed run's process group and PID namespace die with it;
- a fresh working directory (HOME and TMPDIR too), an environment of PATH and LANG only,
  stdin at /dev/null;
- no network: an empty network namespace (namespace mode) and, in both modes, socket
  constructors that refuse;
- results come back on a separate pipe tagged with a per-run random nonce, so printing
  "PASS" or exiting early with status 0 scores nothing; the verdicts are the harness's own.

What it does not do:
- it is not a security boundary against deliberate attacks: raw syscalls through ctypes get
  past the socket guard (the network namespace still stops them); a program that reads the
  tests from a world-readable data set on disk (see below) can look up the expected values;
- no syscall filter (seccomp) and no cgroup: memory is bounded per process by address space,
  not in total across a program's processes (at most max_processes of them);
- the file system is not hidden: world-readable files (the data sets, the repository) can be
  read; in rlimit mode world-writable directories (/tmp) can be written, bounded per file by
  RLIMIT_FSIZE but not in number;
- in rlimit mode without root, there is no user id to switch to: RLIMIT_NPROC then counts all
  the invoking user's processes, other processes of that user can be signalled, and a child
  that leaves the run's process group (setsid) outlives the run;
- the program must be Python; the interpreter is `python` (default: this one), which in rlimit
  mode must be readable by the sandbox user id (namespace mode makes it so).
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import fcntl
import functools
import json
import logging
import math
import os
import random
import re
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Sequence

from r1jax.rewards import code_tests
from r1jax.rewards.format import THINK_CLOSE, last_block

MODES = ("namespace", "rlimit")
UID_BASE, UID_SLOTS = 61000, 256  # uids no one else on the machine uses (see _claimed_uid).
UNSHARE = ("unshare", "--mount", "--net", "--pid", "--fork", "--mount-proc", "--kill-child")
CHILD = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_child.py")
NAMESPACE_WORKDIR = "/tmp/work"  # Inside the private tmpfs.
ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
_FENCE = re.compile(r"```[ \t]*(?:python3?|py)?[ \t]*\n(.*?)```", re.DOTALL)
_EXIT_GRACE_S = 0.2  # After the child exits: time for output still in flight.
SETUP_TIMEOUT_S = 60.0  # Interpreter start and sandbox set-up, before the program's clock starts.


@dataclasses.dataclass(frozen=True)
class Limits:
    """Per-run limits. Sizes in MiB; the CPU limit defaults to the wall-clock one plus a second
    for the interpreter's start-up, which the CPU clock counts and the wall clock does not."""
    timeout_s: float = 10.0
    cpu_s: int | None = None
    memory_mb: int = 1024
    file_size_mb: int = 16
    max_processes: int = 32
    max_output_bytes: int = 1 << 20
    disk_mb: int = 64

    def for_child(self) -> dict:
        """The limits the child sets on itself (sandbox_child._set_limits)."""
        return dict(cpu_s=self.cpu_s or math.ceil(self.timeout_s) + 1, memory_mb=self.memory_mb,
                    file_size_mb=self.file_size_mb, max_processes=self.max_processes,
                    disk_mb=self.disk_mb)


@dataclasses.dataclass(frozen=True)
class RunResult:
    """One run. status: "ok", "program_error" (the program raised), "timeout", "output_limit",
    "crashed" (exited non-zero or by a signal: memory, CPU, os._exit) or "sandbox_error"."""
    status: str
    passed: int
    total: int
    mode: str
    stdout: str = ""
    stderr: str = ""


def extract_program(completion: str) -> str:
    """The program of a completion (see module docstring)."""
    text = last_block(completion, "answer")
    if text is None:
        text = completion.rpartition(THINK_CLOSE)[2]
    blocks = _FENCE.findall(text)
    return blocks[-1] if blocks else text


@functools.lru_cache(maxsize=1)
def _lock_dir() -> str:
    """Where the uid lock files live: a root-only directory under the temporary directory."""
    path = os.path.join(tempfile.gettempdir(), "r1jax_uid_locks")
    os.makedirs(path, mode=0o700, exist_ok=True)
    info = os.lstat(path)
    if info.st_uid != os.geteuid() or info.st_mode & 0o077 or not os.path.isdir(path):
        raise RuntimeError(f"{path} must be a directory only this user can use (someone made it first?)")
    return path


@contextlib.contextmanager
def _claimed_uid():
    """Yields a sandbox uid no other live run holds (None when not root: no uid to switch to).

    Claimed with an flock on a root-only lock file per uid, which holds across threads and
    processes (pytest-xdist, several trainers on one host): the cleanup kills every process of
    the uid, so a shared one would kill a neighbour's run.
    """
    if os.geteuid() != 0:
        yield None
        return
    deadline = time.monotonic() + 60
    while True:
        for uid in random.sample(range(UID_BASE, UID_BASE + UID_SLOTS), UID_SLOTS):
            fd = os.open(os.path.join(_lock_dir(), f"{uid}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield uid
            finally:
                os.close(fd)  # Releases the lock.
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"all {UID_SLOTS} sandbox uids stayed busy for 60 s")
        time.sleep(0.01)


@functools.lru_cache(maxsize=None)
def _interpreter_dirs(python: str) -> tuple[str, ...]:
    """The prefixes of `python`, which the namespaced child makes readable to the sandbox uid."""
    out = subprocess.run([python, "-I", "-c", "import sys, json; print(json.dumps(sorted({sys.prefix, "
                          "sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix})))"],
                         capture_output=True, text=True, check=True, timeout=60, env=ENV)
    return tuple(os.path.realpath(p) for p in json.loads(out.stdout))


def _collect(proc: subprocess.Popen, fds: dict[str, int], ready: bytes, limits: Limits
             ) -> tuple[dict[str, bytes], str | None]:
    """Reads the child's pipes until they close or a limit is hit.

    The wall clock (`limits.timeout_s`) starts when the child writes `ready` on its results
    pipe: starting the interpreter and setting up the sandbox can take seconds on a loaded
    host, and that is no fault of the program. Setting up gets SETUP_TIMEOUT_S of its own.

    Returns:
      ({name: bytes read}, None | "timeout" | "output_limit").
    """
    buffers = {name: bytearray() for name in fds}
    total = 0
    deadline, started = time.monotonic() + SETUP_TIMEOUT_S, False
    with selectors.DefaultSelector() as selector:
        for name, fd in fds.items():
            selector.register(fd, selectors.EVENT_READ, name)
        while selector.get_map():
            if proc.poll() is not None:  # Daemonised grandchildren may hold the pipes open.
                deadline = min(deadline, time.monotonic() + _EXIT_GRACE_S)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                stopped = started and proc.poll() is None
                return {k: bytes(v) for k, v in buffers.items()}, ("timeout" if stopped else None)
            for key, _ in selector.select(min(remaining, 0.05)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                total += len(chunk)
                if total > limits.max_output_bytes:
                    return {k: bytes(v) for k, v in buffers.items()}, "output_limit"
                buffers[key.data] += chunk
                if not started and key.data == "results" and ready in buffers["results"]:
                    started, deadline = True, time.monotonic() + limits.timeout_s
    return {k: bytes(v) for k, v in buffers.items()}, None


def _kill_user(uid: int) -> None:
    """SIGKILL every process of `uid` (kill(-1) run as that uid), e.g. a daemonised child."""
    subprocess.run(["kill", "-9", "-1"], user=uid, group=uid, extra_groups=[], env=ENV,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def _end(proc: subprocess.Popen, uid: int | None) -> None:
    """Kills what is left of a run: its process group (and so, with unshare --kill-child, its
    PID namespace), then every process of its uid."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()
    if uid is not None:
        _kill_user(uid)


def _status(lines: list[str], nonce: str, reason: str | None, returncode: int) -> str:
    """The run's status from its result lines, the collector's stop reason and exit code."""
    if f"{nonce} ready" not in lines:
        return "sandbox_error"
    if reason is not None:
        return reason
    if f"{nonce} program_error" in lines:
        return "program_error"
    return "ok" if returncode == 0 else "crashed"


def _passed(lines: list[str], nonce: str, tests: list[code_tests.Test]) -> int:
    """Number of tests whose asserts hold on the probe values the child sent under `nonce`
    (its first line per probe); none unless the program itself ran to its end."""
    if f"{nonce} program_ok" not in lines:
        return 0
    prefix = f"{nonce} "
    sent: dict[int, str] = {}
    for line in lines:
        kind, _, rest = line.removeprefix(prefix).partition(" ") if line.startswith(prefix) else ("", "", "")
        index, _, payload = rest.partition(" ")
        if kind in ("value", "error") and index.isdigit():
            sent.setdefault(int(index), payload if kind == "value" else None)
    passed, first = 0, 0
    for test in tests:
        values = []
        for i in range(first, first + len(test.probes)):
            payload = sent.get(i)
            values.append(code_tests.decode_value(payload) if payload is not None else
                          code_tests.failed("raised, not plain data, or not answered"))
        first += len(test.probes)
        passed += code_tests.passes(test, values)
    return passed


def _send(proc: subprocess.Popen, data: bytes) -> None:
    """Writes the job to the child's stdin and closes it. A child that died at once is not an
    exception here: its missing "ready" line makes the run a sandbox error."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(proc.stdin.fileno(), view):]
    except BrokenPipeError:
        pass
    finally:
        proc.stdin.close()


def _execute(command: list[str], job: dict, limits: Limits, uid: int | None,
             read_fd: int, write_fd: int) -> tuple[int, dict[str, bytes], str | None]:
    """Starts the child, hands it `job`, collects its output, kills what is left of it.

    Returns:
      (exit code, {"stdout", "stderr", "results": bytes}, stop reason (see _collect)).
    """
    try:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, bufsize=0, pass_fds=(write_fd,), env=ENV,
                                cwd="/", start_new_session=True)
    finally:
        os.close(write_fd)  # The child's copy is the only writer left: EOF when it is gone.
    try:
        _send(proc, json.dumps(job).encode())
        fds = {"stdout": proc.stdout.fileno(), "stderr": proc.stderr.fileno(), "results": read_fd}
        out, reason = _collect(proc, fds, f"{job['nonce']} ready\n".encode(), limits)
    finally:
        _end(proc, uid)
        proc.stdout.close()
        proc.stderr.close()
    return proc.returncode, out, reason


def _run(program: str, tests: list[code_tests.Test], limits: Limits, mode: str, python: str,
         uid: int | None) -> RunResult:
    """One sandboxed run as `uid` (None: as the invoking user)."""
    namespaced = mode == "namespace"
    nonce = secrets.token_hex(16)
    expose = _interpreter_dirs(python) if namespaced else ()
    host_dir = None if namespaced else tempfile.mkdtemp(prefix="r1jax_sandbox_")
    read_fd, write_fd = os.pipe()
    try:
        probes = [probe.to_job() for test in tests for probe in test.probes]
        job = dict(program=program, probes=probes, nonce=nonce, uid=uid, namespaced=namespaced,
                   results_fd=write_fd, workdir=host_dir or NAMESPACE_WORKDIR, expose=expose,
                   limits=limits.for_child())
        command = [*(UNSHARE if namespaced else ()), python, "-I", CHILD]
        returncode, out, reason = _execute(command, job, limits, uid, read_fd, write_fd)
    finally:
        os.close(read_fd)
        if host_dir:
            shutil.rmtree(host_dir, ignore_errors=True)
    lines = out["results"].decode(errors="replace").splitlines()
    return RunResult(status=_status(lines, nonce, reason, returncode),
                     passed=_passed(lines, nonce, tests), total=len(tests), mode=mode,
                     stdout=out["stdout"].decode(errors="replace"),
                     stderr=out["stderr"].decode(errors="replace"))


def run_program(program: str, tests: Sequence[str], limits: Limits = Limits(), mode: str = "auto",
                python: str | None = None) -> RunResult:
    """Runs `program` in one sandboxed process and checks `tests` on what it computes (see
    module docstring).

    Args:
      tests: assert snippets (see code_tests.py for the subset of Python they may use).
      mode: "auto" (the best mode that passes its self-test here), "namespace" or "rlimit".
      python: the interpreter to run (default: this one).

    Raises:
      code_tests.UnsupportedTest (a ValueError): a test outside that subset, named by index.
    """
    compiled = []
    for i, test in enumerate(tests):
        try:
            compiled.append(code_tests.compile_test(test))
        except code_tests.UnsupportedTest as e:
            raise code_tests.UnsupportedTest(f"tests[{i}] ({test[:80]!r}): {e}") from None
    python = python or sys.executable
    mode = sandbox_mode(mode, python)
    with _claimed_uid() as uid:
        return _run(program, compiled, limits, mode, python, uid)


def sandbox_mode(mode: str = "auto", python: str | None = None) -> str:
    """The sandbox mode runs use: `mode` itself, or for "auto" the first of MODES whose
    self-test (a one-line program and test) passes here with interpreter `python` (default:
    this one). Probed once per (mode, python).

    Raises:
      ValueError: unknown mode.
      RuntimeError: no mode (or not the one asked for) works; the message has each failure.
    """
    if mode not in ("auto", *MODES):
        raise ValueError(f"unknown sandbox mode {mode!r}; choose 'auto' or one of {MODES}")
    return _probe(mode, python or sys.executable)


@functools.lru_cache(maxsize=None)
def _probe(mode: str, python: str) -> str:
    """sandbox_mode's self-test, cached."""
    failures = []
    for candidate in MODES if mode == "auto" else (mode,):
        try:
            with _claimed_uid() as uid:
                result = _run("x = 1", [code_tests.compile_test("assert x == 1")], Limits(timeout_s=60),
                              candidate, python, uid)
        except OSError as e:  # e.g. no unshare binary.
            result = RunResult("sandbox_error", 0, 1, candidate, stderr=repr(e))
        if result.passed == 1:
            logging.info("code sandbox: %s mode (%s)", candidate, python)
            return candidate
        failures.append(f"{candidate}: {result.status}: {result.stderr[-2000:]}")
    raise RuntimeError("no working code sandbox mode here (rlimit mode needs an interpreter the "
                       "sandbox uid can read: pass python=...):\n" + "\n".join(failures))


def run_many(programs: Sequence[str], tests: Sequence[Sequence[str]], limits: Limits = Limits(),
             mode: str = "auto", python: str | None = None, workers: int | None = None) -> list[RunResult]:
    """run_program over pairs on a pool of `workers` threads (default: one per CPU); a run that
    raises becomes a "sandbox_error" result (with the error, an unsupported test's included, in
    its stderr)."""
    def run(program: str, run_tests: Sequence[str]) -> RunResult:
        try:
            return run_program(program, run_tests, limits, mode, python)
        except Exception:  # noqa: BLE001 - one broken run must not lose the batch.
            logging.warning("code sandbox: run failed: %s", traceback.format_exc(limit=1))
            return RunResult("sandbox_error", 0, len(run_tests), mode, stderr=traceback.format_exc())

    with concurrent.futures.ThreadPoolExecutor(workers or os.cpu_count()) as pool:
        return list(pool.map(run, programs, tests))


def _score(result: RunResult, all_or_nothing: bool) -> float:
    """Reward of one run: NaN for sandbox errors and examples without tests."""
    if result.status == "sandbox_error" or result.total == 0:
        return float("nan")
    if all_or_nothing:
        return float(result.passed == result.total)
    return result.passed / result.total


def code(prompts: list[str], completions: list[str], tests: list, *, all_or_nothing: bool = False,
         timeout_s: float = 10.0, memory_mb: int = 1024, max_processes: int = 32,
         max_output_bytes: int = 1 << 20, workers: int | None = None, mode: str = "auto",
         python: str | None = None, **fields) -> list[float]:
    """Code-execution reward: N floats in [0, 1] (NaN: the sandbox failed).

    Args:
      tests: N lists of test snippets (a single string is one test).
      all_or_nothing: 1.0 only when every test passes, else 0.0.
      timeout_s, memory_mb, max_processes, max_output_bytes: see Limits.
      workers: parallel runs (default: one per CPU).
      mode, python: see run_program.
    """
    limits = Limits(timeout_s=timeout_s, memory_mb=memory_mb, max_processes=max_processes,
                    max_output_bytes=max_output_bytes)
    snippets = [[t] if isinstance(t, str) else list(t) for t in tests]
    results = run_many([extract_program(c) for c in completions], snippets, limits, mode, python, workers)
    return [_score(r, all_or_nothing) for r in results]
