//go:build !linux

package timerslack

import "time"

// Only Linux has a timer slack to set; elsewhere these change nothing.

var before time.Duration

// Raise does nothing outside Linux.
func Raise(time.Duration) error { return nil }

// Restore does nothing outside Linux.
func Restore() error { return nil }
