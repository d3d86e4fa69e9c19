package notify

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the notifications' collectors.
type Metrics struct {
	deliveries *prometheus.CounterVec
	dead       prometheus.Counter
	lag        prometheus.Gauge
}

// Delivery attempt results (the result label).
const (
	ResultSuccess = "success" // a 2xx answer
	ResultFailure = "failure" // any other answer, or none: retried, or dead-lettered after the last
)

// NewMetrics creates the collectors and registers them with reg (nil:
// not registered):
//
//   - impersonator_notify_deliveries_total{result="success"|"failure"}:
//     delivery attempts by outcome;
//   - impersonator_notify_dead_letters_total: deliveries that finally failed;
//   - impersonator_notify_lag_seconds: the age of the oldest event not yet
//     delivered everywhere (0 when none is owed).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "impersonator_notify_deliveries_total",
			Help: "Notification delivery attempts by result (success: a 2xx answer; failure: any other answer or none).",
		}, []string{"result"}),
		dead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "impersonator_notify_dead_letters_total",
			Help: "Notifications dead-lettered after the last retry failed.",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "impersonator_notify_lag_seconds",
			Help: "Age of the oldest audit event not yet delivered to every notification URL (0: none owed).",
		}),
	}
	for _, r := range []string{ResultSuccess, ResultFailure} {
		m.deliveries.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.deliveries, m.dead, m.lag)
	}
	return m
}

func (m *Metrics) delivered(ok bool) {
	if m == nil {
		return
	}
	r := ResultFailure
	if ok {
		r = ResultSuccess
	}
	m.deliveries.WithLabelValues(r).Inc()
}

func (m *Metrics) deadLetter() {
	if m != nil {
		m.dead.Inc()
	}
}

func (m *Metrics) setLag(seconds float64) {
	if m != nil {
		m.lag.Set(seconds)
	}
}
