// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * threadscoped's exec watcher, for auto-attach: one program for the whole host, loaded once by
 * the daemon (not per target), that reports the pid of every process that exec'd a new
 * program. The daemon decides in user space whether a rule matches and whether the new image
 * is CPython; here nothing is filtered, so the program stays trivial and cheap (one ring
 * reservation per exec).
 *
 * raw_tp/sched_process_exec fires in the exec'ing task after the new image is loaded
 * (exec_binprm, after load_binary): /proc/PID/exe, cmdline and maps already describe the new
 * program when the daemon reads them.
 */
#include <linux/types.h>
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "exec_watch_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 << 10); /* 16 K execs between two drains */
} exec_events SEC(".maps");

/* Execs that found the ring full: counted, never silent. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} exec_lost SEC(".maps");

SEC("raw_tp/sched_process_exec")
int ts_exec_watch(struct bpf_raw_tracepoint_args *ctx)
{
	struct ts_exec_record *e;
	__u32 zero = 0;
	__u64 *lost;

	e = bpf_ringbuf_reserve(&exec_events, sizeof(*e), 0);
	if (!e) {
		lost = bpf_map_lookup_elem(&exec_lost, &zero);
		if (lost)
			__sync_fetch_and_add(lost, 1);
		return 0;
	}
	e->ts_ns = bpf_ktime_get_ns();
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->_pad = 0;
	/* Adaptive wakeup: the daemon is woken when it has caught up, so an exec storm costs one
	 * wakeup per drain, not one per exec. */
	bpf_ringbuf_submit(e, 0);
	return 0;
}
