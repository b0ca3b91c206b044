package store

// Reads: live tasks, idempotency keys and lists.

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

func TestLive(t *testing.T) {
	s, _ := open(t)
	// Created out of ID order, and two at the same instant.
	apply(t, s,
		Write{Task: newTask("z", at(1), task.StatusQueued)},
		Write{Task: newTask("y", at(2), task.StatusRunning)},
		Write{Task: newTask("x", at(0), task.StatusSucceeded)},
		Write{Task: newTask("w", at(1), task.StatusQueued)},
		Write{Task: newTask("v", at(3), task.StatusFailed)},
		Write{Task: newTask("u", at(0), task.StatusCanceled)},
		Write{Task: newTask("t", at(2), task.StatusScheduled)},
	)
	got, err := s.Live(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if ids := ids(got); !reflect.DeepEqual(ids, []string{"w", "z", "t", "y"}) {
		t.Errorf("Live = %v, want [w z t y]", ids)
	}
}

// Live reads the few live rows through tasks_status, not the whole table.
func TestLiveUsesIndex(t *testing.T) {
	s, _ := open(t)
	if p := queryPlan(t, s, liveQuery); !strings.Contains(p, "SEARCH tasks USING INDEX tasks_status (status=?)") {
		t.Errorf("plan %q; want a search of tasks_status by status", p)
	}
}

func ids(ts []task.Task) []string {
	out := []string{}
	for _, t := range ts {
		out = append(out, t.ID)
	}
	return out
}

func TestFindByIdempotencyKey(t *testing.T) {
	s, _ := open(t)
	tk := newTask("a", at(0), task.StatusQueued)
	tk.IdempotencyKey = "k1"
	apply(t, s, Write{Task: tk}, Write{Task: newTask("b", at(1), task.StatusQueued)}) // b has no key

	tests := []struct {
		name    string
		key     string
		want    string
		wantErr error
	}{
		{"hit", "k1", "a", nil},
		{"miss", "k2", "", task.ErrNotFound},
		{"empty", "", "", task.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.FindByIdempotencyKey(context.Background(), tt.key)
			if !errors.Is(err, tt.wantErr) || got.ID != tt.want {
				t.Errorf("got %q, %v; want %q, %v", got.ID, err, tt.want, tt.wantErr)
			}
		})
	}
}

func TestList(t *testing.T) {
	s, _ := open(t)
	ctx := context.Background()
	mk := func(id string, st task.Status, worker string) Write {
		tk := newTask(id, at(0), st)
		tk.WorkerID, tk.Stdout, tk.Stderr = worker, "lots of output", "errors"
		if cmd, ok := map[string]string{"01": "make Build", "02": "echo 100%", "04": "echo 1002", "05": `dir C:\_x`}[id]; ok {
			tk.Cmd = cmd
		}
		return Write{Task: tk}
	}
	apply(t, s,
		mk("01", task.StatusSucceeded, "w1"),
		mk("02", task.StatusFailed, "w2"),
		mk("03", task.StatusQueued, ""),
		mk("04", task.StatusRunning, "w1"),
		mk("05", task.StatusSucceeded, "w2"),
		mk("06", task.StatusScheduled, ""),
	)

	tests := []struct {
		name string
		q    Query
		want []string
	}{
		{"all", Query{}, []string{"06", "05", "04", "03", "02", "01"}},
		{"one status", Query{Statuses: []task.Status{task.StatusSucceeded}}, []string{"05", "01"}},
		{"scheduled", Query{Statuses: []task.Status{task.StatusScheduled}}, []string{"06"}},
		{"live", Query{Statuses: []task.Status{task.StatusScheduled, task.StatusQueued, task.StatusRunning}}, []string{"06", "04", "03"}},
		{"two statuses", Query{Statuses: []task.Status{task.StatusQueued, task.StatusFailed}}, []string{"03", "02"}},
		{"worker", Query{WorkerID: "w1"}, []string{"04", "01"}},
		{"worker and status", Query{WorkerID: "w2", Statuses: []task.Status{task.StatusSucceeded}}, []string{"05"}},
		{"none", Query{WorkerID: "w9"}, []string{}},
		{"cmd, any case", Query{Cmd: "BUILD"}, []string{"01"}},
		{"cmd, % is text", Query{Cmd: "100%"}, []string{"02"}},
		{"cmd, _ and \\ are text", Query{Cmd: `\_x`}, []string{"05"}},
		{"cmd and worker", Query{Cmd: "echo", WorkerID: "w1"}, []string{"04"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := s.List(ctx, tt.q)
			if err != nil {
				t.Fatal(err)
			}
			if got := ids(p.Tasks); !reflect.DeepEqual(got, tt.want) || p.Next != "" {
				t.Errorf("List = %v, next %q; want %v, no next", got, p.Next, tt.want)
			}
			for _, tk := range p.Tasks {
				if tk.Stdout != "" || tk.Stderr != "" || tk.History != nil {
					t.Errorf("task %s has output or history in a list", tk.ID)
				}
			}
		})
	}

	t.Run("pages", func(t *testing.T) {
		var got []string
		q := Query{Limit: 2}
		for pages := 0; ; pages++ {
			if pages > 3 {
				t.Fatalf("more than 3 pages; so far %v", got)
			}
			p, err := s.List(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(p.Tasks) > 2 {
				t.Fatalf("page of %d", len(p.Tasks))
			}
			got = append(got, ids(p.Tasks)...)
			if p.Next == "" {
				break
			}
			q.Cursor = p.Next
		}
		if want := []string{"06", "05", "04", "03", "02", "01"}; !reflect.DeepEqual(got, want) {
			t.Errorf("pages visited %v, want %v", got, want)
		}
	})

	t.Run("exact last page has no next", func(t *testing.T) {
		p, err := s.List(ctx, Query{Limit: 6})
		if err != nil || len(p.Tasks) != 6 || p.Next != "" {
			t.Errorf("List(limit 6) = %d tasks, next %q, %v; want 6, no next", len(p.Tasks), p.Next, err)
		}
	})

	for _, q := range []Query{
		{Cursor: "not a cursor"},
		{Cursor: "MDU"}, // base64url of "05": valid encoding, but not ours
		{Limit: -1},
		{Limit: 1001},
		{Statuses: []task.Status{"sleeping"}},
	} {
		t.Run(fmt.Sprintf("invalid %+v", q), func(t *testing.T) {
			if _, err := s.List(ctx, q); !errors.Is(err, task.ErrInvalid) {
				t.Errorf("err = %v, want ErrInvalid", err)
			}
		})
	}
}
