/* The record of threadscoped's exec watcher (exec_watch.bpf.c), shared with the daemon
 * (daemon/loader/exec_watch.cc). Not part of the trace record ABI (threadscope_events.h): it
 * never reaches a model or a recording. */
#ifndef THREADSCOPE_EXEC_WATCH_EVENTS_H
#define THREADSCOPE_EXEC_WATCH_EVENTS_H

#include <linux/types.h>

struct ts_exec_record {
	__u64 ts_ns; /* CLOCK_MONOTONIC */
	__u32 tgid;  /* the process that exec'd, in the initial pid namespace */
	__u32 _pad;
};

#endif
