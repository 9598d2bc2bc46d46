// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * threadscoped's start-up calibration of the overhead budget (daemon/loader/calibrate.cc): what
 * a probe hit costs on this machine. Attached to tiny functions of the daemon's own process,
 * these programs run the same code every threadscope.bpf.c program runs for a hit (the target
 * check, the attach cookie, the per-CPU `hits` counter), so the time a call takes with the probe
 * minus without it is the trap plus that path.
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "threadscope_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

const volatile __u32 targ_tgid = 0;

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TS_HIT_KINDS);
	__type(key, __u32);
	__type(value, __u64);
} hits SEC(".maps");

static __always_inline void count_hit(__u32 kind)
{
	__u64 *n = bpf_map_lookup_elem(&hits, &kind);

	if (n)
		*n += 1;
}

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

SEC("uprobe")
int ts_calib(struct pt_regs *ctx)
{
	if (!is_target())
		return 0;
	count_hit(bpf_get_attach_cookie(ctx) & TS_COOKIE_SINGLE_STEP ? TS_HIT_UPROBE_SINGLE_STEP
								     : TS_HIT_UPROBE);
	return 0;
}

SEC("uretprobe")
int ts_calib_ret(struct pt_regs *ctx)
{
	if (!is_target())
		return 0;
	count_hit(TS_HIT_URETPROBE);
	return 0;
}

/* A raw tracepoint: what every syscall of a target costs while ts_futex_wake is attached
 * (sys_enter's slow path and the program's head: the target check, the count). */
SEC("raw_tp/sys_enter")
int ts_calib_tp(struct bpf_raw_tracepoint_args *ctx)
{
	if (!is_target())
		return 0;
	count_hit(TS_HIT_TRACEPOINT);
	return 0;
}
