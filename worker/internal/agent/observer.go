package agent

import "time"

// Observer hears what the agent does, for metrics. Its methods are called
// from the agent's goroutines and must be quick and safe for concurrent use.
type Observer interface {
	// Registered is called each time the master accepts a registration:
	// the first, and every reconnect after it.
	Registered()
	// TaskDone is called when a task's run ends, with its outcome
	// (succeeded, failed, timed_out, canceled) and how long it ran. A run
	// killed because the worker stops is not reported.
	TaskDone(outcome string, ran time.Duration)
}

type noObserver struct{}

func (noObserver) Registered()                    {}
func (noObserver) TaskDone(string, time.Duration) {}

// outcome names how a run ended, as the master would classify its result.
func outcome(exitCode int, errText string, timedOut, canceled bool) string {
	switch {
	case canceled:
		return "canceled"
	case timedOut:
		return "timed_out"
	case exitCode == 0 && errText == "":
		return "succeeded"
	}
	return "failed"
}
