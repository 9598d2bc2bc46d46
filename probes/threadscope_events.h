/* SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause) */
/*
 * The one ABI between the BPF programs (probes/threadscope.bpf.c) and the daemon.
 *
 * Every record in the ring buffer, and every record in a recording file, starts with
 * struct ts_header. Records are self-describing (type + size), fixed-width, little-endian,
 * 8-byte aligned, and carry TS_ABI_VERSION so that a recording made today can be decoded by a
 * later threadscope. Rules for changing this file:
 *   - never reorder or resize an existing field; append new fields at the end of a record and
 *     bump TS_ABI_VERSION (decoders accept records that are longer than they know);
 *   - never reuse a retired type number.
 * The daemon's decoder (daemon/model/event_decoder.cc) static_asserts every size below.
 */
#ifndef THREADSCOPE_PROBES_EVENTS_H
#define THREADSCOPE_PROBES_EVENTS_H

#include <linux/types.h>

#define TS_ABI_VERSION 2 /* 2: lock events grew (owner_ident..obj_type); park, unpark, lock_free, cs_slow, py_type records */
#define TS_COMM_LEN 16

/* Record types. Ranges: 1-31 threads, 32-63 locks, 64-95 GIL, 200+ written by the daemon
 * itself (never by BPF) so that a recording replays exactly what the live model saw. */
enum ts_event_type {
	TS_EV_THREAD_START_BEGIN = 1, /* parent entered PyThread_start_new/joinable_thread */
	TS_EV_THREAD_START_END = 2,   /* ... and returned (ok or "can't start new thread") */
	TS_EV_THREAD_CLONE = 3,       /* kernel: a task was created in the target */
	TS_EV_THREAD_BOOTSTRAP = 4,   /* child entered t_bootstrap / thread_run */
	TS_EV_THREAD_BODY_DONE = 5,   /* child's bootstrap finished running the Python callable */
	TS_EV_THREAD_EXIT = 6,        /* kernel: a task of the target exited */
	TS_EV_THREAD_RENAME = 7,      /* kernel: a task of the target changed its comm */
	TS_EV_THREAD_SENTINEL = 8,    /* child created its join sentinel lock (3.4-3.12) */
	TS_EV_THREAD_JOIN_BEGIN = 9,  /* PyThread_join_thread entered (3.13+) */
	TS_EV_THREAD_JOIN_END = 10,   /* PyThread_join_thread returned (3.13+) */
	TS_EV_THREAD_DETACH = 11,     /* PyThread_detach_thread (3.13+) */
	TS_EV_SEM_WAIT_BEGIN = 12,    /* blocking sem_*wait on a watched semaphore */
	TS_EV_SEM_WAIT_END = 13,
	TS_EV_SEM_DESTROY = 14,       /* sem_destroy on a watched semaphore (lock freed) */

	TS_EV_LOCK_NEW = 32,          /* a Lock/RLock was created (constructor returned) */
	TS_EV_LOCK_ACQUIRE = 33,      /* --locks=all: an acquire call returned */
	TS_EV_LOCK_RELEASE = 34,      /* --locks=all: a release call began */
	TS_EV_FUTEX_WAKE = 35,        /* a release woke waiters of a semaphore being waited on */
	/* 3.13+ parking lot (PyMutex: Lock from 3.13.1, RLock from 3.14, every lock on 3.15,
	 * free-threaded critical sections): the interpreter's calls of _PySemaphore_Wait and
	 * _PySemaphore_Wakeup from its park / unpark code. */
	TS_EV_PARK_BEGIN = 36,        /* a thread blocks in the parking lot */
	TS_EV_PARK_END = 37,          /* ... and its _PySemaphore_Wait returned */
	TS_EV_UNPARK = 38,            /* a thread posts a parked thread's semaphore */
	TS_EV_LOCK_FREE = 39,         /* a _thread.lock / RLock is deallocated (tp_dealloc): ts_lock_event */
	TS_EV_CS_SLOW = 40,           /* free-threaded: a critical section's fast path failed */

	TS_EV_GIL = 48,               /* take_gil entered / returned, drop_gil, forced-switch sites */

	TS_EV_PREEXISTING_THREAD = 200, /* daemon: a task that existed before attach */
	TS_EV_LOST = 201,               /* daemon: records the kernel could not deliver */
	TS_EV_TRACE_MARK = 202,         /* daemon: attach / detach / target exit markers */
	TS_EV_PY_LOCATION = 203,        /* daemon: what a (code object, instruction) pair means */
	TS_EV_PY_TYPE = 204,            /* daemon: the name of a type object a record points at */
};

struct ts_header {
	__u16 type;    /* enum ts_event_type */
	__u8 version;  /* TS_ABI_VERSION of the writer */
	__u8 flags;    /* TS_HDR_* bits (TS_HDR_PY_STACK); 0 otherwise */
	__u32 size;    /* bytes of the whole record, header included */
	__u64 ts_ns;   /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 pid;     /* tgid, in the initial pid namespace */
	__u32 tid;     /* the task the event happened on */
};

/* Which CPython entry point started the thread. */
enum ts_start_api {
	TS_START_API_NEW_THREAD = 1,      /* PyThread_start_new_thread(func, arg) -> ident | -1 */
	TS_START_API_JOINABLE_THREAD = 2, /* PyThread_start_joinable_thread(func, arg, *ident, *h) -> 0|-1 */
};

struct ts_thread_start_begin {
	struct ts_header h; /* h.tid = parent */
	__u64 boot;         /* arg passed to the child's entry (struct bootstate *) */
	__u64 func;         /* the child's entry function (t_bootstrap/thread_run) */
	__u32 api;          /* enum ts_start_api */
	__u32 _pad;
};

struct ts_thread_start_end {
	struct ts_header h;
	__u64 boot;
	__u64 ident; /* Python ident (pthread_t) when ok */
	__s64 ret;   /* raw return value */
	__u32 api;
	__u32 ok;
};

struct ts_thread_clone {
	struct ts_header h; /* h.tid = creating task */
	__u32 child_tid;
	__u32 _pad;
	char comm[TS_COMM_LEN];
};

struct ts_thread_bootstrap {
	struct ts_header h; /* h.tid = child */
	__u64 boot;
	__u64 ident; /* the child's pthread_self() (threading ident); 0 if unknown */
};

enum ts_body_done_how {
	TS_BODY_RETURNED = 1,      /* uretprobe on the bootstrap function */
	TS_BODY_EXIT_THREAD = 2,   /* the bootstrap's own call to PyThread_exit_thread */
	TS_BODY_CLEAR = 3,         /* the bootstrap's call to PyThreadState_Clear, right after the
	                            * callable: also seen for threads started before the attach */
};

struct ts_thread_body_done {
	struct ts_header h;
	__u32 how; /* enum ts_body_done_how */
	__u32 _pad;
};

struct ts_thread_exit {
	struct ts_header h;
	__s32 exit_code;
	__u32 _pad;
	char comm[TS_COMM_LEN];
};

struct ts_thread_rename {
	struct ts_header h; /* h.tid = renaming task */
	__u32 target_tid;   /* renamed task */
	__u32 _pad;
	char comm[TS_COMM_LEN];
};

struct ts_thread_sentinel {
	struct ts_header h; /* h.tid = child that will release it when it finishes */
	__u64 lock;         /* lockobject * returned by _thread._set_sentinel() */
	__u64 sem;          /* its PyThread_type_lock (sem_t *) */
};

struct ts_thread_join {
	struct ts_header h; /* h.tid = joiner */
	__u64 ident;        /* pthread_t being joined (BEGIN); 0 in END */
	__s64 ret;          /* END: 0 joined, else error */
};

struct ts_thread_detach {
	struct ts_header h;
	__u64 ident;
};

struct ts_sem_wait {
	struct ts_header h;
	__u64 sem; /* sem_t * */
	__s64 ret; /* END: 0 acquired, -1 timeout/interrupted; BEGIN: 0 */
};

struct ts_preexisting_thread {
	struct ts_header h;  /* h.tid = the task; h.ts_ns = when it was seen */
	__u64 start_ns;      /* from /proc/PID/task/TID/stat, CLOCK_MONOTONIC, jiffy resolution */
	char comm[TS_COMM_LEN];
};

enum ts_lost_source {
	TS_LOST_RINGBUF = 1, /* bpf_ringbuf_reserve failed: the ring was full */
	TS_LOST_STASH = 2,   /* an entry probe's per-thread stash was full */
	TS_LOST_CONSUMER = 3, /* daemon: a recording client read too slowly */
};

struct ts_lost {
	struct ts_header h;
	__u64 count;
	__u32 source; /* enum ts_lost_source */
	__u32 _pad;
};

enum ts_mark_kind {
	TS_MARK_ATTACHED = 1,      /* probes are live; later records are complete */
	TS_MARK_DETACHED = 2,      /* probes were removed; nothing follows */
	TS_MARK_TARGET_EXITED = 3, /* the whole process is gone */
	/* The overhead budget switched a --gil full trace's GIL probes while attached: from here
	 * only takes that wait are traced (holds in progress end unseen), or every take and drop
	 * again (a holder at the switch is only known at its next take). */
	TS_MARK_GIL_WAITS_ONLY = 4,
	TS_MARK_GIL_FULL = 5,
	/* The overhead budget's duty cycle detached the GIL and lock probes (thread lifecycle stays)
	 * / attached them again. Between the two nothing of the GIL or of locks is known: waits and
	 * holds in progress at the pause are cut, owners learned before it are forgotten. */
	TS_MARK_TRACE_PAUSED = 6,
	TS_MARK_TRACE_RESUMED = 7,
};

struct ts_trace_mark {
	struct ts_header h;
	__u32 kind; /* enum ts_mark_kind */
	__u32 _pad;
};

enum ts_lock_kind {
	TS_LOCK_UNKNOWN = 0,
	TS_LOCK_LOCK = 1,  /* _thread.lock: threading.Lock, and under Condition, Event, Semaphore... */
	TS_LOCK_RLOCK = 2, /* _thread.RLock */
};

enum ts_lock_op {
	TS_LOCK_OP_ACQUIRE = 1,      /* acquire(), __enter__ */
	TS_LOCK_OP_RESTORE = 2,      /* RLock._acquire_restore (end of a Condition wait) */
	TS_LOCK_OP_RELEASE = 3,      /* release(), __exit__ */
	TS_LOCK_OP_RELEASE_SAVE = 4, /* RLock._release_save (start of a Condition wait) */
};

/* Uprobe cookies of the lock method probes (ts_lock_acquire, ts_lock_acquire_ret,
 * ts_lock_release, ts_lock_free): which register holds the lock object there, and what to
 * subtract from it (a PGO-promoted copy may only hold &lock->mutex). Built by TS_LOCK_COOKIE. */
enum ts_reg {
	TS_REG_RDI = 0, /* the default: `self` of every method calling convention */
	TS_REG_RSI = 1,
	TS_REG_RDX = 2,
	TS_REG_RCX = 3,
	TS_REG_R8 = 4,
	TS_REG_R9 = 5,
	TS_REG_RBX = 6,
	TS_REG_RBP = 7,
	TS_REG_R12 = 8,
	TS_REG_R13 = 9,
	TS_REG_R14 = 10,
	TS_REG_R15 = 11,
	TS_REG_RAX = 12,
	TS_REG_NONE = 0xff,
};

/* bits 0-7 enum ts_lock_kind, 8-15 enum ts_lock_op, 16-23 the object's register (enum ts_reg),
 * 24-31 bytes to subtract from it, 32-39 TS_LOCK_F_* to set, 40-47 the register holding an
 * acquire's result at a return probe (0 = rax). */
#define TS_LOCK_COOKIE(kind, op, reg, adjust, flags, result_reg)                                \
	((__u64)(kind) | (__u64)(op) << 8 | (__u64)(reg) << 16 | (__u64)(adjust) << 24 |          \
	 (__u64)(flags) << 32 | (__u64)(result_reg) << 40)

enum ts_acquire_result {
	TS_ACQUIRE_ERROR = -1,   /* the call raised (e.g. KeyboardInterrupt during the wait) */
	TS_ACQUIRE_FAILED = 0,   /* returned False: non-blocking try or timeout */
	TS_ACQUIRE_ACQUIRED = 1,
};

/* LOCK_NEW and LOCK_FREE (op 0), LOCK_ACQUIRE and LOCK_RELEASE. */
struct ts_lock_event {
	struct ts_header h;
	__u64 obj;      /* lockobject * / rlockobject * */
	__u64 sem;      /* its PyThread_type_lock (sem_t *), read at obj + lockobject_lock_offset;
			 * 0 where the lock is a PyMutex */
	__u64 begin_ns; /* ACQUIRE: when the call began (h.ts_ns is when it returned) */
	__u32 kind;     /* enum ts_lock_kind */
	__u32 op;       /* enum ts_lock_op; 0 for LOCK_NEW */
	__s32 result;   /* ACQUIRE: enum ts_acquire_result */
	__u32 waited;   /* ACQUIRE: the call blocked in a semaphore wait or a park */
	/* ABI 2. RLock owner and recursion as the object itself says, read at a release's entry
	 * (before it) and at an acquire's return (after it): _PyRecursiveMutex {thread, level}
	 * (3.14+) or rlock_owner / rlock_count (up to 3.13). Valid with TS_LOCK_F_OWNER. */
	__u64 owner_ident; /* the owning thread's ident (pthread_t), 0 = not owned */
	__u32 depth;       /* times the owner holds it (level + 1 on 3.14+, rlock_count before) */
	__u32 flags;       /* TS_LOCK_F_* */
	__u64 obj_type;    /* the object's ob_type (a type object pointer), 0 if unreadable */
};

enum ts_lock_flags {
	TS_LOCK_F_PYMUTEX = 1,  /* the lock is a PyMutex (3.13.1+ Lock, 3.14+ RLock): `sem` is 0 */
	TS_LOCK_F_OWNER = 2,    /* owner_ident and depth were read from the object */
	TS_LOCK_F_PROMOTED = 4, /* seen in a PGO-promoted copy of the method (not its entry) */
};

struct ts_futex_wake {
	struct ts_header h; /* h.tid = the releasing thread */
	__u64 uaddr;        /* the semaphore (its futex word is its first field) */
	__s32 woken;        /* reserved (0): the wake is seen at syscall entry */
	__u32 _pad;
};

/* ---------------------------------------------------------------- the parking lot (3.13+) */

/* Where a _PySemaphore_Wait call site sits (the uprobe cookie). */
enum ts_park_site {
	TS_PARK_SITE_PARK = 1,  /* a park: the first wait of one _PyParkingLot_Park call */
	TS_PARK_SITE_RETRY = 2, /* its re-wait after a timeout that raced with an unpark: the
				 * same park goes on (the unparker had already dequeued it) */
};

/* _PySemaphore_Wait's result (Include/internal/pycore_parking_lot.h). */
enum ts_park_result {
	TS_PARK_OK = 0,       /* woken */
	TS_PARK_TIMEOUT = -2,
	TS_PARK_INTR = -3,    /* a signal arrived */
};

enum ts_park_flags {
	TS_PARK_F_FREE_THREADED = 1, /* cs_obj / cs_type are meaningful (an ob_mutex reading) */
};

/* PARK_BEGIN (h.flags may carry TS_HDR_PY_STACK) and PARK_END. The waiter's `struct
 * wait_entry {void *park_arg; uintptr_t addr; _PySemaphore sema; ...}` is on its stack:
 * `sema` is the argument of _PySemaphore_Wait, the rest lies just below it. */
struct ts_park {
	struct ts_header h;  /* h.tid = the parked thread */
	__u64 sema;          /* &wait_entry.sema: pairs BEGIN, END and UNPARK */
	__u64 addr;          /* the parked address, *(sema-8): &lock->mutex, an ob_mutex, an event */
	__u64 park_arg;      /* *(sema-16): the waiter's struct mutex_entry * (PyMutex), 0 for events */
	__u64 fair_ns;       /* *(park_arg): mutex_entry.time_to_be_fair, set once per lock call:
			      * with (tid, park_arg) it names one acquire across its re-parks */
	__s64 timeout_ns;    /* BEGIN: the timeout argument (< 0: none) */
	__u64 obj;           /* addr - the lock object's mutex offset: the lock, if it is one */
	__u64 obj_type;      /* ob_type read at obj (0 if unreadable) */
	__u64 cs_obj;        /* free-threaded: addr - offsetof(PyObject, ob_mutex) */
	__u64 cs_type;       /* free-threaded: ob_type read at cs_obj */
	__s32 result;        /* END: enum ts_park_result; BEGIN: 0 */
	__u32 handed_off;    /* END: mutex_entry.handed_off (the unlocker gave it the lock) */
	__u32 site;          /* enum ts_park_site */
	__u32 flags;         /* TS_PARK_F_* */
};

/* UNPARK: h.tid = the waker (for a PyMutex, the thread that released it). */
struct ts_unpark {
	struct ts_header h;
	__u64 sema;        /* the woken waiter's &wait_entry.sema */
	__u64 addr;        /* *(sema-8) */
	__u64 park_arg;    /* *(sema-16) */
	__u32 woken_tid;   /* the thread parked on `sema` (0 if its park was not seen yet) */
	__u32 handed_off;  /* mutex_entry.handed_off: 1 = the lock was handed to the woken thread */
};

/* CS_SLOW (free-threaded): _PyCriticalSection[2]_BeginSlow entered: the inline lock of an
 * object's ob_mutex failed (contention), or the section is a recursive one. */
struct ts_cs_slow {
	struct ts_header h; /* carries TS_HDR_PY_STACK when stacks are on */
	__u64 mutex;        /* the object's &ob_mutex */
	__u64 mutex2;       /* the second object's of a two-object section, else 0 */
	__u64 obj_type;     /* ob_type of mutex's object */
	__u64 obj_type2;
	__u32 locked;       /* the mutex byte at entry (bit 0: held) */
	__u32 _pad;
};

/* ---------------------------------------------------------------- the GIL */

/* What a GIL probe site saw; the uprobe cookie of each site carries it. */
enum ts_gil_op {
	TS_GIL_TAKE_BEGIN = 1, /* take_gil entered: the thread starts waiting for the GIL */
	TS_GIL_TAKE_END = 2,   /* take_gil returned: the thread holds the GIL */
	TS_GIL_DROP = 3,       /* a drop_gil copy releases (its pthread_cond_signal on gil->cond;
				* 2.7: PyThread_release_lock on interpreter_lock) */
	TS_GIL_FORCED = 4,     /* the eval loop is about to drop on request: the thread's next DROP
				* is a forced switch (a waiter asked), not a blocking call */
	TS_GIL_DROP_FORCED = 5, /* an inlined drop_gil copy inside the eval loop's switch code */
	/* Free-threaded builds (3.13t+): the GIL enabled or disabled at run time (entries of
	 * _PyEval_EnableGILTransient, _PyEval_EnableGILPermanent, _PyEval_DisableGIL). */
	TS_GIL_ENABLE_TRANSIENT = 6, /* an extension import turns it on for its init */
	TS_GIL_ENABLE_PERMANENT = 7, /* the module imported is not marked free-threading safe */
	TS_GIL_DISABLE = 8,          /* the import's module is safe: the transient enable ends */
	TS_GIL_WAITED = 9,     /* --gil waits: a take that waited got the GIL (its wait began
				* with TAKE_BEGIN at take_gil's first condition wait; holds untraced) */
};
/* Cookie flag, never in a record: on a free-threaded build take_gil returns at once while the
 * GIL is off, so its return reports a take only when the take-begin site (past the `enabled`
 * test) ran first on this task. */
#define TS_GIL_GATED 0x100u
#define TS_GIL_OP_MASK 0xffu

struct ts_gil_event {
	struct ts_header h; /* h.tid = the thread taking / dropping */
	__u32 op;           /* enum ts_gil_op */
	__u32 _pad;
};

/* ---------------------------------------------------------------- Python stacks */

/* Where a CPython 3.6+ keeps its threads and frames, for the BPF stack walk. Filled by the
 * daemon per interpreter version (daemon/target/py_layout.cc); interp_head_addr == 0 turns
 * stack capture off. Frames are PyFrameObject (3.6-3.10) or _PyInterpreterFrame (3.11+). */
struct ts_py_layout {
	__u64 interp_head_addr;    /* runtime address of the PyInterpreterState * list head */
	__u32 interp_next;
	__u32 interp_tstate_head;
	__u32 tstate_next;
	__u32 tstate_thread_id;    /* pthread_t: equal to the thread's fs base on x86-64 */
	__u32 tstate_frame;        /* the innermost frame, or the _PyCFrame * (3.11, 3.12) */
	__s32 cframe_current;      /* offset of current_frame in _PyCFrame; -1 without one */
	__u32 frame_previous;      /* f_back / previous */
	__u32 frame_code;          /* f_code / f_executable */
	__u32 frame_instr;         /* int f_lasti, or the prev_instr / instr_ptr pointer */
	__s32 frame_owner;         /* u8 owner (3.11+); -1 without one */
	__u32 frame_read_size;     /* bytes to read per frame to cover the fields above */
	__u8 instr_is_pointer;
	__u8 owner_cstack;         /* FRAME_OWNED_BY_CSTACK (3.12+: skipped); 0xff: none */
	__u8 code_tag_mask;        /* bits of the code pointer that tag it (3.14+ _PyStackRef) */
	__u8 _pad;
};

#define TS_PY_MAX_FRAMES 8

struct ts_py_frame {
	__u64 code;  /* PyCodeObject * */
	__u64 instr; /* f_lasti (sign-extended int) or an instruction pointer, as the layout says */
};

enum ts_py_stack_flags {
	TS_STACK_TRUNCATED = 1, /* the stack was deeper than the frames recorded */
	TS_STACK_FAULT = 2,     /* a frame could not be read (it changed under us) */
	TS_STACK_NO_THREAD_STATE = 4, /* not a Python thread (or its state was not found) */
};

/* h.flags bit: the record ends with a struct ts_py_stack, the calling thread's Python stack at
 * that moment (a lock wait's begin, a lock's creation, an acquire). The trailer is the last
 * sizeof(struct ts_py_stack) bytes of the record, wherever the body ends. */
#define TS_HDR_PY_STACK 0x1

struct ts_py_stack {
	__u64 tstate;   /* PyThreadState * */
	__u8 depth;     /* frames[0..depth) are valid, innermost first; C-stack shims left out */
	__u8 flags;     /* enum ts_py_stack_flags */
	__u16 _pad0;
	__u32 _pad1;
	struct ts_py_frame frames[TS_PY_MAX_FRAMES];
};

enum ts_py_location_flags {
	TS_LOCATION_NOT_PYTHON = 1, /* not a Python frame (3.11+ incomplete or shim frame): skip */
	TS_LOCATION_UNREADABLE = 2, /* the code object could not be read (freed?) */
};

/* Written by the daemon before the first record whose stack uses a (code, instr) pair, so that
 * a recording carries its own symbols. The strings follow the fixed part, file then function
 * (the qualified name where the interpreter has one), not NUL-terminated; h.size covers them,
 * rounded up to 8. */
struct ts_py_location {
	struct ts_header h;
	__u64 code;
	__u64 instr;
	__s32 line;  /* -1: no line */
	__u32 flags; /* enum ts_py_location_flags */
	__u16 file_len;
	__u16 function_len;
	__u32 _pad;
	/* char file[file_len]; char function[function_len]; */
};

/* Written by the daemon before the first record that points at a type object, so that a
 * recording carries its own type names. The name follows the fixed part, not NUL-terminated;
 * h.size covers it, rounded up to 8. */
struct ts_py_type {
	struct ts_header h;
	__u64 type;        /* the type object's address in the target */
	__u32 flags;       /* 0, or TS_LOCATION_UNREADABLE: not a readable type object */
	__u16 name_len;
	__u16 _pad;
	/* char name[name_len]; (tp_name: "list", "_thread.lock", "_io.BufferedWriter") */
};

/* Per-CPU drop counters, indexed by enum ts_lost_source. */
#define TS_DROP_SLOTS 4

/* Probe hits, for the overhead budget's estimate (daemon/budget): every program counts each run
 * for the target in the per-CPU map `hits`, by what the kernel did to run it. Records are not
 * hits: a gated GIL take, a filtered semaphore or a non-futex syscall costs without a record.
 * The order is budget::HitKind's. */
enum ts_hit_kind {
	TS_HIT_UPROBE = 0,             /* a uprobe whose instruction the kernel emulates */
	TS_HIT_UPROBE_SINGLE_STEP = 1, /* a uprobe whose instruction is single-stepped out of line */
	TS_HIT_URETPROBE = 2,          /* a uretprobe (its entry trap and its return) */
	TS_HIT_TRACEPOINT = 3,         /* a raw tracepoint run for the target */
};
#define TS_HIT_KINDS 4
/* Uprobe cookie flag set by the loader per site (ProbeSite::site_kind): the probed instruction
 * is single-stepped. Bit 63: every cookie layout above stays below bit 48. */
#define TS_COOKIE_SINGLE_STEP (1ull << 63)

#endif /* THREADSCOPE_PROBES_EVENTS_H */
