package beacon

import (
	"math/rand/v2"
	"sort"
	"sync"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// offer is what GetUpstreams works from: the pool's eligible members in registration order
// and the weight each gets now (its own, or less while slow start ramps it up), with the
// running sums a weighted draw searches. Built when the registry's offer changes, never on the
// request path.
type offer struct {
	upstreams  []*reverseproxy.Upstream
	weights    []uint64
	cumulative []uint64
	// Every weight is the same: the list can go to lb_policy as it is.
	even bool
	// What Caddy dials for each member, as {http.reverse_proxy.upstream.hostport} says it
	// (retry.go: a retry avoids the members a request tried).
	hostports map[*reverseproxy.Upstream]string

	// The smooth weighted round robin's state (one member per request, see next): each
	// member's running credit, carried from the offer this one replaces.
	mu     sync.Mutex
	credit []int64
}

// newOffer builds an offer; previous (nil for the first) hands over each remaining member's
// credit, so a refresh (every 100 ms while a member ramps, on every health or weight change)
// continues the rotation instead of restarting it: restarted each time, the rotation would
// begin with the heaviest members every time and a member at a small weight would wait for
// a turn that never comes.
func newOffer(upstreams []*reverseproxy.Upstream, weights []uint64, previous *offer) *offer {
	o := &offer{upstreams: upstreams, weights: weights, cumulative: make([]uint64, len(weights)), even: true, credit: make([]int64, len(weights))}
	o.hostports = make(map[*reverseproxy.Upstream]string, len(upstreams))
	for _, upstream := range upstreams {
		o.hostports[upstream] = hostportOf(upstream.Dial)
	}
	var total uint64
	for i, weight := range weights {
		total += weight
		o.cumulative[i] = total
		if weight != weights[0] {
			o.even = false
		}
	}
	if previous != nil && !o.even {
		previous.mu.Lock()
		carried := make(map[*reverseproxy.Upstream]int64, len(previous.upstreams))
		for i, u := range previous.upstreams {
			carried[u] = previous.credit[i]
		}
		previous.mu.Unlock()
		// A credit stays within ±total in a steady rotation; bounding it keeps a member that
		// was far ahead or behind under other weights from skewing the new ones for long.
		bound := int64(total)
		for i, u := range upstreams {
			o.credit[i] = max(-bound, min(bound, carried[u]))
		}
	}
	return o
}

// hostportOf is what Caddy dials for `dial` as its placeholder
// {http.reverse_proxy.upstream.hostport} says it ("" if it cannot be read).
func hostportOf(dial string) string {
	address, err := caddy.ParseNetworkAddress(dial)
	if err != nil {
		return ""
	}
	return address.JoinHostPort(0)
}

// pick returns what one request's lb_policy chooses from. choices 0 (not set) offers the whole
// pool while every weight is equal (Caddy's behaviour unchanged) and, when they differ (a
// canary, a member in slow start), the one member whose turn it is in a smooth weighted round
// robin, so whatever lb_policy runs, every member's share of any run of requests is its
// weight's to within one request. choices N draws N distinct members by weight: with
// least_conn that is the power of N choices, and a request costs the same whatever the pool's
// size.
func (o *offer) pick(choices int) []*reverseproxy.Upstream {
	if choices == 0 || choices == 1 {
		if o.even && choices == 0 {
			return o.upstreams
		}
		return o.next()
	}
	if choices >= len(o.upstreams) {
		if o.even {
			return o.upstreams
		}
		choices = len(o.upstreams)
	}
	return o.draw(choices)
}

// next is one step of the smooth weighted round robin (nginx's): every member earns its
// weight in credit, the richest is chosen and pays the total. Over any run of requests each
// member's count stays within one of its weighted share, and the turns are spread out (10, 10,
// 1 gives a, b, a, b, ... with c once in the middle of every 21), where a random draw by weight
// is only right on average: at 4,200 requests a member at 10 of 210 got 200 ± 14 (one standard
// deviation). O(members) under a lock; a pool large enough for that to matter wants `choices`.
func (o *offer) next() []*reverseproxy.Upstream {
	o.mu.Lock()
	defer o.mu.Unlock()
	total := int64(0)
	chosen := -1
	for i, weight := range o.weights {
		if weight == 0 {
			continue
		}
		total += int64(weight)
		o.credit[i] += int64(weight)
		if chosen < 0 || o.credit[i] > o.credit[chosen] {
			chosen = i
		}
	}
	if chosen < 0 {
		return nil
	}
	o.credit[chosen] -= total
	return o.upstreams[chosen : chosen+1 : chosen+1]
}

// draw takes n distinct members, each draw proportional to weight among those not taken yet
// (redrawing on a repeat; after many repeats, the first members not taken fill the rest).
// n is small (choices), so taken members are found by a scan, not a map.
func (o *offer) draw(n int) []*reverseproxy.Upstream {
	picked := make([]*reverseproxy.Upstream, 0, n)
	total := o.cumulative[len(o.cumulative)-1]
	if total == 0 {
		return picked
	}
	taken := func(u *reverseproxy.Upstream) bool {
		for _, p := range picked {
			if p == u {
				return true
			}
		}
		return false
	}
	for attempts := 0; len(picked) < n && attempts < 8*n; attempts++ {
		r := rand.Uint64N(total)
		u := o.upstreams[sort.Search(len(o.cumulative), func(i int) bool { return o.cumulative[i] > r })]
		if !taken(u) {
			picked = append(picked, u)
		}
	}
	for _, u := range o.upstreams {
		if len(picked) == n {
			break
		}
		if !taken(u) {
			picked = append(picked, u)
		}
	}
	return picked
}
