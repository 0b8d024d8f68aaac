"""A seccomp filter for sandboxed functions and compilers: the system calls no interpreter or
compiler needs and that widen the kernel's attack surface answer an error (ENOSYS or EPERM,
so runtimes that probe for them, as libuv does for io_uring, fall back), everything else runs.

A deny-list on purpose: an allow-list would have to follow every interpreter's release. The
program is classic BPF built here (no libseccomp binding is needed) for x86_64 only; on other
machines `program()` is None and the sandbox runs without it. System calls of another ABI on
x86_64 (i386 through int 0x80, x32) are refused whole.
"""

import os
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
BPF_LD_W_ABS, BPF_JEQ_K, BPF_JGE_K, BPF_RET_K = 0x20, 0x15, 0x35, 0x06
EPERM, ENOSYS = 1, 38

# x86_64 numbers (arch/x86/entry/syscalls/syscall_64.tbl).
DENIED = {
    "ptrace": (101, EPERM), "process_vm_readv": (310, EPERM), "process_vm_writev": (311, EPERM),
    "perf_event_open": (298, EPERM), "bpf": (321, EPERM), "userfaultfd": (323, EPERM),
    "add_key": (248, EPERM), "request_key": (249, EPERM), "keyctl": (250, EPERM),
    "kexec_load": (246, EPERM), "kexec_file_load": (320, EPERM),
    "init_module": (175, EPERM), "finit_module": (313, EPERM), "delete_module": (176, EPERM),
    "mount": (165, EPERM), "umount2": (166, EPERM), "pivot_root": (155, EPERM),
    "open_tree": (428, EPERM), "move_mount": (429, EPERM), "fsopen": (430, EPERM), "fsconfig": (431, EPERM),
    "fsmount": (432, EPERM), "fspick": (433, EPERM), "mount_setattr": (442, EPERM),
    "swapon": (167, EPERM), "swapoff": (168, EPERM), "reboot": (169, EPERM), "acct": (163, EPERM),
    "unshare": (272, EPERM), "setns": (308, EPERM),
    "name_to_handle_at": (303, EPERM), "open_by_handle_at": (304, EPERM),
    "io_uring_setup": (425, ENOSYS), "io_uring_enter": (426, ENOSYS), "io_uring_register": (427, ENOSYS),
}


def _insn(code, k, jt=0, jf=0):
    return struct.pack("=HBBI", code, jt, jf, k)


def program():
    """The filter as bytes for `bwrap --seccomp FD`, or None where it is not written for this machine."""
    if platform.machine() != "x86_64" or os.environ.get("FAAS_NO_SECCOMP") == "1":
        return None
    refuse_abi = SECCOMP_RET_ERRNO | ENOSYS
    out = [_insn(BPF_LD_W_ABS, 4),                          # seccomp_data.arch
           _insn(BPF_JEQ_K, AUDIT_ARCH_X86_64, jt=1),
           _insn(BPF_RET_K, refuse_abi),
           _insn(BPF_LD_W_ABS, 0),                          # seccomp_data.nr
           _insn(BPF_JGE_K, X32_SYSCALL_BIT, jf=1),
           _insn(BPF_RET_K, refuse_abi)]
    for nr, errno in sorted(DENIED.values()):
        out += [_insn(BPF_JEQ_K, nr, jf=1), _insn(BPF_RET_K, SECCOMP_RET_ERRNO | errno)]
    out.append(_insn(BPF_RET_K, SECCOMP_RET_ALLOW))
    return b"".join(out)


def fd():
    """A readable descriptor (inheritable) holding the program, for one bwrap to read; None
    when there is no filter for this machine. The caller closes it once bwrap has started."""
    data = program()
    if data is None:
        return None
    r, w = os.pipe()
    try:
        os.write(w, data)          # a few hundred bytes: fits in the empty pipe
    finally:
        os.close(w)
    os.set_inheritable(r, True)
    return r
