package main

import (
	"bytes"
	"context"
	"database/sql"
	"net/http"
	"path/filepath"
	"testing"
)

// TestEachRunsDurableHandlerHasAFreshDatabase: the submit phase starts the
// durable handler anew each run, on a database of that run's own, as the
// master gets one: a run does not write into the tables of the one before.
func TestEachRunsDurableHandlerHasAFreshDatabase(t *testing.T) {
	dir := t.TempDir()
	for r, name := range []string{"1", "2"} {
		d, err := startDurables(context.Background(), nil, filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if d.rowCmd != nil {
			t.Error("a row handler without the processes' master to make its database")
		}
		for range 3 {
			resp, err := http.Post(d.durURL, "application/json", bytes.NewReader([]byte(`{"cmd":"true"}`)))
			if err != nil {
				d.stop()
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted {
				t.Errorf("run %d: %s", r+1, resp.Status)
			}
		}
		d.stop()
		db, err := sql.Open("sqlite", filepath.Join(dir, name, "durable.db"))
		if err != nil {
			t.Fatal(err)
		}
		var n int
		err = db.QueryRow("SELECT count(*) FROM tasks").Scan(&n)
		db.Close()
		if err != nil || n != 3 {
			t.Errorf("run %d's database holds %d rows (%v), want its own 3", r+1, n, err)
		}
	}
}
