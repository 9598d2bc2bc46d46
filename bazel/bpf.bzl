"""Bazel macros that build a libbpf object and its bpftool skeleton with host tools.

Bazel 4.2.3 has no BPF toolchain; clang (-target bpf) and bpftool come from Debian and run in
genrules, as google/ghost-userspace's bpf.bzl does.
"""

def bpf_skeleton(name, src, hdrs = [], visibility = None):
    """Compiles `src` for BPF and exposes `<name>.skel.h` as a cc_library named `name`."""
    obj = name + ".bpf.o"
    skel = name + ".skel.h"
    native.genrule(
        name = name + "_obj",
        srcs = [src] + hdrs,
        outs = [obj],
        cmd = " ".join([
            # -mcpu=v3: atomic fetch-and-add with a result (kernel 5.12+).
            "clang -g -O2 -target bpf -mcpu=v3 -D__TARGET_ARCH_x86",
            "-I/usr/include/x86_64-linux-gnu",
            "-I$$(dirname $(location %s))" % src,
            "-Wall -Werror",
            "-c $(location %s) -o $@.tmp" % src,
            # Strip DWARF (keep BTF): smaller skeleton, same programs.
            "&& llvm-strip -g $@.tmp -o $@",
        ]),
    )
    native.genrule(
        name = name + "_skel",
        srcs = [obj],
        outs = [skel],
        cmd = "bpftool gen skeleton $(location %s) name %s > $@" % (obj, name),
    )
    native.cc_library(
        name = name,
        hdrs = [skel],
        visibility = visibility,
        linkopts = ["-lbpf", "-lelf", "-lz"],
    )
