//go:build nokubernetes

package beacon

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// load validates a config whose one route proxies to the pool, the way `caddy validate` and a
// config load do (every module provisioned, then validated; nothing started).
func load(t *testing.T, upstreams map[string]any) error {
	t.Helper()
	upstreams["source"] = "beacon"
	config := map[string]any{
		"admin": map[string]any{"disabled": true},
		"apps": map[string]any{"http": map[string]any{"servers": map[string]any{"edge": map[string]any{
			"listen": []string{"127.0.0.1:0"},
			"routes": []any{map[string]any{"handle": []any{map[string]any{
				"handler": "reverse_proxy", "dynamic_upstreams": upstreams,
			}}}},
		}}}},
	}
	raw, err := json.Marshal(config)
	if err != nil {
		t.Fatal(err)
	}
	var cfg caddy.Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	return caddy.Validate(&cfg)
}

func TestWithoutKubernetesASourceFailsTheLoadSayingWhy(t *testing.T) {
	err := load(t, map[string]any{
		"pool":       "nokube-orders",
		"kubernetes": map[string]any{"namespace": "shop", "service": "orders"},
	})
	if err == nil || !strings.Contains(err.Error(), "built with -tags nokubernetes") || !strings.Contains(err.Error(), "shop/orders") {
		t.Fatalf("got %v, want the load refused, naming the source and the build tag", err)
	}
	if err := load(t, map[string]any{"pool": "nokube-companions"}); err != nil {
		t.Fatalf("a pool fed by companions must still load: %v", err)
	}
}
