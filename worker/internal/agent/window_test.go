package agent

import (
	"fmt"
	"net"
	"testing"

	"github.com/roundhouse-lab/roundhouse/proto/wiretest"
)

// A connection's flow-control windows are fixed: with gRPC's dynamic ones
// the worker would send a PING with nearly every assignment and answer
// it received (the bandwidth-delay estimate), two more frames to write and
// read per task on each side.
func TestNoPingPerAssignment(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec := &wiretest.Listener{Listener: lis}
	f := newFakeMaster()
	serveOn(t, f, rec)
	_, stop := startAgent(t, lis.Addr().String())
	recv(t, f.registrations, "registration")
	const n = 20
	for i := range n {
		f.tasks <- task(fmt.Sprintf("t%d", i), "true")
		recv(t, f.reports, "report")
	}
	stop()

	conns := rec.Conns()
	if len(conns) != 1 {
		t.Fatalf("%d connections; want the worker's one", len(conns))
	}
	frames, pings, err := wiretest.Frames(conns[0].Recorded(), true)
	if err != nil {
		t.Fatal(err)
	}
	if frames < n {
		t.Fatalf("read %d frames from the worker for %d tasks; the recording is broken", frames, n)
	}
	// Keepalive pings come every 10 s; this test takes well under that.
	if pings > 0 {
		t.Errorf("the worker sent %d PINGs (of %d frames) for %d tasks; want none", pings, frames, n)
	}
}
