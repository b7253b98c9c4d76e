"""Run a command inside a host condition that takes isolation away (a test helper).

    python tests/conditions.py CONDITION[,CONDITION...] -- COMMAND [ARG...]

Each condition is produced for real, in this process, before it execs COMMAND (root is
needed to set them up):

- ``seccomp-unshare``: a seccomp filter like Docker's default profile: ``unshare``,
  ``setns`` and ``clone`` with namespace flags fail with EPERM (``clone3`` with ENOSYS,
  so that libc falls back to ``clone``).
- ``seccomp-userns``: the same, for ``CLONE_NEWUSER`` only: no user namespaces, as root.
- ``ro-cgroup``: a mount namespace of our own where every cgroup hierarchy is read-only.
- ``masked-proc``: a mount namespace of our own with ``/dev/null`` bind-mounted over
  ``/proc/kcore``, ``/proc/keys`` ... as Docker masks them: the kernel then refuses a
  fresh proc in a mount namespace owned by a new user namespace ("mount_too_revealing").
- ``no-userns``: a user namespace (identity-mapped, so root stays root) whose
  ``user.max_user_namespaces`` is 0: nothing started in it can create a user namespace.
- ``cgroup=PATH``: move into the cgroup v2 group PATH (as /proc/self/cgroup shows it), as
  root, before dropping to the user: how a process comes to sit in a group delegated to its
  user (``systemd-run --user --scope -p Delegate=yes`` starts its command in the scope).
- ``user=NAME``: drop to that unprivileged user (last).
"""

from __future__ import annotations

import ctypes
import os
import pwd
import struct
import sys

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
ALL_NS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
    | CLONE_NEWPID | CLONE_NEWNET
)  # fmt: skip
MS_RDONLY, MS_REMOUNT, MS_BIND, MS_REC, MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18

# seccomp BPF (x86_64)
AUDIT_ARCH_X86_64 = 0xC000003E
NR = {"unshare": 272, "setns": 308, "clone": 56, "clone3": 435}
RET_ALLOW = 0x7FFF0000
RET_EPERM = 0x00050000 | 1
RET_ENOSYS = 0x00050000 | 38
LD_ABS, JEQ, JSET, RET = 0x20, 0x15, 0x45, 0x06
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2

libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{os.strerror(err)}: {what}")


def seccomp_program(mask: int, block_setns: bool) -> list[tuple[int, int, int, int]]:
    """(code, jt, jf, k) instructions: namespace flags in ``mask`` are refused."""
    labels: dict[str, int] = {}
    prog: list[tuple[int, int, int, object]] = []

    def ins(code: int, k: object, jt: str | int = 0, jf: str | int = 0) -> None:
        prog.append((code, jt, jf, k))  # type: ignore[arg-type]

    ins(LD_ABS, 4)  # arch
    ins(JEQ, AUDIT_ARCH_X86_64, 0, "allow")
    ins(LD_ABS, 0)  # syscall number
    ins(JEQ, NR["clone3"], "enosys", 0)
    if block_setns:
        ins(JEQ, NR["setns"], "deny", 0)
    ins(JEQ, NR["unshare"], "flags", 0)
    ins(JEQ, NR["clone"], "flags", "allow")
    labels["flags"] = len(prog)
    ins(LD_ABS, 16)  # args[0], low 32 bits
    ins(JSET, mask, "deny", "allow")
    labels["allow"] = len(prog)
    ins(RET, RET_ALLOW)
    labels["deny"] = len(prog)
    ins(RET, RET_EPERM)
    labels["enosys"] = len(prog)
    ins(RET, RET_ENOSYS)
    out = []
    for pc, (code, jt, jf, k) in enumerate(prog):
        rel = [labels[j] - pc - 1 if isinstance(j, str) else j for j in (jt, jf)]
        out.append((code, rel[0], rel[1], int(k)))  # type: ignore[call-overload]
    return out


def install_seccomp(mask: int, block_setns: bool) -> None:
    if os.uname().machine != "x86_64":
        raise SystemExit("conditions.py: the seccomp filter is written for x86_64")
    program = seccomp_program(mask, block_setns)
    raw = b"".join(struct.pack("HBBI", *i) for i in program)
    buf = ctypes.create_string_buffer(raw)
    fprog = struct.pack("HxxxxxxP", len(program), ctypes.addressof(buf))
    fbuf = ctypes.create_string_buffer(fprog)
    _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "no_new_privs")
    _check(
        libc.prctl(
            PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.c_void_p(ctypes.addressof(fbuf)), 0, 0
        ),
        "seccomp",
    )


def _mount(src: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(
        libc.mount(
            src.encode() if src else None, target.encode(), fstype.encode() if fstype else None,
            flags, None,
        ),
        f"mount {src} on {target}",
    )  # fmt: skip


def private_mount_namespace() -> None:
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)


def read_only_cgroups() -> None:
    private_mount_namespace()
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f if " - cgroup" in line]
    for point in points:
        _mount(point, point, None, MS_BIND)
        _mount(None, point, None, MS_BIND | MS_REMOUNT | MS_RDONLY)


# Files Docker's default configuration masks with /dev/null; kernels have some of them.
MASKED = ("/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug")


def mask_proc() -> None:
    private_mount_namespace()
    masked = [path for path in MASKED if os.path.isfile(path)]
    if not masked:
        raise SystemExit("conditions.py: none of the files Docker masks is in /proc")
    for path in masked:
        _mount("/dev/null", path, None, MS_BIND)


def no_user_namespaces() -> None:
    """A user namespace mapping every id to itself, with user.max_user_namespaces = 0."""
    r, w = os.pipe()
    parent = os.getpid()
    helper = os.fork()
    if helper == 0:  # writes our maps once we are in the new namespace
        os.close(w)
        os.read(r, 1)
        for name in ("uid_map", "gid_map"):
            with open(f"/proc/{parent}/{name}", "w") as f:
                f.write("0 0 4294967295")
        os._exit(0)
    os.close(r)
    _check(libc.unshare(CLONE_NEWUSER), "unshare(CLONE_NEWUSER)")
    os.write(w, b"x")
    os.close(w)
    _, status = os.waitpid(helper, 0)
    if status != 0:
        raise SystemExit("conditions.py: could not write the uid/gid maps")
    with open("/proc/sys/user/max_user_namespaces", "w") as f:
        f.write("0")


def join_cgroup(path: str) -> None:
    with open(f"/sys/fs/cgroup{path}/cgroup.procs", "w") as f:
        f.write(str(os.getpid()))


def become(name: str) -> None:
    user = pwd.getpwnam(name)
    os.setgroups([])
    os.setgid(user.pw_gid)
    os.setuid(user.pw_uid)


def main(argv: list[str]) -> None:
    if "--" not in argv or argv.index("--") != 1:
        raise SystemExit(__doc__)
    command = argv[2:]
    user = ""
    for condition in argv[0].split(","):
        if condition == "seccomp-unshare":
            pass  # installed last: the other conditions need unshare themselves
        elif condition == "seccomp-userns":
            pass
        elif condition == "ro-cgroup":
            read_only_cgroups()
        elif condition == "masked-proc":
            mask_proc()
        elif condition == "no-userns":
            no_user_namespaces()
        elif condition.startswith("cgroup="):
            join_cgroup(condition[len("cgroup=") :])
        elif condition.startswith("user="):
            user = condition[5:]
        else:
            raise SystemExit(f"conditions.py: unknown condition {condition!r}")
    if user:
        become(user)
    if "seccomp-unshare" in argv[0]:
        install_seccomp(ALL_NS, block_setns=True)
    if "seccomp-userns" in argv[0]:
        install_seccomp(CLONE_NEWUSER, block_setns=False)
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv[1:])
