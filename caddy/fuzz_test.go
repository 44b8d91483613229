package beacon

// Fuzzing what reaches the module from the network: the admin route's body and path, and raw
// bytes into the real .wasm's command entry point. `make test` runs each seed corpus (the
// f.Add calls and testdata/fuzz/) as plain tests; `make fuzz` runs the fuzzers for longer.

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
)

// FuzzAdminPoolAction: any path under /beacon/pools/ and any body answers a status with a
// message, never a panic; a 200 only ever comes with one of the route's own shapes, and
// nothing the pool refuses ends up registered.
func FuzzAdminPoolAction(f *testing.F) {
	declare(f, "fuzz")
	// Names resolve here, not through DNS: a fuzzer must not send queries off this host. A name
	// with "metadata" in it resolves to the cloud metadata address, any other to 10.0.0.1.
	realLookup := lookupIPAddr
	lookupIPAddr = func(_ context.Context, host string) ([]net.IPAddr, error) {
		if strings.Contains(host, "metadata") {
			return []net.IPAddr{{IP: net.IPv4(169, 254, 169, 254)}}, nil
		}
		return []net.IPAddr{{IP: net.IPv4(10, 0, 0, 1)}}, nil
	}
	f.Cleanup(func() { lookupIPAddr = realLookup })
	for _, seed := range []struct{ action, body string }{
		{"register", `{"address":"127.0.0.1:8001","lease_ms":15000,"weight":100}`},
		{"register", `{"address":"unix//run/app/../../etc/passwd"}`},
		{"register", `{"address":"[::ffff:169.254.169.254]:80"}`},
		{"register", `{"address":"metadata.internal:80"}`},
		{"register", `{"address":"[64:ff9b::a9fe:a9fe]:80"}`},
		{"register", `{"address":"[2002:a9fe:a9fe::1]:80"}`},
		{"renew", `{"address":"metadata.internal:80"}`},
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
			if refusedByDefault(member.Address) {
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
		`{"op":"configure","pool":"p","claim":1,"allow":["10.0.0.0/8"]}`,
		`{"op":"commit","claim":1}`,
		`{"op":"host","listeners":["0.0.0.0:2019"],"local_addresses":["10.0.0.9"]}`,
		`{"op":"release","claim":1}`,
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

// refusedByDefault is what a pool without an allow list must never hold (see the registry's
// admission.rs), written again here from the ranges' definitions: a Unix socket, an address
// that is link-local (metadata included), unspecified, multicast or reserved, a cloud metadata
// address, and IPv6 forms that carry one of those as IPv4 (mapped, compatible, translated,
// NAT64, 6to4, Teredo's server). Other IPv6 addresses that merely spell an IPv4 address in
// their last bits (::fff:169.254.169.254) are not those.
func refusedByDefault(address string) bool {
	if strings.HasPrefix(address, "unix/") {
		return true
	}
	if strings.Contains(address, "metadata") {
		return true // resolves to 169.254.169.254 in this test
	}
	parsed, err := netip.ParseAddrPort(address)
	if err != nil {
		return false // any other name resolves to 10.0.0.1 here
	}
	ip := parsed.Addr().Unmap()
	for _, carried := range carriedIPv4(ip) {
		if refusedByDefault(netip.AddrPortFrom(carried, parsed.Port()).String()) {
			return true
		}
	}
	for _, prefix := range []string{"0.0.0.0/8", "240.0.0.0/4", "100.100.100.200/32", "192.0.0.192/32", "fd00:ec2::254/128", "fd20:ce::254/128", "64:ff9b:1::/48"} {
		if netip.MustParsePrefix(prefix).Contains(ip) {
			return true
		}
	}
	return ip.IsLinkLocalUnicast() || ip.IsUnspecified() || ip.IsMulticast()
}

// carriedIPv4 is the IPv4 address an IPv6 one carries where a translator or a tunnel delivers
// it: ::a.b.c.d, ::ffff:0:a.b.c.d, 64:ff9b::a.b.c.d (last 32 bits), 2002:AABB:CCDD:: (6to4),
// 2001:0:AABB:CCDD:: (Teredo's server).
func carriedIPv4(ip netip.Addr) []netip.Addr {
	if !ip.Is6() {
		return nil
	}
	b := ip.As16()
	last := netip.AddrFrom4([4]byte{b[12], b[13], b[14], b[15]})
	zero := func(bytes []byte) bool {
		for _, x := range bytes {
			if x != 0 {
				return false
			}
		}
		return true
	}
	switch {
	case zero(b[:12]) && ip != netip.IPv6Unspecified() && ip != netip.IPv6Loopback():
		return []netip.Addr{last}
	case zero(b[:8]) && b[8] == 0xff && b[9] == 0xff && zero(b[10:12]):
		return []netip.Addr{last}
	case netip.MustParsePrefix("64:ff9b::/96").Contains(ip):
		return []netip.Addr{last}
	case b[0] == 0x20 && b[1] == 0x02:
		return []netip.Addr{netip.AddrFrom4([4]byte{b[2], b[3], b[4], b[5]})}
	case b[0] == 0x20 && b[1] == 0x01 && b[2] == 0 && b[3] == 0:
		return []netip.Addr{netip.AddrFrom4([4]byte{b[4], b[5], b[6], b[7]})}
	}
	return nil
}
