package localcluster

import (
	"bytes"
	"sync"
)

// Buffer is a bytes.Buffer that processes may write while another
// goroutine reads it: where a cluster's output goes in tests, so that a
// failing test can show it.
type Buffer struct {
	mu sync.Mutex // protects b
	b  bytes.Buffer
}

func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
