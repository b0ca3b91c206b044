//go:build linux

package runner

import (
	"os"
	"strconv"
	"syscall"
)

// closeInheritedOnExec marks close-on-exec every descriptor above stderr
// that the process holds. Go opens all of its own so, but not the ones the
// worker inherited (from the shell, service manager or CI runner that
// started it): every command would get them too. Marking one of Go's own
// again changes nothing, so a descriptor opened meanwhile is no matter.
// It reports whether it could list the descriptors.
func closeInheritedOnExec() bool {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return false // out of descriptors, or no /proc
	}
	for _, e := range entries {
		if fd, err := strconv.Atoi(e.Name()); err == nil && fd > 2 {
			syscall.CloseOnExec(fd)
		}
	}
	return true
}
