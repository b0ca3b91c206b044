// Package httpapi is the master's REST API: gorilla/mux routes, JSON in and
// out, and the one table that maps task errors to HTTP status codes.
package httpapi

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/gorilla/mux"

	"github.com/roundhouse-lab/roundhouse/master/internal/dispatch"
	"github.com/roundhouse-lab/roundhouse/master/internal/task"
)

// Params are the API's dependencies and limits.
type Params struct {
	Dispatcher   *dispatch.Dispatcher
	Log          *slog.Logger
	MaxBodyBytes int64
	Ready        func() error // nil when the master can serve workers
}

type api struct {
	d       *dispatch.Dispatcher
	log     *slog.Logger
	maxBody int64
	ready   func() error
}

// New returns the router.
func New(p Params) http.Handler {
	a := &api{d: p.Dispatcher, log: p.Log.With("component", "httpapi"), maxBody: p.MaxBodyBytes, ready: p.Ready}
	r := mux.NewRouter()
	r.HandleFunc("/tasks", a.createTask).Methods(http.MethodPost)
	r.HandleFunc("/tasks/{id}", a.getTask).Methods(http.MethodGet)
	r.HandleFunc("/workers", a.listWorkers).Methods(http.MethodGet)
	r.HandleFunc("/healthz", a.healthz).Methods(http.MethodGet)
	r.HandleFunc("/readyz", a.readyz).Methods(http.MethodGet)
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusNotFound, errorBody{fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)})
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{fmt.Sprintf("method %s is not allowed on %s", r.Method, r.URL.Path)})
	})
	return r
}

type createRequest struct {
	Cmd *string `json:"cmd"`
}

func (a *api) createTask(w http.ResponseWriter, r *http.Request) {
	var req createRequest
	if err := a.decode(w, r, &req); err != nil {
		a.writeError(w, err)
		return
	}
	if req.Cmd == nil {
		a.writeError(w, fmt.Errorf(`%w: field "cmd" is required`, task.ErrInvalid))
		return
	}
	t, err := a.d.Submit(*req.Cmd)
	if err != nil {
		a.writeError(w, err)
		return
	}
	w.Header().Set("Location", "/tasks/"+t.ID)
	writeJSON(w, http.StatusAccepted, toTaskJSON(t))
}

func (a *api) getTask(w http.ResponseWriter, r *http.Request) {
	t, err := a.d.Get(mux.Vars(r)["id"])
	if err != nil {
		a.writeError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, toTaskJSON(t))
}

type workerJSON struct {
	ID          string    `json:"id"`
	Slots       int       `json:"slots"`
	ConnectedAt time.Time `json:"connected_at"`
	Running     int       `json:"running"`
	Completed   int       `json:"completed"`
}

type workersJSON struct {
	WorkerCount int          `json:"workerCount"` // the old clients read this name
	Workers     []workerJSON `json:"workers"`
}

func (a *api) listWorkers(w http.ResponseWriter, _ *http.Request) {
	ws := a.d.Workers()
	out := workersJSON{WorkerCount: len(ws), Workers: make([]workerJSON, 0, len(ws))}
	for _, x := range ws {
		out.Workers = append(out.Workers, workerJSON{ID: x.ID, Slots: x.Slots, ConnectedAt: x.ConnectedAt, Running: x.Running, Completed: x.Completed})
	}
	writeJSON(w, http.StatusOK, out)
}

func (a *api) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (a *api) readyz(w http.ResponseWriter, _ *http.Request) {
	if err := a.ready(); err != nil {
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "not ready", "error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// decode reads exactly one JSON object with only known fields from a body
// of bounded size. Errors wrap task.ErrInvalid, or errTooLarge.
func (a *api) decode(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, a.maxBody))
	dec.DisallowUnknownFields()
	err := dec.Decode(v)
	if err == nil {
		// Exactly one value: `{"cmd":"a"}{"cmd":"b"}` is a mistake, not two tasks.
		if err = dec.Decode(new(json.RawMessage)); err == io.EOF {
			return nil
		} else if err == nil {
			return fmt.Errorf("%w: unexpected data after the JSON object", task.ErrInvalid)
		}
	}
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return fmt.Errorf("%w: request body is larger than %d bytes", errTooLarge, a.maxBody)
	case errors.Is(err, io.EOF):
		return fmt.Errorf(`%w: request body is empty; send {"cmd": "..."}`, task.ErrInvalid)
	case errors.As(err, &syntaxErr), errors.Is(err, io.ErrUnexpectedEOF):
		return fmt.Errorf("%w: request body is not valid JSON", task.ErrInvalid)
	case errors.As(err, &typeErr):
		if typeErr.Field == "" {
			return fmt.Errorf("%w: request body must be a JSON object", task.ErrInvalid)
		}
		return fmt.Errorf("%w: field %q must be a %s", task.ErrInvalid, typeErr.Field, jsonKind(typeErr.Type.Kind().String()))
	default:
		// json reports an unknown field only as text: "json: unknown field \"x\"".
		return fmt.Errorf("%w: %s", task.ErrInvalid, trimJSONPrefix(err.Error()))
	}
}

var errTooLarge = errors.New("too large")

func jsonKind(goKind string) string {
	if goKind == "ptr" || goKind == "string" {
		return "string"
	}
	return goKind
}

func trimJSONPrefix(s string) string {
	const p = "json: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

type errorBody struct {
	Error string `json:"error"`
}

// writeError maps an error to its status code, once for the whole API.
// Internal errors are logged here and shown to the client without detail.
func (a *api) writeError(w http.ResponseWriter, err error) {
	code := http.StatusInternalServerError
	switch {
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
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ") // read by people with curl as much as by programs
	_ = enc.Encode(v)       // the client went away; nothing to do
}
