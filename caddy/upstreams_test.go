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

func TestOutlierAndLoadReportsBlocks(t *testing.T) {
	d := caddyfile.NewTestDispenser(`beacon api {
		outlier {
			consecutive_failures 3
			eject 10s
			max_eject 1m
			max_percent 50
			uneject_on_pass
		}
		load_reports {
			blackout 2s
			expire 30s
			error_penalty 0.5
		}
	}`)
	var u Upstreams
	if err := u.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	got := *u.Outlier.settings()
	if want := (outlierSettings{ConsecutiveFailures: 3, EjectMs: 10_000, MaxEjectMs: 60_000, MaxPercent: 50, UnejectOnPass: true}); got != want {
		t.Fatalf("outlier: got %+v, want %+v", got, want)
	}
	if got, want := *u.LoadReports.settings(), (loadSettings{BlackoutMs: 2000, ExpireMs: 30_000, ErrorPenaltyMilli: 500}); got != want {
		t.Fatalf("load_reports: got %+v, want %+v", got, want)
	}
	// Empty blocks take the defaults (Envoy's, gRPC's).
	var defaults Upstreams
	if err := defaults.UnmarshalCaddyfile(caddyfile.NewTestDispenser(`beacon api { 
		outlier
		load_reports
	}`)); err != nil {
		t.Fatal(err)
	}
	if got := *defaults.Outlier.settings(); got != (outlierSettings{ConsecutiveFailures: 5, EjectMs: 30_000, MaxEjectMs: 300_000, MaxPercent: 10}) {
		t.Fatalf("outlier defaults: %+v", got)
	}
	if got := *defaults.LoadReports.settings(); got != (loadSettings{BlackoutMs: 10_000, ExpireMs: 180_000, ErrorPenaltyMilli: 1000}) {
		t.Fatalf("load_reports defaults: %+v", got)
	}
	for _, bad := range []string{
		`beacon a { outlier { eject } }`, `beacon a { outlier { eject 1x } }`, `beacon a { outlier { bogus 1 } }`,
		`beacon a { outlier { uneject_on_pass yes } }`, `beacon a { outlier extra }`,
		`beacon a { load_reports { error_penalty -1 } }`, `beacon a { load_reports { blackout } }`, `beacon a { load_reports { max 1 } }`,
	} {
		var u Upstreams
		if err := u.UnmarshalCaddyfile(caddyfile.NewTestDispenser(bad)); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
}
