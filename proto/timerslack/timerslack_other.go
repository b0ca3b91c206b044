//go:build !linux

package timerslack

import "time"

// Only Linux has a timer slack to set; elsewhere these change nothing.

// Raise does nothing outside Linux.
func Raise(time.Duration) error { return nil }

// ForChild only calls fork outside Linux.
func ForChild(fork func() error) error { return fork() }
