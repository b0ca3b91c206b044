package agent

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	pb "github.com/roundhouse-lab/roundhouse/proto/roundhousepb"
)

// timeline records, in order, the connections a master stand-in accepted
// and the agent's failed tries to register, which it reads from the agent's
// log: each failed try logs one "not connected to master" line.
type timeline struct {
	mu     sync.Mutex // protects events
	events []string   // "dial", "try", "up", "down"
}

func (tl *timeline) add(e string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.events = append(tl.events, e)
}

func (tl *timeline) count(e string) int {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	n := 0
	for _, x := range tl.events {
		if x == e {
			n++
		}
	}
	return n
}

func (tl *timeline) String() string {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return strings.Join(tl.events, " ")
}

// Write takes the agent's log, one record per call.
func (tl *timeline) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("not connected to master")) {
		tl.add("try")
	}
	return len(p), nil
}

// outageListener is a master's address through its outages: while the
// master is down it accepts each connection and closes it at once, so that
// the worker's dial fails; while it is up it hands them to the gRPC server.
// Either way the accept goes on the timeline before the worker can see its
// outcome.
type outageListener struct {
	net.Listener
	tl *timeline
	up atomic.Bool

	mu     sync.Mutex // protects served
	served []net.Conn
}

func (l *outageListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.tl.add("dial")
		l.mu.Lock()
		if l.up.Load() {
			l.served = append(l.served, c)
			l.mu.Unlock()
			return c, nil
		}
		l.mu.Unlock()
		c.Close()
	}
}

// down takes the master away: the connections it serves close, and new
// ones are closed at once.
func (l *outageListener) down() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.up.Store(false)
	for _, c := range l.served {
		c.Close()
	}
	l.served = nil
}

// Every try to register dials the master (or uses a ready connection): none
// fails on what an earlier dial left behind. Otherwise the wait for a master
// that came back is the agent's backoff plus whatever is left of gRPC's own,
// longer than the promised WORKER_RECONNECT_MAX, and long enough for the
// master to re-queue a task the worker still runs. Over several outages, so
// that the tries after a lost session and those after a failed dial count.
func TestEveryTryToRegisterDials(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tl := &timeline{}
	ol := &outageListener{Listener: lis, tl: tl}
	f := newFakeMaster()
	serveOn(t, f, ol)
	a, stop := startAgentWith(t, Config{MasterAddr: lis.Addr().String()}, io.MultiWriter(tl, t.Output()))

	const outages, triesEach = 3, 8
	for i := range outages {
		if i > 0 {
			tl.add("down")
			ol.down()
		}
		want := tl.count("try") + triesEach
		eventually(t, func() bool { return tl.count("try") >= want }, fmt.Sprintf("outage %d: fewer than %d failed tries", i+1, triesEach))
		ol.up.Store(true)
		tl.add("up")
		recv(t, f.registrations, fmt.Sprintf("registration after outage %d", i+1))
		eventually(t, a.Registered, fmt.Sprintf("not registered after outage %d", i+1))
	}
	stop()

	events := strings.Fields(tl.String())
	dialled, up, tries, undialled, afterUp := false, false, 0, 0, 0
	for _, e := range events {
		switch e {
		case "dial":
			dialled = true
		case "up":
			up, afterUp = true, 0
		case "down":
			up = false
		case "try":
			tries++
			if !dialled {
				undialled++
			}
			dialled = false
			if afterUp++; up && afterUp > 1 {
				// Only a try whose dial the master closed before it came
				// back may fail after that.
				t.Errorf("try %d failed although the master was back before it began", tries)
			}
		}
	}
	if undialled > 0 {
		t.Errorf("%d of %d failed tries did not dial the master", undialled, tries)
	}
	if t.Failed() {
		t.Logf("timeline: %s", tl)
	}
}

// silentMaster accepts every AssignTask stream and never sends the Welcome,
// as a hung master (or a proxy whose backend never answers) does: the
// connection stays up and answers keepalive pings, so only a bound on the
// wait for the Welcome can end the try.
type silentMaster struct {
	*fakeMaster
}

func (m silentMaster) AssignTask(req *pb.RegisterRequest, stream pb.NodeService_AssignTaskServer) error {
	m.registrations <- req
	<-stream.Context().Done()
	m.streamsEnded <- struct{}{}
	return stream.Context().Err()
}

// A try whose stream opens but brings no Welcome fails once welcomeWait has
// passed, and the worker tries again; before, it waited on that stream for
// ever.
func TestNoWelcomeIsAFailedTry(t *testing.T) {
	f := newFakeMaster()
	_, addr := serve(t, silentMaster{f}, "127.0.0.1:0")
	var logged syncBuffer
	a, _ := startAgentWith(t, Config{MasterAddr: addr, welcomeWait: 100 * time.Millisecond}, io.MultiWriter(&logged, t.Output()))
	recv(t, f.registrations, "registration")
	recv(t, f.streamsEnded, "end of the stream that brought no Welcome")
	recv(t, f.registrations, "second registration after no Welcome")
	if a.Registered() {
		t.Error("registered without a Welcome")
	}
	if l := logged.String(); !strings.Contains(l, "not connected to master") || !strings.Contains(l, "no Welcome within 100ms") {
		t.Errorf("the log does not say the master sent no Welcome in time:\n%s", l)
	}
}
