package beacon

import (
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"go.uber.org/zap"
)

// Outlier ejection (the registry's outlier.rs decides): this host counts each member's
// failures in a row on the request path — `transport beacon` sees every attempt, and a call
// into the guest per request would cost more than the request's choice — and reports a member
// to the registry when its count reaches the pool's consecutive_failures. The registry ejects
// it (or not: the pool's cap, never the last member), for a time that grows with each
// ejection, and the lease ticker brings it back.

// Outlier is `outlier { ... }` in a `dynamic beacon` block.
//
//	outlier {
//		consecutive_failures 5     # default 5: 5xx, refused dials, timeouts, connections closed before the answer
//		eject                30s   # default 30s: the first ejection; the n-th lasts n times this
//		max_eject            300s  # default 300s
//		max_percent          10    # default 10: of the pool's members at once (at least one, never the last)
//		uneject_on_pass            # default off: a passing active check ends an ejection early
//	}
//
// Failures are seen by `transport beacon`: without it, nothing is counted.
type Outlier struct {
	ConsecutiveFailures int            `json:"consecutive_failures,omitempty"`
	Eject               caddy.Duration `json:"eject,omitempty"`
	MaxEject            caddy.Duration `json:"max_eject,omitempty"`
	MaxPercent          int            `json:"max_percent,omitempty"`
	UnejectOnPass       bool           `json:"uneject_on_pass,omitempty"`
}

// outlierSettings is Outlier as the registry reads it (configure's `outlier`).
type outlierSettings struct {
	ConsecutiveFailures int   `json:"consecutive_failures"`
	EjectMs             int64 `json:"eject_ms"`
	MaxEjectMs          int64 `json:"max_eject_ms"`
	MaxPercent          int   `json:"max_percent"`
	UnejectOnPass       bool  `json:"uneject_on_pass"`
}

// settings fills in the defaults (Envoy's); the registry checks the rest.
func (o *Outlier) settings() *outlierSettings {
	if o == nil {
		return nil
	}
	s := &outlierSettings{
		ConsecutiveFailures: o.ConsecutiveFailures, EjectMs: time.Duration(o.Eject).Milliseconds(),
		MaxEjectMs: time.Duration(o.MaxEject).Milliseconds(), MaxPercent: o.MaxPercent, UnejectOnPass: o.UnejectOnPass,
	}
	if s.ConsecutiveFailures == 0 {
		s.ConsecutiveFailures = 5
	}
	if s.EjectMs == 0 {
		s.EjectMs = 30_000
	}
	if s.MaxEjectMs == 0 {
		s.MaxEjectMs = max(300_000, s.EjectMs)
	}
	if s.MaxPercent == 0 {
		s.MaxPercent = 10
	}
	return s
}

// failingCommand reports a member that failed the pool's consecutive_failures times in a row.
type failingCommand struct {
	Pool    string `json:"pool"`
	Address string `json:"address"`
	NowMs   int64  `json:"now_ms"`
}

func (failingCommand) op() string { return "failing" }

// failed counts a failed attempt to the member; at the pool's threshold it reports the member
// (once: the count starts again) from a goroutine of its own, off the request path.
func (s *memberStats) failed() {
	threshold := s.pool.failuresToEject.Load()
	if threshold <= 0 {
		return
	}
	if s.streak.Add(1) < threshold {
		return
	}
	s.streak.Store(0)
	go func() {
		if _, err := apply(failingCommand{Pool: s.pool.name, Address: s.address, NowMs: nowMillis()}); err != nil {
			caddy.Log().Named("beacon").Error("outlier ejection", zap.String("pool", s.pool.name), zap.String("upstream", s.address), zap.Error(err))
		}
	}()
}

// answered ends the member's run of failures; the write is skipped when there is none, so a
// healthy member's counter stays in every core's cache.
func (s *memberStats) answered() {
	if s.streak.Load() != 0 {
		s.streak.Store(0)
	}
}

// parseOutlier reads `outlier { ... }`.
func parseOutlier(d *caddyfile.Dispenser) (*Outlier, error) {
	o := &Outlier{}
	err := parseBlock(d, "outlier", "consecutive_failures, eject, max_eject, max_percent, uneject_on_pass", []string{"uneject_on_pass"},
		func(option, value string) (err error) {
			switch option {
			case "consecutive_failures":
				o.ConsecutiveFailures, err = strconv.Atoi(value)
			case "eject":
				err = parseDuration(value, &o.Eject)
			case "max_eject":
				err = parseDuration(value, &o.MaxEject)
			case "max_percent":
				o.MaxPercent, err = strconv.Atoi(value)
			case "uneject_on_pass":
				o.UnejectOnPass = true
			default:
				err = errUnknownOption
			}
			return err
		})
	return o, err
}
