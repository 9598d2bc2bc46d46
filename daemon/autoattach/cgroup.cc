#include "daemon/autoattach/cgroup.h"

#include <vector>

namespace threadscope::autoattach {

namespace {

constexpr size_t kMaxPath = 4096;

bool IsHex(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool StartsWith(std::string_view s, std::string_view p) { return s.substr(0, p.size()) == p; }
bool EndsWith(std::string_view s, std::string_view p) {
  return s.size() >= p.size() && s.substr(s.size() - p.size()) == p;
}

// "0f5f3a9e-1c2b-4d3e-8f00-123456789abc" (a pod's UID) or 32 hex digits (a static pod's, a
// hash of its manifest). Underscores are the systemd driver's spelling of dashes.
std::string PodUid(std::string_view s) {
  std::string out(s);
  for (char& c : out) {
    if (c == '_') c = '-';
  }
  if (out.size() == 32 && IsHex(out)) return out;
  if (out.size() != 36) return "";
  for (size_t i = 0; i < out.size(); ++i) {
    bool dash = i == 8 || i == 13 || i == 18 || i == 23;
    if (dash ? out[i] != '-' : !IsHex(std::string_view(&out[i], 1))) return "";
  }
  return out;
}

std::string PodFromComponent(std::string_view c) {
  // systemd driver: kubepods-pod<uid>.slice, kubepods-<qos>-pod<uid>.slice
  if (StartsWith(c, "kubepods") && EndsWith(c, ".slice")) {
    auto pos = c.rfind("-pod");
    if (pos == std::string_view::npos) return "";
    return PodUid(c.substr(pos + 4, c.size() - pos - 4 - 6));
  }
  // cgroupfs driver: pod<uid>
  if (StartsWith(c, "pod")) return PodUid(c.substr(3));
  return "";
}

struct Container {
  std::string id;
  std::string runtime;
};

Container ContainerFromComponent(std::string_view c) {
  std::string_view s = c;
  if (EndsWith(s, ".scope")) s.remove_suffix(6);
  struct Prefix {
    std::string_view prefix;
    std::string_view runtime;
  };
  // Conmon's own cgroups (crio-conmon-, libpod-conmon-) hold the monitor, not the container:
  // their ids are not 64 hex digits after these prefixes, so they never match.
  static constexpr Prefix kPrefixes[] = {{"cri-containerd-", "containerd"},
                                         {"crio-", "cri-o"},
                                         {"docker-", "docker"},
                                         {"libpod-", "podman"}};
  for (const auto& p : kPrefixes) {
    if (StartsWith(s, p.prefix)) {
      std::string_view id = s.substr(p.prefix.size());
      if (id.size() == 64 && IsHex(id)) return {std::string(id), std::string(p.runtime)};
      return {};
    }
  }
  if (s.size() == 64 && IsHex(s)) return {std::string(s), ""};
  return {};
}

bool IsUnitName(std::string_view s) {
  if (s.size() > 256 || s.size() <= 8) return false;
  for (char c : s) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == ':' || c == '_' || c == '.' || c == '@' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::vector<std::string_view> Components(std::string_view path) {
  std::vector<std::string_view> out;
  size_t start = 0;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      if (i > start) out.push_back(path.substr(start, i - start));
      start = i + 1;
    }
  }
  return out;
}

}  // namespace

std::string SelectCgroupPath(std::string_view content) {
  std::string unified;
  bool have_unified = false;
  std::string systemd, memory, first;
  size_t start = 0;
  while (start < content.size()) {
    size_t end = content.find('\n', start);
    if (end == std::string_view::npos) end = content.size();
    std::string_view line = content.substr(start, end - start);
    start = end + 1;
    // hierarchy-ID:controller-list:cgroup-path
    size_t a = line.find(':');
    if (a == std::string_view::npos) continue;
    size_t b = line.find(':', a + 1);
    if (b == std::string_view::npos) continue;
    std::string_view id = line.substr(0, a);
    std::string_view controllers = line.substr(a + 1, b - a - 1);
    std::string path(line.substr(b + 1, kMaxPath));
    if (id == "0" && controllers.empty()) {
      unified = path;
      have_unified = true;
      continue;
    }
    if (first.empty()) first = path;
    if (controllers == "name=systemd") systemd = path;
    // "memory" alone or in a list ("cpu,cpuacct" has its own; memory is rarely co-mounted).
    for (size_t p = 0; p <= controllers.size();) {
      size_t q = controllers.find(',', p);
      if (q == std::string_view::npos) q = controllers.size();
      if (controllers.substr(p, q - p) == "memory") memory = path;
      p = q + 1;
    }
  }
  std::string v1 = !systemd.empty() ? systemd : !memory.empty() ? memory : first;
  if (!have_unified) return v1;
  // Hybrid hosts: the unified hierarchy often holds only systemd's view ("/" or a session),
  // while the runtime put the container into the v1 controllers.
  auto names = [](const std::string& p) {
    CgroupIdentity id = IdentifyCgroup(p);
    return !id.container_id.empty() || !id.pod_uid.empty();
  };
  if (!v1.empty() && !names(unified) && names(v1)) return v1;
  return unified;
}

CgroupIdentity IdentifyCgroup(std::string_view path) {
  CgroupIdentity out;
  path = path.substr(0, kMaxPath);
  auto parts = Components(path);
  // Innermost first: the container's own scope, then its pod, wherever they sit in the path.
  for (size_t i = parts.size(); i-- > 0;) {
    std::string_view c = parts[i];
    if (out.container_id.empty() && out.pod_uid.empty()) {
      Container k = ContainerFromComponent(c);
      if (!k.id.empty()) {
        out.container_id = k.id;
        out.container_runtime = k.runtime;
        // Docker with the cgroupfs driver: /docker/<id>.
        if (k.runtime.empty() && i > 0 && parts[i - 1] == "docker") {
          out.container_runtime = "docker";
        }
        continue;
      }
    }
    if (out.pod_uid.empty()) {
      std::string pod = PodFromComponent(c);
      if (!pod.empty()) out.pod_uid = pod;
    }
  }
  if (out.container_id.empty() && out.pod_uid.empty()) {
    for (size_t i = parts.size(); i-- > 0;) {
      if (EndsWith(parts[i], ".service") && IsUnitName(parts[i])) {
        out.systemd_unit = std::string(parts[i]);
        break;
      }
    }
  }
  return out;
}

std::map<std::string, std::string> CgroupLabels(const CgroupIdentity& id) {
  std::map<std::string, std::string> out;
  if (!id.pod_uid.empty()) out["pod_uid"] = id.pod_uid;
  if (!id.container_id.empty()) out["container_id"] = id.container_id;
  if (!id.container_runtime.empty()) out["container_runtime"] = id.container_runtime;
  if (!id.systemd_unit.empty()) out["systemd_unit"] = id.systemd_unit;
  return out;
}

}  // namespace threadscope::autoattach
