package login

import (
	_ "embed"
	"net/http"

	"github.com/impersonator/impersonator/internal/session"
)

var (
	//go:embed static/start.html
	startHTML []byte
	//go:embed static/start.js
	startJS []byte
)

// Start serves the redirect-delivery page. It works without inline script
// (the CSP allows only this service's own scripts), sends no referrer, is
// never cached, may not be framed, and may post its form only here (and
// follow the login's redirect to the app).
func (h *Handler) Start(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Content-Type", "text/html; charset=utf-8")
	hd.Set("Cache-Control", "no-store")
	hd.Set("Referrer-Policy", "no-referrer")
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; form-action 'self' "+session.Origin(h.o.AppURL)+
		"; base-uri 'none'; frame-ancestors 'none'")
	_, _ = w.Write(startHTML)
}

// StartJS serves the start page's script.
func StartJS(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Cross-Origin-Resource-Policy", "cross-origin")
	_, _ = w.Write(startJS)
}
