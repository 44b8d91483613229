package beacon

import (
	"math/rand/v2"
	"sort"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// offer is what GetUpstreams works from: the pool's eligible members in registration order
// and the weight each gets now (its own, or less while slow start ramps it up), with the
// running sums a weighted draw searches. Built when the registry's offer changes, never on the
// request path.
type offer struct {
	upstreams  []*reverseproxy.Upstream
	cumulative []uint64
	// Every weight is the same: the list can go to lb_policy as it is.
	even bool
}

func newOffer(upstreams []*reverseproxy.Upstream, weights []uint64) *offer {
	o := &offer{upstreams: upstreams, cumulative: make([]uint64, len(weights)), even: true}
	var total uint64
	for i, weight := range weights {
		total += weight
		o.cumulative[i] = total
		if weight != weights[0] {
			o.even = false
		}
	}
	return o
}

// pick returns what one request's lb_policy chooses from. choices 0 (not set) offers the whole
// pool while every weight is equal (Caddy's behaviour unchanged) and one member drawn by
// weight when they differ (a canary, a member in slow start), so whatever lb_policy runs, the
// shares follow the weights. choices N draws N distinct members by weight: with least_conn
// that is the power of N choices, and a request costs the same whatever the pool's size.
func (o *offer) pick(choices int) []*reverseproxy.Upstream {
	if choices == 0 {
		if o.even {
			return o.upstreams
		}
		choices = 1
	}
	if choices >= len(o.upstreams) {
		if o.even {
			return o.upstreams
		}
		choices = len(o.upstreams)
	}
	return o.draw(choices)
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
