// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/*
 * threadscope's kernel side: small programs that copy what CPython and the kernel tell us into
 * one ring buffer. No reconstruction happens here; the daemon's model does that.
 *
 * Over 600 lines for one reason: like a libbpf-tools tool, every program lives in this one object
 * so that they share one ring buffer, one set of maps and one load; the catalogue
 * (daemon/loader/probe_catalog.h) says which program serves which probe.
 *
 * Conventions (libbpf-tools style):
 *   - one program per probe role; the daemon decides which symbol/offset each is attached to
 *     (daemon/loader/plan_*.cc, from the catalogue in probe_catalog.h), a uprobe cookie
 *     carries per-site details;
 *   - every program first checks the target tgid (uprobes are already bound to the target pid,
 *     but raw tracepoints and libc probes see more than the target);
 *   - records are submitted without a wakeup; the daemon drains in batches, and we force a
 *     wakeup only when the ring is filling up (see ts_submit);
 *   - a failed reservation is counted in `drops`, never silent.
 */
#include <stdbool.h>
#include <stddef.h>
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
/* Offset of `lock_lock` (PyThread_type_lock) in lockobject and rlockobject; 16 in every
 * CPython 2.7-3.13. */
const volatile __u32 lockobject_lock_offset = 16;
/* Which lock kinds hold a semaphore at lockobject_lock_offset (bit 1 << enum ts_lock_kind):
 * both up to 3.13.0; only RLock in 3.13.1+; none from 3.14 (PyMutex). */
const volatile __u8 sem_kinds = (1 << TS_LOCK_LOCK) | (1 << TS_LOCK_RLOCK);
/* PyMutex builds: the mutex's offset in a lock object (16; 32 behind the free-threaded object
 * header), where the object keeps its type (ob_type: 8; 24 free-threaded), and where a
 * free-threaded object keeps its own ob_mutex (10). */
const volatile __u32 lock_mutex_off = 16;
const volatile __u32 ob_type_off = 8;
const volatile __u32 ob_mutex_off = 10;
const volatile __u8 free_threaded = 0;
/* RLock owner and recursion: rlock_owner / rlock_count (<= 3.13) or _PyRecursiveMutex's
 * thread / level (3.14+, where the held count is level + 1). rlock_owner_off 0 = unknown. */
const volatile __u32 rlock_owner_off = 0;
const volatile __u32 rlock_depth_off = 0;
const volatile __u8 rlock_depth_is_level = 0;
/* Runtime addresses of Py_True / Py_False in the target, to read acquire()'s result. */
const volatile __u64 py_true = 0;
const volatile __u64 py_false = 0;
/* Python 2.7: the address of `interpreter_lock`, the variable holding the GIL (a plain lock);
 * 0 elsewhere. */
const volatile __u64 gil_lock_addr = 0;

/* CO-RE view of the few task_struct fields we read; libbpf relocates them against kernel BTF,
 * so no vmlinux.h is needed. */
struct thread_struct {
	unsigned long fsbase; /* x86-64: the thread pointer, which glibc's pthread_self() returns */
} __attribute__((preserve_access_index));

struct task_struct {
	int pid;
	int tgid;
	int exit_code;
	struct thread_struct thread;
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

/* Semaphores somebody is blocked on right now (count of waiters): a futex_wake on one of them
 * is a release that woke a waiter. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} waited_sems SEC(".maps");

/* --locks=all: the acquire call in progress on a thread. Task-local storage, not a hash keyed by
 * tid: this is on every acquire's path, and a task's storage is a pointer away. */
struct acquire_stash {
	__u64 obj;
	__u64 sem;
	__u64 begin_ns;
	__u32 kind;
	__u32 op;
	__u32 waited;
	__u32 active;
	__u32 flags;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct acquire_stash);
} acquires SEC(".maps");

static __always_inline struct acquire_stash *acquire_in_progress(void)
{
	struct acquire_stash *s =
		bpf_task_storage_get(&acquires, bpf_get_current_task_btf(), 0, 0);

	return s && s->active ? s : NULL;
}

static __always_inline bool is_target(void)
{
	return (bpf_get_current_pid_tgid() >> 32) == targ_tgid;
}

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

/* is_target() for a uprobe program, counting the hit (emulated or single-stepped: the cookie's
 * TS_COOKIE_SINGLE_STEP, set per site by the loader). */
static __always_inline bool target_uprobe(struct pt_regs *ctx)
{
	if (!is_target())
		return false;
	count_hit(bpf_get_attach_cookie(ctx) & TS_COOKIE_SINGLE_STEP ? TS_HIT_UPROBE_SINGLE_STEP
								      : TS_HIT_UPROBE);
	return true;
}

static __always_inline bool target_uretprobe(void)
{
	if (!is_target())
		return false;
	count_hit(TS_HIT_URETPROBE);
	return true;
}

/* Raw tracepoints see every task: only the target's runs are its cost. */
static __always_inline bool target_tracepoint(void)
{
	if (!is_target())
		return false;
	count_hit(TS_HIT_TRACEPOINT);
	return true;
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

/* Per-CPU time of the last early wakeup (see ts_submit_soon). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} last_early_wakeup SEC(".maps");

#define TS_EARLY_WAKEUP_NS 1000000ULL

/* A lock's creation stack must be resolved while its code object lives, and a module's code dies
 * when its import ends, often within milliseconds: wake the consumer early, but at most once a
 * millisecond per CPU, so that programs creating locks in a loop do not pay a wakeup each. */
static __always_inline void ts_submit_soon(void *rec)
{
	__u32 zero = 0;
	__u64 now = bpf_ktime_get_ns(), *last = bpf_map_lookup_elem(&last_early_wakeup, &zero);

	if (last && now - *last >= TS_EARLY_WAKEUP_NS) {
		*last = now;
		bpf_ringbuf_submit(rec, BPF_RB_FORCE_WAKEUP);
		return;
	}
	ts_submit(rec);
}


/* ---------------------------------------------------------------- Python stacks */

/* Set by the daemon for CPython 3.6+; py_layout.interp_head_addr == 0 leaves stacks off. */
const volatile struct ts_py_layout py_layout = {};
/* Frames recorded at a lock wait and at a lock's creation, and at every acquire (--locks=all). */
const volatile __u8 stack_frames = 0;
const volatile __u8 stack_frames_acquire = 0;
/* The overhead budget's no_acquire_stacks stage: 1 skips the stack at acquires. Written by the
 * daemon while attached (BpfTracer::SetAcquireStacks), so in .bss, not .rodata. */
volatile __u8 budget_skip_acquire_stacks = 0;
/* The overhead budget's gil_waits stage on a --gil full trace (BpfTracer::SetGilWaitsOnly): both
 * GIL probe sets are attached for a moment at the switch; these keep one of them silent, so no
 * take is reported twice. 0 for every trace that does not switch. */
volatile __u8 budget_gil_full_off = 0;
volatile __u8 budget_gil_waits_off = 0;
/* Frames recorded when a take_gil that waited at least gil_stack_threshold_ns returns (0: off). */
const volatile __u8 gil_stack_frames = 0;
const volatile __u64 gil_stack_threshold_ns = 1000000;

#define TS_MAX_INTERPRETERS 4
#define TS_MAX_THREAD_STATES 4096
#define TS_FRAME_BUF 256

/* tid → its PyThreadState *, found once by walking the interpreter's thread list and checked
 * on every use (a dead thread's state can be freed and reused). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u32);
	__type(value, __u64);
} tstates SEC(".maps");

/* One frame's bytes, read at once instead of field by field. */
struct frame_buf {
	__u8 b[TS_FRAME_BUF];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame_buf);
} frame_scratch SEC(".maps");

static __always_inline __u64 read_user_u64(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, sizeof(v), (void *)addr);
	return v;
}

struct tstate_search {
	__u64 ts;
	__u64 fsbase;
	__u64 found;
};

static long tstate_step(__u64 index, void *ctx)
{
	struct tstate_search *s = ctx;

	if (!s->ts)
		return 1;
	if (read_user_u64(s->ts + py_layout.tstate_thread_id) == s->fsbase) {
		s->found = s->ts;
		return 1;
	}
	s->ts = read_user_u64(s->ts + py_layout.tstate_next);
	return 0;
}

/* The calling thread's PyThreadState. Not the interpreter's "current" one: a thread about to
 * block on a lock has released the GIL, so only its pthread_t (= fs base) identifies it. */
static __always_inline __u64 current_tstate(__u32 tid)
{
	__u64 fsbase = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), thread.fsbase);
	__u64 *cached = bpf_map_lookup_elem(&tstates, &tid);
	__u64 interp;

	if (cached && *cached && read_user_u64(*cached + py_layout.tstate_thread_id) == fsbase)
		return *cached;
	interp = read_user_u64(py_layout.interp_head_addr);
	for (int i = 0; i < TS_MAX_INTERPRETERS && interp; i++) {
		struct tstate_search s = {
			.ts = read_user_u64(interp + py_layout.interp_tstate_head),
			.fsbase = fsbase,
		};

		bpf_loop(TS_MAX_THREAD_STATES, tstate_step, &s, 0);
		if (s.found) {
			bpf_map_update_elem(&tstates, &tid, &s.found, BPF_ANY);
			return s.found;
		}
		interp = read_user_u64(interp + py_layout.interp_next);
	}
	return 0;
}

static __always_inline __u64 buf_u64(const struct frame_buf *buf, __u32 off)
{
	off &= TS_FRAME_BUF - 1;
	if (off > TS_FRAME_BUF - 8)
		return 0;
	return *(const __u64 *)(buf->b + off);
}

/* Fills a record's stack trailer with the calling thread's innermost Python frames (code
 * object, instruction); the daemon turns them into file:line function. */
static __always_inline void fill_stack(struct ts_header *h, struct ts_py_stack *st, __u32 tid,
				       __u8 max_frames)
{
	struct frame_buf *buf;
	__u32 zero = 0, size;
	__u64 f;
	__u8 depth = 0;

	h->flags |= TS_HDR_PY_STACK;
	st->depth = 0;
	st->flags = 0;
	st->_pad0 = 0;
	st->_pad1 = 0;
	for (int i = 0; i < TS_PY_MAX_FRAMES; i++) {
		st->frames[i].code = 0;
		st->frames[i].instr = 0;
	}
	st->tstate = current_tstate(tid);
	buf = bpf_map_lookup_elem(&frame_scratch, &zero);
	if (!st->tstate || !buf) {
		st->flags = TS_STACK_NO_THREAD_STATE;
		return;
	}
	f = read_user_u64(st->tstate + py_layout.tstate_frame);
	if (py_layout.cframe_current >= 0 && f)
		f = read_user_u64(f + py_layout.cframe_current);
	size = py_layout.frame_read_size;
	if (size > TS_FRAME_BUF)
		size = TS_FRAME_BUF;
	/* Twice the frames: 3.12+ interleaves C-stack shim frames, which are skipped. */
	for (int i = 0; i < 2 * TS_PY_MAX_FRAMES && f; i++) {
		__u64 instr;

		if (depth >= max_frames || depth >= TS_PY_MAX_FRAMES) {
			st->flags |= TS_STACK_TRUNCATED;
			break;
		}
		if (bpf_probe_read_user(buf->b, size, (void *)f)) {
			st->flags |= TS_STACK_FAULT;
			break;
		}
		if (py_layout.frame_owner >= 0 &&
		    buf->b[py_layout.frame_owner & (TS_FRAME_BUF - 1)] == py_layout.owner_cstack) {
			f = buf_u64(buf, py_layout.frame_previous);
			continue;
		}
		instr = buf_u64(buf, py_layout.frame_instr);
		if (!py_layout.instr_is_pointer)
			instr = (__u64)(__s64)(__s32)instr; /* int f_lasti */
		st->frames[depth & (TS_PY_MAX_FRAMES - 1)].code =
			buf_u64(buf, py_layout.frame_code) & ~(__u64)py_layout.code_tag_mask;
		st->frames[depth & (TS_PY_MAX_FRAMES - 1)].instr = instr;
		depth++;
		f = buf_u64(buf, py_layout.frame_previous);
	}
	st->depth = depth;
}

/* Whether a record gets a stack trailer. Both inputs are read-only data, so the verifier
 * knows the answer and checks only the branch that runs. */
static __always_inline bool with_stack(__u8 frames)
{
	return frames && py_layout.interp_head_addr;
}

#define TS_STACK_OF(rec) ((struct ts_py_stack *)((char *)(rec) + sizeof(*(rec))))

/* ---------------------------------------------------------------- thread lifecycle */

/* PyThread_start_new_thread(func, arg) / PyThread_start_joinable_thread(func, arg, ident*, h*).
 * Cookie: enum ts_start_api. */
SEC("uprobe")
int BPF_KPROBE(ts_thread_start, void *func, void *boot, void *ident_ptr)
{
	struct ts_thread_start_begin *e;
	struct start_stash s = {};
	__u32 tid;

	if (!target_uprobe(ctx))
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

	if (!target_uretprobe())
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

	if (!target_uprobe(ctx))
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_THREAD_BOOTSTRAP);
	if (!e)
		return 0;
	e->boot = (__u64)boot;
	/* The child's threading ident (pthread_self) is known here, before the parent's start
	 * call returns with it: RUNNING can carry it. */
	e->ident = BPF_CORE_READ((struct task_struct *)bpf_get_current_task(), thread.fsbase);
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

	if (!target_uprobe(ctx))
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

	if (!target_tracepoint())
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

	if (!target_tracepoint())
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

	if (!target_tracepoint())
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

	if (!target_uretprobe() || !lock)
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

	if (!target_uprobe(ctx))
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

	if (!target_uretprobe())
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

	if (!target_uprobe(ctx))
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

	__u32 value = 1;

	if (!target_uprobe(ctx))
		return 0;
	if (!trace_all_sems && !bpf_map_lookup_elem(&watched_sems, &sem))
		return 0;
	/* A wait only if the lock is held right now: glibc's semaphore value is the low half of its
	 * first word, 0 when taken. Internal CPython locks call the blocking sem_wait without trying
	 * first; uncontended, they would otherwise look like waits. */
	if (bpf_probe_read_user(&value, sizeof(value), sem_ptr) || value != 0)
		return 0;
	tid = current_tid();
	if (bpf_map_update_elem(&sem_waits, &tid, &sem, BPF_ANY)) {
		count_drop(TS_LOST_STASH);
		return 0;
	}
	if (trace_all_sems) {
		struct acquire_stash *a = acquire_in_progress();
		__u32 one = 1, *waiters = bpf_map_lookup_elem(&waited_sems, &sem);

		if (a)
			a->waited = 1; /* the acquire in progress on this thread had to wait */
		if (waiters)
			__sync_fetch_and_add(waiters, 1);
		else
			bpf_map_update_elem(&waited_sems, &sem, &one, BPF_NOEXIST);
	}
	if (with_stack(stack_frames)) {
		e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_SEM_WAIT_BEGIN);
		if (!e)
			return 0;
		fill_stack(&e->h, TS_STACK_OF(e), tid, stack_frames);
	} else {
		e = ts_reserve(sizeof(*e), TS_EV_SEM_WAIT_BEGIN);
		if (!e)
			return 0;
	}
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

	if (!target_uretprobe())
		return 0;
	tid = current_tid();
	sem = bpf_map_lookup_elem(&sem_waits, &tid);
	if (!sem)
		return 0;
	if (trace_all_sems) {
		__u32 *waiters = bpf_map_lookup_elem(&waited_sems, sem);

		if (waiters && __sync_fetch_and_add(waiters, -1) <= 1)
			bpf_map_delete_elem(&waited_sems, sem);
	}
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

	if (!target_uprobe(ctx))
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

/* ---------------------------------------------------------------- locks */

static __always_inline __u64 lock_sem(void *obj, __u32 kind)
{
	__u64 sem = 0;

	/* A PyMutex lock has no semaphore: those bytes are the mutex and whatever follows. */
	if (kind > TS_LOCK_RLOCK || !(sem_kinds & (1 << kind)))
		return 0;
	bpf_probe_read_user(&sem, sizeof(sem), (char *)obj + lockobject_lock_offset);
	return sem;
}

static __always_inline __u32 lock_flags(__u32 kind)
{
	return kind <= TS_LOCK_RLOCK && (sem_kinds & (1 << kind)) ? 0 : TS_LOCK_F_PYMUTEX;
}

/* A register by enum ts_reg. The context cannot be read at a variable offset, and a switch
 * over its fields compiles to one: copy the field through bpf_probe_read_kernel instead. */
static __always_inline __u64 reg_value(struct pt_regs *ctx, __u32 reg)
{
	__u32 off;
	__u64 v = 0;

	switch (reg) {
	case TS_REG_RDI: off = offsetof(struct pt_regs, rdi); break;
	case TS_REG_RSI: off = offsetof(struct pt_regs, rsi); break;
	case TS_REG_RDX: off = offsetof(struct pt_regs, rdx); break;
	case TS_REG_RCX: off = offsetof(struct pt_regs, rcx); break;
	case TS_REG_R8: off = offsetof(struct pt_regs, r8); break;
	case TS_REG_R9: off = offsetof(struct pt_regs, r9); break;
	case TS_REG_RBX: off = offsetof(struct pt_regs, rbx); break;
	case TS_REG_RBP: off = offsetof(struct pt_regs, rbp); break;
	case TS_REG_R12: off = offsetof(struct pt_regs, r12); break;
	case TS_REG_R13: off = offsetof(struct pt_regs, r13); break;
	case TS_REG_R14: off = offsetof(struct pt_regs, r14); break;
	case TS_REG_R15: off = offsetof(struct pt_regs, r15); break;
	case TS_REG_RAX: off = offsetof(struct pt_regs, rax); break;
	default: return 0;
	}
	bpf_probe_read_kernel(&v, sizeof(v), (char *)ctx + off);
	return v;
}

/* The lock object at a method probe: the cookie's register minus its adjustment. */
static __always_inline __u64 cookie_obj(struct pt_regs *ctx, __u64 cookie)
{
	return reg_value(ctx, (cookie >> 16) & 0xff) - ((cookie >> 24) & 0xff);
}

/* RLock owner and depth as the object says (TS_LOCK_F_OWNER when read). */
static __always_inline void read_owner(struct ts_lock_event *e)
{
	__u64 owner = 0, depth = 0;

	e->owner_ident = 0;
	e->depth = 0;
	if (e->kind != TS_LOCK_RLOCK || !rlock_owner_off || !e->obj)
		return;
	if (bpf_probe_read_user(&owner, sizeof(owner), (void *)(e->obj + rlock_owner_off)) ||
	    bpf_probe_read_user(&depth, sizeof(depth), (void *)(e->obj + rlock_depth_off)))
		return;
	e->owner_ident = owner;
	/* 3.14+ keeps level = count - 1, and 0 with no owner. */
	e->depth = rlock_depth_is_level ? (owner ? (__u32)depth + 1 : 0) : (__u32)depth;
	e->flags |= TS_LOCK_F_OWNER;
}

static __always_inline __u64 type_of(__u64 obj)
{
	return obj ? read_user_u64(obj + ob_type_off) : 0;
}

/* uretprobe on the Lock / RLock constructors (_thread.allocate_lock, lock_new, rlock_new).
 * Cookie: enum ts_lock_kind. */
SEC("uretprobe")
int BPF_KRETPROBE(ts_lock_new_ret, void *obj)
{
	struct ts_lock_event *e;

	if (!target_uretprobe() || !obj)
		return 0;
	if (with_stack(stack_frames)) {
		e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_LOCK_NEW);
		if (!e)
			return 0;
		fill_stack(&e->h, TS_STACK_OF(e), current_tid(), stack_frames);
	} else {
		e = ts_reserve(sizeof(*e), TS_EV_LOCK_NEW);
		if (!e)
			return 0;
	}
	e->obj = (__u64)obj;
	e->kind = (__u32)bpf_get_attach_cookie(ctx) & 0xff;
	e->sem = lock_sem(obj, e->kind);
	e->begin_ns = 0;
	e->op = 0;
	e->result = 0;
	e->waited = 0;
	e->owner_ident = 0;
	e->depth = 0;
	e->flags = lock_flags(e->kind);
	e->obj_type = type_of(e->obj);
	if (with_stack(stack_frames))
		ts_submit_soon(e);
	else
		ts_submit(e);
	return 0;
}

/* tp_dealloc of _thread.lock / _thread.RLock (3.13+, where a PyMutex lock has no sem_destroy):
 * the lock's generation ends. Cookie: TS_LOCK_COOKIE (kind, object register). */
SEC("uprobe")
int ts_lock_free(struct pt_regs *ctx)
{
	struct ts_lock_event *e;
	__u64 cookie;

	if (!target_uprobe(ctx))
		return 0;
	cookie = bpf_get_attach_cookie(ctx);
	e = ts_reserve(sizeof(*e), TS_EV_LOCK_FREE);
	if (!e)
		return 0;
	e->obj = cookie_obj(ctx, cookie);
	e->kind = cookie & 0xff;
	e->sem = 0;
	e->begin_ns = 0;
	e->op = 0;
	e->result = 0;
	e->waited = 0;
	e->owner_ident = 0;
	e->depth = 0;
	e->flags = lock_flags(e->kind);
	e->obj_type = 0;
	ts_submit(e);
	return 0;
}

/* --locks=all: entry of acquire / __enter__ / _acquire_restore (or of a promoted copy).
 * Cookie: TS_LOCK_COOKIE. */
SEC("uprobe")
int ts_lock_acquire(struct pt_regs *ctx)
{
	struct acquire_stash *s;
	__u64 cookie;

	if (!target_uprobe(ctx))
		return 0;
	s = bpf_task_storage_get(&acquires, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!s) {
		count_drop(TS_LOST_STASH);
		return 0;
	}
	/* A signal handler can acquire while this thread waits in another acquire: keep the outer. */
	if (s->active)
		return 0;
	cookie = bpf_get_attach_cookie(ctx);
	s->obj = cookie_obj(ctx, cookie);
	s->kind = cookie & 0xff;
	s->op = (cookie >> 8) & 0xff;
	s->sem = lock_sem((void *)s->obj, s->kind);
	s->begin_ns = bpf_ktime_get_ns();
	s->flags = lock_flags(s->kind) | ((cookie >> 32) & 0xff);
	s->waited = 0;
	s->active = 1;
	return 0;
}

/* The acquire returned: a uretprobe (the result in rax) or, in a promoted copy, a uprobe where
 * the result sits in the cookie's result register. Cookie: TS_LOCK_COOKIE. */
SEC("uretprobe")
int ts_lock_acquire_ret(struct pt_regs *ctx)
{
	struct acquire_stash *s;
	struct ts_lock_event *e;
	__u32 result_reg;
	__s32 result;
	__u64 ret;
	__u32 tid;

	if (!target_uretprobe())
		return 0;
	tid = current_tid();
	s = acquire_in_progress();
	if (!s)
		return 0;
	result_reg = (bpf_get_attach_cookie(ctx) >> 40) & 0xff;
	ret = reg_value(ctx, result_reg ? result_reg : TS_REG_RAX);
	/* acquire() returns True/False; _acquire_restore returns None. NULL = raised. */
	if (!ret)
		result = TS_ACQUIRE_ERROR;
	else if (ret == py_false)
		result = TS_ACQUIRE_FAILED;
	else
		result = TS_ACQUIRE_ACQUIRED;
	/* Where the owner took it: a stack on successful acquires when asked for. */
	if (result == TS_ACQUIRE_ACQUIRED && s->op == TS_LOCK_OP_ACQUIRE &&
	    with_stack(stack_frames_acquire) && !budget_skip_acquire_stacks) {
		e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_LOCK_ACQUIRE);
		if (e)
			fill_stack(&e->h, TS_STACK_OF(e), tid, stack_frames_acquire);
	} else {
		e = ts_reserve(sizeof(*e), TS_EV_LOCK_ACQUIRE);
	}
	if (e) {
		e->obj = s->obj;
		e->sem = s->sem;
		e->begin_ns = s->begin_ns;
		e->kind = s->kind;
		e->op = s->op;
		e->result = result;
		e->waited = s->waited;
		e->flags = s->flags;
		e->obj_type = type_of(s->obj);
		read_owner(e);
		ts_submit(e);
	}
	s->active = 0;
	return 0;
}

/* --locks=all: entry of release / __exit__ / _release_save (or a promoted copy's).
 * Cookie: TS_LOCK_COOKIE. */
SEC("uprobe")
int ts_lock_release(struct pt_regs *ctx)
{
	struct ts_lock_event *e;
	__u64 cookie;

	if (!target_uprobe(ctx))
		return 0;
	cookie = bpf_get_attach_cookie(ctx);
	e = ts_reserve(sizeof(*e), TS_EV_LOCK_RELEASE);
	if (!e)
		return 0;
	e->obj = cookie_obj(ctx, cookie);
	e->kind = cookie & 0xff;
	e->sem = lock_sem((void *)e->obj, e->kind);
	e->begin_ns = 0;
	e->op = (cookie >> 8) & 0xff;
	e->result = 0;
	e->waited = 0;
	e->flags = lock_flags(e->kind) | ((cookie >> 32) & 0xff);
	e->obj_type = 0;
	read_owner(e); /* before the release: who held it, how deep */
	ts_submit(e);
	return 0;
}

/* A release that wakes somebody blocked on a semaphore being waited on: sem_post calls
 * futex(FUTEX_WAKE) only when there are waiters. Seen at syscall entry (raw tracepoint: no
 * tracefs, no uprobe trap); the first comparisons keep the cost for every other syscall on the
 * machine to a few instructions. Attached only when locks are traced. */
#define TS_NR_FUTEX 202
#define TS_FUTEX_CMD_MASK 0x7f
#define TS_FUTEX_WAKE 1

SEC("raw_tp/sys_enter")
int ts_futex_wake(struct bpf_raw_tracepoint_args *ctx)
{
	struct pt_regs *regs = (struct pt_regs *)ctx->args[0];
	struct ts_futex_wake *e;
	__u64 uaddr = 0, op = 0;

	/* Every syscall of the target runs this program (a hit for the budget); other tasks'
	 * syscalls are not the target's cost. */
	if (!target_tracepoint() || ctx->args[1] != TS_NR_FUTEX)
		return 0;
	bpf_probe_read_kernel(&op, sizeof(op), &regs->rsi);
	if ((op & TS_FUTEX_CMD_MASK) != TS_FUTEX_WAKE)
		return 0;
	bpf_probe_read_kernel(&uaddr, sizeof(uaddr), &regs->rdi);
	if (!bpf_map_lookup_elem(&waited_sems, &uaddr))
		return 0;
	e = ts_reserve(sizeof(*e), TS_EV_FUTEX_WAKE);
	if (!e)
		return 0;
	e->uaddr = uaddr;
	e->woken = 0;
	e->_pad = 0;
	ts_submit(e);
	return 0;
}

/* ---------------------------------------------------------------- the parking lot (3.13+) */

/* A thread's park in progress (between its _PySemaphore_Wait call and return). */
struct park_stash {
	__u64 sema;
	__u64 addr;
	__u64 park_arg;
	__u32 active;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct park_stash);
} parks SEC(".maps");

/* sema -> the parked thread, so that an unpark names whom it woke. LRU: a wake that never
 * comes (the process dies) must not fill it. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u32);
} parked_semas SEC(".maps");

/* A call of _PySemaphore_Wait(sema, timeout[, detach]) from a park copy (cookie: enum
 * ts_park_site). Only blocked threads get here: an uncontended PyMutex never parks. */
SEC("uprobe")
int ts_park(struct pt_regs *ctx)
{
	__u64 sema = ctx->rdi, addr, park_arg, obj;
	__u32 site, tid, stack;
	struct park_stash *p;
	struct acquire_stash *a;
	struct ts_park *e;

	if (!target_uprobe(ctx))
		return 0;
	site = (__u32)bpf_get_attach_cookie(ctx);
	addr = read_user_u64(sema - 8);
	park_arg = read_user_u64(sema - 16);
	tid = current_tid();
	p = bpf_task_storage_get(&parks, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!p) {
		count_drop(TS_LOST_STASH);
		return 0;
	}
	p->sema = sema;
	p->addr = addr;
	p->park_arg = park_arg;
	p->active = 1;
	bpf_map_update_elem(&parked_semas, &sema, &tid, BPF_ANY);
	a = acquire_in_progress();
	if (a && park_arg)
		a->waited = 1; /* the acquire in progress on this thread had to wait */
	/* A retry continues a park whose stack was recorded at its first wait. */
	stack = site == TS_PARK_SITE_PARK && with_stack(stack_frames);
	if (stack) {
		e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_PARK_BEGIN);
		if (!e)
			return 0;
		fill_stack(&e->h, TS_STACK_OF(e), tid, stack_frames);
	} else {
		e = ts_reserve(sizeof(*e), TS_EV_PARK_BEGIN);
		if (!e)
			return 0;
	}
	e->sema = sema;
	e->addr = addr;
	e->park_arg = park_arg;
	e->fair_ns = park_arg ? read_user_u64(park_arg) : 0;
	e->timeout_ns = (__s64)ctx->rsi;
	/* Both readings of the parked address; the daemon keeps the one whose type is real. */
	obj = addr - lock_mutex_off;
	e->obj = obj;
	e->obj_type = (obj & 7) ? 0 : type_of(obj);
	e->cs_obj = 0;
	e->cs_type = 0;
	e->flags = 0;
	if (free_threaded) {
		e->flags = TS_PARK_F_FREE_THREADED;
		e->cs_obj = addr - ob_mutex_off;
		e->cs_type = (e->cs_obj & 7) ? 0 : type_of(e->cs_obj);
	}
	e->result = 0;
	e->handed_off = 0;
	e->site = site;
	ts_submit(e);
	return 0;
}

/* The first instruction after a park site's call: rax = _PySemaphore_Wait's result, and the
 * waiter's wait entry (so its mutex_entry) is still on its stack. */
SEC("uprobe")
int ts_park_ret(struct pt_regs *ctx)
{
	struct park_stash *p;
	struct ts_park *e;
	__u32 handed_off = 0;

	if (!target_uprobe(ctx))
		return 0;
	p = bpf_task_storage_get(&parks, bpf_get_current_task_btf(), 0, 0);
	if (!p || !p->active)
		return 0;
	p->active = 0;
	bpf_map_delete_elem(&parked_semas, &p->sema);
	/* mutex_entry {PyTime_t time_to_be_fair; int handed_off;}: set by the unlocker. */
	if (p->park_arg)
		bpf_probe_read_user(&handed_off, sizeof(handed_off), (void *)(p->park_arg + 8));
	e = ts_reserve(sizeof(*e), TS_EV_PARK_END);
	if (!e)
		return 0;
	e->sema = p->sema;
	e->addr = p->addr;
	e->park_arg = p->park_arg;
	e->fair_ns = 0;
	e->timeout_ns = 0;
	e->obj = 0;
	e->obj_type = 0;
	e->cs_obj = 0;
	e->cs_type = 0;
	e->result = (__s32)ctx->rax;
	e->handed_off = handed_off;
	e->site = (__u32)bpf_get_attach_cookie(ctx);
	e->flags = free_threaded ? TS_PARK_F_FREE_THREADED : 0;
	ts_submit(e);
	return 0;
}

/* A call (or tail jump) of _PySemaphore_Wakeup(sema) from an unpark copy: the caller wakes the
 * thread parked on sema. For a PyMutex the caller is the releasing owner, and mutex_unpark has
 * already written whether it hands the lock over. */
SEC("uprobe")
int ts_unpark(struct pt_regs *ctx)
{
	__u64 sema = ctx->rdi, park_arg;
	struct ts_unpark *e;
	__u32 *woken;

	if (!target_uprobe(ctx))
		return 0;
	park_arg = read_user_u64(sema - 16);
	woken = bpf_map_lookup_elem(&parked_semas, &sema);
	e = ts_reserve(sizeof(*e), TS_EV_UNPARK);
	if (!e)
		return 0;
	e->sema = sema;
	e->addr = read_user_u64(sema - 8);
	e->park_arg = park_arg;
	e->woken_tid = woken ? *woken : 0;
	e->handed_off = 0;
	if (park_arg)
		bpf_probe_read_user(&e->handed_off, sizeof(e->handed_off), (void *)(park_arg + 8));
	ts_submit(e);
	return 0;
}

/* Free-threaded: _PyCriticalSection_BeginSlow / _PyCriticalSection2_BeginSlow entered (the
 * inline lock of an object's ob_mutex failed, or the section nests in one holding it).
 * Cookie: the mutex's register (enum ts_reg) | the second mutex's << 8 (TS_REG_NONE: none). */
SEC("uprobe")
int ts_cs_slow(struct pt_regs *ctx)
{
	__u64 cookie, m, m2 = 0;
	struct ts_cs_slow *e;
	__u8 locked = 0;

	if (!target_uprobe(ctx))
		return 0;
	cookie = bpf_get_attach_cookie(ctx);
	m = reg_value(ctx, cookie & 0xff);
	if (((cookie >> 8) & 0xff) != TS_REG_NONE)
		m2 = reg_value(ctx, (cookie >> 8) & 0xff);
	if (with_stack(stack_frames)) {
		e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_CS_SLOW);
		if (!e)
			return 0;
		fill_stack(&e->h, TS_STACK_OF(e), current_tid(), stack_frames);
	} else {
		e = ts_reserve(sizeof(*e), TS_EV_CS_SLOW);
		if (!e)
			return 0;
	}
	bpf_probe_read_user(&locked, sizeof(locked), (void *)m);
	e->mutex = m;
	e->mutex2 = m2;
	e->obj_type = m ? type_of(m - ob_mutex_off) : 0;
	e->obj_type2 = m2 ? type_of(m2 - ob_mutex_off) : 0;
	e->locked = locked;
	e->_pad = 0;
	ts_submit(e);
	return 0;
}

/* ---------------------------------------------------------------- the GIL */

static __always_inline void gil_op(__u32 op)
{
	struct ts_gil_event *e = ts_reserve(sizeof(*e), TS_EV_GIL);

	if (!e)
		return;
	e->op = op;
	e->_pad = 0;
	ts_submit(e);
}

static __always_inline int gil_record(struct pt_regs *ctx)
{
	if (is_target())
		gil_op((__u32)bpf_get_attach_cookie(ctx) & TS_GIL_OP_MASK);
	return 0;
}

/* With GIL stacks on: when this task's current take_gil began (the first entry of a take). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u64);
} gil_wait_start SEC(".maps");

/* take_gil / drop_gil entries, their inlined copies and the forced-switch call sites.
 * Cookie: enum ts_gil_op. The thread is the record's tid; no argument is read, so one program
 * serves every version's signature (and 3.8's take_gil.constprop.0). */
SEC("uprobe")
int ts_gil(struct pt_regs *ctx)
{
	__u32 cookie = (__u32)bpf_get_attach_cookie(ctx);
	__u32 op = cookie & TS_GIL_OP_MASK;
	__u64 *start;

	if (!target_uprobe(ctx))
		return 0;
	/* The free-threaded enable/disable ops are not part of the switched set. */
	if (budget_gil_full_off && op != TS_GIL_ENABLE_TRANSIENT && op != TS_GIL_DISABLE)
		return 0;
	if (op == TS_GIL_TAKE_BEGIN && ((cookie & TS_GIL_GATED) || with_stack(gil_stack_frames))) {
		start = bpf_task_storage_get(&gil_wait_start, bpf_get_current_task_btf(), 0,
					     BPF_LOCAL_STORAGE_GET_F_CREATE);
		/* A clone calling the original enters twice: the first entry began the wait. */
		if (start && !*start)
			*start = bpf_ktime_get_ns();
	}
	gil_op(op);
	return 0;
}

/* take_gil returned: the thread holds the GIL. A take that waited long enough (GIL stacks on)
 * carries the Python stack it resumes: the cost of the walk falls on waiting takes only. */
SEC("uretprobe")
int ts_gil_ret(struct pt_regs *ctx)
{
	__u32 cookie = (__u32)bpf_get_attach_cookie(ctx);
	struct ts_gil_event *e;
	__u64 *start, began = 0;

	if (!target_uretprobe())
		return 0;
	if (!(cookie & TS_GIL_GATED) && !with_stack(gil_stack_frames))
		return budget_gil_full_off ? 0 : gil_record(ctx);
	start = bpf_task_storage_get(&gil_wait_start, bpf_get_current_task_btf(), 0, 0);
	if (start) {
		began = *start;
		*start = 0;
	}
	if (budget_gil_full_off)
		return 0;
	/* Free-threaded, GIL off: take_gil returned without taking it. */
	if ((cookie & TS_GIL_GATED) && !began)
		return 0;
	if (!with_stack(gil_stack_frames) || !began ||
	    bpf_ktime_get_ns() - began < gil_stack_threshold_ns)
		return gil_record(ctx);
	e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_GIL);
	if (!e)
		return 0;
	e->op = cookie & TS_GIL_OP_MASK;
	e->_pad = 0;
	fill_stack(&e->h, TS_STACK_OF(e), current_tid(), gil_stack_frames);
	ts_submit(e);
	return 0;
}

/* Free-threaded builds: _PyEval_EnableGILPermanent returned 1, it turned the GIL on for good (0:
 * it was already, or forced on or off at start-up: nothing changed). Cookie: enum ts_gil_op. */
SEC("uretprobe")
int ts_gil_switch_ret(struct pt_regs *ctx)
{
	if (target_uretprobe() && (int)PT_REGS_RC(ctx) == 1)
		gil_op((__u32)bpf_get_attach_cookie(ctx) & TS_GIL_OP_MASK);
	return 0;
}

/* ---- --gil waits (the default): only take_gil's slow path is probed, so an uncontended take
 * or drop runs no probe at all. take_gil holds gil->mutex around its `while (gil->locked)` loop
 * (3.6-3.15), so gil->locked read right after a condition wait returns is exactly whether this
 * thread leaves the loop and takes the GIL. */

/* 3.6: the GIL's fields are separate statics; the runtime address of `gil_locked` (0: 3.7+,
 * where `locked` is 16 bytes before the `cond` the wait is passed, struct _gil_runtime_state). */
const volatile __u64 gil_locked_addr = 0;

struct gil_slow {
	__u64 began;      /* the first condition wait of this take (0: not waiting) */
	__u64 locked_at;  /* where this take's gil->locked is */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct gil_slow);
} gil_slow SEC(".maps");

/* take_gil's `call pthread_cond_timedwait(&gil->cond, &gil->mutex, ...)`: the GIL was held when
 * this thread came to take it. The first wait of a take begins it (a timed-out wait loops). */
SEC("uprobe")
int ts_gil_wait(struct pt_regs *ctx)
{
	struct gil_slow *w;

	if (!target_uprobe(ctx) || budget_gil_waits_off)
		return 0;
	w = bpf_task_storage_get(&gil_slow, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!w || w->began)
		return 0;
	w->began = bpf_ktime_get_ns();
	w->locked_at = gil_locked_addr ? gil_locked_addr : ctx->rdi - 16;
	gil_op(TS_GIL_TAKE_BEGIN);
	return 0;
}

/* The instruction after that call: the wait returned with gil->mutex held. gil->locked == 0:
 * the loop ends and this thread takes the GIL now (TS_GIL_WAITED, with the stack when the wait
 * was long enough); else it waits again. */
SEC("uprobe")
int ts_gil_wait_ret(struct pt_regs *ctx)
{
	struct ts_gil_event *e;
	struct gil_slow *w;
	__u32 locked = 1;
	__u64 began;

	if (!target_uprobe(ctx))
		return 0;
	w = bpf_task_storage_get(&gil_slow, bpf_get_current_task_btf(), 0, 0);
	if (!w || !w->began)
		return 0;
	if (budget_gil_waits_off) {
		/* Switched back to every take: a wait begun before is not reported (nor kept). */
		w->began = 0;
		return 0;
	}
	if (bpf_probe_read_user(&locked, sizeof(locked), (void *)w->locked_at) || locked)
		return 0;
	began = w->began;
	w->began = 0;
	if (!with_stack(gil_stack_frames) || bpf_ktime_get_ns() - began < gil_stack_threshold_ns) {
		gil_op(TS_GIL_WAITED);
		return 0;
	}
	e = ts_reserve(sizeof(*e) + sizeof(struct ts_py_stack), TS_EV_GIL);
	if (!e)
		return 0;
	e->op = TS_GIL_WAITED;
	e->_pad = 0;
	fill_stack(&e->h, TS_STACK_OF(e), current_tid(), gil_stack_frames);
	ts_submit(e);
	return 0;
}

/* ---- Python 2.7: the GIL is a plain lock, taken and dropped through PyThread_acquire_lock /
 * PyThread_release_lock like every other lock; only calls on `interpreter_lock` are the GIL. */

/* A blocking take of the GIL in progress on this task (its return reports the acquisition). */
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32);
} gil_takes SEC(".maps");

static __always_inline bool is_gil_lock(void *lock)
{
	return gil_lock_addr && lock && (__u64)lock == read_user_u64(gil_lock_addr);
}

/* int PyThread_acquire_lock(PyThread_type_lock lock, int waitflag) */
SEC("uprobe")
int BPF_KPROBE(ts_gil_lock_acquire, void *lock, int waitflag)
{
	__u32 *taking;

	if (!target_uprobe(ctx) || !waitflag || !is_gil_lock(lock))
		return 0;
	taking = bpf_task_storage_get(&gil_takes, bpf_get_current_task_btf(), 0,
				      BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (taking)
		*taking = 1;
	gil_op(TS_GIL_TAKE_BEGIN);
	return 0;
}

SEC("uretprobe")
int BPF_KRETPROBE(ts_gil_lock_acquire_ret, int ret)
{
	__u32 *taking;

	if (!target_uretprobe())
		return 0;
	taking = bpf_task_storage_get(&gil_takes, bpf_get_current_task_btf(), 0, 0);
	if (!taking || !*taking)
		return 0;
	*taking = 0;
	if (ret == 1)
		gil_op(TS_GIL_TAKE_END);
	return 0;
}

/* void PyThread_release_lock(PyThread_type_lock lock) */
SEC("uprobe")
int BPF_KPROBE(ts_gil_lock_release, void *lock)
{
	if (target_uprobe(ctx) && is_gil_lock(lock))
		gil_op(TS_GIL_DROP);
	return 0;
}
