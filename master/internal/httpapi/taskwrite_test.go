package httpapi

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // named zones in the generated times, whatever the machine has

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// encodeTaskJSON is what writeJSON writes for j: the reference that
// appendTaskJSON must match byte for byte.
func encodeTaskJSON(j taskJSON) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	err := enc.Encode(j)
	return buf.Bytes(), err
}

// checkSameAsEncoder fails t unless appendTaskJSON and writeTask write
// exactly what encoding/json and writeJSON write for j.
func checkSameAsEncoder(t *testing.T, j taskJSON) {
	t.Helper()
	want, err := encodeTaskJSON(j)
	got, ok := appendTaskJSON([]byte("prefix"), &j)
	switch {
	case err != nil && ok:
		t.Fatalf("encoding/json fails (%v), appendTaskJSON wrote\n%s", err, got)
	case err == nil && !ok:
		t.Fatalf("appendTaskJSON failed, encoding/json wrote\n%s", want)
	case err == nil && !bytes.Equal(got, append([]byte("prefix"), want...)):
		t.Fatalf("appendTaskJSON wrote\n%q\nencoding/json wrote\n%q", got, want)
	}

	old, rec := httptest.NewRecorder(), httptest.NewRecorder()
	writeJSON(old, http.StatusAccepted, j)
	writeTask(rec, http.StatusAccepted, j)
	if rec.Code != old.Code || rec.Header().Get("Content-Type") != old.Header().Get("Content-Type") || !bytes.Equal(rec.Body.Bytes(), old.Body.Bytes()) {
		t.Fatalf("writeTask answered %d %q %q, writeJSON %d %q %q", rec.Code, rec.Header().Get("Content-Type"), rec.Body,
			old.Code, old.Header().Get("Content-Type"), old.Body)
	}
	if cl := rec.Header().Get("Content-Length"); cl != "" && cl != strconv.Itoa(rec.Body.Len()) {
		t.Fatalf("Content-Length %s for a body of %d bytes", cl, rec.Body.Len())
	}
}

// fragments are the pieces of strings that escaping gets wrong most easily.
var fragments = []string{
	`"`, `\`, "\n", "\r", "\t", "\b", "\f", "\x00", "\x01", "\x1f", "\x7f", "<", ">", "&", "\u2028", "\u2029",
	"\u2027", "\u202a", "\xff", "\xe2\x80", "\xe2\x80\xa8\xa9", "\xed\xa0\x80", "\xc0\xaf", "\U0001F600", "é", "日本",
	"\ufffd", "\ufeff", `\u2028`, "</script>", " ", "a",
}

// locations are the zones of generated times: RFC 3339 writes each offset
// differently, and an offset of 24 hours or more makes MarshalJSON fail.
var locations = func() []*time.Location {
	locs := []*time.Location{time.UTC, time.Local, time.FixedZone("X", 0), time.FixedZone("", 5*3600+30*60),
		time.FixedZone("", -8*3600), time.FixedZone("", 30), time.FixedZone("", -3600-59), time.FixedZone("", 24*3600),
		time.FixedZone("", -99*3600)}
	for _, name := range []string{"America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe", "Pacific/Chatham"} {
		if loc, err := time.LoadLocation(name); err == nil {
			locs = append(locs, loc)
		}
	}
	return locs
}()

// taskSource builds a taskJSON from arbitrary bytes, so that the fuzzer
// (and a random source, in TestAppendTaskJSONRandom) explores tasks of
// every shape; when the bytes run out it reads zeros.
type taskSource struct{ data []byte }

func (s *taskSource) byte() byte {
	if len(s.data) == 0 {
		return 0
	}
	c := s.data[0]
	s.data = s.data[1:]
	return c
}

func (s *taskSource) uint64() uint64 {
	var b [8]byte
	for i := range b {
		b[i] = s.byte()
	}
	return binary.LittleEndian.Uint64(b[:])
}

func (s *taskSource) int() int {
	switch c := s.byte(); c % 4 {
	case 0:
		return int(int8(s.byte()))
	case 1:
		return []int{0, 1, -1, math.MaxInt, math.MinInt, 1e9, -1e9}[int(c/4)%7]
	default:
		return int(s.uint64())
	}
}

// string is mostly raw bytes, some of them invalid UTF-8, and a byte of
// 0xe0 or more is one of the fragments.
func (s *taskSource) string() string {
	n := int(s.byte() % 40)
	var b []byte
	for range n {
		c := s.byte()
		if c >= 0xe0 {
			b = append(b, fragments[int(c-0xe0)%len(fragments)]...)
		} else {
			b = append(b, c)
		}
	}
	return string(b)
}

func (s *taskSource) stringPtr() *string {
	if s.byte()%3 == 0 {
		return nil
	}
	v := s.string()
	return &v
}

func (s *taskSource) intPtr() *int {
	if s.byte()%3 == 0 {
		return nil
	}
	v := s.int()
	return &v
}

func (s *taskSource) time() time.Time {
	var sec int64
	switch c := s.byte(); c % 8 {
	case 0:
		return time.Time{}
	case 1: // any year 0..9999
		sec = int64(s.uint64()%(10000*366*86400)) - 62167219200
	case 2: // any instant at all, years outside 0..9999 mostly
		sec = int64(s.uint64())
	default: // these days
		sec = 1767225600 + int64(s.uint64()%(3*366*86400))
	}
	var nsec int64
	switch c := s.byte(); c % 5 {
	case 0:
	case 1:
		nsec = int64(s.byte()%100) * 1e7 // trailing zeros, trimmed
	case 2:
		nsec = int64(s.uint64()%1000) * 1e6
	default:
		nsec = int64(s.uint64() % 1e9)
	}
	return time.Unix(sec, nsec).In(locations[int(s.byte())%len(locations)])
}

func (s *taskSource) timePtr() *time.Time {
	if s.byte()%3 == 0 {
		return nil
	}
	v := s.time()
	return &v
}

func (s *taskSource) stringSlice() []string {
	n := int(s.byte() % 6)
	if n == 5 {
		return nil
	}
	v := make([]string, n)
	for i := range v {
		v[i] = s.string()
	}
	return v
}

func (s *taskSource) stringMap() map[string]string {
	n := int(s.byte() % 8)
	if n == 7 {
		return nil
	}
	m := make(map[string]string, n)
	for range n {
		m[s.string()] = s.string()
	}
	return m
}

func (s *taskSource) task() taskJSON {
	j := taskJSON{
		ID: s.string(), Cmd: s.string(), Status: s.string(),
		Attempts: s.int(), MaxAttempts: s.int(), AttemptBase: s.int(), Timeout: s.string(),
		WorkerID: s.stringPtr(), ExitCode: s.intPtr(), Stdout: s.stringPtr(), Stderr: s.stringPtr(),
		StdoutTruncated: s.byte()%2 == 1, StderrTruncated: s.byte()%2 == 1,
		Error: s.stringPtr(), IdempotencyKey: s.stringPtr(), Priority: s.int(),
		Requires: s.stringMap(), RunAt: s.timePtr(), RetryOn: s.stringSlice(),
		Backoff: s.stringPtr(), MaxBackoff: s.stringPtr(), WaitingFor: s.stringPtr(),
		CreatedAt: s.time(), AssignedAt: s.timePtr(), StartedAt: s.timePtr(), FinishedAt: s.timePtr(),
	}
	if n := int(s.byte() % 6); n < 5 {
		j.History = make([]attemptJSON, n)
		for i := range j.History {
			j.History[i] = attemptJSON{Attempt: s.int(), WorkerID: s.string(), Outcome: s.string(), ExitCode: s.intPtr(),
				Error: s.stringPtr(), Duplicate: s.byte()%2 == 1, AssignedAt: s.timePtr(), FinishedAt: s.timePtr()}
		}
	}
	return j
}

// FuzzTaskJSON holds appendTaskJSON and writeTask to encoding/json's output
// for tasks of any shape and content.
//
//	go test -run '^$' -fuzz FuzzTaskJSON -fuzztime 60s ./master/internal/httpapi
func FuzzTaskJSON(f *testing.F) {
	f.Add([]byte{})
	f.Add(bytes.Repeat([]byte{0xff}, 600))
	f.Add(bytes.Repeat([]byte{0x01}, 600))
	f.Add(bytes.Repeat([]byte{0xe3, 0xe0, 0xee, 0xef, 0xf0, 0x22, 0x5c}, 100))
	f.Add([]byte("\x05hello\x0aecho \"hi\"\x06queued"))
	r := rand.New(rand.NewPCG(1, 2))
	for range 16 {
		b := make([]byte, 200+r.IntN(800))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkSameAsEncoder(t, (&taskSource{data}).task())
	})
}

// TestAppendTaskJSONRandom is FuzzTaskJSON on a few thousand random tasks,
// in every test run.
func TestAppendTaskJSONRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(14, 2026))
	n := 3000
	if testing.Short() {
		n = 300
	}
	for range n {
		b := make([]byte, r.IntN(1500))
		for i := range b {
			b[i] = byte(r.Uint32())
		}
		checkSameAsEncoder(t, (&taskSource{b}).task())
	}
}

func TestAppendTaskJSON(t *testing.T) {
	ptr := func(s string) *string { return &s }
	num := func(n int) *int { return &n }
	at := func(tm time.Time) *time.Time { return &tm }
	created := time.Date(2026, 3, 1, 9, 30, 0, 123456789, time.UTC)
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	queued := task.Task{ID: "019a0000-0000-7000-8000-000000000000", Cmd: "echo hello", Status: task.StatusQueued,
		MaxAttempts: 3, Timeout: time.Hour, CreatedAt: created}
	finished := task.Task{ID: "t1", Cmd: "make", Status: task.StatusFailed, Attempts: 3, MaxAttempts: 3, AttemptBase: 1,
		Timeout: 90 * time.Second, WorkerID: "w-1", ExitCode: num(2), Stdout: "ok\n", Stderr: "boom\r\n", StderrCut: true,
		Error: "exit status 2", IdempotencyKey: "k-1", Priority: 1,
		Requires: map[string]string{"zone": "b", "gpu": "nvidia", "arch": "amd64", "Gpu": "x", "": "empty", "gpu-2": "y"},
		RunAt:    created.Add(time.Minute), RetryOn: []task.Outcome{task.OutcomeFailed, task.OutcomeTimedOut},
		Backoff: time.Second, MaxBackoff: time.Minute, WaitingFor: "no connected worker has gpu=nvidia",
		CreatedAt: created, AssignedAt: created.Add(time.Second), StartedAt: created.In(berlin), FinishedAt: created.Add(time.Hour),
		History: []task.Attempt{
			{N: 1, WorkerID: "w-0", Outcome: task.OutcomeLost, AssignedAt: created},
			{N: 2, WorkerID: "w-1", Outcome: task.OutcomeFailed, ExitCode: num(1), Error: "x", Duplicate: true, AssignedAt: created, FinishedAt: created.Add(time.Second)},
			{N: 3, WorkerID: "w-1", Outcome: task.OutcomeFailed, ExitCode: num(2), AssignedAt: created.Add(time.Minute), FinishedAt: created.Add(time.Hour)},
		}}
	for _, tt := range []struct {
		name string
		task taskJSON
	}{
		{"zero value", taskJSON{}},
		{"queued", toTaskJSON(queued, true)},
		{"queued in a list", toTaskJSON(queued, false)},
		{"finished with everything", toTaskJSON(finished, true)},
		{"finished in a list", toTaskJSON(finished, false)},
		{"escapes", taskJSON{ID: "a\"b\\c", Cmd: "printf '<a href=\"x\">&amp;</a>\\n'\n\techo \x00\x01\x1f\x7f\b\f\r",
			Status: "\u2028\u2029\u2027\u202a", Timeout: "\xff\xfe\xe2\x80 \xed\xa0\x80 \U0001F600 日本 \ufffd",
			Stdout: ptr(""), Stderr: ptr("\xe2\x80\xa8\xa9"), Requires: map[string]string{"\xff": "1", "é": "2", "<k>": "&"},
			RetryOn: []string{"", "\"", "\\u2028"}, History: []attemptJSON{}}},
		{"empty sets", taskJSON{Requires: map[string]string{}, RetryOn: []string{}, History: []attemptJSON{}}},
		{"one of each", taskJSON{Requires: map[string]string{"k": "v"}, RetryOn: []string{"failed"}, History: []attemptJSON{{}}}},
		{"extreme numbers", taskJSON{Attempts: math.MaxInt, MaxAttempts: math.MinInt, AttemptBase: -1, Priority: -5, ExitCode: num(-1),
			History: []attemptJSON{{Attempt: math.MinInt, ExitCode: num(math.MaxInt)}}}},
		{"times", taskJSON{CreatedAt: time.Now(), // with a monotonic reading, which MarshalJSON leaves out
			RunAt: at(time.Time{}), AssignedAt: at(time.Date(2026, 1, 1, 0, 0, 0, 1, time.FixedZone("", 5*3600+45*60))),
			StartedAt:  at(time.Date(0, 1, 1, 0, 0, 0, 0, time.FixedZone("", -30))),
			FinishedAt: at(time.Date(9999, 12, 31, 23, 59, 59, 999999999, berlin)),
			History:    []attemptJSON{{AssignedAt: at(created.In(time.Local)), FinishedAt: at(created.Add(10 * time.Millisecond))}}}},
		{"year 10000", taskJSON{CreatedAt: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}},
		{"year -1 in a history", taskJSON{History: []attemptJSON{{}, {FinishedAt: at(time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC))}}}},
		{"offset of 24 hours", taskJSON{RunAt: at(created.In(time.FixedZone("", 24*3600)))}},
	} {
		t.Run(tt.name, func(t *testing.T) { checkSameAsEncoder(t, tt.task) })
	}
}

// TestAppendTaskJSONShape pins a few lines of the output itself, so that a
// change of the encoder under both is seen too.
func TestAppendTaskJSONShape(t *testing.T) {
	j := taskJSON{ID: "a", Requires: map[string]string{"b": "2", "a": "1"}, RetryOn: []string{}, History: []attemptJSON{{Attempt: 1}}}
	got, ok := appendTaskJSON(nil, &j)
	if !ok {
		t.Fatal("appendTaskJSON failed")
	}
	for _, want := range []string{
		"{\n  \"id\": \"a\",\n  \"cmd\": \"\",\n",
		"\n  \"worker_id\": null,\n  \"exit_code\": null,\n  \"stdout_truncated\": false,\n",
		"\n  \"requires\": {\n    \"a\": \"1\",\n    \"b\": \"2\"\n  },\n  \"run_at\": null,\n  \"retry_on\": [],\n",
		"\n  \"created_at\": \"0001-01-01T00:00:00Z\",\n",
		"\n  \"history\": [\n    {\n      \"attempt\": 1,\n      \"worker_id\": \"\",\n",
		"\n      \"finished_at\": null\n    }\n  ]\n}\n",
	} {
		if !bytes.Contains(got, []byte(want)) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
}

// TestWriteTaskConcurrent writes tasks of different sizes at once, as the
// handlers do: no answer may carry bytes of another through the pooled
// buffers (with -race, no buffer may be shared while in use).
func TestWriteTaskConcurrent(t *testing.T) {
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 50 {
				out := strings.Repeat(strconv.Itoa(g), i*i*40) // past maxPooledTaskBuf in the last rounds
				j := taskJSON{ID: strconv.Itoa(g), Stdout: &out, Requires: map[string]string{}, RetryOn: []string{}, History: []attemptJSON{}}
				want, rec := httptest.NewRecorder(), httptest.NewRecorder()
				writeJSON(want, http.StatusOK, j)
				writeTask(rec, http.StatusOK, j)
				if got, want := rec.Body.Bytes(), want.Body.Bytes(); !bytes.Equal(got, want) {
					at := 0
					for at < min(len(got), len(want)) && got[at] == want[at] {
						at++
					}
					errs <- fmt.Sprintf("goroutine %d, round %d: writeTask's %d bytes differ from writeJSON's %d at byte %d", g, i, len(got), len(want), at)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
