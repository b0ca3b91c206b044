//go:build !linux

package runner

// closeInheritedOnExec does nothing here: the worker's image runs on Linux.
func closeInheritedOnExec() bool { return true }
