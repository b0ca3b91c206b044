package main

import (
	"bufio"
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/roundhouse-lab/roundhouse/master/internal/store/storetest"
)

// firstEvent opens GET /events resuming after lastID and returns the id
// and type of the first event it sends, a gap skipped when skipGap.
func firstEvent(t *testing.T, m *testMaster, lastID string, skipGap bool) (id, typ string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, m.httpURL+"/events", nil)
	req.Header.Set("Last-Event-ID", lastID)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "id: "); ok {
			id = v
		}
		if v, ok := strings.CutPrefix(sc.Text(), "event: "); ok && !(skipGap && v == "gap") {
			return id, v
		}
	}
	t.Fatalf("no event: %v", sc.Err())
	return "", ""
}

// Event numbers keep growing across restarts, also when the wall clock
// stepped back between two runs (README: a wall-clock step changes
// timestamps "and nothing else"; a client that resumes from an earlier
// process is told `gap`). Here the second run's clock reads what the
// first run's did: a step back by the first run's length.
func TestEventIDsAcrossARestartWithTheClockSteppedBack(t *testing.T) {
	frozen := time.Now()
	wallClock = func() time.Time { return frozen }
	t.Cleanup(func() { wallClock = time.Now })
	env := map[string]string{"MASTER_DB_PATH": filepath.Join(t.TempDir(), "rh.db")}
	post := func(m *testMaster) {
		t.Helper()
		if code, _, body := m.request(t, http.MethodPost, "/tasks", "", strings.NewReader(`{"cmd":"true"}`), nil); code != http.StatusAccepted {
			t.Fatalf("POST /tasks = %d %s", code, body)
		}
	}

	m := startMaster(t, env)
	post(m) // one event: task.queued
	last, _ := firstEvent(t, m, "0", true)
	m.stop()

	m = startMaster(t, env)
	post(m)
	post(m)
	if id, typ := firstEvent(t, m, last, false); typ != "gap" {
		t.Errorf("resuming at a restarted master after event %s of the previous run: first event %q (id %s), want gap: "+
			"the new run reused the previous run's numbers, and the client silently skipped the new run's first events", last, typ, id)
	}
}

// A database that refuses writes at start-up (here: another process holds
// its write lock past the busy timeout) does not keep the master from
// starting: the event numbers then start from the clock, with a warning.
func TestStartsWhenEventNumbersCannotBeReserved(t *testing.T) {
	path := filepath.Join(t.TempDir(), "rh.db")
	env := map[string]string{"MASTER_DB_PATH": path}
	startMaster(t, env).stop() // the schema, so that only the reservation writes
	release := storetest.HoldWriteLock(t, path)
	defer release()
	buf := &syncBuffer{}
	warned := make(chan struct{})
	go func() {
		defer close(warned)
		deadline := time.Now().Add(30 * time.Second)
		for !strings.Contains(buf.String(), "could not reserve event numbers") {
			if time.Now().After(deadline) {
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
		release() // the disk is back: the master becomes ready
	}()
	m := startMasterLogging(t, env, slog.New(slog.NewTextHandler(buf, nil)))
	<-warned
	if !strings.Contains(buf.String(), "could not reserve event numbers") {
		t.Fatalf("no warning about the event numbers in the log:\n%s", buf.String())
	}
	if code, _, body := m.request(t, http.MethodGet, "/tasks", "", nil, nil); code != http.StatusOK {
		t.Fatalf("GET /tasks = %d %s", code, body)
	}
}
