package httpapi

import (
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"
)

// writeTask answers with one task. Its body is byte for byte what
// writeJSON(w, code, j) writes (FuzzTaskJSON and TestAppendTaskJSON hold it
// to that), built without reflection and without encoding/json's second pass
// over the output to indent it: the answer to every POST /tasks, where that
// encoder took about 8% of the master's CPU.
//
// A time that encoding/json refuses (a year outside 0..9999, an offset of 24
// hours or more) is left to writeJSON, which then writes what it always did.
func writeTask(w http.ResponseWriter, code int, j taskJSON) {
	bp, _ := taskBufs.Get().(*[]byte)
	if bp == nil {
		bp = new([]byte)
	}
	defer taskBufs.Put(bp) // once written: w copies what it keeps
	b, ok := appendTaskJSON(slices.Grow((*bp)[:0], taskJSONSize(&j)), &j)
	if ok && cap(b) <= maxPooledTaskBuf {
		*bp = b[:0]
	}
	if !ok {
		writeJSON(w, code, j)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	noSniff(h)
	// Known up front, so a large output goes out without chunked encoding.
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.WriteHeader(code)
	_, _ = w.Write(b) // the client went away; nothing to do
}

// taskBufs holds the buffers of writeTask, each a *[]byte: with them a task
// is built without allocating (in BenchmarkWriteTask a quarter less time).
// The buffer of a task with a large output is not kept, so that one such
// answer does not hold its memory for good.
var taskBufs sync.Pool

const maxPooledTaskBuf = 64 << 10

// taskJSONSize guesses the length of j as JSON, so that appendTaskJSON
// usually builds it without growing the buffer: the fixed part and its
// field names take about 700 bytes, an attempt about 250.
func taskJSONSize(j *taskJSON) int {
	n := 768 + len(j.ID) + len(j.Cmd) + len(j.History)*256
	for _, p := range [...]*string{j.Stdout, j.Stderr, j.Error, j.WaitingFor} {
		if p != nil {
			n += len(*p)
		}
	}
	for k, v := range j.Requires {
		n += len(k) + len(v) + 12
	}
	return n + n/16 // some room for escapes
}

// appendTaskJSON appends j as json.Encoder writes it with SetIndent("", "  ")
// and SetEscapeHTML(false), trailing newline included: the fields in their
// order, nil pointers, maps and slices as null, stdout and stderr left out
// when nil. ok is false, and the result to be dropped, when a time cannot be
// written as RFC 3339 (time.Time.MarshalJSON fails, and so does the encoder).
func appendTaskJSON(b []byte, j *taskJSON) (_ []byte, ok bool) {
	b = append(b, "{\n  \"id\": "...)
	b = appendJSONString(b, j.ID)
	b = append(b, ",\n  \"cmd\": "...)
	b = appendJSONString(b, j.Cmd)
	b = append(b, ",\n  \"status\": "...)
	b = appendJSONString(b, j.Status)
	b = append(b, ",\n  \"attempts\": "...)
	b = strconv.AppendInt(b, int64(j.Attempts), 10)
	b = append(b, ",\n  \"max_attempts\": "...)
	b = strconv.AppendInt(b, int64(j.MaxAttempts), 10)
	b = append(b, ",\n  \"attempt_base\": "...)
	b = strconv.AppendInt(b, int64(j.AttemptBase), 10)
	b = append(b, ",\n  \"timeout\": "...)
	b = appendJSONString(b, j.Timeout)
	b = append(b, ",\n  \"worker_id\": "...)
	b = appendStringPtr(b, j.WorkerID)
	b = append(b, ",\n  \"exit_code\": "...)
	b = appendIntPtr(b, j.ExitCode)
	if j.Stdout != nil {
		b = append(b, ",\n  \"stdout\": "...)
		b = appendJSONString(b, *j.Stdout)
	}
	if j.Stderr != nil {
		b = append(b, ",\n  \"stderr\": "...)
		b = appendJSONString(b, *j.Stderr)
	}
	b = append(b, ",\n  \"stdout_truncated\": "...)
	b = strconv.AppendBool(b, j.StdoutTruncated)
	b = append(b, ",\n  \"stderr_truncated\": "...)
	b = strconv.AppendBool(b, j.StderrTruncated)
	b = append(b, ",\n  \"error\": "...)
	b = appendStringPtr(b, j.Error)
	b = append(b, ",\n  \"idempotency_key\": "...)
	b = appendStringPtr(b, j.IdempotencyKey)
	b = append(b, ",\n  \"priority\": "...)
	b = strconv.AppendInt(b, int64(j.Priority), 10)
	b = append(b, ",\n  \"requires\": "...)
	b = appendStringMap(b, j.Requires, "\n    ", "\n  }")
	b = append(b, ",\n  \"run_at\": "...)
	if b, ok = appendTimePtr(b, j.RunAt); !ok {
		return nil, false
	}
	b = append(b, ",\n  \"retry_on\": "...)
	b = appendStringSlice(b, j.RetryOn, "\n    ", "\n  ]")
	b = append(b, ",\n  \"backoff\": "...)
	b = appendStringPtr(b, j.Backoff)
	b = append(b, ",\n  \"max_backoff\": "...)
	b = appendStringPtr(b, j.MaxBackoff)
	b = append(b, ",\n  \"waiting_for\": "...)
	b = appendStringPtr(b, j.WaitingFor)
	b = append(b, ",\n  \"created_at\": "...)
	if b, ok = appendTime(b, j.CreatedAt); !ok {
		return nil, false
	}
	for _, f := range [...]struct {
		name string
		t    *time.Time
	}{{",\n  \"assigned_at\": ", j.AssignedAt}, {",\n  \"started_at\": ", j.StartedAt}, {",\n  \"finished_at\": ", j.FinishedAt}} {
		b = append(b, f.name...)
		if b, ok = appendTimePtr(b, f.t); !ok {
			return nil, false
		}
	}
	b = append(b, ",\n  \"history\": "...)
	switch {
	case j.History == nil:
		b = append(b, "null"...)
	case len(j.History) == 0:
		b = append(b, "[]"...)
	default:
		for i := range j.History {
			if i == 0 {
				b = append(b, "[\n    "...)
			} else {
				b = append(b, ",\n    "...)
			}
			if b, ok = appendAttemptJSON(b, &j.History[i]); !ok {
				return nil, false
			}
		}
		b = append(b, "\n  ]"...)
	}
	return append(b, "\n}\n"...), true
}

// appendAttemptJSON appends a, an entry of a task's history: an object
// nested two levels deep.
func appendAttemptJSON(b []byte, a *attemptJSON) (_ []byte, ok bool) {
	b = append(b, "{\n      \"attempt\": "...)
	b = strconv.AppendInt(b, int64(a.Attempt), 10)
	b = append(b, ",\n      \"worker_id\": "...)
	b = appendJSONString(b, a.WorkerID)
	b = append(b, ",\n      \"outcome\": "...)
	b = appendJSONString(b, a.Outcome)
	b = append(b, ",\n      \"exit_code\": "...)
	b = appendIntPtr(b, a.ExitCode)
	b = append(b, ",\n      \"error\": "...)
	b = appendStringPtr(b, a.Error)
	b = append(b, ",\n      \"duplicate\": "...)
	b = strconv.AppendBool(b, a.Duplicate)
	b = append(b, ",\n      \"assigned_at\": "...)
	if b, ok = appendTimePtr(b, a.AssignedAt); !ok {
		return nil, false
	}
	b = append(b, ",\n      \"finished_at\": "...)
	if b, ok = appendTimePtr(b, a.FinishedAt); !ok {
		return nil, false
	}
	return append(b, "\n    }"...), true
}

func appendStringPtr(b []byte, s *string) []byte {
	if s == nil {
		return append(b, "null"...)
	}
	return appendJSONString(b, *s)
}

func appendIntPtr(b []byte, n *int) []byte {
	if n == nil {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, int64(*n), 10)
}

// appendTime appends t as time.Time.MarshalJSON writes it.
func appendTime(b []byte, t time.Time) (_ []byte, ok bool) {
	b = append(b, '"')
	b, err := t.AppendText(b) // MarshalJSON's RFC 3339, with the same checks
	if err != nil {
		return nil, false
	}
	return append(b, '"'), true
}

func appendTimePtr(b []byte, t *time.Time) (_ []byte, ok bool) {
	if t == nil {
		return append(b, "null"...), true
	}
	return appendTime(b, *t)
}

// appendStringMap appends m as encoding/json does: keys in byte order, each
// pair on a line of its own after sep, close after the last.
func appendStringMap(b []byte, m map[string]string, sep, close string) []byte {
	switch {
	case m == nil:
		return append(b, "null"...)
	case len(m) == 0:
		return append(b, "{}"...)
	}
	var small [8]string // labels are few: no allocation for the keys
	keys := small[:0]
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	b = append(b, '{')
	for i, k := range keys {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, sep...)
		b = appendJSONString(b, k)
		b = append(b, ": "...)
		b = appendJSONString(b, m[k])
	}
	return append(b, close...)
}

// appendStringSlice appends s as encoding/json does, each item on a line of
// its own after sep, close after the last.
func appendStringSlice(b []byte, s []string, sep, close string) []byte {
	switch {
	case s == nil:
		return append(b, "null"...)
	case len(s) == 0:
		return append(b, "[]"...)
	}
	b = append(b, '[')
	for i, v := range s {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, sep...)
		b = appendJSONString(b, v)
	}
	return append(b, close...)
}

// appendJSONString appends s quoted as encoding/json does with EscapeHTML
// off: \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00XX, U+2028 and
// U+2029 as \u2028 and \u2029, each byte of invalid UTF-8 as \ufffd, and
// everything else, < > & and DEL included, as it is.
func appendJSONString(b []byte, s string) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
