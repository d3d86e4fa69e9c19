//go:build pprof

package main

// Built only with -tags pprof (make loadtest with --profile does): never
// part of the service's binary otherwise.

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"runtime/pprof"
	"sync"
)

// With IMPERSONATOR_DEV_PPROF set to a loopback address, a tiny listener
// there records CPU profiles on demand: POST /start begins one, POST /stop
// ends it and answers it (pprof's format). The load test records each
// scenario's timed phases, and nothing else, this way.
func init() {
	addr := os.Getenv("IMPERSONATOR_DEV_PPROF")
	if addr == "" {
		return
	}
	host, _, err := net.SplitHostPort(addr)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		panic("IMPERSONATOR_DEV_PPROF must be a loopback host:port, not " + addr)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	var mu sync.Mutex
	var buf *bytes.Buffer
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if buf != nil {
			http.Error(w, "a profile is being recorded", http.StatusConflict)
			return
		}
		b := &bytes.Buffer{}
		if err := pprof.StartCPUProfile(b); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		buf = b
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if buf == nil {
			http.Error(w, "no profile is being recorded", http.StatusConflict)
			return
		}
		pprof.StopCPUProfile()
		_, _ = w.Write(buf.Bytes())
		buf = nil
	})
	go func() { _ = http.Serve(ln, mux) }()
}
