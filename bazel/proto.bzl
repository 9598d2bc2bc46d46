"""protoc + grpc_cpp_plugin from Debian, run in a genrule (Bazel 4.2.3 offline has no proto
rules that work without downloads).

Protos are compiled with the package directory as --proto_path, so a file's canonical name is
"threadscope/v1/threadscope.proto" (what server reflection shows and what includes use).
"""

def cc_proto_grpc_library(name, srcs, visibility = None):
    """Defines `<name>_proto` (messages) and `<name>_grpc` (messages + service stubs)."""
    pkg = native.package_name()
    bases = [s[:-len(".proto")] for s in srcs]
    msg_outs = [b + ".pb.h" for b in bases] + [b + ".pb.cc" for b in bases]
    grpc_outs = [b + ".grpc.pb.h" for b in bases] + [b + ".grpc.pb.cc" for b in bases]
    native.genrule(
        name = name + "_gen",
        srcs = srcs,
        outs = msg_outs + grpc_outs,
        cmd = " ".join([
            "protoc --proto_path=%s" % pkg,
            "--cpp_out=$(GENDIR)/%s" % pkg,
            "--grpc_out=$(GENDIR)/%s" % pkg,
            "--plugin=protoc-gen-grpc=/usr/bin/grpc_cpp_plugin",
        ] + ["$(location %s)" % s for s in srcs]),
    )
    native.cc_library(
        name = name + "_proto",
        srcs = [o for o in msg_outs if o.endswith(".cc")],
        hdrs = [o for o in msg_outs if o.endswith(".h")],
        includes = ["."],
        linkopts = ["-lprotobuf"],
        visibility = visibility,
    )
    native.cc_library(
        name = name + "_grpc",
        srcs = [o for o in grpc_outs if o.endswith(".cc")],
        hdrs = [o for o in grpc_outs if o.endswith(".h")],
        includes = ["."],
        deps = [":" + name + "_proto"],
        # grpc++ headers inline absl::Mutex; Debian links absl as shared libraries.
        linkopts = ["-lgrpc++", "-lgrpc", "-lgpr", "-labsl_synchronization"],
        visibility = visibility,
    )
