package beacon

import (
	"context"
	"fmt"
	"net"
	"strings"
	"time"
)

// What the registry's admission policy (rust/beacon-registry/src/admission.rs) needs from the
// host, which alone can resolve names (the sockets it can see: hostfacts.go).

// resolveTimeout bounds the lookup of a registered DNS name.
const resolveTimeout = 2 * time.Second

// lookupIPAddr resolves names (a variable: the fuzz test answers locally instead of asking DNS).
var lookupIPAddr = net.DefaultResolver.LookupIPAddr

// resolve returns what a host:port's DNS name resolves to, for the pool's admission policy to
// judge (nothing for an IP address or a Unix socket), at every registration and renewal: Caddy
// dials the first address admitted, never the name, so what it resolves to later cannot
// redirect the traffic. A name that does not resolve is an error.
func resolve(ctx context.Context, address string) ([]string, error) {
	if strings.HasPrefix(address, "unix/") {
		return nil, nil
	}
	host, _, err := net.SplitHostPort(address)
	if err != nil || net.ParseIP(host) != nil {
		return nil, nil // the registry judges the address's form
	}
	ctx, cancel := context.WithTimeout(ctx, resolveTimeout)
	defer cancel()
	addresses, err := lookupIPAddr(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("address %q: %s does not resolve: %v", address, host, err)
	}
	resolved := make([]string, 0, len(addresses))
	for _, a := range addresses {
		resolved = append(resolved, a.IP.String())
	}
	return resolved, nil
}
