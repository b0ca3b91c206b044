package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDashboardIsServed(t *testing.T) {
	o := newObserved(t)
	tests := []struct {
		path, wantType, wantBody string
	}{
		{"/", "text/html", `id="workers"`},
		{"/ui/app.js", "javascript", "Last-Event-ID"},
		{"/", "text/html", `id="waiting-list"`},
		{"/ui/app.js", "javascript", "api('/queue')"},
		{"/ui/style.css", "text/css", "#event-list"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			resp, err := http.Get(o.srv.URL + tt.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), tt.wantType) || !strings.Contains(string(b), tt.wantBody) {
				t.Fatalf("GET %s: %s %q, body has %q: %v", tt.path, resp.Status, resp.Header.Get("Content-Type"), tt.wantBody, strings.Contains(string(b), tt.wantBody))
			}
		})
	}
	if status, _, body := do(t, http.MethodGet, o.srv.URL+"/ui/nothing.js", ""); status != http.StatusNotFound {
		t.Errorf("GET /ui/nothing.js: %d %v, want 404", status, body)
	}
}

func TestIsPublic(t *testing.T) {
	tests := []struct {
		method, path string
		want         bool
	}{
		{"GET", "/", true},
		{"GET", "/ui/app.js", true},
		{"HEAD", "/ui/style.css", true},
		{"GET", "/healthz", true},
		{"GET", "/readyz", true},
		{"GET", "/events", false},
		{"GET", "/metrics", false},
		{"GET", "/workers", false},
		{"GET", "/queue", false},
		{"POST", "/tasks/x/retry", false},
		{"GET", "/tasks", false},
		{"POST", "/tasks", false},
		{"POST", "/", false},
		{"GET", "/uix", false},
	}
	for _, tt := range tests {
		if got := IsPublic(httptest.NewRequest(tt.method, tt.path, nil)); got != tt.want {
			t.Errorf("IsPublic(%s %s) = %v, want %v", tt.method, tt.path, got, tt.want)
		}
	}
}
