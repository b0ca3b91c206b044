package main

import (
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// A client that sends its headers one byte at a time (slowloris) is cut off
// after MASTER_READ_HEADER_TIMEOUT, and the master serves others meanwhile.
func TestSlowClientIsCutOff(t *testing.T) {
	const readHeaderTimeout = 300 * time.Millisecond
	m := startMaster(t, map[string]string{"MASTER_READ_HEADER_TIMEOUT": readHeaderTimeout.String()})
	// The master's clock for this connection starts once the connection
	// exists, so ours starts before the dial: taken after it, a descheduled
	// test goroutine made the master's timeout look early by a few ms.
	start := time.Now()
	conn, err := net.Dial("tcp", strings.TrimPrefix(m.httpURL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// The trickle goroutine is owned by this test: it stops when a write
	// fails (the master closed the connection) or stop is closed, and the
	// test waits for it.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	defer func() { close(stop); wg.Wait() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		msg := "GET /healthz HTTP/1.1\r\nHost: master\r\nX-Slow: " + strings.Repeat("a", 10000)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for i := 0; i < len(msg); i++ {
			if _, err := conn.Write([]byte{msg[i]}); err != nil {
				return
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()

	// Meanwhile, a normal request is served.
	if code, _, body := m.request(t, "GET", "/healthz", "", nil, nil); code != 200 {
		t.Fatalf("normal request during the slow one: %d %s", code, body)
	}

	// The master closes the slow connection, after at most a 4xx (net/http
	// says 400 or 408, depending on where the timeout falls): reading
	// ends with EOF or a reset, well before our own deadline.
	if err := conn.SetReadDeadline(time.Now().Add(10 * time.Second)); err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(conn)
	elapsed := time.Since(start)
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("still open after %s: the master does not time out slow headers", elapsed)
	case err != nil && !strings.Contains(err.Error(), "reset"):
		t.Fatalf("read: %v, want EOF or a reset", err)
	case len(got) > 0 && !(strings.HasPrefix(string(got), "HTTP/1.1 4") && strings.Contains(string(got), "Connection: close")):
		t.Fatalf("the master answered a request whose headers never ended: %q", got)
	}
	if elapsed < readHeaderTimeout {
		t.Fatalf("closed after %s, before MASTER_READ_HEADER_TIMEOUT (%s): something else closed it", elapsed, readHeaderTimeout)
	}
	t.Logf("slow client cut off after %s", elapsed.Round(time.Millisecond))
}
