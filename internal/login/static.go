package login

import (
	_ "embed"
	"net/http"
	"net/url"
)

var (
	//go:embed static/start.html
	startHTML []byte
	//go:embed static/start.js
	startJS []byte
	//go:embed static/banner.js
	bannerJS []byte
)

// Start serves the redirect-delivery page. It works without inline script
// (the CSP allows only this service's own scripts), sends no referrer, is
// never cached, may not be framed, and may post its form only here (and
// follow the login's redirect to the app).
func (h *Handlers) Start(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; form-action 'self' "+origin(h.o.AppURL)+
		"; base-uri 'none'; frame-ancestors 'none'")
	_, _ = w.Write(startHTML)
}

// StartJS serves the start page's script.
func (h *Handlers) StartJS(w http.ResponseWriter, r *http.Request) {
	serveScript(w, startJS, "no-store")
}

// Banner serves the drop-in banner script for the customer app's pages.
func (h *Handlers) Banner(w http.ResponseWriter, r *http.Request) {
	serveScript(w, bannerJS, "public, max-age=300")
}

func serveScript(w http.ResponseWriter, body []byte, cache string) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", cache)
	w.Header().Set("Cross-Origin-Resource-Policy", "cross-origin")
	_, _ = w.Write(body)
}

// origin returns scheme://host[:port] of u.
func origin(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Scheme + "://" + p.Host
}

// AppOrigin is the customer app's origin: the banner there may read the
// session and end it (CORS with credentials).
func (h *Handlers) AppOrigin() string { return origin(h.o.AppURL) }
