// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * threadscope's kernel side: small programs that copy what CPython and the kernel tell us into
 * one ring buffer. No reconstruction happens here; the daemon's model does that.
 *
 * Conventions (libbpf-tools style):
 *   - one program per probe role; the daemon decides which symbol/offset each is attached to
 *     (daemon/probes/probe_plan.cc), a uprobe cookie carries per-site details;
 *   - every program first checks the target tgid (uprobes are already bound to the target pid,
 *     but raw tracepoints and libc probes see more than the target);
 *   - records are submitted without a wakeup; the daemon drains in batches, and we force a
 *     wakeup only when the ring is filling up (see ts_submit);
 *   - a failed reservation is counted in `drops`, never silent.
 */
#include <stdbool.h>
#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/ptrace.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#include "threadscope_events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Set by the daemon between open and load. */
const volatile __u32 targ_tgid = 0;
/* Wake the consumer only once this many bytes wait in the ring (it also drains on a timer). */
const volatile __u64 wakeup_bytes = 1 << 20;
/* When set, sem_*wait probes report every semaphore, not only join sentinels. */
const volatile __u8 trace_all_sems = 0;
/* Offset of `lock_lock` (PyThread_type_lock) in lockobject; 16 in every CPython 2.7-3.13. */
const volatile __u32 lockobject_lock_offset = 16;

/* CO-RE view of the few task_struct fields we read; libbpf relocates them against kernel BTF,
 * so no vmlinux.h is needed. */
struct task_struct {
	int pid;
	int tgid;
	int exit_code;
} __attribute__((preserve_access_index));

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* resized by the daemon before load */
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TS_DROP_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

/* Entry → return state of an in-flight PyThread_start_*_thread, keyed by tid. */
struct start_stash {
	__u64 boot;
	__u64 ident_ptr;
	__u32 api;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct start_stash);
} starts SEC(".maps");

/* Semaphores whose blocking waits we report when trace_all_sems is off: the join sentinels
 * of running threads (3.4-3.12). LRU so a process that leaks threads cannot fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} watched_sems SEC(".maps");

/* sem_*wait entry → return, keyed by tid. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, __u64);
} sem_waits SEC(".maps");

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

static __always_inline __u32 current_tid(void)
{
	return (__u32)bpf_get_current_pid_tgid();
}

static __always_inline void count_drop(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&drops, &slot);

	if (n)
		*n += 1;
}

static __always_inline void *ts_reserve(__u32 size, __u16 type)
{
	struct ts_header *h = bpf_ringbuf_reserve(&events, size, 0);
	__u64 id;

	if (!h) {
		count_drop(TS_LOST_RINGBUF);
		return NULL;
	}
	id = bpf_get_current_pid_tgid();
	h->type = type;
	h->version = TS_ABI_VERSION;
	h->flags = 0;
	h->size = size;
	h->ts_ns = bpf_ktime_get_ns();
	h->pid = id >> 32;
	h->tid = (__u32)id;
	return h;
}

static __always_inline void ts_submit(void *rec)
{
	/* A wakeup per record costs ~0.45 us in the traced thread; batch unless the ring fills. */
	__u64 flags = BPF_RB_NO_WAKEUP;

	if (bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes)
		flags = BPF_RB_FORCE_WAKEUP;
	bpf_ringbuf_submit(rec, flags);
}

/* ---------------------------------------------------------------- thread lifecycle */

/* PyThread_start_new_thread(func, arg) / PyThread_start_joinable_thread(func, arg, ident*, h*).
 * Cookie: enum ts_start_api. */
SEC("uprobe")
int BPF_KPROBE(ts_thread_start, void *func, void *boot, void *ident_ptr)
{
	struct ts_thread_start_begin *e;
	struct start_stash s = {};
	__u32 tid;

	if (!is_target())
		return 0;
	tid = current_tid();
	/* Nested start on the same thread (one API implemented with the other): keep the outer. */
	if (bpf_map_lookup_elem(&starts, &tid))
		return 0;
	s.boot = (__u64)boot;
	s.ident_ptr = (__u64)ident_ptr;
	s.api = (__u32)bpf_get_attach_cookie(ctx);
	if (bpf_map_update_elem(&starts, &tid, &s, BPF_NOEXIST)) {
		count_drop(TS_LOST_STASH);
		return 0;
	}
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_START_BEGIN);
	if (!e)
		return 0;
	e->boot = s.boot;
	e->func = (__u64)func;
	e->api = s.api;
	e->_pad = 0;
	ts_submit(e);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ts_thread_start_ret, long ret)
{
	struct ts_thread_start_end *e;
	struct start_stash *s;
	__u64 ident = 0;
	__u32 tid, ok;

	if (!is_target())
		return 0;
	tid = current_tid();
	s = bpf_map_lookup_elem(&starts, &tid);
	if (!s)
		return 0;
	if (s->api == TS_START_API_JOINABLE_THREAD) {
		ok = ret == 0;
		if (ok && s->ident_ptr)
			bpf_probe_read_user(&ident, sizeof(ident), (void *)s->ident_ptr);
	} else {
		ok = ret != -1;
		ident = ok ? (__u64)ret : 0;
	}
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_START_END);
	if (e) {
		e->boot = s->boot;
		e->ident = ident;
		e->ret = ret;
		e->api = s->api;
		e->ok = ok;
		ts_submit(e);
	}
	bpf_map_delete_elem(&starts, &tid);
	return 0;
}

/* t_bootstrap(boot) / thread_run(boot): the child's first C function. */
SEC("uprobe")
int BPF_KPROBE(ts_thread_bootstrap, void *boot)
{
	struct ts_thread_bootstrap *e;

	if (!is_target())
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_BOOTSTRAP);
	if (!e)
		return 0;
	e->boot = (__u64)boot;
	ts_submit(e);
	return 0;
}

/* The bootstrap finished the Python callable: a uretprobe on it, or a uprobe on its own call
 * to PyThread_exit_thread (3.6-3.9 end in pthread_exit, so they never return).
 * Cookie: enum ts_body_done_how. */
SEC("uprobe")
int ts_thread_body_done(struct pt_regs *ctx)
{
	struct ts_thread_body_done *e;

	if (!is_target())
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_BODY_DONE);
	if (!e)
		return 0;
	e->how = (__u32)bpf_get_attach_cookie(ctx);
	e->_pad = 0;
	ts_submit(e);
	return 0;
}

SEC("raw_tp/sched_process_fork")
int ts_sched_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	struct ts_thread_clone *e;

	if (!is_target())
		return 0;
	/* A fork() makes a new process; only tasks that stay in the target are its threads. */
	if ((__u32)BPF_CORE_READ(child, tgid) != targ_tgid)
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_CLONE);
	if (!e)
		return 0;
	e->child_tid = (__u32)BPF_CORE_READ(child, pid);
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	ts_submit(e);
	return 0;
}

SEC("raw_tp/sched_process_exit")
int ts_sched_exit(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	struct ts_thread_exit *e;

	if (!is_target())
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_EXIT);
	if (!e)
		return 0;
	e->exit_code = BPF_CORE_READ(task, exit_code);
	e->_pad = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	ts_submit(e);
	return 0;
}

SEC("raw_tp/task_rename")
int ts_task_rename(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *task = (struct task_struct *)ctx->args[0];
	const char *comm = (const char *)ctx->args[1];
	struct ts_thread_rename *e;

	if (!is_target())
		return 0;
	if ((__u32)BPF_CORE_READ(task, tgid) != targ_tgid)
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_RENAME);
	if (!e)
		return 0;
	e->target_tid = (__u32)BPF_CORE_READ(task, pid);
	e->_pad = 0;
	bpf_probe_read_kernel_str(e->comm, sizeof(e->comm), comm);
	ts_submit(e);
	return 0;
}

/* ---------------------------------------------------------------- joins */

/* uretprobe on _thread._set_sentinel() (3.4-3.12): the child creates the lock that join()
 * will wait on. Watching its semaphore makes blocking joins visible without probing every
 * lock operation. */
SEC("uretprobe")
int BPF_KRETPROBE(ts_set_sentinel_ret, void *lock)
{
	struct ts_thread_sentinel *e;
	__u64 sem = 0;
	__u32 tid;

	if (!is_target() || !lock)
		return 0;
	bpf_probe_read_user(&sem, sizeof(sem), (char *)lock + lockobject_lock_offset);
	tid = current_tid();
	if (sem)
		bpf_map_update_elem(&watched_sems, &sem, &tid, BPF_ANY);
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_SENTINEL);
	if (!e)
		return 0;
	e->lock = (__u64)lock;
	e->sem = sem;
	ts_submit(e);
	return 0;
}

/* PyThread_join_thread(handle) (3.13+): handle is the pthread_t, i.e. the ident. */
SEC("uprobe")
int BPF_KPROBE(ts_join_thread, __u64 handle)
{
	struct ts_thread_join *e;

	if (!is_target())
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_JOIN_BEGIN);
	if (!e)
		return 0;
	e->ident = handle;
	e->ret = 0;
	ts_submit(e);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ts_join_thread_ret, long ret)
{
	struct ts_thread_join *e;

	if (!is_target())
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_JOIN_END);
	if (!e)
		return 0;
	e->ident = 0;
	e->ret = ret;
	ts_submit(e);
	return 0;
}

/* PyThread_detach_thread(handle) (3.13+). */
SEC("uprobe")
int BPF_KPROBE(ts_detach_thread, __u64 handle)
{
	struct ts_thread_detach *e;

	if (!is_target())
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_DETACH);
	if (!e)
		return 0;
	e->ident = handle;
	ts_submit(e);
	return 0;
}

/* ---------------------------------------------------------------- semaphores (libc) */

/* sem_wait / sem_timedwait / sem_clockwait: CPython calls these only after a non-blocking
 * try failed (3.x), so every hit is a wait on a held lock. */
SEC("uprobe")
int BPF_KPROBE(ts_sem_wait, void *sem_ptr)
{
	__u64 sem = (__u64)sem_ptr;
	struct ts_sem_wait *e;
	__u32 tid;

	if (!is_target())
		return 0;
	if (!trace_all_sems && !bpf_map_lookup_elem(&watched_sems, &sem))
		return 0;
	tid = current_tid();
	if (bpf_map_update_elem(&sem_waits, &tid, &sem, BPF_ANY)) {
		count_drop(TS_LOST_STASH);
		return 0;
	}
	e = ts_reserve(sizeof(*e), TS_EV_SEM_WAIT_BEGIN);
	if (!e)
		return 0;
	e->sem = sem;
	e->ret = 0;
	ts_submit(e);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ts_sem_wait_ret, int ret)
{
	struct ts_sem_wait *e;
	__u64 *sem;
	__u32 tid;

	if (!is_target())
		return 0;
	tid = current_tid();
	sem = bpf_map_lookup_elem(&sem_waits, &tid);
	if (!sem)
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_SEM_WAIT_END);
	if (e) {
		e->sem = *sem;
		e->ret = ret;
		ts_submit(e);
	}
	bpf_map_delete_elem(&sem_waits, &tid);
	return 0;
}

/* sem_destroy: a lock died; its address may come back as a different lock. */
SEC("uprobe")
int BPF_KPROBE(ts_sem_destroy, void *sem_ptr)
{
	__u64 sem = (__u64)sem_ptr;
	struct ts_sem_wait *e;

	if (!is_target())
		return 0;
	if (bpf_map_delete_elem(&watched_sems, &sem) && !trace_all_sems)
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_SEM_DESTROY);
	if (!e)
		return 0;
	e->sem = sem;
	e->ret = 0;
	ts_submit(e);
	return 0;
}
