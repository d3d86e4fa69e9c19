package session

import (
	_ "embed"
	"net/http"
)

//go:embed static/banner.js
var bannerJS []byte

// Banner serves the drop-in banner script for the customer app's pages.
func Banner(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/javascript; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	w.Header().Set("Cross-Origin-Resource-Policy", "cross-origin")
	_, _ = w.Write(bannerJS)
}
