package client

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// APIError is an answer of the master with a status the call did not
// expect: a 401 for a wrong token, a 404 for an unknown task, a 400 for a
// bad request. Callers that must tell them apart use errors.As.
type APIError struct {
	Method string
	Path   string
	Code   int    // the HTTP status code
	Status string // e.g. "404 Not Found"
	// Message is the master's {"error": "..."} text, or the body as it
	// came when it is no such JSON.
	Message string
	Body    string // the body as it came, trimmed
}

// Error shows the body as it came, JSON and all, as the client always has.
func (e *APIError) Error() string {
	return fmt.Sprintf("%s %s: %s: %s", e.Method, e.Path, e.Status, e.Body)
}

// NoEndpoint reports whether the master has no such route at all (an older
// master), rather than no such task: its 404 says "no such endpoint".
func (e *APIError) NoEndpoint() bool {
	return e.Code == http.StatusNotFound && strings.HasPrefix(e.Message, "no such endpoint")
}

// StatusOf returns the HTTP status code of an *APIError in err's chain, or
// 0 when the master did not answer with one.
func StatusOf(err error) int {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.Code
	}
	return 0
}

func newAPIError(method, path string, resp *http.Response, body []byte) *APIError {
	e := &APIError{Method: method, Path: path, Code: resp.StatusCode, Status: resp.Status, Body: string(bytes.TrimSpace(body))}
	var msg struct {
		Error string `json:"error"`
	}
	if json.Unmarshal(body, &msg) == nil && msg.Error != "" {
		e.Message = msg.Error
	} else {
		e.Message = e.Body
	}
	return e
}
