package beacon

import (
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// Load-aware weights (the registry's load_weights.rs decides, as gRPC's weighted round robin
// does): once a second this host sends each such pool what it measured of every member over
// that second — answered requests and 5xx per second, from `transport beacon` — with the
// utilization the member last reported (load_reports.go), and serves the weights the registry
// gives back.

// LoadReports is `load_reports { ... }` in a `dynamic beacon` block.
//
//	load_reports {
//		blackout      10s   # default 10s: a member's reports count once it has reported this long
//		expire        3m    # default 3m: reports older than this stop counting (its own weight again)
//		error_penalty 1.0   # default 1.0: how much an error per request weighs against utilization
//	}
type LoadReports struct {
	Blackout     caddy.Duration `json:"blackout,omitempty"`
	Expire       caddy.Duration `json:"expire,omitempty"`
	ErrorPenalty *float64       `json:"error_penalty,omitempty"`
}

// loadSettings is LoadReports as the registry reads it (configure's `load`).
type loadSettings struct {
	BlackoutMs        int64 `json:"blackout_ms"`
	ExpireMs          int64 `json:"expire_ms"`
	ErrorPenaltyMilli int64 `json:"error_penalty_milli"`
}

// settings fills in gRPC's defaults; the registry checks the rest.
func (l *LoadReports) settings() *loadSettings {
	if l == nil {
		return nil
	}
	s := &loadSettings{BlackoutMs: 10_000, ExpireMs: 180_000, ErrorPenaltyMilli: 1000}
	if l.Blackout != 0 {
		s.BlackoutMs = time.Duration(l.Blackout).Milliseconds()
	}
	if l.Expire != 0 {
		s.ExpireMs = time.Duration(l.Expire).Milliseconds()
	}
	if l.ErrorPenalty != nil {
		s.ErrorPenaltyMilli = int64(*l.ErrorPenalty * 1000)
	}
	return s
}

// loadsCommand is one second's figures for a pool's members.
type loadsCommand struct {
	Pool    string       `json:"pool"`
	Members []memberLoad `json:"members"`
	NowMs   int64        `json:"now_ms"`
}

// memberLoad is one member's figures (the registry's MemberLoad).
type memberLoad struct {
	Address     string   `json:"address"`
	Qps         float64  `json:"qps"`
	Eps         float64  `json:"eps"`
	Utilization *float64 `json:"utilization"`
	ReportedMs  *int64   `json:"reported_ms"`
}

func (loadsCommand) op() string { return "loads" }

// sendLoads gives every load-aware pool its members' figures for the time since the last call.
func sendLoads() {
	pools.Lock()
	states := make([]*poolState, 0, len(pools.byName))
	for _, state := range pools.byName {
		if state.loadAware.Load() {
			states = append(states, state)
		}
	}
	pools.Unlock()
	for _, state := range states {
		if _, err := apply(loadsCommand{Pool: state.name, Members: state.memberLoads(time.Now()), NowMs: nowMillis()}); err != nil {
			caddy.Log().Named("beacon").Error("load-aware weights", zap.String("pool", state.name), zap.Error(err))
		}
	}
}

// memberLoads measures each member since the previous measurement.
func (p *poolState) memberLoads(now time.Time) []memberLoad {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := make([]memberLoad, 0, len(p.stats))
	for address, stats := range p.stats {
		answered, errors := stats.answeredCount.Load(), stats.errorCount.Load()
		seconds := now.Sub(stats.measuredAt).Seconds()
		figure := memberLoad{Address: address}
		if !stats.measuredAt.IsZero() && seconds > 0 {
			figure.Qps = float64(answered-stats.measuredAnswered) / seconds
			figure.Eps = float64(errors-stats.measuredErrors) / seconds
		}
		stats.measuredAt, stats.measuredAnswered, stats.measuredErrors = now, answered, errors
		if report := stats.lastReport.Load(); report != nil {
			utilization, at := report.utilization, report.at.UnixMilli()
			figure.Utilization, figure.ReportedMs = &utilization, &at
		}
		out = append(out, figure)
	}
	return out
}

// parseLoadReports reads `load_reports { ... }`.
func parseLoadReports(d *caddyfile.Dispenser) (*LoadReports, error) {
	l := &LoadReports{}
	err := parseBlock(d, "load_reports", "blackout, expire, error_penalty", nil, func(option, value string) (err error) {
		switch option {
		case "blackout":
			err = parseDuration(value, &l.Blackout)
		case "expire":
			err = parseDuration(value, &l.Expire)
		case "error_penalty":
			var penalty float64
			if penalty, err = strconv.ParseFloat(value, 64); err == nil && (penalty < 0 || penalty > 1000) {
				err = strconv.ErrRange
			}
			l.ErrorPenalty = &penalty
		default:
			err = errUnknownOption
		}
		return err
	})
	return l, err
}
