"""The child side of the code sandbox (r1jax.rewards.code): run one program and its tests.

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
5. write "<nonce> ready" to the results pipe, run the program, then each test in the
   program's globals, writing "<nonce> pass <i>" or "<nonce> fail <i>" after each;
   "<nonce> program_error" if the program itself raised (its tests are then not run).
"""
import builtins
import functools
import json
import os
import resource
import sys
import traceback

MS_NOSUID, MS_NODEV, MS_REMOUNT, MS_BIND = 0x2, 0x4, 0x20, 0x1000
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
    for i, test in enumerate(job["tests"]):
        try:
            exec(compile(test, f"<test {i}>", "exec"), namespace)
            outcome = "pass"
        except BaseException:  # noqa: BLE001 - a test that exits or is interrupted fails.
            traceback.print_exc()
            outcome = "fail"
        results.write(f"{nonce} {outcome} {i}\n")


if __name__ == "__main__":
    main()
