package app

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// checkRedis tells at start what an operator must know about the connected
// Redis: whether it answers, persists, replicates and keeps what it is given.
func (a *App) checkRedis(ctx context.Context) {
	log, st := a.log, a.store
	pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	if err := st.Ping(pctx); err != nil {
		log.Error("redis does not answer yet; /readyz reports 503 and every mint and login fails closed until it does", "error", err)
		return
	}
	if p := st.Persistence(pctx); p.Known && !p.Durable() {
		log.Warn("the connected Redis persists nothing to disk (appendonly no, no save points): a Redis restart loses the audit log; enable AOF (appendonly yes, appendfsync everysec)")
	}
	switch st.Replication(pctx) {
	case "none":
		log.Warn("the Redis primary has no replica: state changes are not waited on (IMPERSONATOR_REDIS_REPLICA_ACK applies once it has one); a lost primary loses what it did not persist")
	case "wait":
		log.Info("every state change waits for one replica's acknowledgement", "timeout", a.cfg.ReplicaAck)
	}
	a.checkEviction(pctx, "")
}

// watchEviction reads Redis's maxmemory-policy every EvictionPoll (it was
// read at start): an operator may change it, a failover may land on a
// primary configured otherwise.
func (a *App) watchEviction(ctx context.Context) {
	t := time.NewTicker(a.opts.EvictionPoll)
	defer t.Stop()
	last := a.ready.Problem()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			pctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			last = a.checkEviction(pctx, last)
			cancel()
		}
	}
}

// checkEviction reads the maxmemory-policy and makes /readyz 503 unless it
// is noeviction (or the operator accepted the risk). Redis under an
// evicting policy deletes keys under memory pressure: approval
// reservations, rate counters, consents, grants and sessions, so a
// replayed approval or a bypassed rate limit follows. It logs only
// changes (last is what it found the time before) and returns the problem.
func (a *App) checkEviction(ctx context.Context, last string) string {
	policy, err := a.store.MaxmemoryPolicy(ctx)
	if err != nil {
		// Managed services may refuse both INFO and CONFIG: say so once,
		// and do not hold readiness on what cannot be known.
		if last != "unknown" {
			a.log.Warn("cannot read the Redis maxmemory-policy; make sure it is noeviction, or keys such as approvals, rate counters and sessions may be evicted under memory pressure", "error", err)
		}
		a.ready.SetProblem("")
		return "unknown"
	}
	a.eviction.Reset()
	a.eviction.WithLabelValues(policy).Set(b2f(policy != "noeviction"))
	problem := ""
	if policy != "noeviction" {
		problem = fmt.Sprintf("redis maxmemory-policy is %s, not noeviction: under memory pressure Redis deletes keys (approvals, rate counters, consents, sessions)", policy)
	}
	switch {
	case problem == "":
		if last != "" && last != "unknown" {
			a.log.Info("redis maxmemory-policy is noeviction again: ready", "policy", policy)
		}
		a.ready.SetProblem("")
	case a.cfg.AllowEviction:
		if last != problem {
			a.log.Warn(problem+"; serving anyway because IMPERSONATOR_REDIS_ALLOW_EVICTION=true", "policy", policy)
		}
		a.ready.SetProblem("")
	default:
		if last != problem {
			a.log.Error(problem+"; /readyz answers 503 until it is (CONFIG SET maxmemory-policy noeviction), or set IMPERSONATOR_REDIS_ALLOW_EVICTION=true to accept the risk", "policy", policy)
		}
		a.ready.SetProblem(problem)
	}
	return problem
}

// registerMetrics adds the App's own metrics: the build and the store's
// eviction policy.
func (a *App) registerMetrics() {
	build := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "impersonator_build_info", Help: "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": a.opts.Version, "commit": a.opts.Commit},
	})
	build.Set(1)
	a.eviction = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "impersonator_redis_evicting",
		Help: "1 when Redis's maxmemory-policy (the label) may evict keys; /readyz then answers 503 unless IMPERSONATOR_REDIS_ALLOW_EVICTION=true. 0 under noeviction.",
	}, []string{"policy"})
	a.metrics.Registry.MustRegister(build, a.eviction)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
