package httpapi

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// A JSON escape of a lone UTF-16 surrogate (\ud800) is no character:
// encoding/json quietly decodes it as U+FFFD, so the task would run a
// command other than the one sent, which decodeBody refuses for raw invalid
// UTF-8 for exactly that reason. It must be refused with a 400 too, and
// nothing queued.
func TestLoneSurrogateEscapeIsRefused(t *testing.T) {
	srv, d := newServer(t, nil)
	for _, body := range []string{
		`{"cmd":"echo \ud800"}`,
		`{"cmd":"echo \udc00x"}`,
		`{"cmd":"echo \ud83d\u0041"}`, // a high surrogate, then no low one
		`{"cmd":"true","requires":{"gpu":"\udfff"}}`,
	} {
		code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", body)
		if code != http.StatusBadRequest {
			t.Errorf("POST %s = %d, cmd %q; want 400", body, code, m["cmd"])
		}
	}
	if n := queued(t, d); n != 0 {
		t.Errorf("%d tasks queued by refused requests, want 0", n)
	}
	// A surrogate pair is one character, and fine.
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", `{"cmd":"echo \ud83d\ude00"}`); code != http.StatusAccepted || m["cmd"] != "echo \U0001F600" {
		t.Errorf("surrogate pair = %d %v, want 202 with echo 😀", code, m)
	}
}

// encoding/json matches field names in any case and keeps the last of a
// repeated key: {"cmd":"echo safe","cmd":"rm -rf ~"} ran rm -rf ~, while a
// log or a proxy reading the body sees echo safe. Each is a 400 naming the
// field, and nothing is queued; escaped names and nested objects are read
// as they are.
func TestFieldNamesAreExactAndOnce(t *testing.T) {
	srv, d := newServer(t, nil)
	for _, tc := range []struct{ body, want string }{
		{`{"CMD":"echo upper"}`, `unknown field "CMD"`},
		{`{"cmd":"echo safe","Cmd":"rm -rf ~"}`, `unknown field "Cmd"`},
		{`{"cmd":"echo safe","cmd":"rm -rf ~"}`, `field "cmd" is given twice`},
		{` { "cmd" : "true" , "Max_Attempts" : 1 } `, `unknown field "Max_Attempts"`},
		{`{"cmd":"true","requires":{"a":"b","a":"c"},"requires":{}}`, `field "requires" has the key "a" twice`},
		{`{"cmd":"true","requires":{"a":"b","c":"d"},"requires":{}}`, `field "requires" is given twice`},
		{`{"\u0063md":"true","cmd":"x"}`, `field "cmd" is given twice`},
	} {
		code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", tc.body)
		if msg, _ := m["error"].(string); code != http.StatusBadRequest || !strings.Contains(msg, tc.want) {
			t.Errorf("POST %s = %d %v; want 400 saying %s", tc.body, code, m, tc.want)
		}
	}
	if n := queued(t, d); n != 0 {
		t.Errorf("%d tasks queued by refused requests, want 0", n)
	}
	for _, ok := range []string{
		`{"cmd":"echo \"}\" , {","requires":{"CMD":"x","k":"v"},"priority":null}`,
		"{\"cmd\":\"true\",\n\t\"retry_on\":[\"failed\"],\"backoff\":\"1s\"}",
		`{"\u0063md":"true"}`,
	} {
		if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", ok); code != http.StatusAccepted {
			t.Errorf("POST %s = %d %v, want 202", ok, code, m)
		}
	}
}

// checkKeys walks a valid JSON object by hand; it must agree with
// encoding/json's own reading of the keys, whatever the values hold.
func FuzzCheckKeys(f *testing.F) {
	for _, s := range []string{
		`{"cmd":"a"}`, `{"cmd":"a","cmd":"b"}`, `{"CMD":1}`, ` {"requires":{"a":"}"},"cmd":"\"{["} `,
		`{"retry_on":[["]"],{"x":[1,2,{}]}],"cmd":null}`, `{"\u0063md":true}`, `{}`, `null`, `{"a\\":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"requires":{"a":1,"b":{"a":1,"a":2},"\u0061":[]},"cmd":"x"}`))
	known := fieldNames(reflect.TypeFor[*createRequest]())
	f.Fuzz(func(t *testing.T, body []byte) {
		if !json.Valid(body) {
			return // decodeBody calls checkKeys only on a decoded body
		}
		want := ""
		dec := json.NewDecoder(bytes.NewReader(body))
		if tok, _ := dec.Token(); tok == json.Delim('{') {
			var seen []string
			for dec.More() {
				tok, _ := dec.Token()
				key := tok.(string)
				var v json.RawMessage
				if err := dec.Decode(&v); err != nil {
					t.Fatal(err)
				}
				switch {
				case want != "":
				case !slices.Contains(known, key):
					want = "unknown"
				case slices.Contains(seen, key):
					want = "twice"
				case hasRepeatedKey(v):
					want = "key twice"
				}
				seen = append(seen, key)
			}
		}
		err := checkKeys(body, new(createRequest))
		switch got := fmt.Sprint(err); {
		case want == "" && err != nil, want == "unknown" && !strings.Contains(got, "unknown field"),
			want == "twice" && !strings.Contains(got, "given twice"), want == "key twice" && !strings.Contains(got, "twice"):
			t.Fatalf("checkKeys(%s) = %v, want %s", body, err, cmp.Or(want, "nil"))
		}
	})
}

// hasRepeatedKey reports whether v, valid JSON, is an object with a key
// given twice, as encoding/json reads keys.
func hasRepeatedKey(v json.RawMessage) bool {
	dec := json.NewDecoder(bytes.NewReader(v))
	if tok, _ := dec.Token(); tok != json.Delim('{') {
		return false
	}
	var keys []string
	for dec.More() {
		tok, _ := dec.Token()
		if slices.Contains(keys, tok.(string)) {
			return true
		}
		keys = append(keys, tok.(string))
		if err := dec.Decode(new(json.RawMessage)); err != nil {
			return false
		}
	}
	return false
}

// A label key given twice in requires was taken as the last of its values:
// {"gpu":"a100","gpu":"none"} queued a task that runs only where gpu=none,
// while a log or a proxy reading the body may see gpu=a100, and
// WORKER_LABELS refuses a key given twice (labels.Parse). A 400 naming the
// key, and nothing queued; escaped keys are read as they are.
func TestRequiresKeyGivenTwiceIsRefused(t *testing.T) {
	srv, d := newServer(t, nil)
	for _, body := range []string{
		`{"cmd":"true","requires":{"gpu":"a100","gpu":"none"}}`,
		`{"cmd":"true","requires":{"gpu":"a100","zone":"eu","gpu":"a100"}}`,
		`{"cmd":"true","requires":{"gpu":"a100", "g\u0070u" :"none"}}`,
	} {
		code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", body)
		if msg, _ := m["error"].(string); code != http.StatusBadRequest || !strings.Contains(msg, `key "gpu" twice`) {
			t.Errorf("POST %s = %d %v; want 400 saying the key \"gpu\" is given twice", body, code, m)
		}
	}
	if n := queued(t, d); n != 0 {
		t.Errorf("%d tasks queued by refused requests, want 0", n)
	}
	// Keys differ in case, and so are two labels.
	body := `{"cmd":"true","requires":{"gpu":"a","GPU":"b"}}`
	if code, _, m := do(t, http.MethodPost, srv.URL+"/tasks", body); code != http.StatusAccepted || len(m["requires"].(map[string]any)) != 2 {
		t.Errorf("POST %s = %d %v, want 202 with both labels", body, code, m)
	}
}

// decode reads a body of known length into a buffer of that length: one
// that ends early is refused as the bodies it reads to EOF are, and
// decodes to nothing.
func TestBodyShorterThanItsLengthIsRefused(t *testing.T) {
	a := &api{maxBody: 256}
	r := httptest.NewRequest(http.MethodPost, "/tasks", strings.NewReader(`{"cmd":"true"}`))
	r.ContentLength = 100 // the client said 100 bytes and sent 14
	var req createRequest
	err := a.decode(httptest.NewRecorder(), r, &req)
	if !errors.Is(err, task.ErrInvalid) || !strings.Contains(err.Error(), "reading the request body: unexpected EOF") {
		t.Fatalf("decode = %v, want ErrInvalid for a body cut short", err)
	}
	if req.Cmd != nil {
		t.Fatalf("decoded cmd %q from a body cut short", *req.Cmd)
	}
}

// decodeBody's one pass accepts exactly the bodies decodeStrict accepts,
// with the same value, and refuses the others with decodeStrict's message.
func FuzzDecodeBodyOnePass(f *testing.F) {
	for _, seed := range []string{
		`{"cmd":"true"}`, ` {"cmd":"x","priority":2} `, `{"cmd":"x"}{"cmd":"y"}`, `{"cmd":"x"} x`,
		`{"cmd":"a","Cmd":"b"}`, `{"cmd":"a","cmd":"b"}`, `{"CMD":"x"}`, `{"cmd":"x","nope":1}`,
		`{"cmd":1}`, `{"cmd":"x","requires":{"gpu":"a","gpu":"b"}}`, `{"cmd":"x","requires":{"gpu":1}}`,
		`{"cmd":"x","retry_on":["failed"],"max_attempts":3}`, `null`, `[]`, `""`, `{}`, ``, `{"cmd":"\u00e9"}`,
		`{"c\u006dd":"x"}`, `{"cmd":"x",}`, `{"timeout":"1s","cmd":null}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !utf8.Valid(body) || hasLoneSurrogate(body) {
			return // refused by decodeBody before either
		}
		var onePass, strict createRequest
		errOne, errStrict := decodeBody(body, &onePass), decodeStrict(body, &strict)
		if fmt.Sprint(errOne) != fmt.Sprint(errStrict) {
			t.Fatalf("%q: decodeBody = %v, decodeStrict = %v", body, errOne, errStrict)
		}
		if errOne == nil && !reflect.DeepEqual(onePass, strict) {
			t.Fatalf("%q: decodeBody = %+v, decodeStrict = %+v", body, onePass, strict)
		}
	})
}
