// Package dashboard is the master's live web page: static HTML, CSS and
// JavaScript embedded in the binary, so the lab works offline. The page
// holds no data; it reads GET /workers, GET /events and the task endpoints
// with the API token the user types in, if the master has one.
package dashboard

import (
	"embed"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

//go:embed web
var files embed.FS

// Handler serves the page at / and its assets under /ui/, and hands any
// other path (a missing asset, a directory) to notFound.
func Handler(notFound http.Handler) http.Handler {
	web, _ := fs.Sub(files, "web") // the directory is embedded: cannot fail
	assets := http.StripPrefix("/ui/", http.FileServerFS(web))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The page must not be framed by another site, and runs only its own
		// scripts. Its forms are read by those scripts and never sent by the
		// browser, and it has no <base>: form-action and base-uri 'none' keep
		// markup injected into it from sending what is typed (the token) away
		// or from moving where its /ui/ scripts are loaded from.
		w.Header().Set("X-Frame-Options", "DENY")
		w.Header().Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; form-action 'none'; base-uri 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		if r.URL.Path == "/" {
			w.Header().Set("Cache-Control", "no-cache")
			http.ServeFileFS(w, r, web, "index.html")
			return
		}
		name := strings.TrimPrefix(r.URL.Path, "/ui/")
		// The page is served at / only: http.FileServer would answer
		// /ui/index.html with a redirect to /ui/, which is no page.
		if st, err := fs.Stat(web, name); err != nil || st.IsDir() || path.Base(name) == "index.html" {
			notFound.ServeHTTP(w, r)
			return
		}
		assets.ServeHTTP(w, r)
	})
}
