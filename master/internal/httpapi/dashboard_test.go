package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
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
		{"/ui/overview.js", "javascript", "api('/queue')"},
		{"/ui/taskview.js", "javascript", "/output?follow=true"},
		{"/ui/tasks.js", "javascript", "next_cursor"},
		{"/ui/timeline.js", "javascript", "data-lane"},
		{"/ui/charts.js", "javascript", "getContext('2d')"},
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

// The page runs under Content-Security-Policy default-src 'self': every
// script it names must be served from /ui/, and it may hold no inline
// script, style or event handler, which the browser would refuse. Its
// form-action 'none' and base-uri 'none' hold too: it has no <base>, and
// its forms are read by its scripts, each submit handled by one (which
// cancels the browser's own submission), never sent by the browser.
func TestDashboardPageFitsItsCSP(t *testing.T) {
	o := newObserved(t)
	resp, err := http.Get(o.srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	csp := resp.Header.Get("Content-Security-Policy")
	directives := map[string]string{}
	for _, d := range strings.Split(csp, ";") {
		name, value, _ := strings.Cut(strings.TrimSpace(d), " ")
		directives[name] = value
	}
	for name, want := range map[string]string{
		"default-src":     "'self'",
		"frame-ancestors": "'none'", // no other site frames the page (clickjacking)
		"form-action":     "'none'", // no injected form sends what is typed in the page anywhere
		"base-uri":        "'none'", // no injected <base> moves where /ui/... scripts come from
	} {
		if got, ok := directives[name]; !ok || got != want {
			t.Errorf("Content-Security-Policy %q: %s %q, want %s", csp, name, got, want)
		}
	}
	for _, bad := range []*regexp.Regexp{
		regexp.MustCompile(`<script(\s[^>]*)?>[^<]`), // a script with a body
		regexp.MustCompile(`<script>`),
		regexp.MustCompile(`<style`),
		regexp.MustCompile(`\sstyle=`),
		regexp.MustCompile(`\son[a-z]+=`),
		regexp.MustCompile(`<base[\s>]`),
		regexp.MustCompile(`\s(action|formaction|method)=`),
	} {
		if m := bad.FindString(page); m != "" {
			t.Errorf("the page has %q, which its CSP blocks", m)
		}
	}
	srcs := regexp.MustCompile(`<script src="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(srcs) < 2 {
		t.Fatalf("the page names %d scripts, want its split scripts", len(srcs))
	}
	var scripts strings.Builder
	for _, m := range srcs {
		resp, err := http.Get(o.srv.URL + m[1])
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		scripts.Write(b)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Type"), "javascript") {
			t.Errorf("GET %s: %s %q, want 200 javascript", m[1], resp.Status, resp.Header.Get("Content-Type"))
		}
	}
	forms := regexp.MustCompile(`<form id="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(forms) == 0 || len(forms) != strings.Count(page, "<form") {
		t.Fatalf("the page has %d forms with an id of %d, want each named", len(forms), strings.Count(page, "<form"))
	}
	for _, m := range forms {
		if !strings.Contains(scripts.String(), "$('"+m[1]+"').addEventListener('submit'") {
			t.Errorf("form %q: no script handles its submit, which form-action 'none' then refuses", m[1])
		}
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

// Every path under /ui/ is an asset or a 404: /ui/index.html, a file that
// is embedded, must not send the browser on (http.FileServer's redirect of
// .../index.html to ./) to /ui/, which is no page.
func TestDashboardUIIndexIsNoRedirect(t *testing.T) {
	o := newObserved(t)
	cl := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := cl.Get(o.srv.URL + "/ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode == http.StatusMovedPermanently || resp.StatusCode == http.StatusFound {
		t.Fatalf("GET /ui/index.html: %s to %q; GET %s is not served", resp.Status, resp.Header.Get("Location"), "/ui/")
	}
}
