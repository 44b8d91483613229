package beacon

import (
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
	"go.uber.org/zap"
)

// poolState is what the host keeps for one pool, at package level so that `caddy reload` keeps
// it: the offer GetUpstreams picks from (rebuilt when the registry says the offer changed, and
// every RAMP_REFRESH_MS while a member's slow start ramps), and the modules of the running
// config(s) that declare the pool. It lives while a provisioned module holds it (refs, counted
// like Caddy's UsagePool): a config that is refused or replaced releases what it held.
type poolState struct {
	name     string
	snapshot atomic.Pointer[offer]
	refs     int // guarded by pools

	mu sync.Mutex
	// Upstream objects by address, reused across snapshots: Caddy keeps per-request state on
	// them (in-flight counts through their Host), and a stable list balances better.
	known map[string]*reverseproxy.Upstream
	// Each member's proxy metrics (member_stats.go), by address, from its first offer until it
	// leaves the pool.
	stats map[string]*memberStats
	// The provisioned modules for this pool, newest last (a reload provisions the new config
	// before cleaning up the old one).
	attached []*Upstreams
	prober   *prober
	// Asks the registry again while a member ramps.
	ramp *time.Timer
	// The pool offered upstreams and now offers none (said once in the log).
	dry bool
	// The newest config's outlier consecutive_failures (0: off), read on the request path.
	failuresToEject atomic.Int32
	// The newest config asks for load-aware weights (load_weights.go).
	loadAware atomic.Bool
}

var pools = struct {
	sync.Mutex
	byName map[string]*poolState
}{byName: map[string]*poolState{}}

var leaseTicker sync.Once

// acquirePool returns the state of `name`, creating it, for a module that holds it until it
// calls releasePool.
func acquirePool(name string) *poolState {
	pools.Lock()
	defer pools.Unlock()
	state, ok := pools.byName[name]
	if !ok {
		state = &poolState{name: name, known: map[string]*reverseproxy.Upstream{}, stats: map[string]*memberStats{}}
		state.snapshot.Store(newOffer(nil, nil, nil))
		pools.byName[name] = state
	}
	state.refs++
	return state
}

// releasePool lets go of what acquirePool gave; the last one out forgets the pool's state.
func releasePool(name string) {
	pools.Lock()
	state, ok := pools.byName[name]
	if ok {
		state.refs--
		if state.refs > 0 {
			ok = false
		} else {
			delete(pools.byName, name)
		}
	}
	pools.Unlock()
	if ok {
		state.stop()
	}
}

// stop ends what a forgotten pool's state runs: its checks and its slow-start refresh, and
// lets go of its members' metrics.
func (p *poolState) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, upstream := range p.known {
		statsByUpstream.Delete(upstream)
	}
	removePoolMemberSeries(p.name)
	if p.prober != nil {
		p.prober.stop()
		p.prober = nil
	}
	if p.ramp != nil {
		p.ramp.Stop()
		p.ramp = nil
	}
}

// existingPool returns the state of `name`, or nil.
func existingPool(name string) *poolState {
	pools.Lock()
	defer pools.Unlock()
	return pools.byName[name]
}

// apply sends a command to the registry, then rebuilds the snapshots it says changed and
// reports its events. Refusals come back as a reply with a status other than 200.
func apply(cmd command) (*reply, error) {
	g, err := registry()
	if err != nil {
		return nil, err
	}
	out, err := g.command(cmd)
	if err != nil {
		return nil, err
	}
	for _, name := range out.Changed {
		state := existingPool(name)
		if state == nil {
			continue // no module of a running config holds it
		}
		if err := state.refresh(g); err != nil {
			return nil, err
		}
	}
	for _, e := range out.Events {
		report(e)
	}
	return out, nil
}

// offered is the registry's offer (rust/beacon-registry/src/pool.rs, Offer).
type offered struct {
	Upstreams []struct {
		Address string `json:"address"`
		Dial    string `json:"dial"`
		Weight  uint64 `json:"weight"`
	} `json:"upstreams"`
	RefreshInMs *int64 `json:"refresh_in_ms"`
}

// refresh rebuilds the pool's offer from the registry's, and asks again later while a member
// ramps.
func (p *poolState) refresh(g *guest) error {
	out, err := g.command(offerCommand{Pool: p.name, NowMs: nowMillis()})
	if err != nil {
		return err
	}
	if out.Status != 200 {
		return fmt.Errorf("beacon: offer for pool %s: %s", p.name, out.Error)
	}
	var current offered
	if err := json.Unmarshal(out.Data, &current); err != nil {
		return fmt.Errorf("beacon: offer for pool %s: %v", p.name, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	upstreams := make([]*reverseproxy.Upstream, 0, len(current.Upstreams))
	weights := make([]uint64, 0, len(current.Upstreams))
	keep := make(map[string]*reverseproxy.Upstream, len(current.Upstreams))
	for _, member := range current.Upstreams {
		// Caddy dials what the registry admitted: for a name, the address it resolved to
		// (a new object when that moved).
		upstream, ok := p.known[member.Address]
		if !ok || upstream.Dial != member.Dial {
			if ok {
				statsByUpstream.Delete(upstream)
			}
			upstream = &reverseproxy.Upstream{Dial: member.Dial}
			stats := p.stats[member.Address]
			if stats == nil {
				stats = newMemberStats(p, member.Address)
				p.stats[member.Address] = stats
			}
			statsByUpstream.Store(upstream, stats)
		}
		keep[member.Address] = upstream
		upstreams = append(upstreams, upstream)
		weights = append(weights, member.Weight)
	}
	if p.ramp != nil {
		p.ramp.Stop()
		p.ramp = nil
	}
	if current.RefreshInMs != nil {
		p.ramp = time.AfterFunc(time.Duration(*current.RefreshInMs)*time.Millisecond, func() {
			if g, err := registry(); err == nil {
				if err := p.refresh(g); err != nil {
					caddy.Log().Named("beacon").Error("slow start: " + err.Error())
				}
			}
		})
	}
	// Draining and unhealthy upstreams keep their object (and its in-flight count) while the
	// registry still knows them.
	for address, upstream := range p.known {
		if _, ok := keep[address]; !ok {
			keep[address] = upstream
		}
	}
	p.known = keep
	previous := p.snapshot.Load()
	p.snapshot.Store(newOffer(upstreams, weights, previous))
	p.sayWhenItRunsDry(len(previous.upstreams), len(upstreams))
	return nil
}

// sayWhenItRunsDry logs the moment a pool that offered upstreams offers none (its last member
// unhealthy, draining, removed, expired or on standby), when Caddy starts failing the requests
// routed to it, and the moment it offers one again; once each, not on every refresh.
func (p *poolState) sayWhenItRunsDry(before, now int) {
	logger := caddy.Log().Named("beacon")
	switch {
	case before > 0 && now == 0:
		logger.Warn("pool has no upstream to offer: its requests fail until a member is registered, healthy, not draining and weighted above 0", zap.String("pool", p.name))
		p.dry = true
	case now > 0 && p.dry:
		logger.Info("pool offers upstreams again", zap.String("pool", p.name), zap.Int("upstreams", now))
		p.dry = false
	}
}

// forget drops the object and the metrics of an address the registry no longer holds.
func (p *poolState) forget(address string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if upstream, ok := p.known[address]; ok {
		statsByUpstream.Delete(upstream)
	}
	delete(p.known, address)
	delete(p.stats, address)
	removeMemberSeries(p.name, address)
}

// statsByHostport finds the metrics of the member Caddy dialled at `hostport` (the placeholder's
// form of its dial address); nil if it is not this pool's.
// Only a retry asks, so a scan is cheap enough; it covers members that left the offer since
// (found unhealthy), whose failed attempts are the ones most worth counting.
func (p *poolState) statsByHostport(hostport string) *memberStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, upstream := range p.known {
		if dialled := hostportOf(upstream.Dial); dialled != "" && dialled == hostport {
			return statsOf(upstream)
		}
	}
	return nil
}

// inFlight is Caddy's count of requests in flight to `address` through this pool (0 when it
// has not routed any).
func (p *poolState) inFlight(address string) int {
	p.mu.Lock()
	upstream := p.known[address]
	p.mu.Unlock()
	if upstream == nil || upstream.Host == nil {
		return 0
	}
	return upstream.NumRequests()
}

// attach records a module whose config runs and (re)starts the pool's prober with the module's
// settings: the newest config's settings win.
func (p *poolState) attach(m *Upstreams) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.attached = append(p.attached, m)
	if p.prober != nil {
		p.prober.stop()
	}
	p.prober = startProber(p, m.checks())
	p.takeSettings()
}

// detach forgets a module whose config was unloaded; the prober goes on with the newest
// module still attached (a reload that failed after it started falls back), and the last one
// out stops it. It tells whether a module still attached names a Kubernetes source (the caller
// stops the watcher otherwise, outside this lock: stopping it applies registry commands, which
// refresh this pool).
func (p *poolState) detach(m *Upstreams) (kubernetesStays bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	wasNewest := len(p.attached) > 0 && p.attached[len(p.attached)-1] == m
	for i, attached := range p.attached {
		if attached == m {
			p.attached = append(p.attached[:i], p.attached[i+1:]...)
			break
		}
	}
	if p.prober != nil && (len(p.attached) == 0 || wasNewest) {
		p.prober.stop()
		p.prober = nil
	}
	if p.prober == nil && len(p.attached) > 0 {
		p.prober = startProber(p, p.attached[len(p.attached)-1].checks())
	}
	p.takeSettings()
	for _, attached := range p.attached {
		if attached.Kubernetes != nil {
			return true
		}
	}
	return false
}

// takeSettings makes the newest attached module's settings the request path reads (outlier
// consecutive_failures, whether it wants load-aware weights) the pool's.
// Called with p.mu held.
func (p *poolState) takeSettings() {
	threshold := 0
	if len(p.attached) > 0 {
		if settings := p.attached[len(p.attached)-1].Outlier.settings(); settings != nil {
			threshold = settings.ConsecutiveFailures
		}
	}
	p.failuresToEject.Store(int32(threshold))
	p.loadAware.Store(len(p.attached) > 0 && p.attached[len(p.attached)-1].LoadReports != nil)
}

// newest is the module of the most recently loaded config, for emitting events; nil if none.
func (p *poolState) newest() *Upstreams {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.attached) == 0 {
		return nil
	}
	return p.attached[len(p.attached)-1]
}

// startLeaseTicker ends expired leases once a second, and reads the host's facts again every
// factsInterval (an interface that gained an address), for the life of the process.
func startLeaseTicker() {
	leaseTicker.Do(func() {
		go func() {
			facts := time.NewTicker(factsInterval)
			leases := time.NewTicker(time.Second)
			for {
				select {
				case <-leases.C:
					if _, err := apply(tickCommand{NowMs: nowMillis()}); err != nil {
						caddy.Log().Named("beacon").Error("ending expired leases: " + err.Error())
					}
					sendLoads()
				case <-facts.C:
					refreshHostFacts()
				}
			}
		}()
	})
}

// nowMillis is the host's clock as the registry sees it (a variable: the shared vectors fix it).
var nowMillis = func() int64 {
	return time.Now().UnixMilli()
}
