package beacon

import (
	"net/http"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

// A retry goes to a member the request has not tried yet. Caddy retries a failed attempt
// (lb_retries, lb_try_duration) by asking the upstream source again, and before it does, it
// calls ResetCache: that is where the module learns which member failed (the placeholder
// {http.reverse_proxy.upstream.hostport}, still the failed attempt's) and remembers it in the
// request's variables. Without this a retry drew from the whole pool again and could meet the
// same dead member until the retries ran out: with two replicas, one killed -9 under load,
// 2 of 5,861 GETs failed with lb_retries 2 (caddy #6267).

// triedVar names the request variable that lists the hostports the request already tried.
const triedVar = "beacon.tried"

// ResetCache is reverseproxy.CachingUpstreamSource's: the request is about to be retried.
func (u *Upstreams) ResetCache(r *http.Request) error {
	repl, ok := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	if !ok {
		return nil
	}
	failed, _ := repl.GetString("http.reverse_proxy.upstream.hostport")
	if failed == "" {
		return nil
	}
	tried, _ := caddyhttp.GetVar(r.Context(), triedVar).([]string)
	caddyhttp.SetVar(r.Context(), triedVar, append(tried, failed))
	if stats := u.state.statsByHostport(failed); stats != nil {
		stats.retried.Inc()
	}
	return nil
}

// triedBy is what the request already tried (nil on a first attempt).
func triedBy(r *http.Request) []string {
	tried, _ := caddyhttp.GetVar(r.Context(), triedVar).([]string)
	return tried
}

// excluding returns the members of `picked` the request has not tried; when it tried them
// all, every untried member of the offer; when it tried every member, `picked` as it is
// (a member tried before beats no member).
func (o *offer) excluding(picked []*reverseproxy.Upstream, tried []string) []*reverseproxy.Upstream {
	untried := func(list []*reverseproxy.Upstream) []*reverseproxy.Upstream {
		var kept []*reverseproxy.Upstream
		for _, upstream := range list {
			if !contains(tried, o.hostports[upstream]) {
				kept = append(kept, upstream)
			}
		}
		return kept
	}
	if kept := untried(picked); len(kept) > 0 {
		return kept
	}
	var offered []*reverseproxy.Upstream
	for i, upstream := range o.upstreams {
		if o.weights[i] > 0 {
			offered = append(offered, upstream)
		}
	}
	if kept := untried(offered); len(kept) > 0 {
		return kept
	}
	return picked
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}
