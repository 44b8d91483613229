package beacon

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"github.com/prometheus/client_golang/prometheus"
)

// Per-member proxy metrics: what Caddy saw of each pool member, counted by `transport beacon`
// (transport.go) on every attempt, retries included. Labelled like the module's other
// per-member series (pool, upstream: the member's address as registered, which is also
// caddy_reverse_proxy_upstreams_healthy's label), so one PromQL join lines them up. A member's
// series are removed when it leaves its pool (removed, expired), so deploys that churn
// addresses do not grow the exposition. In-flight requests are Caddy's own count, read at
// scrape time (report.go), so the request path pays nothing for them.
var (
	upstreamRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "upstream_requests_total",
		Help: "Attempts proxied to each pool member that got a response, by status class (1xx to 5xx); retries count on the member they went to.",
	}, []string{"pool", "upstream", "status_class"})
	upstreamLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "upstream_latency_seconds",
		Help: "Time from sending an attempt to a pool member to its response headers (Caddy's {http.reverse_proxy.upstream.latency}); the app's http_server_request_duration_seconds buckets, so the two line up.",
		// rust/beacon-core/src/buckets.rs, DEFAULT_BUCKETS.
		Buckets: []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 30},
	}, []string{"pool", "upstream"})
	upstreamFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "upstream_failures_total",
		Help: "Attempts to each pool member that failed, by kind: dial (no connection), timeout, closed (connection closed before the response headers), 5xx (a response with a 5xx status).",
	}, []string{"pool", "upstream", "kind"})
	upstreamRetried = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "upstream_retried_total",
		Help: "Attempts that failed on each pool member and were sent again to another member (lb_retries, lb_try_duration).",
	}, []string{"pool", "upstream"})
)

// The failure kinds counted in upstream_failures_total.
const (
	failedDial    = "dial"
	failedTimeout = "timeout"
	failedClosed  = "closed"
	failed5xx     = "5xx"
)

// memberStats holds one member's series, resolved once when the member joins so that the
// request path never hashes label values.
type memberStats struct {
	requests [5]prometheus.Counter // by status class, 1xx at 0
	latency  prometheus.Observer
	failures map[string]prometheus.Counter
	retried  prometheus.Counter

	// For outlier ejection (outlier.go): the member, its pool, its failures in a row.
	pool    *poolState
	address string
	streak  atomic.Int32

	// Its load reports (load_reports.go).
	reportState
	// Answered attempts and 5xx among them, for load-aware weights (load_weights.go), and
	// what the last measurement read (the lease ticker's alone, under the pool's lock).
	answeredCount, errorCount        atomic.Uint64
	measuredAt                       time.Time
	measuredAnswered, measuredErrors uint64
}

var statusClasses = [5]string{"1xx", "2xx", "3xx", "4xx", "5xx"}

func newMemberStats(p *poolState, address string) *memberStats {
	pool := p.name
	s := &memberStats{
		latency:  upstreamLatency.WithLabelValues(pool, address),
		failures: map[string]prometheus.Counter{},
		retried:  upstreamRetried.WithLabelValues(pool, address),
		pool:     p,
		address:  address,
	}
	s.reportState.init(pool)
	for i, class := range statusClasses {
		s.requests[i] = upstreamRequests.WithLabelValues(pool, address, class)
	}
	for _, kind := range []string{failedDial, failedTimeout, failedClosed, failed5xx} {
		s.failures[kind] = upstreamFailures.WithLabelValues(pool, address, kind)
	}
	return s
}

// removeMemberSeries drops every series of a member that left its pool.
func removeMemberSeries(pool, address string) {
	removeSeries(prometheus.Labels{"pool": pool, "upstream": address})
}

// removePoolMemberSeries drops the per-member series of a pool that is gone.
func removePoolMemberSeries(pool string) {
	removeSeries(prometheus.Labels{"pool": pool})
	loadReports.DeletePartialMatch(prometheus.Labels{"pool": pool})
}

func removeSeries(labels prometheus.Labels) {
	upstreamRequests.DeletePartialMatch(labels)
	upstreamLatency.DeletePartialMatch(labels)
	upstreamFailures.DeletePartialMatch(labels)
	upstreamRetried.DeletePartialMatch(labels)
	upstreamUtilization.DeletePartialMatch(labels)
}

// responded counts an attempt that got response headers after `seconds`.
func (s *memberStats) responded(status int, seconds float64) {
	class := status/100 - 1
	if class < 0 || class > 4 {
		class = 4 // a status outside 1xx-5xx is the member's fault
	}
	s.requests[class].Inc()
	s.latency.Observe(seconds)
	s.answeredCount.Add(1)
	if class == 4 {
		s.errorCount.Add(1)
		s.failures[failed5xx].Inc()
		s.failed()
	} else {
		s.answered()
	}
}

// statsByUpstream finds a member's stats from the Upstream object Caddy dialled (the transport
// gets it in the request's DialInfo). Read on every attempt, written when members join and leave.
var statsByUpstream sync.Map // *reverseproxy.Upstream -> *memberStats

func statsOf(upstream *reverseproxy.Upstream) *memberStats {
	if upstream == nil {
		return nil
	}
	s, ok := statsByUpstream.Load(upstream)
	if !ok {
		return nil
	}
	return s.(*memberStats)
}
