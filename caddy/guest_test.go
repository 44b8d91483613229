package beacon

import (
	"encoding/json"
	"strings"
	"testing"
)

// The guest's ABI, exercised with the real embedded .wasm (a fresh instance per test).
func TestGuestABIRoundTripsCommands(t *testing.T) {
	g, err := startGuest(registryWasm)
	if err != nil {
		t.Fatal(err)
	}
	configured, err := g.command(configureCommand{Pool: "abi", Claim: 1})
	if err != nil || configured.Status != 200 {
		t.Fatalf("configure: %v %+v", err, configured)
	}
	if committed, err := g.command(commitCommand{claimFields{Claim: 1}}); err != nil || committed.Status != 200 {
		t.Fatalf("commit: %v %+v", err, committed)
	}
	registered, err := g.command(registerCommand{Pool: "abi", Address: "127.0.0.1:8001", NowMs: 1})
	if err != nil || registered.Status != 200 || len(registered.Changed) != 1 || registered.Events[0].Name != "registered" {
		t.Fatalf("register: %v %+v", err, registered)
	}
	out, _ := g.command(offerCommand{Pool: "abi", NowMs: 2})
	var current offered
	if err := json.Unmarshal(out.Data, &current); err != nil || len(current.Upstreams) != 1 || current.Upstreams[0].Address != "127.0.0.1:8001" {
		t.Fatalf("offer: %s %v", out.Data, err)
	}
	// Malformed input is a refused command, not a broken guest.
	raw, err := g.raw([]byte("{not json"))
	if err != nil || !strings.Contains(string(raw), `"status":400`) {
		t.Fatalf("malformed: %s %v", raw, err)
	}
}

func TestGuestMemoryStaysFlatOverManyCalls(t *testing.T) {
	g, err := startGuest(registryWasm)
	if err != nil {
		t.Fatal(err)
	}
	big := `{"op":"configure","claim":1,"pool":"` + strings.Repeat("x", 1<<20) + `"}`
	if _, err := g.raw([]byte(big)); err != nil {
		t.Fatal(err)
	}
	after := g.module.Memory().Size()
	for i := 0; i < 2000; i++ {
		if _, err := g.raw([]byte(big)); err != nil {
			t.Fatal(err)
		}
	}
	if grown := g.module.Memory().Size() - after; grown > 4<<20 {
		t.Fatalf("guest memory grew by %d bytes over 2000 calls: buffers are leaking", grown)
	}
}
