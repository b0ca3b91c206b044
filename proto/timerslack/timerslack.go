// Package timerslack coarsens the timer slack of a Roundhouse process, so
// that the Go runtime's monitor thread wakes less often.
//
// The runtime's monitor (sysmon) sleeps 20 µs at a time while a goroutine
// sits in a system call or the process has just woken from idle, which a
// master or a worker handling a task every few milliseconds does all the
// time: in profiles of a throughput run it was a tenth of the master's CPU
// and a quarter of a worker's, nearly all of it in those short sleeps.
// Linux lets a thread's sleep end up to its timer slack late, so that
// wakeups are merged; with 1 ms (the master's default) the monitor wakes
// about a thousand times a second at most instead of up to fifty thousand,
// and it still takes a processor back from a blocked system call, or
// preempts a goroutine that ran 10 ms, within about a millisecond. A
// worker defaults to 5 ms: a fifth less CPU per task again, and no later
// start of an idle cluster's task; the master keeps 1 ms, since 5 ms made
// its answers later (submit p99 at 16 senders 7.5 to 8.3 ms against 4.4
// to 4.6).
//
// A thread's slack can be set only by the thread itself (without
// CAP_SYS_NICE), and the monitor is started before main runs. But a thread
// starts with the slack of the thread that made it, and exec keeps it, so
// Raise sets it on the calling thread and executes the program again:
// every thread of the new image starts with it. A child should not inherit
// it (a command's own sleeps would be up to a millisecond late), so the
// worker forks commands inside ForChild, from a thread set back to the
// slack the process had at first for the time of the fork.
//
// The package lives in the proto module, as labels does, because that is
// the module both the master and the worker import.
package timerslack

import "time"

// Max is the most slack the master and the worker accept (they raise
// theirs to 1 ms and 5 ms unless configured otherwise): the monitor's duties, taking
// a processor back from a goroutine blocked in a system call and
// preempting one that ran 10 ms, wait up to the slack, and so does every
// timer of the program.
const Max = 10 * time.Millisecond

// envBefore carries the slack the process had before Raise into the image
// it executes. init reads it and removes it from the environment, so that
// neither the program's configuration nor its children see it.
const envBefore = "ROUNDHOUSE_TIMER_SLACK_BEFORE"
