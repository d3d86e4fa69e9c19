package server

import (
	_ "embed"
	"net/http"
)

// openAPI is the OpenAPI 3.1 document of every route (openapi.yaml beside
// this file), held to the routes, the golden answers and live answers by
// TestOpenAPI*.
//
//go:embed openapi.yaml
var openAPI []byte

// handleOpenAPI serves the document as shipped.
func handleOpenAPI() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/yaml")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(openAPI)
	}
}
