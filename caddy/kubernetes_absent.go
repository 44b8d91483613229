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

// kubernetesPlan never exists in this build.
type kubernetesPlan struct{}

// prepareKubernetes refuses, like validate (Caddy provisions before it validates).
func prepareKubernetes(source KubernetesSource) (*kubernetesPlan, error) {
	return nil, source.validate()
}

// watchKubernetes is never reached: prepareKubernetes refused.
func watchKubernetes(pool string, plan *kubernetesPlan) {}

// stopKubernetes has nothing to stop.
func stopKubernetes(pool string) {}

// kubernetesStatus is empty: `GET /beacon/pools` never shows a source in this build.
type kubernetesStatus struct{}

// kubernetesStatusOf is always nil in this build.
func kubernetesStatusOf(pool string) *kubernetesStatus { return nil }
