//go:build nokubernetes

package beacon

import "fmt"

// A Caddy built with `-tags nokubernetes` has no client-go in it (smaller binary, less idle
// RSS; README "Kubernetes"). A config naming a Kubernetes source must then fail to load, not
// run a pool that silently never gets members.

// validate refuses every source: this build cannot watch one.
func (s KubernetesSource) validate() error {
	return fmt.Errorf("beacon: kubernetes %s: this Caddy was built with -tags nokubernetes, without the Kubernetes source; build it without that tag, or give the pool companions instead", s)
}

// watchKubernetes refuses, like validate (Caddy provisions before it validates).
func watchKubernetes(pool string, source KubernetesSource) error {
	return source.validate()
}

// stopKubernetes has nothing to stop.
func stopKubernetes(pool string) {}

// kubernetesStatus is empty: `GET /beacon/pools` never shows a source in this build.
type kubernetesStatus struct{}

// kubernetesStatusOf is always nil in this build.
func kubernetesStatusOf(pool string) *kubernetesStatus { return nil }
