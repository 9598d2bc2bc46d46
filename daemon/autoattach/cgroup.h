// Containers and pods from a process's cgroup path, without asking a container runtime.
//
// Runtimes and the kubelet name the cgroups they create after what runs in them:
//
//   cgroup v2, systemd driver (kubelet default with cgroup v2):
//     /kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/
//         cri-containerd-<64 hex>.scope       containerd
//         crio-<64 hex>.scope                 CRI-O
//         docker-<64 hex>.scope               Docker (cri-dockerd)
//   cgroupfs driver (v1 and v2):  /kubepods/besteffort/pod<uid>/<64 hex>
//   Docker alone:                 /system.slice/docker-<64 hex>.scope, /docker/<64 hex> (v1)
//   Podman:                       /machine.slice/libpod-<64 hex>.scope
//   systemd services:             /system.slice/nginx.service
//
// A daemon in its own cgroup namespace (a DaemonSet pod under containerd with cgroup v2) sees
// other pods' paths relative to its own root: "/../../kubepods-besteffort-pod<uid>.slice/...".
// So every component is looked at, wherever it is in the path, innermost first.
//
// The path is chosen by whoever may create cgroups, which includes users with a delegated
// subtree (systemd user slices): it is hostile input. Labels come out only in strict formats
// (a UUID or 32 hex digits for a pod, 64 hex digits for a container, a unit name of safe
// characters), so what reaches a label value is bounded and printable.
#pragma once

#include <map>
#include <string>
#include <string_view>

namespace threadscope::autoattach {

// The one path of /proc/PID/cgroup's content that says most about the process: the unified
// (v2, "0::") hierarchy's, unless a v1 hierarchy's names a container or pod and it does not
// (hybrid hosts), else the v1 name=systemd, memory or first hierarchy's. Cut at 4096 bytes.
std::string SelectCgroupPath(std::string_view proc_pid_cgroup);

struct CgroupIdentity {
  std::string pod_uid;            // "0f5f3a9e-...": dashes, as the Kubernetes API shows it
  std::string container_id;       // 64 lowercase hex digits
  std::string container_runtime;  // containerd, cri-o, docker, podman; "" when not named
  std::string systemd_unit;       // "nginx.service", only when no container is found
};

CgroupIdentity IdentifyCgroup(std::string_view path);

// The identity as target labels: pod_uid, container_id, container_runtime, systemd_unit (those
// that are set).
std::map<std::string, std::string> CgroupLabels(const CgroupIdentity& id);

}  // namespace threadscope::autoattach
