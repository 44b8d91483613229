//go:build !nokubernetes

package beacon

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

// The Kubernetes source's watcher and its status (what the source does: kubernetes_source.go).
// Builds tagged nokubernetes leave this file, kubernetes_client.go and client-go out.

// kubernetesRenewal is how often the watcher syncs even without a change: each sync renews the
// members' 60 s leases (the registry's SOURCE_LEASE_MS), so they outlive an API server outage
// of any length but not a Caddy whose watcher is gone.
const (
	kubernetesRenewal = 15 * time.Second
	// How long the heartbeat at each renewal waits for the API server: a server silent for
	// longer is reported as not watched within kubernetesRenewal + this.
	kubernetesHeartbeatTimeout = 10 * time.Second
)

// validate checks the names as the API server would, so a typo fails the config load with a
// clear message instead of a watch that never sees anything.
func (s KubernetesSource) validate() error {
	for _, name := range []struct{ what, value string }{{"namespace", s.Namespace}, {"service", s.Service}} {
		if problems := validation.IsDNS1123Label(name.value); len(problems) > 0 {
			return fmt.Errorf("beacon: kubernetes: %s %q: %s", name.what, name.value, strings.Join(problems, "; "))
		}
	}
	if s.PortName != "" {
		if problems := validation.IsValidPortName(s.PortName); len(problems) > 0 {
			return fmt.Errorf("beacon: kubernetes: port name %q: %s", s.PortName, strings.Join(problems, "; "))
		}
	}
	return nil
}

// endpointState is what the EndpointSlices say of one address; lower wins when an address is
// in two slices (while one replaces the other).
type endpointState int

const (
	endpointReady endpointState = iota
	endpointDraining
)

// kubernetesWatcher keeps one pool in step with one Service.
type kubernetesWatcher struct {
	pool   string
	source KubernetesSource
	cancel context.CancelFunc
	done   chan struct{}

	mu sync.Mutex
	// Slices already reported as lacking the port, so the log says it once.
	warned map[string]bool
	// Whether the last call to the API server failed (logged once per outage).
	failing atomic.Bool
	// Whether the first list has arrived.
	synced atomic.Bool
}

var kubernetesWatchers = struct {
	sync.Mutex
	byPool map[string]*kubernetesWatcher
}{byPool: map[string]*kubernetesWatcher{}}

// kubernetesPlan is a source checked and connected at Provision, so that a typo, a missing
// kubeconfig or no cluster fails the config load with the reason; it is watched only once the
// config runs (watchKubernetes).
type kubernetesPlan struct {
	source KubernetesSource
	client rest.Interface
}

// prepareKubernetes checks the source and builds its client; it does not reach the API server.
func prepareKubernetes(source KubernetesSource) (*kubernetesPlan, error) {
	if err := source.validate(); err != nil {
		return nil, err
	}
	config, err := restConfig(source.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("beacon: kubernetes %s: %v", source, err)
	}
	client, err := newEndpointSliceClient(config)
	if err != nil {
		return nil, fmt.Errorf("beacon: kubernetes %s: %v", source, err)
	}
	return &kubernetesPlan{source: source, client: client}, nil
}

// watchKubernetes starts the pool's watcher, or keeps the running one when its source is the
// same (a reload); a different source replaces it. It does not wait for the API server: an
// unreachable one is logged and retried while the rest of Caddy serves.
func watchKubernetes(pool string, plan *kubernetesPlan) {
	kubernetesWatchers.Lock()
	running, ok := kubernetesWatchers.byPool[pool]
	if ok && running.source == plan.source {
		kubernetesWatchers.Unlock()
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	w := &kubernetesWatcher{
		pool: pool, source: plan.source, cancel: cancel, done: make(chan struct{}),
		warned: map[string]bool{},
	}
	kubernetesWatchers.byPool[pool] = w
	kubernetesWatchers.Unlock()
	if ok {
		running.stop()
	}
	go w.run(ctx, plan.client)
}

// stopKubernetes stops the pool's watcher, if it has one; the members it registered leave.
func stopKubernetes(pool string) {
	kubernetesWatchers.Lock()
	running, ok := kubernetesWatchers.byPool[pool]
	delete(kubernetesWatchers.byPool, pool)
	kubernetesWatchers.Unlock()
	if ok {
		running.stop()
	}
}

// stop ends the watch and removes what it registered: a config without the source, or a
// different one, must not keep serving the old Service's pods.
func (w *kubernetesWatcher) stop() {
	w.cancel()
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sync(map[string]endpointState{})
}

// restConfig is the kubeconfig at path, or the pod's own service account (in-cluster).
func restConfig(path string) (*rest.Config, error) {
	if path != "" {
		return clientcmd.BuildConfigFromFlags("", path)
	}
	config, err := rest.InClusterConfig()
	if err != nil {
		return nil, fmt.Errorf("%v (outside a cluster, give a kubeconfig file: kubeconfig <path>)", err)
	}
	return config, nil
}

func (w *kubernetesWatcher) logger() *zap.Logger {
	return caddy.Log().Named("beacon").With(zap.String("pool", w.pool), zap.String("kubernetes", w.source.String()))
}

// run lists and watches the Service's EndpointSlices (kubernetes_client.go), reconciling the
// pool on every change and renewing its members' leases.
func (w *kubernetesWatcher) run(ctx context.Context, client rest.Interface) {
	defer close(w.done)
	selector := labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: w.source.Service}).String()
	informer := cache.NewSharedIndexInformer(endpointSliceListWatch(client, w.source.Namespace, selector, w.outcome),
		&discoveryv1.EndpointSlice{}, 0, cache.Indexers{})
	changed := make(chan struct{}, 1)
	poke := func() {
		select {
		case changed <- struct{}{}:
		default:
		}
	}
	_, _ = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { poke() },
		UpdateFunc: func(any, any) { poke() },
		DeleteFunc: func(any) { poke() },
	})
	go informer.RunWithContext(ctx)
	renew := time.NewTicker(kubernetesRenewal)
	defer renew.Stop()
	// A watch on an API server that stopped answering (frozen, a network that drops packets)
	// sees nothing and reports nothing: each renewal also asks the server something small.
	heartbeat := func() {
		probe, cancel := context.WithTimeout(ctx, kubernetesHeartbeatTimeout)
		defer cancel()
		options := metav1.ListOptions{LabelSelector: selector, Limit: 1}
		err := client.Get().Namespace(w.source.Namespace).Resource("endpointslices").
			VersionedParams(&options, endpointSliceParameters).Do(probe).Error()
		if ctx.Err() == nil {
			w.outcome(err)
		}
	}
	synced := false
	for !synced {
		// Until the first list arrives (the API server may be down) there is nothing to
		// reconcile; the wait ends with the watcher.
		waitCtx, cancel := context.WithTimeout(ctx, time.Second)
		synced = cache.WaitForCacheSync(waitCtx.Done(), informer.HasSynced)
		cancel()
		if ctx.Err() != nil {
			return
		}
		select {
		case <-renew.C:
			heartbeat()
		default:
		}
	}
	w.synced.Store(true)
	w.logger().Info("watching EndpointSlices")
	store := informer.GetStore()
	w.syncStore(store)
	for {
		select {
		case <-ctx.Done():
			return
		case <-changed:
			w.syncStore(store)
		case <-renew.C:
			w.syncStore(store) // also renews the members' leases
			heartbeat()
		}
	}
}

// kubernetesStatus is a pool's Kubernetes source as `GET /beacon/pools` shows it.
type kubernetesStatus struct {
	Namespace string `json:"namespace"`
	Service   string `json:"service"`
	PortName  string `json:"port_name,omitempty"`
	// False while the API server cannot be read (the last known members stay).
	Watching bool `json:"watching"`
}

// kubernetesStatusOf is the pool's source and whether its watch works; nil without one.
func kubernetesStatusOf(pool string) *kubernetesStatus {
	kubernetesWatchers.Lock()
	w, ok := kubernetesWatchers.byPool[pool]
	kubernetesWatchers.Unlock()
	if !ok {
		return nil
	}
	return &kubernetesStatus{
		Namespace: w.source.Namespace, Service: w.source.Service, PortName: w.source.PortName,
		Watching: w.synced.Load() && !w.failing.Load(),
	}
}

// outcome logs the first failure of an outage and the recovery; client-go's reflector retries
// with backoff in between, and the pool keeps the members it had.
func (w *kubernetesWatcher) outcome(err error) {
	if err != nil && !w.failing.Swap(true) {
		w.logger().Warn("watching EndpointSlices failed; the last known members stay while it retries", zap.Error(err))
	} else if err == nil && w.failing.Swap(false) {
		w.logger().Info("watching EndpointSlices again")
	}
}

// desired is what the Service's EndpointSlices say now: address -> state.
func (w *kubernetesWatcher) desired(store cache.Store) map[string]endpointState {
	var found []*discoveryv1.EndpointSlice
	for _, object := range store.List() {
		if slice, ok := object.(*discoveryv1.EndpointSlice); ok {
			found = append(found, slice)
		}
	}
	wanted, lacking := endpointsOf(found, w.source.PortName)
	for _, name := range lacking {
		if !w.warned[name] {
			w.warned[name] = true
			w.logger().Warn("EndpointSlice has no such port; its endpoints are left out", zap.String("endpointslice", name))
		}
	}
	return wanted
}

// endpointsOf reads slices into address -> state, on the port named portName (the only port
// when portName is empty); it also returns the names of the slices without that port.
func endpointsOf(slices []*discoveryv1.EndpointSlice, portName string) (map[string]endpointState, []string) {
	wanted := map[string]endpointState{}
	var lacking []string
	for _, slice := range slices {
		if slice.AddressType != discoveryv1.AddressTypeIPv4 && slice.AddressType != discoveryv1.AddressTypeIPv6 {
			continue // FQDN slices are not written for Services with selectors
		}
		port, ok := slicePort(slice, portName)
		if !ok {
			if len(slice.Endpoints) > 0 {
				lacking = append(lacking, slice.Name)
			}
			continue
		}
		for _, endpoint := range slice.Endpoints {
			if len(endpoint.Addresses) == 0 {
				continue
			}
			// Consumers use the first address only (the API's documented rule).
			address := net.JoinHostPort(endpoint.Addresses[0], strconv.Itoa(int(port)))
			state := stateOf(endpoint.Conditions)
			if previous, seen := wanted[address]; !seen || state < previous {
				wanted[address] = state
			}
		}
	}
	return wanted, lacking
}

// slicePort is the slice's port named name (its only port when name is empty).
func slicePort(slice *discoveryv1.EndpointSlice, name string) (int32, bool) {
	for _, port := range slice.Ports {
		if port.Port == nil {
			continue
		}
		portName := ""
		if port.Name != nil {
			portName = *port.Name
		}
		if portName == name || (name == "" && len(slice.Ports) == 1) {
			return *port.Port, true
		}
	}
	return 0, false
}

// stateOf: ready (unset counts as ready, as the API says) joins; anything else — terminating,
// serving or not, or failing readiness — gets no new requests.
func stateOf(conditions discoveryv1.EndpointConditions) endpointState {
	if conditions.Ready == nil || *conditions.Ready {
		return endpointReady
	}
	return endpointDraining
}

// syncStore sends the registry what the slices say now.
func (w *kubernetesWatcher) syncStore(store cache.Store) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.sync(w.desired(store))
}

// sync sends the registry the source's whole list: what follows from it (ready endpoints join,
// others drain, unlisted ones leave, refusals said once, leases renewed) is the registry's
// (rust/beacon-registry/src/sources.rs).
func (w *kubernetesWatcher) sync(wanted map[string]endpointState) {
	endpoints := make([]sourceEndpoint, 0, len(wanted))
	for address, state := range wanted {
		endpoints = append(endpoints, sourceEndpoint{Address: address, Ready: state == endpointReady})
	}
	sort.Slice(endpoints, func(i, j int) bool { return endpoints[i].Address < endpoints[j].Address })
	w.command(syncCommand{Pool: w.pool, Source: "kubernetes " + w.source.String(), Endpoints: endpoints, NowMs: nowMillis()})
}

// command applies one registry command, logging what failed; the reply, or nil on an error.
func (w *kubernetesWatcher) command(cmd command) *reply {
	out, err := apply(cmd)
	if err != nil {
		w.logger().Error("registry", zap.Error(err))
		return nil
	}
	if out.Status != 200 {
		w.logger().Warn("the registry refused a command", zap.Int("status", out.Status), zap.String("reason", out.Error))
	}
	return out
}
