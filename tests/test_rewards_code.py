"""The code-execution reward and its sandbox, against a hostile test suite, in every mode
that works on this machine (namespace: needs root and unshare; rlimit: the fallback)."""
import fcntl
import os
import socket
import sys
import tempfile
import threading
import time

import pytest

from r1jax import rewards
from r1jax.rewards import code

TIMEOUT_S = 2.0
LIMITS = dict(timeout_s=TIMEOUT_S, memory_mb=256, max_processes=16, max_output_bytes=64 * 1024)


def _working_python(mode):
    """An interpreter the mode's self-test passes with, or None. Under rlimit as root, this
    interpreter may live where the sandbox uid cannot read (e.g. /root/.pyenv): try the system one."""
    for python in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(python):
            try:
                code.sandbox_mode(mode, python)
                return python
            except RuntimeError:
                continue
    return None


@pytest.fixture(scope="module", params=code.MODES)
def sandbox(request):
    """(mode, python) for each mode that runs here."""
    python = _working_python(request.param)
    if python is None:
        pytest.skip(f"sandbox mode {request.param!r} does not run on this machine")
    return request.param, python


def _fenced(program):
    return f"<think>I will write it.</think>\n<answer>\n```python\n{program}\n```\n</answer>"


def _uid_claimed(uid: int) -> bool:
    """Whether a run holds `uid` now (its lock, as `code._claimed_uid` takes it)."""
    fd = os.open(os.path.join(code._lock_dir(), f"{uid}.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _sandbox_processes():
    """Pids of live processes owned by a sandbox uid that no run holds: survivors of a finished
    run. (A run cleans its uid up before it releases it; a run of another pytest-xdist worker
    holds its uid while its processes live.)"""
    uids = range(code.UID_BASE, code.UID_BASE + code.UID_SLOTS)
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/status") as f:
                uid = next(int(line.split()[1]) for line in f if line.startswith("Uid:"))
        except (OSError, StopIteration):
            continue
        if uid in uids and not _uid_claimed(uid):
            found.append(pid)
    return found


def test_extract_program():
    assert code.extract_program(_fenced("print(1)")) == "print(1)\n"
    assert code.extract_program("```python\na = 1\n```\ntext\n```py\nb = 2\n```") == "b = 2\n"
    assert code.extract_program("<think>```python\nthink = 1\n```</think>x = 3") == "x = 3"
    assert code.extract_program("```cpp\nint main() {}\n```") == "```cpp\nint main() {}\n```"


def test_correct_partial_and_all_or_nothing(sandbox):
    mode, python = sandbox
    fn = rewards.get("code", mode=mode, python=python, **LIMITS)
    completions = [_fenced("def double(x):\n    return 2 * x"), _fenced("def double(x):\n    return x + 2"),
                   "no program here", _fenced("raise SystemExit(0)")]
    tests = [["assert double(1) == 2", "assert double(2) == 4", "assert double(5) == 10"]] * 4
    assert fn([""] * 4, completions, tests=tests) == pytest.approx([1.0, 1 / 3, 0.0, 0.0])
    strict = rewards.get("code", mode=mode, python=python, all_or_nothing=True, **LIMITS)
    assert strict([""] * 4, completions, tests=tests) == [1.0, 0.0, 0.0, 0.0]


def test_forged_results_score_nothing(sandbox):
    """Printing pass lines, writing them to every fd, or exiting 0 early does not pass tests."""
    mode, python = sandbox
    programs = [
        "print('pass 0'); print('ok')\nimport os\nos._exit(0)",
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'ready\\npass 0\\n')\n"
        "    except OSError:\n        pass\nos._exit(0)",
    ]
    results = code.run_many(programs, [["assert False"]] * 2, code.Limits(**LIMITS), mode, python)
    assert [r.passed for r in results] == [0, 0]


def _hostile_cases(target_dirs, secret, port, parent_pid, mode):
    """name -> program. Every program sets `escaped = True` if its attack worked, and the one
    test asserts it: a reward of 1 would mean the sandbox failed."""
    marker = f"escape_{secret}"
    cases = {
        "infinite_loop": "escaped = True\nwhile True:\n    pass",
        "fork_bomb": "import os\nescaped = True\nwhile True:\n    try:\n        os.fork()\n"
                     "    except OSError:\n        pass",
        "memory_bomb": "blocks = []\nwhile True:\n    blocks.append(bytearray(64 << 20))\nescaped = True",
        "one_huge_allocation": "x = b' ' * (8 << 30)\nescaped = True",
        "file_size_bomb": "with open('big', 'wb') as f:\n    f.write(b'0' * (64 << 20))\nescaped = True",
        "write_outside": f"import os\nescaped = False\nfor d in {target_dirs!r} + ['..', '/']:\n"
                         f"    try:\n        open(os.path.join(d, {marker!r}), 'w').write('x')\n"
                         f"        escaped = escaped or d in {target_dirs!r}\n    except OSError:\n        pass",
        "read_parent_environment": f"import glob, os\nescaped = any({secret!r} in v for v in os.environ.values())\n"
                                   "for path in glob.glob('/proc/*/environ'):\n    try:\n"
                                   f"        escaped = escaped or {secret!r}.encode() in open(path, 'rb').read()\n"
                                   "    except OSError:\n        pass",
        "network": f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\nescaped = True",
        "kill_parent": f"import os, signal\nescaped = False\nfor pid in ({parent_pid}, os.getppid(), -1):\n"
                       "    try:\n        os.kill(pid, signal.SIGKILL)\n        escaped = escaped or pid > 1\n"
                       "    except OSError:\n        pass",
        # Scores nothing either way; what it tests is that its daemon dies with the run.
        "daemon": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(600)\nescaped = False",
        "print_gigabytes": "import sys\nchunk = 'x' * (1 << 20)\nfor _ in range(4096):\n"
                           "    sys.stdout.write(chunk)\nescaped = True",
        "stderr_gigabytes": "import os\nchunk = b'x' * (1 << 20)\nfor _ in range(4096):\n"
                            "    os.write(2, chunk)\nescaped = True",
    }
    if mode == "namespace":  # Past the socket guard with raw syscalls: only the namespace stops it.
        cases["network_raw_syscalls"] = (
            "import ctypes, struct\nlibc = ctypes.CDLL(None)\nfd = libc.socket(2, 1, 0)\n"
            f"addr = struct.pack('=H', 2) + struct.pack('!H', {port}) + bytes([127, 0, 0, 1]) + bytes(8)\n"
            "escaped = fd >= 0 and libc.connect(fd, addr, len(addr)) == 0")
    return cases


def test_hostile_suite(sandbox, tmp_path, monkeypatch):
    mode, python = sandbox
    secret = f"r1jax-secret-{os.getpid()}-{time.time_ns()}"
    monkeypatch.setenv("R1JAX_TEST_SECRET", secret)
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    targets = [str(tmp_path), repo]
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.1)
    accepted = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                accepted.append(server.accept())
            except OSError:
                pass

    listener = threading.Thread(target=accept)
    listener.start()
    leftovers_before = set(os.listdir(tempfile.gettempdir()))
    cases = _hostile_cases(targets, secret, server.getsockname()[1], os.getpid(), mode)
    fn = rewards.get("code", mode=mode, python=python, workers=len(cases), **LIMITS)
    try:
        start = time.monotonic()
        scores = fn([""] * len(cases), [_fenced(p) for p in cases.values()],
                    tests=[["assert escaped"]] * len(cases))
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        listener.join()
        server.close()
        if mode == "rlimit":  # World-writable /tmp is writable there (a documented limit).
            stray = os.path.join(tempfile.gettempdir(), f"escape_{secret}")
            if os.path.exists(stray):
                os.remove(stray)

    assert dict(zip(cases, scores)) == dict.fromkeys(cases, 0.0)
    assert elapsed < TIMEOUT_S + 10, elapsed  # All ran in parallel, each within its limits.
    assert not accepted, "a sandboxed program reached the parent's server"
    assert os.environ["R1JAX_TEST_SECRET"] == secret
    marker = f"escape_{secret}"
    for directory in [*targets, tempfile.gettempdir()] if mode == "namespace" else targets:
        assert not os.path.exists(os.path.join(directory, marker)), directory
    # A PID namespace is torn down asynchronously, after its run released its uid: a survivor is
    # a process still there after 2 s (another xdist worker's runs keep finishing meanwhile).
    survivors, deadline = set(_sandbox_processes()), time.monotonic() + 2
    while survivors and time.monotonic() < deadline:
        time.sleep(0.05)
        survivors &= set(_sandbox_processes())
    assert not survivors, "sandboxed processes outlived their run"
    new_dirs = {d for d in set(os.listdir(tempfile.gettempdir())) - leftovers_before
                if d.startswith("r1jax_sandbox_")}
    assert not new_dirs

    # And afterwards, a correct program still scores 1.0.
    assert fn([""], [_fenced("def f():\n    return 42")], tests=[["assert f() == 42"]]) == [1.0]


def test_results_report_limits(sandbox):
    """Statuses say which limit ended a run; tests passed before a timeout still count."""
    mode, python = sandbox
    runs = {"timeout": ("while True: pass", ["pass"]),
            "output_limit": ("while True: print('x' * 1000)", ["pass"]),
            "partial": ("import time\ndef one():\n    return 1\ndef hang():\n    time.sleep(60)",
                        ["assert one() == 1", "pass", "hang()", "assert one() == 1"]),
            "crashed": ("import os\nos._exit(3)", ["pass"])}
    programs, tests = zip(*runs.values())
    results = dict(zip(runs, code.run_many(programs, tests, code.Limits(**LIMITS), mode, python)))
    assert {name: r.status for name, r in results.items()} == {
        "timeout": "timeout", "output_limit": "output_limit", "partial": "timeout", "crashed": "crashed"}
    assert len(results["output_limit"].stdout) <= LIMITS["max_output_bytes"]
    assert (results["partial"].passed, results["partial"].total) == (2, 4)


def test_pool_runs_overlap(sandbox):
    """8 sleeping runs on 8 workers take well under 8 times one run: the pool runs them at once.

    The runs sleep 3 s so that the bound holds on a busy 2-core machine: interpreter start-up is
    CPU work that cores bound, sleeping is not (a CI run with 64 x 0.5 s runs was CPU-bound)."""
    mode, python = sandbox
    program, tests = "import time\ntime.sleep(3)", ["pass"]
    limits = code.Limits(timeout_s=20)
    start = time.monotonic()
    assert code.run_program(program, tests, limits, mode, python).passed == 1
    one = time.monotonic() - start
    start = time.monotonic()
    results = code.run_many([program] * 8, [tests] * 8, limits, mode, python, workers=8)
    many = time.monotonic() - start
    assert all(r.passed == 1 for r in results), [r.status for r in results if r.passed != 1]
    assert many < 0.5 * 8 * one, (many, one)


def test_sandbox_error_is_a_reward_error():
    result = code.RunResult("sandbox_error", 0, 2, "rlimit")
    assert code._score(result, all_or_nothing=False) != code._score(result, all_or_nothing=False)  # NaN
    total, metrics = rewards.combine({"code": 1.0}, ["p"], ["x = 1"], {"tests": [[]]})
    assert metrics["reward_errors/code"] == 1.0 and total.tolist() == [0.0]


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="unknown sandbox mode"):
        code.sandbox_mode("docker")


# Forgeries (issue 13): each scored 1.0 when the tests ran in the program's process.
_FRAME_WALK = """
import sys
frame = sys._getframe()
while frame is not None:
    found = frame.f_locals
    if 'results' in found and 'nonce' in found:
        job, nonce = found['job'], found['nonce']
        for i in range(len(job.get('tests', ())) + len(job.get('probes', ()))):
            found['results'].write(f'{nonce} pass {i}\\n{nonce} value {i} true\\n')
        found['results'].write(f'{nonce} program_ok\\n')
        found['results'].flush()
    frame = frame.f_back
def add(a, b):
    return 0
"""
_EMPTY_TESTS = """
import sys
frame = sys._getframe()
while frame is not None:
    job = frame.f_locals.get('job')
    if isinstance(job, dict):
        for key in ('tests', 'probes'):
            if key in job:
                job[key][:] = ['pass'] * len(job[key]) if key == 'tests' else []
    frame = frame.f_back
def add(a, b):
    return 0
"""
_ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other):
        return True
class Int(int):
    def __eq__(self, other):
        return True
def add(a, b):
    return Anything() if a < 10 else Int(0)
"""
_REDEFINED_NAMES = """
import builtins
builtins.len = lambda x: 3
sorted = lambda x: [1, 2, 3]
def add(a, b):
    return [a]
"""
FORGERIES = {
    "frame_walk_writes_pass_lines": (_FRAME_WALK, ["assert add(20, 22) == 42", "assert add(2, 5) == 7"]),
    "test_list_emptied": (_EMPTY_TESTS, ["assert add(20, 22) == 42", "assert add(2, 5) == 7"]),
    "always_equal_objects": (_ALWAYS_EQUAL, ["assert add(2, 5) == 7", "assert add(20, 22) == 42"]),
    "redefined_names": (_REDEFINED_NAMES, ["assert len(add(2, 5)) == 3", "assert sorted(add(3, 1)) == [1, 2, 3]"]),
}


def test_forged_passes_score_zero(sandbox):
    mode, python = sandbox
    fn = rewards.get("code", mode=mode, python=python, workers=len(FORGERIES), **LIMITS)
    programs, tests = zip(*FORGERIES.values())
    scores = fn([""] * len(FORGERIES), [_fenced(p) for p in programs], tests=list(tests))
    assert dict(zip(FORGERIES, scores)) == dict.fromkeys(FORGERIES, 0.0)


def test_plain_values_are_checked_by_the_harness(sandbox):
    """What crosses back: plain data, compared in the harness; builtins, math.isclose, locals."""
    mode, python = sandbox
    program = ("import math\ndef stats(xs):\n    return {'n': len(xs), 'mean': sum(xs) / len(xs)}\n"
               "def pair(a):\n    return (a, [a, {a}], None)\nlimit = 10\ndef root(x):\n    return math.sqrt(x)\n"
               "def fail():\n    raise ValueError('no')\ndef show():\n    print('hi')")
    tests = ["assert stats([1, 2, 3]) == {'n': 3, 'mean': 2.0}",
             "assert pair(2) == (2, [2, {2}], None) and pair(2) != [2, [2, {2}], None]",
             "r = root(2.0)\nassert math.isclose(r * r, 2.0) and limit > 9",
             "assert sorted(pair(3)[1][:1] + [1]) == [1, 3]",
             "assert abs(root(9) - 3) < 1e-9, f'{root(9)}'",
             "assert fail() is None",  # raised: fails
             "show()",                 # returns None: passes
             "assert isinstance(pair(1)[0], int) and len(pair(1)[1]) == 2"]
    result = code.run_program(program, tests, code.Limits(**LIMITS), mode, python)
    assert (result.status, result.passed, result.total) == ("ok", 7, 8)


def test_unsupported_tests_are_reward_errors(sandbox):
    mode, python = sandbox
    with pytest.raises(ValueError, match=r"tests\[1\] .*For"):
        code.run_program("def f(x):\n    return x", ["assert f(1) == 1", "for i in range(3):\n    assert f(i) == i"],
                         code.Limits(**LIMITS), mode, python)
    with pytest.raises(ValueError, match="use another program value"):
        code.run_program("def f(x):\n    return x", ["assert f(f(1)) == 1"], code.Limits(**LIMITS), mode, python)
    fn = rewards.get("code", mode=mode, python=python, **LIMITS)
    [score] = fn([""], [_fenced("def f():\n    return 1")], tests=[["assert [f() for _ in range(2)] == [1, 1]"]])
    assert score != score  # NaN: the data's test, not the program, is at fault.


def test_tests_compile_to_probes_and_checks_without_a_sandbox():
    from r1jax.rewards import code_tests
    test = code_tests.compile_test("r = add(1, 2)\nassert r == 3 and add(b=3, a=1) == 4 if flag else False")
    assert [(p.name, p.args, p.kwargs) for p in test.probes] == [("add", (1, 2), {}), ("flag", None, None),
                                                               ("add", (), {"b": 3, "a": 1})]
    assert code_tests.passes(test, [3, True, 4])
    assert not code_tests.passes(test, [3, False, 4]) and not code_tests.passes(test, [3, True, 5])
    assert not code_tests.passes(test, [code_tests.failed("raised"), True, 4])
    assert code_tests.decode_value('{"tuple": [1, {"set": [2]}]}') == (1, {2})
    assert isinstance(code_tests.decode_value('{"object": []}'), Exception)
    # Values a program returned cannot make the harness build huge numbers or strings.
    huge = code_tests.compile_test("assert f() ** 10 ** 9 > 0 or 'x' * f() == ''")
    assert not code_tests.passes(huge, [3, 10 ** 12])
