// Package beacon is the Caddy side of caddy-beacon's module: app replicas join and leave a
// reverse proxy's pool through Caddy's admin API (/beacon/...) without any config change or
// reload, and the module runs the active health checks Caddy does not run for dynamic
// upstreams. What decides is rust/beacon-registry, compiled to WebAssembly and run by wazero:
// pools, leases, verdicts, draining, weights and slow start, admission, which config declares
// which pool, and what a Kubernetes Service's endpoints mean for its pool. This package is the
// host: Caddy's interfaces (this file, admin.go), the I/O the registry cannot do (probes in
// prober.go, DNS and the process's own sockets in admission.go and hostfacts.go, watching the
// Kubernetes API in kubernetes*.go), and the one piece of logic that runs per request,
// choosing a member (selection.go: a smooth weighted round robin over the registry's offer),
// which stays in Go because a call into the guest per request would cost more than the choice.
package beacon

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyevents"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Upstreams{})
}

// Upstreams is `dynamic beacon <pool>`: a reverse proxy's upstreams are the healthy, not
// draining members of the pool (weight above 0), as companions registered them. GetUpstreams
// picks from a cached offer; no WebAssembly runs on the request path.
//
// Caddyfile:
//
//	reverse_proxy {
//		dynamic beacon <pool> {
//			health_uri      /ready   # default /ready
//			health_interval 2s       # default 2s
//			health_timeout  1s       # default 1s
//			health_passes   1        # default 1
//			health_fails    2        # default 2
//			choices         2        # default: the whole pool (one member by weight when weights differ)
//			slow_start      30s      # default off
//			outlier { consecutive_failures 5  eject 30s  max_eject 300s  max_percent 10 }   # default off; see outlier.go
//			load_reports { blackout 10s  expire 3m  error_penalty 1.0 }   # default off; see load_weights.go
//			allow           10.0.0.0/8 fd00::/8 unix//run/app/   # default: see admission.rs
//			kubernetes      <namespace>/<service> [port-name]   # default: members come from companions
//			kubeconfig      /path/to/kubeconfig                 # default: in-cluster service account
//		}
//	}
//
// choices N: each request's lb_policy chooses among N members drawn by weight (with
// least_conn, the power of N choices), so a request costs the same whatever the pool's size.
// choices 1, and no choices while weights differ, is a smooth weighted round robin: exact shares.
// Hash and cookie policies need the whole list to be sticky: do not combine them with choices.
//
// slow_start: a member that becomes healthy while settled members serve ramps from a
// twentieth of its weight to all of it over this window; a fresh deployment is not throttled.
//
// allow: the only addresses that may register (CIDRs, addresses, unix//path-prefixes);
// registrations outside get 403. Whatever it says, an address that reaches this Caddy itself
// (its admin API, its sites) is refused, and link-local and metadata addresses, unspecified,
// multicast and reserved ones, and Unix sockets are refused unless an entry inside their range
// names them (allow 169.254.10.0/24, allow unix//run/app/; fd00::/8 does not open
// fd00:ec2::254). See the registry's admission.rs.
//
// kubernetes: the pool's members are the Service's endpoints, from its EndpointSlices (see
// kubernetes.go): ready ones join, not-ready and terminating ones drain, deleted ones leave.
// Companions are then not needed; do not register the same addresses through both.
type Upstreams struct {
	// The pool companions register into (`caddy-beacon run --pool <name>`).
	Pool string `json:"pool"`
	// The path probed on every upstream. Default: /ready.
	HealthURI string `json:"health_uri,omitempty"`
	// How often each upstream is probed. Default: 2s.
	HealthInterval caddy.Duration `json:"health_interval,omitempty"`
	// How long a probe may take. Default: 1s.
	HealthTimeout caddy.Duration `json:"health_timeout,omitempty"`
	// Consecutive passing probes that bring an unhealthy upstream back. Default: 1.
	HealthPasses int `json:"health_passes,omitempty"`
	// Consecutive failing probes that take a healthy upstream out. Default: 2.
	HealthFails int `json:"health_fails,omitempty"`
	// Members drawn by weight for each request's lb_policy. Default 0: the whole pool while
	// every weight is equal, the next member of a smooth weighted round robin when they
	// differ (as choices 1 always is).
	Choices int `json:"choices,omitempty"`
	// The slow-start window. Default 0: off.
	SlowStart caddy.Duration `json:"slow_start,omitempty"`
	// The addresses that may register: CIDRs, addresses, unix//path-prefixes.
	Allow []string `json:"allow,omitempty"`
	// Outlier ejection. Default: off.
	Outlier *Outlier `json:"outlier,omitempty"`
	// Load-aware weights from the members' load reports. Default: off.
	LoadReports *LoadReports `json:"load_reports,omitempty"`
	// The Service whose EndpointSlices are the pool's members. Default: none (companions).
	Kubernetes *KubernetesSource `json:"kubernetes,omitempty"`

	ctx    caddy.Context
	events *caddyevents.App
	state  *poolState
	// This module's claim on the pool (the registry's declarations.rs): staged at Provision,
	// committed once its config runs. Caddy loads and unloads configs one at a time, so
	// Provision, commit and Cleanup never run at once.
	claim     uint64
	staged    bool
	committed bool
	// The Kubernetes source, checked and connected at Provision, watched once committed.
	kubernetes *kubernetesPlan
}

// CaddyModule returns the Caddy module information.
func (Upstreams) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.upstreams.beacon",
		New: func() caddy.Module { return new(Upstreams) },
	}
}

// Provision stages this config's claim on the pool (its settings checked by the registry: a bad
// allow, one pool too many or an unusable Kubernetes source fails the load with the reason) and
// changes nothing else: the claim is committed once Caddy has started the whole config (the
// events app's "started"), so a config Caddy refuses leaves pools and members as they were.
func (u *Upstreams) Provision(ctx caddy.Context) error {
	u.ctx = ctx
	if u.HealthURI == "" {
		u.HealthURI = "/ready"
	}
	if u.HealthInterval == 0 {
		u.HealthInterval = caddy.Duration(2 * time.Second)
	}
	if u.HealthTimeout == 0 {
		u.HealthTimeout = caddy.Duration(time.Second)
	}
	if u.HealthPasses == 0 {
		u.HealthPasses = 1
	}
	if u.HealthFails == 0 {
		u.HealthFails = 2
	}
	if err := u.Validate(); err != nil {
		return err
	}
	if app, err := ctx.App("events"); err == nil {
		u.events = app.(*caddyevents.App)
	}
	registerMetrics(ctx.GetMetricsRegistry())
	u.claim = nextClaim.Add(1)
	out, err := apply(configureCommand{
		Pool: u.Pool, Claim: u.claim, Passes: &u.HealthPasses, Fails: &u.HealthFails,
		SlowStartMs: time.Duration(u.SlowStart).Milliseconds(), Allow: u.Allow, Outlier: u.Outlier.settings(), Load: u.LoadReports.settings(),
	})
	if err != nil {
		return err
	}
	if out.Status != http.StatusOK {
		return fmt.Errorf("beacon: %s", out.Error)
	}
	u.staged = true
	u.state = acquirePool(u.Pool)
	if u.Kubernetes != nil {
		if u.kubernetes, err = prepareKubernetes(*u.Kubernetes); err != nil {
			return err
		}
	}
	if u.events == nil || u.events.On("started", commitOnStart{u}) != nil {
		u.commit() // no events app to say when the config runs: now
	}
	return nil
}

// nextClaim numbers the modules' claims in the order they are provisioned: the newest
// committed claim's settings are the pool's.
var nextClaim atomic.Uint64

// commitOnStart commits a module's claim when Caddy has started its config: the events app
// emits "started" once every app of the config runs, and never for a config that fails.
type commitOnStart struct{ u *Upstreams }

// Handle is caddyevents.Handler's.
func (c commitOnStart) Handle(context.Context, caddy.Event) error {
	c.u.commit()
	return nil
}

// commit makes this module's settings the pool's (the newest config's win), and starts what
// the pool runs: its checks, the lease ticker, its Kubernetes source.
func (u *Upstreams) commit() {
	out, err := apply(commitCommand{claimFields{Claim: u.claim}})
	if err != nil || out.Status != http.StatusOK {
		caddy.Log().Named("beacon").Error("committing the pool's settings", zap.String("pool", u.Pool), zap.Error(err), zap.Any("reply", out))
		return
	}
	u.committed = true
	// Every series of the pool exists from the start (at 0), so dashboards and alerts see it.
	for _, to := range []string{"healthy", "unhealthy"} {
		transitions.WithLabelValues(u.Pool, to)
	}
	for _, name := range []string{"registered", "draining", "removed", "expired", "ejected", "returned", "ejection_capped"} {
		lifecycle.WithLabelValues(u.Pool, name)
	}
	refusals.WithLabelValues(u.Pool)
	u.state.attach(u)
	startLeaseTicker()
	if u.kubernetes != nil {
		watchKubernetes(u.Pool, u.kubernetes)
	}
	refreshHostFacts()
	time.AfterFunc(factsAfterLoad, refreshHostFacts)
}

// Validate checks the settings.
func (u *Upstreams) Validate() error {
	if u.Pool == "" {
		return fmt.Errorf("beacon: a pool name is required (dynamic beacon <pool>)")
	}
	if len(u.HealthURI) == 0 || u.HealthURI[0] != '/' {
		return fmt.Errorf("beacon: health_uri must be a path starting with /, got %q", u.HealthURI)
	}
	if u.HealthInterval < caddy.Duration(100*time.Millisecond) || u.HealthTimeout <= 0 || u.HealthPasses < 1 || u.HealthFails < 1 {
		return fmt.Errorf("beacon: health_interval must be at least 100ms, health_timeout positive, health_passes and health_fails at least 1")
	}
	if u.Choices < 0 || u.Choices > maxChoices {
		return fmt.Errorf("beacon: choices must be 1 to %d, got %d", maxChoices, u.Choices)
	}
	if u.SlowStart < 0 || u.SlowStart > caddy.Duration(time.Hour) {
		return fmt.Errorf("beacon: slow_start must be between 0 and 1h, got %s", time.Duration(u.SlowStart))
	}
	if u.Kubernetes != nil {
		return u.Kubernetes.validate()
	}
	return nil
}

// Cleanup runs when this module's config is unloaded: replaced by a new one, refused, or only
// validated. It releases the claim: a pool no running config declares is gone with its
// members and series; the pool's checks and Kubernetes source stop with the last config that
// runs them.
func (u *Upstreams) Cleanup() error {
	if u.committed && !u.state.detach(u) {
		stopKubernetes(u.Pool)
	}
	if u.staged {
		out, err := apply(releaseCommand{claimFields{Claim: u.claim}})
		if err != nil || out.Status != http.StatusOK {
			caddy.Log().Named("beacon").Error("releasing the pool's claim", zap.String("pool", u.Pool), zap.Error(err), zap.Any("reply", out))
		} else if gone(out) {
			forgetSeries(u.Pool)
		}
	}
	if u.state != nil {
		releasePool(u.Pool)
	}
	return nil
}

// maxChoices bounds choices: past it, listing the whole pool costs little more.
const maxChoices = 64

// GetUpstreams returns what this request's lb_policy chooses from (see offer.pick).
func (u *Upstreams) GetUpstreams(r *http.Request) ([]*reverseproxy.Upstream, error) {
	current := u.state.snapshot.Load()
	picked := current.pick(u.Choices)
	if tried := triedBy(r); tried != nil {
		return current.excluding(picked, tried), nil
	}
	return picked, nil
}

func (u *Upstreams) checks() checks {
	return checks{uri: u.HealthURI, interval: time.Duration(u.HealthInterval), timeout: time.Duration(u.HealthTimeout)}
}

// UnmarshalCaddyfile sets up the module from Caddyfile tokens:
//
//	dynamic beacon <pool> { health_uri ... }
func (u *Upstreams) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the module name
	if !d.NextArg() {
		return d.ArgErr()
	}
	u.Pool = d.Val()
	if d.NextArg() {
		return d.ArgErr()
	}
	kubeconfig := ""
	for d.NextBlock(0) {
		option := d.Val()
		if option == "kubernetes" {
			values := d.RemainingArgs()
			if len(values) < 1 || len(values) > 2 {
				return d.Errf("kubernetes <namespace>/<service> [port-name]")
			}
			portName := ""
			if len(values) == 2 {
				portName = values[1]
			}
			source, err := parseKubernetesSource(values[0], portName)
			if err != nil {
				return d.Errf("kubernetes: %v", err)
			}
			u.Kubernetes = &source
			continue
		}
		if option == "load_reports" {
			reports, err := parseLoadReports(d)
			if err != nil {
				return err
			}
			u.LoadReports = reports
			continue
		}
		if option == "outlier" {
			outlier, err := parseOutlier(d)
			if err != nil {
				return err
			}
			u.Outlier = outlier
			continue
		}
		if option == "allow" {
			values := d.RemainingArgs()
			if len(values) == 0 {
				return d.ArgErr()
			}
			u.Allow = append(u.Allow, values...)
			continue
		}
		if !d.NextArg() {
			return d.ArgErr()
		}
		value := d.Val()
		if d.NextArg() {
			return d.ArgErr()
		}
		var err error
		switch option {
		case "health_uri":
			u.HealthURI = value
		case "health_interval":
			err = parseDuration(value, &u.HealthInterval)
		case "health_timeout":
			err = parseDuration(value, &u.HealthTimeout)
		case "health_passes":
			u.HealthPasses, err = strconv.Atoi(value)
		case "health_fails":
			u.HealthFails, err = strconv.Atoi(value)
		case "choices":
			u.Choices, err = strconv.Atoi(value)
			if err == nil && u.Choices < 1 {
				err = fmt.Errorf("use 1 or more")
			}
		case "slow_start":
			err = parseDuration(value, &u.SlowStart)
		case "kubeconfig":
			kubeconfig = value
		default:
			return d.Errf("unknown option %q (health_uri, health_interval, health_timeout, health_passes, health_fails, choices, slow_start, allow, outlier, load_reports, kubernetes, kubeconfig)", option)
		}
		if err != nil {
			return d.Errf("%s %s: %v", option, value, err)
		}
	}
	if kubeconfig != "" {
		if u.Kubernetes == nil {
			return d.Errf("kubeconfig needs a kubernetes source (kubernetes <namespace>/<service>)")
		}
		u.Kubernetes.Kubeconfig = kubeconfig
	}
	return nil
}

func parseDuration(text string, into *caddy.Duration) error {
	value, err := caddy.ParseDuration(text)
	if err != nil {
		return err
	}
	*into = caddy.Duration(value)
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner                  = (*Upstreams)(nil)
	_ caddy.Validator                    = (*Upstreams)(nil)
	_ caddy.CleanerUpper                 = (*Upstreams)(nil)
	_ reverseproxy.UpstreamSource        = (*Upstreams)(nil)
	_ reverseproxy.CachingUpstreamSource = (*Upstreams)(nil)
	_ caddyfile.Unmarshaler              = (*Upstreams)(nil)
	_ caddyevents.Handler                = commitOnStart{}
)
