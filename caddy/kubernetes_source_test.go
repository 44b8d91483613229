package beacon

import (
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// Both builds (with and without -tags nokubernetes) read the same syntax.
func TestKubernetesCaddyfileSyntax(t *testing.T) {
	var u Upstreams
	err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`beacon app {
		kubeconfig /etc/caddy/kubeconfig
		kubernetes shop/orders http
	}`))
	if err != nil {
		t.Fatal(err)
	}
	want := KubernetesSource{Namespace: "shop", Service: "orders", PortName: "http", Kubeconfig: "/etc/caddy/kubeconfig"}
	if u.Kubernetes == nil || *u.Kubernetes != want {
		t.Fatalf("got %+v, want %+v", u.Kubernetes, want)
	}
	for bad, says := range map[string]string{
		"kubernetes":                    "kubernetes <namespace>/<service>",
		"kubernetes orders":             "expected <namespace>/<service>",
		"kubernetes shop/orders http x": "kubernetes <namespace>/<service>",
		"kubernetes /orders":            "expected <namespace>/<service>",
		"kubernetes shop/a/b":           "expected <namespace>/<service>",
		"kubeconfig /etc/kubeconfig":    "kubeconfig needs a kubernetes source",
		"kubeconfig":                    "wrong argument count",
	} {
		bad = "beacon a {\n" + bad + "\n}"
		var u Upstreams
		err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad))
		if err == nil || !strings.Contains(err.Error(), says) {
			t.Errorf("%q: got %v, want an error saying %q", bad, err, says)
		}
	}
}
