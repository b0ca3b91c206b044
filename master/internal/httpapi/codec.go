package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// decode reads exactly one JSON object with only known fields from a body
// of bounded size. Errors wrap task.ErrInvalid, or errTooLarge.
func (a *api) decode(w http.ResponseWriter, r *http.Request, v any) error {
	if n := r.ContentLength; n > 0 && n <= a.maxBody {
		// A body of known length, within the limit (nearly every request):
		// read into a buffer of its size, where io.ReadAll would start at
		// 512 bytes and grow. net/http ends the body at Content-Length, and
		// reading its last byte starts its watch for a client that goes
		// away (r.Context), as reading to EOF does.
		body := make([]byte, n)
		if _, err := io.ReadFull(r.Body, body); err != nil {
			return fmt.Errorf("%w: reading the request body: %v", task.ErrInvalid, err)
		}
		return decodeBody(body, v)
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.maxBody))
	var maxErr *http.MaxBytesError
	switch {
	case errors.As(err, &maxErr):
		return fmt.Errorf("%w: request body is larger than %d bytes", errTooLarge, a.maxBody)
	case err != nil:
		return fmt.Errorf("%w: reading the request body: %v", task.ErrInvalid, err)
	}
	return decodeBody(body, v)
}

// decodeBody is decode's checks on a body already read.
func decodeBody(body []byte, v any) error {
	// encoding/json would quietly turn invalid UTF-8 into U+FFFD: a command
	// other than the one sent. Refuse it instead.
	if !utf8.Valid(body) {
		return fmt.Errorf("%w: request body is not valid UTF-8", task.ErrInvalid)
	}
	// So would an escaped lone surrogate, such as \ud800.
	if hasLoneSurrogate(body) {
		return fmt.Errorf("%w: request body escapes a lone UTF-16 surrogate (\\uD800-\\uDFFF), which is no character", task.ErrInvalid)
	}
	// The common case, a body that is right, in one pass: json.Unmarshal
	// refuses data after the object, and checkKeys every name that is not
	// exactly a field's (stricter than DisallowUnknownFields), so whatever
	// passes both passes decodeStrict (FuzzDecodeBodyOnePass). A body that
	// fails either goes through decodeStrict for its message; v is then the
	// caller's to drop.
	if json.Unmarshal(body, v) == nil && checkKeys(body, v) == nil {
		return nil
	}
	return decodeStrict(body, v)
}

// decodeStrict decodes body, valid UTF-8, into v with every check and its
// own message: one JSON value, an object of v's fields by their exact
// names, each once, of the right types.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Exactly one value: `{"cmd":"a"}{"cmd":"b"}` is a mistake, not two tasks.
		if err = dec.Decode(new(json.RawMessage)); err == io.EOF {
			return checkKeys(body, v)
		}
		return fmt.Errorf("%w: unexpected data after the JSON object", task.ErrInvalid)
	}
	var (
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return fmt.Errorf(`%w: request body is empty; send {"cmd": "..."}`, task.ErrInvalid)
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: request body is not valid JSON", task.ErrInvalid)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Errorf("%w: request body must be a JSON object", task.ErrInvalid)
		}
		// The type of a map value or list item is not the field's: say
		// what the whole field must be.
		if shape, ok := fieldShapes[typeErr.Field]; ok {
			return fmt.Errorf("%w: field %q must be %s", task.ErrInvalid, typeErr.Field, shape)
		}
		return fmt.Errorf("%w: field %q must be a %s", task.ErrInvalid, typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		// json reports an unknown field only as text: "json: unknown field \"x\"".
		return fmt.Errorf("%w: %s", task.ErrInvalid, trimJSONPrefix(err.Error()))
	default:
		return fmt.Errorf("%w: request body is not a valid task", task.ErrInvalid)
	}
}

// hasLoneSurrogate reports whether body has a \uXXXX escape of a UTF-16
// surrogate that is not half of a pair. A backslash is found only inside
// JSON strings, so no parsing is needed to tell escapes apart.
func hasLoneSurrogate(body []byte) bool {
	esc := func(i int) (rune, bool) { // the \uXXXX escape at body[i:], if any
		if i+6 > len(body) || body[i] != '\\' || body[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(body[i+2:i+6]), 16, 16)
		return rune(n), err == nil
	}
	for i := 0; i < len(body); i++ {
		j := bytes.IndexByte(body[i:], '\\')
		if j < 0 {
			return false
		}
		i += j
		r, ok := esc(i)
		switch {
		case !ok:
			i++ // another escape: skip the escaped byte (a backslash, say)
		case !utf16.IsSurrogate(r):
			i += 5
		default:
			lo, ok := esc(i + 6)
			if !ok || utf16.DecodeRune(r, lo) == utf8.RuneError {
				return true
			}
			i += 11
		}
	}
	return false
}

// checkKeys refuses a key of body's object that is not exactly the name of
// one of v's fields, or that comes twice. encoding/json matches names in any
// case and keeps the last of a repeated one: {"cmd":"echo a","Cmd":"rm x"}
// ran rm x, where whatever else reads the body (a log, a proxy) sees echo a.
// body is one valid JSON object (decodeBody has decoded it).
func checkKeys(body []byte, v any) error {
	t := reflect.TypeOf(v)
	i := skipSpace(body, 0)
	if t.Kind() != reflect.Pointer || t.Elem().Kind() != reflect.Struct || body[i] != '{' {
		return nil // null, say: the caller finds its fields missing
	}
	known := fieldNames(t)
	var seen uint64 // bit n: known[n] was given (a struct has fewer than 64 fields)
	for i++; ; {    // i++: past '{'
		i = skipSpace(body, i)
		if body[i] == '}' {
			return nil
		}
		key, end := objectKey(body, i)
		n := 0
		for n < len(known) && string(key) != known[n] {
			n++
		}
		switch {
		case n == len(known):
			return fmt.Errorf("%w: unknown field %q (field names are lower case)", task.ErrInvalid, key)
		case n < 64 && seen&(1<<n) != 0:
			return fmt.Errorf("%w: field %q is given twice", task.ErrInvalid, key)
		}
		seen |= 1 << n
		v := skipSpace(body, skipSpace(body, end)+1) // past ':'
		if body[v] == '{' {
			// encoding/json keeps the last value of a repeated key of a
			// map too: {"gpu":"a100","gpu":"none"} would require gpu=none.
			if k, ok := repeatedKey(body, v); ok {
				return fmt.Errorf("%w: field %q has the key %q twice", task.ErrInvalid, key, k)
			}
		}
		i = skipValue(body, v)
		if i = skipSpace(body, i); body[i] == ',' {
			i++
		}
	}
}

// objectKey reads the key that starts at b[i], a quote, unescaped, and
// returns it with the index just past it.
func objectKey(b []byte, i int) (key []byte, end int) {
	end = skipString(b, i)
	key = b[i+1 : end-1]
	if bytes.IndexByte(key, '\\') >= 0 { // escaped: let encoding/json unquote it
		var k string
		_ = json.Unmarshal(b[i:end], &k) // decodeBody decoded it already
		key = []byte(k)
	}
	return key, end
}

// repeatedKey returns a key that the object starting at b[i] has twice.
func repeatedKey(b []byte, i int) (string, bool) {
	var keys []string
	for i++; ; { // i++: past '{'
		i = skipSpace(b, i)
		if b[i] == '}' {
			return "", false
		}
		key, end := objectKey(b, i)
		if slices.Contains(keys, string(key)) {
			return string(key), true
		}
		keys = append(keys, string(key))
		if i = skipSpace(b, skipValue(b, skipSpace(b, end)+1)); b[i] == ',' {
			i++
		}
	}
}

// fieldNames returns the JSON names of the fields of the struct t points
// to, worked out once per type.
func fieldNames(t reflect.Type) []string {
	if names, ok := fieldNameCache.Load(t); ok {
		return names.([]string)
	}
	var names []string
	for f := range t.Elem().Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("json"), ","); name != "" && name != "-" {
			names = append(names, name)
		}
	}
	fieldNameCache.Store(t, names)
	return names
}

var fieldNameCache sync.Map // reflect.Type -> []string

// The JSON scanners below walk a body known to be valid JSON; each returns
// the index just past what it skipped.

func skipSpace(b []byte, i int) int {
	for i < len(b) && (b[i] == ' ' || b[i] == '\t' || b[i] == '\n' || b[i] == '\r') {
		i++
	}
	return i
}

// skipString skips the string that starts at b[i], a quote.
func skipString(b []byte, i int) int {
	for i++; b[i] != '"'; i++ {
		if b[i] == '\\' {
			i++ // the escaped byte (the rest of a \uXXXX escape is no quote)
		}
	}
	return i + 1
}

// skipValue skips the value that starts at b[i].
func skipValue(b []byte, i int) int {
	i = skipSpace(b, i)
	depth := 0
	for ; i < len(b); i++ {
		switch b[i] {
		case '"':
			i = skipString(b, i) - 1
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of the object the value is in
			}
			depth--
		case ',':
			if depth == 0 {
				return i
			}
		}
		if depth == 0 && (b[i] == '"' || b[i] == '}' || b[i] == ']') {
			return i + 1
		}
	}
	return i
}

var errTooLarge = errors.New("too large")

// errTooManyStreams: as many GET /events streams are open as the master
// serves at once (Params.MaxEventStreams).
var errTooManyStreams = errors.New("too many event streams are open")

// retryAfterSeconds is the Retry-After of a 429 for a full queue or too
// many event streams, and of a 503 while the master is unavailable.
const retryAfterSeconds = 5

// fieldShapes describes the fields of POST /tasks that are no scalar.
var fieldShapes = map[string]string{
	"requires": `an object of string values, such as {"gpu": "nvidia"}`,
	"retry_on": `a list of strings, such as ["failed", "timed_out"]`,
}

// jsonKind names, for a client, the JSON type a Go kind is decoded from.
func jsonKind(goKind string) string {
	switch {
	case strings.HasPrefix(goKind, "int"), strings.HasPrefix(goKind, "uint"):
		return "whole number"
	case strings.HasPrefix(goKind, "float"):
		return "number"
	case goKind == "bool":
		return "boolean"
	}
	return "string"
}

func trimJSONPrefix(s string) string { return strings.TrimPrefix(s, "json: ") }

type errorBody struct {
	Error string `json:"error"`
}

// writeError maps an error to its status code, once for the whole API.
// Internal errors are logged here and shown to the client without detail.
func (a *api) writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, errUnauthenticated):
		code = http.StatusUnauthorized
	case errors.Is(err, task.ErrInvalid):
		code = http.StatusBadRequest
	case errors.Is(err, errTooLarge):
		code = http.StatusRequestEntityTooLarge
	case errors.Is(err, task.ErrNotFound):
		code = http.StatusNotFound
	case errors.Is(err, task.ErrConflict):
		code = http.StatusConflict
	case errors.Is(err, task.ErrClosed):
		code = http.StatusServiceUnavailable
	case errors.Is(err, task.ErrUnavailable):
		code = http.StatusServiceUnavailable
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	case errors.Is(err, errTooManyStreams):
		code = http.StatusTooManyRequests
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	case errors.Is(err, task.ErrFull):
		code = http.StatusTooManyRequests
		// Workers take tasks in seconds; a client that waits this long
		// usually finds room, and does not hammer a full master meanwhile.
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterSeconds))
	}
	msg := err.Error()
	if code == http.StatusInternalServerError {
		a.log.Error("request failed", "err", err)
		msg = "internal error"
	}
	writeJSON(w, code, errorBody{msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	noSniff(w.Header())
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")  // read by people with curl as much as by programs
	enc.SetEscapeHTML(false) // "<token>", not "\u003ctoken\u003e": this is no HTML page
	_ = enc.Encode(v)        // the client went away; nothing to do
}

// noSniff tells a browser to take an answer for the type it says it is. The
// API's answers echo what clients sent (a task's command and output, a Host
// header); a browser that sniffed one could take it for HTML or a script.
// It is on every 202, so it shares one value slice rather than make one
// per answer (Set would); net/http only reads it.
func noSniff(h http.Header) {
	h["X-Content-Type-Options"] = nosniff
}

var nosniff = []string{"nosniff"}
