package beacon

import (
	"fmt"
	"strings"
)

// A Kubernetes source for a pool (`kubernetes <namespace>/<service> [port-name]`): the pool's
// members are the endpoints of the Service's EndpointSlices. Ready endpoints join; endpoints
// that are not ready (terminating, or failing their readiness probe) drain: no new requests,
// in-flight ones finish; endpoints that are gone leave. The module's own checks, slow start,
// weights and admission apply on top, as for companions' registrations.
//
// One watcher per pool lives at package level, like the pool's state: `caddy reload` with the
// same source keeps it and its members. client-go's reflector resumes a lost watch (list, then
// watch again, with backoff); meanwhile the last known members stay, their leases renewed. It
// needs get, list and watch on endpointslices in the one namespace, nothing else.

// Builds with `-tags nokubernetes` leave client-go out (kubernetes_absent.go): the binary and
// its idle RSS shrink, and a config naming a Kubernetes source fails to load, saying why. This
// file is what both builds share: the source's syntax, so a Caddyfile parses the same in both.

// KubernetesSource names the Service whose EndpointSlices are a pool's members.
type KubernetesSource struct {
	// The Service's namespace.
	Namespace string `json:"namespace"`
	// The Service's name.
	Service string `json:"service"`
	// The name of the Service port to send traffic to; may be empty when it has only one.
	PortName string `json:"port_name,omitempty"`
	// A kubeconfig file; empty means the pod's own service account (in-cluster).
	Kubeconfig string `json:"kubeconfig,omitempty"`
}

func (s KubernetesSource) String() string {
	if s.PortName == "" {
		return s.Namespace + "/" + s.Service
	}
	return s.Namespace + "/" + s.Service + " port " + s.PortName
}

// parseKubernetesSource reads `<namespace>/<service>`.
func parseKubernetesSource(text, portName string) (KubernetesSource, error) {
	namespace, service, ok := strings.Cut(text, "/")
	if !ok || namespace == "" || service == "" || strings.Contains(service, "/") {
		return KubernetesSource{}, fmt.Errorf("expected <namespace>/<service>, got %q", text)
	}
	return KubernetesSource{Namespace: namespace, Service: service, PortName: portName}, nil
}
