package beacon

import (
	"encoding/json"
	"errors"

	"github.com/caddyserver/caddy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
)

// Counters live at package level (like the pools) so they keep counting across reloads; each
// config load's metrics registry gets them registered again.
var (
	transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "health_transitions_total",
		Help: "Upstreams the beacon module's active checks moved between healthy and unhealthy.",
	}, []string{"pool", "to"})
	lifecycle = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "upstream_events_total",
		Help: "Registrations, drains, removals and lease expiries, per pool.",
	}, []string{"pool", "event"})
	refusals = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "registrations_refused_total",
		Help: "Registrations the pool's admission policy refused (an address outside allow, link-local or metadata, a Unix socket, Caddy's admin API).",
	}, []string{"pool"})
	weightDesc     = prometheus.NewDesc("caddy_beacon_upstream_weight", "The weight each pool member was given (0: standby).", []string{"pool", "upstream"}, nil)
	effectiveDesc  = prometheus.NewDesc("caddy_beacon_upstream_effective_weight", "The weight each pool member gets now: its weight, less while slow start ramps it up, 0 when not offered.", []string{"pool", "upstream"}, nil)
	upstreamsDesc  = prometheus.NewDesc("caddy_beacon_upstreams", "Upstreams in each pool, by state (healthy, unhealthy, draining).", []string{"pool", "state"}, nil)
	loadFactorDesc = prometheus.NewDesc("caddy_beacon_upstream_load_factor", "The factor load-aware weights put on each pool member's weight (1: the pool's mean), while its load reports count.", []string{"pool", "upstream"}, nil)
	inFlightDesc   = prometheus.NewDesc("caddy_beacon_upstream_in_flight", "Requests Caddy has in flight to each pool member (its own count, as least_conn and `GET /beacon/pools` see it).", []string{"pool", "upstream"}, nil)
	healthyDesc    = prometheus.NewDesc("caddy_beacon_upstream_healthy", "1 while the module's active checks find the pool member healthy, else 0 (like caddy_reverse_proxy_upstreams_healthy).", []string{"pool", "upstream"}, nil)
)

// poolCollector reads the pools' sizes from the registry at scrape time.
type poolCollector struct{}

func (poolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- upstreamsDesc
	ch <- healthyDesc
	ch <- weightDesc
	ch <- effectiveDesc
	ch <- inFlightDesc
	ch <- loadFactorDesc
}

func (poolCollector) Collect(ch chan<- prometheus.Metric) {
	described, err := describePools()
	if err != nil {
		return
	}
	for name, p := range described.Pools {
		counts := map[string]int{"healthy": 0, "unhealthy": 0, "draining": 0}
		for _, u := range p.Upstreams {
			healthy := 0.0
			if u.Healthy {
				healthy = 1
			}
			ch <- prometheus.MustNewConstMetric(healthyDesc, prometheus.GaugeValue, healthy, name, u.Address)
			ch <- prometheus.MustNewConstMetric(weightDesc, prometheus.GaugeValue, float64(u.Weight), name, u.Address)
			ch <- prometheus.MustNewConstMetric(effectiveDesc, prometheus.GaugeValue, float64(u.EffectiveWeight), name, u.Address)
			ch <- prometheus.MustNewConstMetric(inFlightDesc, prometheus.GaugeValue, float64(u.InFlight), name, u.Address)
			if u.LoadFactor != nil {
				ch <- prometheus.MustNewConstMetric(loadFactorDesc, prometheus.GaugeValue, *u.LoadFactor, name, u.Address)
			}
			switch {
			case u.Draining:
				counts["draining"]++
			case u.Healthy:
				counts["healthy"]++
			default:
				counts["unhealthy"]++
			}
		}
		for state, n := range counts {
			ch <- prometheus.MustNewConstMetric(upstreamsDesc, prometheus.GaugeValue, float64(n), name, state)
		}
	}
}

// registerMetrics adds the module's metrics to a config load's registry.
func registerMetrics(registry *prometheus.Registry) {
	if registry == nil {
		return
	}
	for _, collector := range []prometheus.Collector{transitions, lifecycle, refusals, poolCollector{}, upstreamRequests, upstreamLatency, upstreamFailures, upstreamRetried, upstreamUtilization, loadReports} {
		var already prometheus.AlreadyRegisteredError
		if err := registry.Register(collector); err != nil && !errors.As(err, &already) {
			caddy.Log().Named("beacon").Warn("registering metrics", zap.Error(err))
		}
	}
}

// report turns a registry event into a log line, metrics, and (for health changes) a Caddy
// event named like the reverse proxy's own: `healthy` / `unhealthy` with `{"host": address}`.
func report(e event) {
	logger := caddy.Log().Named("beacon")
	state := existingPool(e.Pool)
	switch e.Name {
	case "healthy", "unhealthy":
		transitions.WithLabelValues(e.Pool, e.Name).Inc()
		logger.Info("upstream is "+e.Name, zap.String("pool", e.Pool), zap.String("upstream", e.Address), zap.String("reason", e.Reason))
		if state != nil {
			if m := state.newest(); m != nil && m.events != nil {
				m.events.Emit(m.ctx, e.Name, map[string]any{"host": e.Address, "pool": e.Pool})
			}
		}
	case "ejection_capped":
		// Counted, not logged: a failing member the pool may not lose is reported again at
		// every run of failures.
		lifecycle.WithLabelValues(e.Pool, e.Name).Inc()
	case "refused":
		// An endpoint a source lists that the pool refuses, said once while listed.
		refusals.WithLabelValues(e.Pool).Inc()
		logger.Warn("endpoint refused", zap.String("pool", e.Pool), zap.String("endpoint", e.Address), zap.String("reason", e.Reason))
	default:
		lifecycle.WithLabelValues(e.Pool, e.Name).Inc()
		fields := []zap.Field{zap.String("pool", e.Pool), zap.String("upstream", e.Address)}
		if e.Reason != "" {
			fields = append(fields, zap.String("reason", e.Reason))
		}
		logger.Info("upstream "+e.Name, fields...)
		if (e.Name == "removed" || e.Name == "expired") && state != nil {
			state.forget(e.Address)
		}
	}
}

// gone tells whether a release's reply says the pool is gone (no running config declares it).
func gone(out *reply) bool {
	var released struct {
		Gone bool `json:"gone"`
	}
	return json.Unmarshal(out.Data, &released) == nil && released.Gone
}

// forgetSeries drops the counters of a pool that is gone, so that pools coming and going with
// configs do not grow the exposition.
func forgetSeries(pool string) {
	for _, counter := range []*prometheus.CounterVec{transitions, lifecycle, refusals} {
		counter.DeletePartialMatch(prometheus.Labels{"pool": pool})
	}
}

// described is the registry's view of every pool (the `pools` command).
type described struct {
	Pools map[string]*describedPool `json:"pools"`
}

// describedPool is one pool in `GET /beacon/pools`.
type describedPool struct {
	HealthPasses int              `json:"health_passes"`
	HealthFails  int              `json:"health_fails"`
	SlowStartMs  int64            `json:"slow_start_ms"`
	Outlier      *outlierSettings `json:"outlier"`
	LoadReports  *loadSettings    `json:"load_reports"`
	Allow        []string         `json:"allow"`
	Upstreams    []upstreamStatus `json:"upstreams"`
	// The pool's Kubernetes source, when it has one.
	Kubernetes *kubernetesStatus `json:"kubernetes,omitempty"`
}

// upstreamStatus is one upstream as `GET /beacon/pools` shows it.
type upstreamStatus struct {
	Address string `json:"address"`
	// What Caddy dials: the address admitted (for a name, what it resolved to).
	Dial             string   `json:"dial"`
	Resolved         []string `json:"resolved,omitempty"`
	Healthy          bool     `json:"healthy"`
	Draining         bool     `json:"draining"`
	InFlight         int      `json:"in_flight"`
	LeaseMs          int64    `json:"lease_ms"`
	LeaseExpiresInMs int64    `json:"lease_expires_in_ms"`
	LeaseExpiresMs   int64    `json:"lease_expires_ms"`
	RegisteredMs     int64    `json:"registered_ms"`
	Passes           int      `json:"passes"`
	Fails            int      `json:"fails"`
	LastError        *string  `json:"last_error"`
	LastProbeMs      *int64   `json:"last_probe_ms"`
	Weight           int      `json:"weight"`
	EffectiveWeight  int      `json:"effective_weight"`
	SlowStartUntilMs *int64   `json:"slow_start_until_ms"`
	// Outlier ejection: out of the offer until then, and its ejections in a row.
	EjectedUntilMs *int64 `json:"ejected_until_ms"`
	Ejections      int    `json:"ejections"`
	// Load-aware weights: the factor on its weight (null: none, its own weight counts).
	LoadFactor *float64 `json:"load_factor"`
}

func describePools() (*described, error) {
	out, err := apply(poolsCommand{NowMs: nowMillis()})
	if err != nil {
		return nil, err
	}
	var view described
	if err := json.Unmarshal(out.Data, &view); err != nil {
		return nil, err
	}
	for name, p := range view.Pools {
		p.Kubernetes = kubernetesStatusOf(name)
		state := existingPool(name)
		for i := range p.Upstreams {
			if state != nil {
				p.Upstreams[i].InFlight = state.inFlight(p.Upstreams[i].Address)
			}
		}
	}
	return &view, nil
}
