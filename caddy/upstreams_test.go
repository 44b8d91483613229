package beacon

import (
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func TestCaddyfileSyntax(t *testing.T) {
	d := caddyfile.NewTestDispenser(`beacon api {
		health_uri /healthz
		health_interval 500ms
		health_timeout 300ms
		health_passes 2
		health_fails 3
	}`)
	var u Upstreams
	if err := u.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := Upstreams{Pool: "api", HealthURI: "/healthz", HealthInterval: caddy.Duration(500 * time.Millisecond), HealthTimeout: caddy.Duration(300 * time.Millisecond), HealthPasses: 2, HealthFails: 3}
	if u.Pool != want.Pool || u.HealthURI != want.HealthURI || u.HealthInterval != want.HealthInterval || u.HealthTimeout != want.HealthTimeout || u.HealthPasses != 2 || u.HealthFails != 3 {
		t.Fatalf("got %+v", u)
	}
	for _, bad := range []string{`beacon`, `beacon a b`, `beacon a { health_bogus 1 }`, `beacon a { health_fails x }`, `beacon a { health_interval }`} {
		var u Upstreams
		if err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}

func TestValidateRefusesNonsense(t *testing.T) {
	for _, u := range []Upstreams{
		{Pool: "", HealthURI: "/ready", HealthInterval: caddy.Duration(time.Second), HealthTimeout: caddy.Duration(time.Second), HealthPasses: 1, HealthFails: 1},
		{Pool: "a", HealthURI: "ready", HealthInterval: caddy.Duration(time.Second), HealthTimeout: caddy.Duration(time.Second), HealthPasses: 1, HealthFails: 1},
		{Pool: "a", HealthURI: "/ready", HealthInterval: caddy.Duration(time.Millisecond), HealthTimeout: caddy.Duration(time.Second), HealthPasses: 1, HealthFails: 1},
	} {
		if err := u.Validate(); err == nil {
			t.Errorf("%+v was accepted", u)
		}
	}
}
