package beacon

import (
	"net"
	"reflect"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

// What the registry's admission policy needs to know about this host, which only the host can
// see: every socket this Caddy process listens on — its admin API (local and remote), its
// metrics, its sites — and this host's own addresses. The registry refuses any member that
// would reach one of them (rust/beacon-registry/src/admission.rs, OwnSockets).
//
// Caddy does not tell a module where its admin API listens, so the sockets are read off the
// process itself (hostfacts_linux.go; elsewhere only Caddy's default admin address and, for a
// registration, the admin socket it came in on are known). They change when a config loads —
// the admin server is replaced before the apps start, the remote admin after — so the facts
// are read when a config commits, again a little later, and every factsInterval.

// factsInterval is how often the facts are read again (interfaces may gain addresses).
const factsInterval = 30 * time.Second

// factsAfterLoad is when they are read again after a config load: the remote admin server
// starts after the config's apps.
const factsAfterLoad = 2 * time.Second

var lastFacts struct {
	sync.Mutex
	sent *hostCommand
}

// refreshHostFacts reads the facts and sends them to the registry when they changed (the
// registry then removes members that would reach this Caddy).
func refreshHostFacts() {
	facts := currentHostFacts()
	lastFacts.Lock()
	defer lastFacts.Unlock()
	if lastFacts.sent != nil && reflect.DeepEqual(*lastFacts.sent, facts) {
		return
	}
	out, err := apply(facts)
	if err != nil || out.Status != 200 {
		caddy.Log().Named("beacon").Error("telling the registry where this Caddy listens", zap.Error(err), zap.Any("reply", out))
		return
	}
	lastFacts.sent = &facts
}

// currentHostFacts is the registry's `host` command for this moment.
func currentHostFacts() hostCommand {
	listeners := ownListeners()
	// Caddy's default admin address, wherever the process could not be read (not Linux).
	listeners = append(listeners, defaultAdminListeners()...)
	slices.Sort(listeners)
	listeners = slices.Compact(listeners)
	var local []string
	if addresses, err := net.InterfaceAddrs(); err == nil {
		for _, a := range addresses {
			if ipNet, ok := a.(*net.IPNet); ok {
				local = append(local, ipNet.IP.String())
			}
		}
	}
	slices.Sort(local)
	return hostCommand{Listeners: listeners, LocalAddresses: slices.Compact(local)}
}

// defaultAdminListeners is Caddy's default admin address, as a listener.
func defaultAdminListeners() []string {
	network, err := caddy.ParseNetworkAddress(caddy.DefaultAdminListen)
	if err != nil {
		return nil
	}
	if network.IsUnixNetwork() {
		return []string{"unix/" + network.Host}
	}
	host := network.Host
	if ip := net.ParseIP(host); ip == nil {
		host = "127.0.0.1" // localhost
	}
	return []string{net.JoinHostPort(host, strconv.Itoa(int(network.StartPort)))}
}

// requestListener is the admin socket a registration came in on: "ip:port" or "unix//path".
// Where the process's sockets cannot be read, its port is judged as reachable on every address
// of this host ("0.0.0.0:port"): the admin API may listen on all of them.
func requestListener(local net.Addr) []string {
	switch addr := local.(type) {
	case *net.TCPAddr:
		ip := addr.IP.String()
		if !processSocketsKnown {
			ip = "0.0.0.0"
		}
		return []string{net.JoinHostPort(ip, strconv.Itoa(addr.Port))}
	case *net.UnixAddr:
		return []string{"unix/" + addr.Name}
	}
	return nil
}
