package beacon

import (
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func dialing(names ...string) []*reverseproxy.Upstream {
	out := make([]*reverseproxy.Upstream, len(names))
	for i, name := range names {
		out[i] = &reverseproxy.Upstream{Dial: name}
	}
	return out
}

// counts picks one member `n` times and counts them by Dial.
func counts(t *testing.T, o *offer, choices, n int) map[string]int {
	t.Helper()
	served := map[string]int{}
	for range n {
		picked := o.pick(choices)
		if len(picked) != 1 {
			t.Fatalf("pick(%d) offered %d members, want 1", choices, len(picked))
		}
		served[picked[0].Dial]++
	}
	return served
}

func TestACanaryGetsExactlyItsShareAndItsTurnsAreSpread(t *testing.T) {
	o := newOffer(dialing("a", "b", "canary"), []uint64{100, 100, 10}, nil)
	var sequence strings.Builder
	for range 21 {
		sequence.WriteString(o.pick(0)[0].Dial[:1])
	}
	// One turn of the rotation: the canary once, in the middle, not in a burst at either end.
	if got := sequence.String(); strings.Count(got, "c") != 1 || strings.Index(got, "c") < 5 || strings.Index(got, "c") > 15 || strings.Contains(got, "aa") || strings.Contains(got, "bb") {
		t.Fatalf("one rotation of 100, 100, 10 went %s", got)
	}
	if served := counts(t, o, 0, 4200-21); served["canary"] != 200-1 || served["a"] != 2000-10 || served["b"] != 2000-10 {
		t.Fatalf("4,200 requests at 100, 100, 10 went %v, want 2000, 2000, 200", served)
	}
	// choices 1 is the same rotation.
	if served := counts(t, o, 1, 210); served["canary"] != 10 || served["a"] != 100 {
		t.Fatalf("choices 1 at 100, 100, 10 went %v", served)
	}
}

func TestChoicesOneWithEvenWeightsIsARoundRobin(t *testing.T) {
	o := newOffer(dialing("a", "b", "c"), []uint64{100, 100, 100}, nil)
	if got := len(o.pick(0)); got != 3 {
		t.Fatalf("even weights without choices offer %d members, want the whole pool", got)
	}
	var sequence strings.Builder
	for range 6 {
		sequence.WriteString(o.pick(1)[0].Dial)
	}
	if sequence.String() != "abcabc" {
		t.Fatalf("choices 1 at even weights went %s", sequence.String())
	}
}

// A member ramping in slow start has its offer rebuilt every 100 ms; the rotation must carry
// on through each rebuild, or a member with a small weight would never get its turn.
func TestARotationCarriesOnThroughRefreshes(t *testing.T) {
	upstreams := dialing("a", "b", "joining")
	o := newOffer(upstreams, []uint64{100, 100, 5}, nil)
	served := map[string]int{}
	for range 205 {
		for range 4 { // a refresh every four requests
			served[o.pick(0)[0].Dial]++
		}
		o = newOffer(upstreams, []uint64{100, 100, 5}, o)
	}
	if served["joining"] != 4*5 {
		t.Fatalf("820 requests at 100, 100, 5, refreshed every 4, went %v: want the joining member 20 times", served)
	}
	// A member that leaves takes its credit; the others keep theirs, and one that joins starts even.
	o = newOffer([]*reverseproxy.Upstream{upstreams[0], {Dial: "c"}}, []uint64{100, 10}, o)
	if served := counts(t, o, 0, 110); served["a"] != 100 || served["c"] != 10 {
		t.Fatalf("after a change of members, 110 requests at 100, 10 went %v", served)
	}
}

func TestAPoolOfStandbysOffersNothing(t *testing.T) {
	o := newOffer(dialing("a"), []uint64{0}, nil)
	if picked := o.pick(1); len(picked) != 0 {
		t.Fatalf("a pool with weight 0 only offered %v", picked)
	}
	if picked := newOffer(nil, nil, nil).pick(0); len(picked) != 0 {
		t.Fatalf("an empty pool offered %v", picked)
	}
}

func TestTheRotationIsSafeUnderConcurrentRequests(t *testing.T) {
	o := newOffer(dialing("a", "b", "canary"), []uint64{100, 100, 10}, nil)
	var mu sync.Mutex
	served := map[string]int{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := map[string]int{}
			for range 2100 {
				local[o.pick(0)[0].Dial]++
			}
			mu.Lock()
			defer mu.Unlock()
			for k, v := range local {
				served[k] += v
			}
		}()
	}
	wg.Wait()
	if served["canary"] != 800 || served["a"] != 8000 {
		t.Fatalf("16,800 concurrent requests at 100, 100, 10 went %v", served)
	}
}
