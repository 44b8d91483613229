package beacon

// Fuzzing what reaches the module from the network: the admin route's body and path, and raw
// bytes into the real .wasm's command entry point. `make test` runs each seed corpus (the
// f.Add calls and testdata/fuzz/) as plain tests; `make fuzz` runs the fuzzers for longer.

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzAdminPoolAction: any path under /beacon/pools/ and any body answers a status with a
// message, never a panic; a 200 only ever comes with one of the route's own shapes, and
// nothing the pool refuses ends up registered.
func FuzzAdminPoolAction(f *testing.F) {
	declare(f, "fuzz")
	for _, seed := range []struct{ action, body string }{
		{"register", `{"address":"127.0.0.1:8001","lease_ms":15000,"weight":100}`},
		{"register", `{"address":"unix//run/app/../../etc/passwd"}`},
		{"register", `{"address":"[::ffff:169.254.169.254]:80"}`},
		{"register", `{"address":"a:1"}{"address":"x"}`},
		{"renew", `{"ADDRESS":"127.0.0.1:8001"}`},
		{"weight", `{"address":"127.0.0.1:8001","weight":-1}`},
		{"drain", `{"address":"127.0.0.1:8001","address":"x"}`},
		{"remove", `[]`},
		{"explode", `{}`},
	} {
		f.Add(seed.action, seed.body)
	}
	f.Fuzz(func(t *testing.T, action, body string) {
		request := httptest.NewRequest(http.MethodPost, "/beacon/pools/fuzz/register", strings.NewReader(body))
		request.URL.Path = "/beacon/pools/fuzz/" + action // any bytes, as a server would decode them
		request.Header.Set("Content-Type", "application/json")
		recorder := httptest.NewRecorder()
		err := Admin{}.handlePoolAction(recorder, request)
		if err != nil {
			return // an APIError: a status and a message for Caddy's admin server to render
		}
		if recorder.Code != http.StatusOK {
			t.Fatalf("%s %q: %d without an error", action, body, recorder.Code)
		}
		var answer map[string]any
		if err := json.Unmarshal(recorder.Body.Bytes(), &answer); err != nil {
			t.Fatalf("%s %q: answered %q", action, body, recorder.Body.String())
		}
		for _, member := range members(t, "fuzz") {
			if strings.HasPrefix(member.Address, "unix/") || strings.Contains(member.Address, "169.254.") {
				t.Fatalf("%s %q registered %s, which the pool refuses", action, body, member.Address)
			}
		}
	})
}

// FuzzGuestRawInput: the real .wasm answers any bytes with a reply of its own shape (a status,
// and an error unless 200), never a trap, and its memory does not grow with what it was sent.
func FuzzGuestRawInput(f *testing.F) {
	g, err := startGuest(registryWasm)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		`{"op":"configure","pool":"p","allow":["10.0.0.0/8"]}`,
		`{"op":"register","pool":"p","address":"10.0.0.1:80","now_ms":1,"weight":5,"resolved":["10.0.0.1"]}`,
		`{"op":"weight","pool":"p","address":"10.0.0.1:80","weight":4294967295,"now_ms":2}`,
		`{"op":"offer","pool":"p","now_ms":3}`,
		`{"op":"pools","now_ms":18446744073709551615}`,
		`{"op":"probed","pool":"p","address":"10.0.0.1:80","now_ms":4,"result":{"status":200,"body":"{\"status\":\"fail\"}"}}`,
		"not json", "", "\x00\xff",
	} {
		f.Add([]byte(seed))
	}
	before := g.module.Memory().Size()
	f.Fuzz(func(t *testing.T, input []byte) {
		raw, err := g.raw(input)
		if err != nil {
			t.Fatalf("%q: the guest failed: %v", input, err)
		}
		var out reply
		if err := strictly(raw, &out); err != nil || out.Status == 0 || (out.Status != 200 && out.Error == "") {
			t.Fatalf("%q: not a reply: %s (%v)", input, raw, err)
		}
		if grown := g.module.Memory().Size() - before; grown > 64<<20 {
			t.Fatalf("guest memory grew by %d bytes", grown)
		}
	})
}
