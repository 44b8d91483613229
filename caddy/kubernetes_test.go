//go:build !nokubernetes

package beacon

import (
	"reflect"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestKubernetesNamesAreCheckedAtLoad(t *testing.T) {
	for _, source := range []KubernetesSource{
		{Namespace: "Shop", Service: "orders"},
		{Namespace: "shop", Service: "orders_v2"},
		{Namespace: "shop", Service: strings.Repeat("a", 64)},
		{Namespace: "shop", Service: "orders", PortName: "HTTP port"},
	} {
		if err := source.validate(); err == nil {
			t.Errorf("%+v was accepted", source)
		}
	}
	if err := (KubernetesSource{Namespace: "shop", Service: "orders", PortName: "http-alt"}).validate(); err != nil {
		t.Errorf("a valid source was refused: %v", err)
	}
}

func slice(name string, ports map[string]int32, endpoints ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Name: name}, AddressType: discoveryv1.AddressTypeIPv4, Endpoints: endpoints}
	for portName, number := range ports {
		s.Ports = append(s.Ports, discoveryv1.EndpointPort{Name: &portName, Port: &number})
	}
	return s
}

func endpoint(address string, ready, serving, terminating *bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{Addresses: []string{address}, Conditions: discoveryv1.EndpointConditions{Ready: ready, Serving: serving, Terminating: terminating}}
}

func TestEndpointSlicesBecomeMembers(t *testing.T) {
	yes, no := new(bool), new(bool)
	*yes = true
	slices := []*discoveryv1.EndpointSlice{
		slice("app-a", map[string]int32{"http": 8000, "metrics": 9000},
			endpoint("10.0.0.1", yes, yes, no),
			endpoint("10.0.0.2", nil, nil, nil), // conditions unset: ready, as the API says
			endpoint("10.0.0.3", no, yes, yes),  // serving but terminating: drain
			endpoint("10.0.0.4", no, no, no),    // failing readiness: no new requests
		),
		// The same pod in a second slice while the controller moves it: ready wins.
		slice("app-b", map[string]int32{"http": 8000}, endpoint("10.0.0.3", yes, yes, no), endpoint("fd00::5", yes, yes, no)),
		slice("app-c", map[string]int32{"grpc": 9090}, endpoint("10.0.0.9", yes, yes, no)),
	}
	got, lacking := endpointsOf(slices, "http")
	want := map[string]endpointState{
		"10.0.0.1:8000": endpointReady, "10.0.0.2:8000": endpointReady, "10.0.0.3:8000": endpointReady,
		"10.0.0.4:8000": endpointDraining, "[fd00::5]:8000": endpointReady,
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	if !reflect.DeepEqual(lacking, []string{"app-c"}) {
		t.Errorf("slices without the port: got %v", lacking)
	}
	// Without a port name, a slice's only port is used; a slice with two is ambiguous.
	got, lacking = endpointsOf(slices, "")
	if _, ok := got["10.0.0.9:9090"]; !ok || len(got) != 3 || !reflect.DeepEqual(lacking, []string{"app-a"}) {
		t.Errorf("no port name: got %v, lacking %v", got, lacking)
	}
}

// The watcher's members outlive their 60 s lease while it syncs every 15 s (an API server outage
// of any length: the last known slices), leave when it stops syncing (its Caddy is gone), and a
// member the registry lost comes back at the next sync while its endpoint is ready.
func TestKubernetesMembersLiveWhileSynced(t *testing.T) {
	now := int64(1_000_000)
	realClock := nowMillis
	nowMillis = func() int64 { return now }
	defer func() { nowMillis = realClock }()
	declare(t, "kube-leases")
	w := &kubernetesWatcher{pool: "kube-leases", source: KubernetesSource{Namespace: "shop", Service: "app"}, warned: map[string]bool{}}
	member := func(address string) bool {
		view, err := describePools()
		if err != nil {
			t.Fatal(err)
		}
		for _, u := range view.Pools["kube-leases"].Upstreams {
			if u.Address == address {
				return true
			}
		}
		return false
	}
	tick := func() {
		if _, err := apply(tickCommand{NowMs: now}); err != nil {
			t.Fatal(err)
		}
	}
	slices := map[string]endpointState{"10.1.0.1:80": endpointReady, "10.1.0.2:80": endpointReady}
	w.sync(slices)
	slices["10.1.0.2:80"] = endpointDraining
	w.sync(slices)
	for range 20 { // 20 syncs 15 s apart: 5 minutes, five leases
		now += kubernetesRenewal.Milliseconds()
		w.sync(slices)
		tick()
	}
	if !member("10.1.0.1:80") || !member("10.1.0.2:80") {
		t.Fatal("synced members left the pool")
	}
	// Removed behind the watcher's back: the ready one returns, the draining one does not.
	for _, address := range []string{"10.1.0.1:80", "10.1.0.2:80"} {
		if out, err := apply(removeCommand{memberFields{Pool: "kube-leases", Address: address}}); err != nil || out.Status != 200 {
			t.Fatalf("remove %s: %v %+v", address, err, out)
		}
	}
	w.sync(slices)
	if !member("10.1.0.1:80") || member("10.1.0.2:80") {
		t.Fatalf("after the sync: ready member back %v, draining member back %v", member("10.1.0.1:80"), member("10.1.0.2:80"))
	}
	// No more syncs: the lease ends.
	now += 60_000 + 1
	tick()
	if member("10.1.0.1:80") {
		t.Error("a member outlived its lease without syncs")
	}
}
