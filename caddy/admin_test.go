package beacon

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

// declare runs a pool as a loaded config's module would: a claim staged and committed, and the
// pool's state held (until the test ends).
func declare(t testing.TB, name string, settings ...func(*configureCommand)) {
	t.Helper()
	declaration := configureCommand{Pool: name, Claim: nextClaim.Add(1)}
	for _, set := range settings {
		set(&declaration)
	}
	for _, step := range []command{declaration, commitCommand{claimFields{Claim: declaration.Claim}}} {
		if out, err := apply(step); err != nil || out.Status != 200 {
			t.Fatalf("declaring %s: %+v: %v %+v", name, step, err, out)
		}
	}
	acquirePool(name)
	t.Cleanup(func() {
		_, _ = apply(releaseCommand{claimFields{Claim: declaration.Claim}})
		releasePool(name)
	})
}

// post calls the admin handler like Caddy's admin server does; returns the status (from the
// APIError when it failed) and the body.
func post(path, contentType, body string) (int, string) {
	request := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	if contentType != "" {
		request.Header.Set("Content-Type", contentType)
	}
	recorder := httptest.NewRecorder()
	err := Admin{}.handlePoolAction(recorder, request)
	var apiErr caddy.APIError
	if errors.As(err, &apiErr) {
		return apiErr.HTTPStatus, apiErr.Err.Error()
	}
	return recorder.Code, recorder.Body.String()
}

func members(t testing.TB, name string) []upstreamStatus {
	t.Helper()
	view, err := describePools()
	if err != nil {
		t.Fatal(err)
	}
	return view.Pools[name].Upstreams
}

func TestAdminRefusesBadInputClearly(t *testing.T) {
	declare(t, "bad-input")
	for _, c := range []struct {
		name, path, contentType, body string
		status                        int
	}{
		{"malformed JSON", "/beacon/pools/bad-input/register", "application/json", `{"address":`, 400},
		{"unknown field", "/beacon/pools/bad-input/register", "application/json", `{"address":"10.0.0.1:80","x":1}`, 400},
		{"not an address", "/beacon/pools/bad-input/register", "application/json", `{"address":"10.0.0.1"}`, 400},
		{"header injection", "/beacon/pools/bad-input/register", "application/json", `{"address":"a:80\r\nX: y"}`, 400},
		{"negative lease", "/beacon/pools/bad-input/register", "application/json", `{"address":"10.0.0.1:80","lease_ms":-5}`, 400},
		{"unknown pool", "/beacon/pools/nope/register", "application/json", `{"address":"10.0.0.1:80"}`, 404},
		{"unknown action", "/beacon/pools/bad-input/explode", "application/json", `{}`, 404},
		{"unknown upstream", "/beacon/pools/bad-input/drain", "application/json", `{"address":"10.0.0.9:80"}`, 404},
		{"not JSON", "/beacon/pools/bad-input/register", "text/plain", `{"address":"10.0.0.1:80"}`, 415},
		{"huge body", "/beacon/pools/bad-input/register", "application/json", `{"address":"` + strings.Repeat("a", 1<<20) + `"}`, 413},
		// What Go's decoder alone would let through (found by fuzzing the route).
		{"data after the object", "/beacon/pools/bad-input/register", "application/json", `{"address":"10.0.0.1:80"}{"address":"10.0.0.2:80"}`, 400},
		{"a key in another case", "/beacon/pools/bad-input/register", "application/json", `{"ADDRESS":"10.0.0.1:80"}`, 400},
		{"a key twice", "/beacon/pools/bad-input/register", "application/json", `{"address":"10.0.0.9:80","address":"10.0.0.1:80"}`, 400},
		{"a broken Content-Type", "/beacon/pools/bad-input/register", "application/json;;;", `{"address":"10.0.0.1:80"}`, 415},
		{"a lease on renew", "/beacon/pools/bad-input/renew", "application/json", `{"address":"10.0.0.1:80","lease_ms":5000}`, 400},
		{"a weight on drain", "/beacon/pools/bad-input/drain", "application/json", `{"address":"10.0.0.1:80","weight":5}`, 400},
		{"a path that climbs", "/beacon/pools/bad-input/register", "application/json", `{"address":"unix//run/app/../../etc/passwd"}`, 400},
		{"a fractional lease", "/beacon/pools/bad-input/register", "application/json", `{"address":"10.0.0.1:80","lease_ms":1.5}`, 400},
		{"an array", "/beacon/pools/bad-input/register", "application/json", `[{"address":"10.0.0.1:80"}]`, 400},
		{"no address", "/beacon/pools/bad-input/register", "application/json", `{"lease_ms":5000}`, 400},
	} {
		status, body := post(c.path, c.contentType, c.body)
		if status != c.status || body == "" {
			t.Errorf("%s: got %d %q, want %d with a message", c.name, status, body, c.status)
		}
	}
	if got := members(t, "bad-input"); len(got) != 0 {
		t.Fatalf("nothing was registered by bad input, got %+v", got)
	}
}

func TestConcurrentRegistrationsMakeNoDuplicates(t *testing.T) {
	declare(t, "crowd")
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		for repeat := 0; repeat < 3; repeat++ {
			wg.Add(1)
			go func(i int) {
				defer wg.Done()
				if status, body := post("/beacon/pools/crowd/register", "application/json", fmt.Sprintf(`{"address":"127.0.0.1:%d"}`, 9100+i)); status != 200 {
					t.Errorf("register: %d %s", status, body)
				}
			}(i)
		}
	}
	wg.Wait()
	if got := members(t, "crowd"); len(got) != 10 {
		t.Fatalf("want 10 upstreams, got %d: %+v", len(got), got)
	}
	if got := len(existingPool("crowd").snapshot.Load().upstreams); got != 10 {
		t.Fatalf("the snapshot offers %d upstreams, want 10", got)
	}
}

func TestDrainAndRemoveChangeTheSnapshotNotTheListing(t *testing.T) {
	declare(t, "life")
	for _, address := range []string{"127.0.0.1:9201", "127.0.0.1:9202"} {
		if status, body := post("/beacon/pools/life/register", "application/json", `{"address":"`+address+`","lease_ms":60000}`); status != 200 || !strings.Contains(body, `"created":true`) {
			t.Fatalf("register %s: %d %s", address, status, body)
		}
	}
	if status, _ := post("/beacon/pools/life/drain", "application/json", `{"address":"127.0.0.1:9201"}`); status != 200 {
		t.Fatalf("drain: %d", status)
	}
	snapshot := existingPool("life").snapshot.Load().upstreams
	if len(snapshot) != 1 || snapshot[0].Dial != "127.0.0.1:9202" {
		t.Fatalf("a draining upstream is not offered: %+v", snapshot)
	}
	listed := members(t, "life")
	if len(listed) != 2 || !listed[0].Draining {
		t.Fatalf("a draining upstream stays listed: %+v", listed)
	}
	if status, _ := post("/beacon/pools/life/remove", "application/json", `{"address":"127.0.0.1:9201"}`); status != 200 {
		t.Fatalf("remove: %d", status)
	}
	if got := members(t, "life"); len(got) != 1 {
		t.Fatalf("removed: %+v", got)
	}
}

func TestPoolsListingIsJSON(t *testing.T) {
	declare(t, "listing")
	recorder := httptest.NewRecorder()
	if err := (Admin{}).handlePools(recorder, httptest.NewRequest(http.MethodGet, "/beacon/pools", nil)); err != nil {
		t.Fatal(err)
	}
	var view described
	if err := json.Unmarshal(recorder.Body.Bytes(), &view); err != nil {
		t.Fatalf("%v: %s", err, recorder.Body.String())
	}
	if _, ok := view.Pools["listing"]; !ok {
		t.Fatalf("pool missing: %s", recorder.Body.String())
	}
	if err := (Admin{}).handlePools(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/beacon/pools", nil)); err == nil {
		t.Fatal("POST /beacon/pools must be refused")
	}
}

// A name is registered as what it resolves to: a name that does not resolve is a 400 naming it,
// one that resolves to a refused address a 403. (Resolved here, not through DNS.)
func TestNamesAreJudgedByWhatTheyResolveTo(t *testing.T) {
	declare(t, "named")
	realLookup := lookupIPAddr
	defer func() { lookupIPAddr = realLookup }()
	lookupIPAddr = func(_ context.Context, host string) ([]net.IPAddr, error) {
		switch host {
		case "app.internal":
			return []net.IPAddr{{IP: net.IPv4(10, 0, 0, 7)}}, nil
		case "rebind.internal":
			return []net.IPAddr{{IP: net.IPv4(10, 0, 0, 8)}, {IP: net.IPv4(169, 254, 169, 254)}}, nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	for _, c := range []struct {
		address string
		status  int
	}{{"app.internal:8000", 200}, {"rebind.internal:8000", 403}, {"nowhere.internal:8000", 400}} {
		status, body := post("/beacon/pools/named/register", "application/json", `{"address":"`+c.address+`"}`)
		if status != c.status {
			t.Errorf("%s: got %d %s, want %d", c.address, status, body, c.status)
		}
	}
}
