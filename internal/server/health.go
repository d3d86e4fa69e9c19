package server

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/impersonator/impersonator/internal/httpx"
	"github.com/impersonator/impersonator/internal/token"
)

func handleHealthz() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	}
}

type pinger interface {
	Ping(ctx context.Context) error
}

// readyTimeout bounds /readyz: a load balancer's probe gets its answer
// within it even when Redis accepts connections and never answers.
const readyTimeout = time.Second

// Readiness is what /readyz reports beyond Redis answering: an instance
// that is draining (SIGTERM) and a store that can forget (an evicting
// maxmemory-policy) are not ready. The zero value is ready.
type Readiness struct {
	draining atomic.Bool
	problem  atomic.Pointer[string]
	probe    probe
}

// Drain makes /readyz answer 503 from now on; the other routes are served
// as before.
func (r *Readiness) Drain() { r.draining.Store(true) }

// Draining reports whether Drain was called.
func (r *Readiness) Draining() bool { return r.draining.Load() }

// SetProblem makes /readyz answer 503 with why; "" clears it.
func (r *Readiness) SetProblem(why string) {
	if why == "" {
		r.problem.Store(nil)
		return
	}
	r.problem.Store(&why)
}

// Problem returns what SetProblem set last.
func (r *Readiness) Problem() string {
	if p := r.problem.Load(); p != nil {
		return *p
	}
	return ""
}

// probe runs one Redis ping at a time for every /readyz request: a hung
// Redis costs one goroutine, whatever the probes' rate.
type probe struct {
	mu     sync.Mutex
	flight *flight
}

type flight struct {
	done chan struct{}
	err  error
}

var errReadyTimeout = errors.New("redis did not answer within " + readyTimeout.String())

func (p *probe) ping(ctx context.Context, pg pinger) error {
	p.mu.Lock()
	f := p.flight
	if f == nil {
		f = &flight{done: make(chan struct{})}
		p.flight = f
		go func() {
			pctx, cancel := context.WithTimeout(context.Background(), redisTimeout)
			f.err = pg.Ping(pctx)
			cancel()
			p.mu.Lock()
			p.flight = nil
			p.mu.Unlock()
			close(f.done)
		}()
	}
	p.mu.Unlock()
	t := time.NewTimer(readyTimeout)
	defer t.Stop()
	select {
	case <-f.done:
		return f.err
	case <-t.C:
		return errReadyTimeout
	case <-ctx.Done():
		return ctx.Err()
	}
}

// handleReadyz answers 200 only while Redis answers (without it the service
// refuses every mint and login), the instance is not draining and the store
// keeps what it is given.
func handleReadyz(p pinger, ready *Readiness) httpx.HandlerFunc {
	if ready == nil {
		ready = &Readiness{}
	}
	return func(w http.ResponseWriter, r *http.Request) error {
		if ready.Draining() {
			return &httpx.Error{Status: http.StatusServiceUnavailable, Message: "shutting down"}
		}
		if why := ready.Problem(); why != "" {
			return &httpx.Error{Status: http.StatusServiceUnavailable, Message: why}
		}
		if err := ready.probe.ping(r.Context(), p); err != nil {
			return &httpx.Error{Status: http.StatusServiceUnavailable, Message: "redis unavailable", Cause: err}
		}
		httpx.WriteJSON(w, http.StatusOK, map[string]string{"status": "ok"})
		return nil
	}
}

func handleJWKS(keys *token.Keyset) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		w.Header().Set("Access-Control-Allow-Origin", "*")
		if r.Method == http.MethodHead { // the same headers as GET, no body
			return
		}
		_, _ = w.Write(keys.JWKS())
	}
}
