package beacon

import (
	"math"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Load reports (ORCA's TEXT form, Envoy's `endpoint-load-metrics`): `transport beacon` asks a
// member for one on at most one request per reportInterval (the request header
// `endpoint-load-metrics-format: TEXT`; caddy_beacon's middleware answers it, see
// rust/beacon-core/src/load_report.rs) and reads the answer's `endpoint-load-metrics` header,
// which never reaches the client. A report is read defensively: it comes from the member, so a
// value that is not a number, negative, NaN or out of range is clamped and counted, never
// trusted as it is.

const (
	loadAskHeader    = "Endpoint-Load-Metrics-Format"
	loadReportHeader = "Endpoint-Load-Metrics"
	// How often a member is asked: the period of gRPC's weighted round robin's weight updates.
	reportInterval = time.Second
	// The longest report read; anything longer is refused whole.
	maxReportBytes = 4096
)

var (
	upstreamUtilization = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "upstream_reported_utilization",
		Help: "The utilization each pool member last reported (its application_utilization, or cpu_utilization when it gives none), 0 to 1.",
	}, []string{"pool", "upstream"})
	loadReports = prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "caddy", Subsystem: "beacon", Name: "load_reports_total",
		Help: "Load reports read from pool members, by result: ok, clamped (a value out of range, negative or not a number, clamped), malformed (not the TEXT form: ignored).",
	}, []string{"pool", "result"})
)

// loadReport is what a member said of its load.
type loadReport struct {
	at          time.Time
	utilization float64 // application_utilization, else cpu_utilization; 0 to 1
	rps, eps    float64
	named       map[string]float64
}

// parseLoadReport reads ORCA's TEXT form: `TEXT key=value, key=value, ...`. clamped tells
// whether a value had to be brought into range.
func parseLoadReport(text string) (report loadReport, clamped bool, ok bool) {
	if len(text) > maxReportBytes {
		return report, false, false
	}
	body, found := strings.CutPrefix(strings.TrimSpace(text), "TEXT ")
	if !found {
		return report, false, false
	}
	cpu, application := -1.0, -1.0
	for _, pair := range strings.Split(body, ",") {
		key, raw, found := strings.Cut(strings.TrimSpace(pair), "=")
		if !found || key == "" {
			return loadReport{}, false, false
		}
		value, err := strconv.ParseFloat(strings.TrimSpace(raw), 64)
		if err != nil || math.IsNaN(value) {
			value, clamped = 0, true
		}
		bound := func(low, high float64) float64 {
			if value < low || value > high {
				clamped = true
				return math.Max(low, math.Min(high, value))
			}
			return value
		}
		switch {
		case key == "cpu_utilization":
			cpu = bound(0, 1)
		case key == "application_utilization":
			application = bound(0, 1)
		case key == "rps_fractional":
			report.rps = bound(0, 1e9)
		case key == "eps":
			report.eps = bound(0, 1e9)
		case strings.HasPrefix(key, "named_metrics."):
			if report.named == nil {
				report.named = map[string]float64{}
			}
			if len(report.named) < 16 {
				report.named[strings.TrimPrefix(key, "named_metrics.")] = bound(-1e12, 1e12)
			}
		}
	}
	switch {
	case application >= 0:
		report.utilization = application
	case cpu >= 0:
		report.utilization = cpu
	}
	return report, clamped, true
}

// dueForReport tells whether this attempt should ask the member for a report (one per
// reportInterval per member; the first attempt to claim the interval wins).
func (s *memberStats) dueForReport() bool {
	now := time.Now().UnixNano()
	last := s.lastAsk.Load()
	return now-last >= int64(reportInterval) && s.lastAsk.CompareAndSwap(last, now)
}

// reported reads a member's answer to an ask.
func (s *memberStats) reported(text string) {
	report, clamped, ok := parseLoadReport(text)
	switch {
	case !ok:
		s.reports["malformed"].Inc()
		return
	case clamped:
		s.reports["clamped"].Inc()
	default:
		s.reports["ok"].Inc()
	}
	report.at = time.Now()
	s.gaugeOnce.Do(func() { s.utilization = upstreamUtilization.WithLabelValues(s.pool.name, s.address) })
	s.utilization.Set(report.utilization)
	s.lastReport.Store(&report)
}

// reportState is what memberStats keeps of load reports.
type reportState struct {
	lastAsk    atomic.Int64
	lastReport atomic.Pointer[loadReport]
	// The gauge's series exists from the member's first report: a member that never reported
	// has no utilization, which 0 would misstate.
	gaugeOnce   sync.Once
	utilization prometheus.Gauge
	reports     map[string]prometheus.Counter
}

func (r *reportState) init(pool string) {
	r.reports = map[string]prometheus.Counter{
		"ok": loadReports.WithLabelValues(pool, "ok"), "clamped": loadReports.WithLabelValues(pool, "clamped"),
		"malformed": loadReports.WithLabelValues(pool, "malformed"),
	}
}
