package beacon

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
)

// What the registry's admission policy (rust/beacon-registry/src/admission.rs) needs from the
// host, which alone can resolve names and see its own sockets.

// resolveTimeout bounds the lookup of a registered DNS name.
const resolveTimeout = 2 * time.Second

// lookupIPAddr resolves names (a variable: the fuzz test answers locally instead of asking DNS).
var lookupIPAddr = net.DefaultResolver.LookupIPAddr

// resolve returns what a host:port's DNS name resolves to, for the pool's admission policy to
// judge (nothing for an IP address or a Unix socket). A name that does not resolve is refused:
// Caddy could not dial it either.
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

// adminListeners is where Caddy's admin API can be reached, as ip:port or unix//path: the port
// (or socket) this request came in on and the default admin address, each on every address of
// this host when it listens on all of them. No pool may send the site's traffic there.
func adminListeners(r *http.Request) []string {
	var listeners []string
	if local, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		switch addr := local.(type) {
		case *net.TCPAddr:
			listeners = append(listeners, onEveryAddress(addr.Port)...)
		case *net.UnixAddr:
			listeners = append(listeners, "unix/"+addr.Name)
		}
	}
	return append(listeners, defaultAdminListeners()...)
}

// defaultAdminListeners is Caddy's default admin address, on every address of this host.
func defaultAdminListeners() []string {
	network, err := caddy.ParseNetworkAddress(caddy.DefaultAdminListen)
	if err != nil {
		return nil
	}
	if network.IsUnixNetwork() {
		return []string{"unix/" + network.Host}
	}
	return onEveryAddress(int(network.StartPort))
}

// onEveryAddress is port on loopback and on each address of this host's interfaces.
func onEveryAddress(port int) []string {
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if addresses, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addresses {
			if ipNet, ok := a.(*net.IPNet); ok {
				ips = append(ips, ipNet.IP)
			}
		}
	}
	listeners := make([]string, 0, len(ips))
	for _, ip := range ips {
		listeners = append(listeners, net.JoinHostPort(ip.String(), strconv.Itoa(port)))
	}
	return listeners
}
