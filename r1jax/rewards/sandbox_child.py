"""The child side of the code sandbox (r1jax.rewards.code): run one program, answer its probes.

Started by `code.py` as `python -I sandbox_child.py`, as root or as the invoking user, either
inside fresh mount + network + PID namespaces or not (see code.py). Standard library only: the
child must not import r1jax or anything heavy. Steps:
1. read the job (JSON) from stdin, then point stdin at /dev/null;
2. namespaced: private tmpfs on /tmp, /var/tmp and /dev/shm; and where an ancestor of the
   interpreter's directories (e.g. /root, mode 0700) would hide them from the unprivileged user
   the program runs as, that ancestor replaced by a tmpfs holding read-only binds of just them
   (the rest of it, e.g. /root's other files, is then hidden);
3. a fresh working directory, resource limits, then (as root) drop to the job's user id;
4. replace the socket constructors with ones that refuse (the no-network guard where there is
   no network namespace; in one it is a second wall);
5. write "<nonce> ready" to the results pipe, run the program, write "<nonce> program_ok"
   (or "<nonce> program_error" if it raised: its probes are then not asked), then answer each
   probe (r1jax.rewards.code_tests: a program-level name, or a call of a program function with
   arguments the harness computed) with "<nonce> value <i> <json>" in the plain encoding below,
   or "<nonce> error <i>" when the call raised or its value is not plain data.
The child never sees a test or an expected value: the harness, in its own process, checks the
asserts on the values sent back (see code_tests.py for why).

Plain encoding (`encode`/`decode`, shared with the harness): None, bool, int, float and str as
JSON; lists, tuples, dicts, sets and frozensets as {"list"|"tuple"|"dict"|"set"|"frozenset": [...]}
(a dict's items as [key, value] pairs), nested at most MAX_DEPTH deep. Only those exact types:
a subclass (an int whose __eq__ always says True) is not plain, and its probe fails.
"""
import builtins
import functools
import json
import os
import resource
import sys
import traceback

MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 0x2, 0x4, 0x20, 0x1000
MAX_DEPTH = 64
_SCALARS = (type(None), bool, int, float, str)
_CONTAINERS = {list: "list", tuple: "tuple", set: "set", frozenset: "frozenset"}
_BY_TAG = {tag: kind for kind, tag in _CONTAINERS.items()}
MS_RDONLY, MNT_DETACH = 0x1, 0x2
STAGE = "/tmp/.sandbox_stage"


@functools.lru_cache(maxsize=1)
def _libc():
    import ctypes  # Imported here: only the namespaced mode mounts.

    return ctypes.CDLL(None, use_errno=True)


def _check(result, what):
    """Raises OSError with errno when a libc call returned non-zero."""
    if result != 0:
        import ctypes

        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source, target, fstype, flags, data=None):
    """mount(2) through libc (Python has no binding)."""
    encode = lambda s: s.encode() if s is not None else None  # noqa: E731
    _check(_libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data)),
           f"mount {target}")


def _umount(target):
    """umount2(2), detaching."""
    _check(_libc().umount2(target.encode(), MNT_DETACH), f"umount {target}")


def _first_blocked(path):
    """(ancestor, child name) for the first ancestor of `path` others cannot traverse, or None."""
    parts = os.path.realpath(path).strip("/").split("/")
    for depth in range(len(parts) - 1):
        ancestor = "/" + "/".join(parts[:depth])
        if not os.path.isdir(ancestor):
            return None
        if not os.stat(ancestor).st_mode & 0o001:
            return ancestor, parts[depth]
    return None


def _overmount(blocked, children):
    """Replace `blocked` by a world-traversable tmpfs holding read-only binds of `children`."""
    os.makedirs(STAGE, exist_ok=True)
    staged = []
    for i, child in enumerate(sorted(children)):
        stage = f"{STAGE}/{i}"
        os.mkdir(stage)
        _mount(f"{blocked}/{child}", stage, None, MS_BIND)
        staged.append((child, stage))
    _mount("tmpfs", blocked, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for child, stage in staged:
        target = f"{blocked}/{child}"
        os.mkdir(target)
        _mount(stage, target, None, MS_BIND)
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY)
        _umount(stage)
        os.rmdir(stage)


def _private_mounts(tmpfs_mb, expose):
    """Private scratch file systems, and the interpreter's directories made reachable."""
    for directory in ("/tmp", "/var/tmp", "/dev/shm"):
        if os.path.isdir(directory):
            _mount("tmpfs", directory, "tmpfs", MS_NOSUID | MS_NODEV, f"size={tmpfs_mb}m,mode=1777")
    for _ in range(8):  # Each pass fixes one level of blocked ancestors.
        blocked = {}
        for path in expose:
            found = _first_blocked(path)
            if found:
                blocked.setdefault(found[0], set()).add(found[1])
        if not blocked:
            return
        for ancestor, children in blocked.items():
            _overmount(ancestor, children)


def _set_limits(limits):
    """CPU seconds, address space, file size, process count, no core dumps."""
    mb = 1024 * 1024
    for rlimit, value in ((resource.RLIMIT_CPU, limits["cpu_s"]),
                          (resource.RLIMIT_AS, limits["memory_mb"] * mb),
                          (resource.RLIMIT_FSIZE, limits["file_size_mb"] * mb),
                          (resource.RLIMIT_NPROC, limits["max_processes"]),
                          (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(rlimit, (value, value))


def _drop_privileges(uid):
    """Become `uid` (group `uid`, no supplementary groups): RLIMIT_NPROC then applies, and the
    program can neither signal nor read the files of the root-owned processes around it."""
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)


def _block_network():
    """Socket constructors that refuse. A speed bump, not a wall: raw syscalls through ctypes
    get around it (the network namespace does not let them through)."""
    import _socket
    import socket

    def refuse(*args, **kwargs):
        raise PermissionError("network access is disabled in the sandbox")

    for module in (socket, _socket):
        for name in ("socket", "SocketType", "socketpair", "fromfd", "create_connection", "create_server"):
            if hasattr(module, name):
                setattr(module, name, refuse)


def encode(value, depth=0):
    """`value` in the plain encoding (module docstring); TypeError for anything else."""
    kind = type(value)
    if kind in _SCALARS:
        return value
    if depth >= MAX_DEPTH:
        raise TypeError(f"nested deeper than {MAX_DEPTH}")
    if kind in _CONTAINERS:
        return {_CONTAINERS[kind]: [encode(item, depth + 1) for item in value]}
    if kind is dict:
        return {"dict": [[encode(k, depth + 1), encode(v, depth + 1)] for k, v in value.items()]}
    raise TypeError(f"not plain data: {kind.__name__}")


def decode(data, depth=0):
    """The value of an `encode`d object; ValueError/TypeError for anything malformed."""
    if type(data) in _SCALARS:
        return data
    if depth >= MAX_DEPTH or type(data) is not dict or len(data) != 1:
        raise ValueError("not an encoded value")
    (tag, items), = data.items()
    if type(items) is not list:
        raise ValueError("not an encoded value")
    if tag == "dict":
        return {decode(k, depth + 1): decode(v, depth + 1) for k, v in items}
    return _BY_TAG[tag](decode(item, depth + 1) for item in items)


def _answer(namespace, probe):
    """The encoded value of one probe: a program-level name or a call of one."""
    kind, name, args, kwargs = probe
    value = namespace[name] if name in namespace else getattr(builtins, name)
    if kind == "call":
        value = value(*decode(args), **decode(kwargs))
    return encode(value)


def main():
    job = json.loads(sys.stdin.read())
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    results = os.fdopen(job["results_fd"], "w", buffering=1)
    nonce = job["nonce"]
    if job["namespaced"]:
        _private_mounts(job["limits"]["disk_mb"], job["expose"])
    workdir = job["workdir"]
    os.makedirs(workdir, exist_ok=True)
    if job["uid"] is not None:
        os.chown(workdir, job["uid"], job["uid"])
    os.chmod(workdir, 0o700)
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir)
    sys.dont_write_bytecode = True
    _set_limits(job["limits"])
    if job["uid"] is not None:
        _drop_privileges(job["uid"])
    _block_network()
    results.write(f"{nonce} ready\n")
    namespace = {"__name__": "__solution__", "__builtins__": builtins}
    try:
        exec(compile(job["program"], "<solution>", "exec"), namespace)
    except BaseException:  # noqa: BLE001 - SystemExit too: the tests need the whole program.
        traceback.print_exc()
        results.write(f"{nonce} program_error\n")
        return
    results.write(f"{nonce} program_ok\n")
    for i, probe in enumerate(job["probes"]):
        try:
            line = f"{nonce} value {i} {json.dumps(_answer(namespace, probe))}"
        except BaseException:  # noqa: BLE001 - a call that exits or is interrupted fails too.
            traceback.print_exc()
            line = f"{nonce} error {i}"
        results.write(line + "\n")


if __name__ == "__main__":
    main()
