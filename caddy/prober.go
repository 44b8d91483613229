package beacon

import (
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// checks are a pool's active health-check settings.
type checks struct {
	uri      string
	interval time.Duration
	timeout  time.Duration
}

// maxProbeBody is how much of a health answer is read (a health+json body is a few hundred
// bytes; more is not read, so a misbehaving upstream cannot make Caddy buffer it).
const maxProbeBody = 64 * 1024

// prober runs a pool's active checks: every interval, a GET of each upstream's health URI, all
// at once, each within the timeout; the results go to the registry, which decides.
type prober struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func startProber(p *poolState, settings checks) *prober {
	ctx, cancel := context.WithCancel(context.Background())
	pr := &prober{cancel: cancel}
	pr.done.Add(1)
	go func() {
		defer pr.done.Done()
		ticker := time.NewTicker(settings.interval)
		defer ticker.Stop()
		for {
			probeAll(ctx, p, settings)
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	}()
	return pr
}

func (pr *prober) stop() {
	pr.cancel()
}

func probeAll(ctx context.Context, p *poolState, settings checks) {
	view, err := describePools()
	if err != nil {
		return
	}
	pool, ok := view.Pools[p.name]
	if !ok {
		return
	}
	var wg sync.WaitGroup
	for _, upstream := range pool.Upstreams {
		wg.Add(1)
		go func(address, dial string) {
			defer wg.Done()
			// The address admitted, as Caddy dials it (for a name, what it resolved to).
			result := probeOne(ctx, address, dial, settings)
			if ctx.Err() != nil {
				return
			}
			_, _ = apply(probedCommand{Pool: p.name, Address: address, NowMs: nowMillis(), Result: result})
		}(upstream.Address, upstream.Dial)
	}
	wg.Wait()
}

// probeResult is the registry's ProbeResult.
type probeResult struct {
	Status *int   `json:"status"`
	Body   string `json:"body"`
	Error  string `json:"error,omitempty"`
}

// probeOne asks `dial` for the health URI; a member registered by name is asked with its name
// as the Host, as it was before names were dialled at their address.
func probeOne(ctx context.Context, address, dial string, settings checks) probeResult {
	ctx, cancel := context.WithTimeout(ctx, settings.timeout)
	defer cancel()
	client, target := tcpClient, "http://"+dial
	if path, isUnix := strings.CutPrefix(dial, "unix/"); isUnix {
		client, target = unixClient, "http://localhost"
		ctx = context.WithValue(ctx, socketPathKey{}, path)
	}
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, target+settings.uri, nil)
	if err != nil {
		return probeResult{Error: err.Error()}
	}
	if !strings.HasPrefix(address, "unix/") {
		request.Host = address
	}
	request.Header.Set("User-Agent", "caddy-beacon-health-check")
	request.Header.Set("Accept", "application/health+json, application/json")
	response, err := client.Do(request)
	if err != nil {
		return probeResult{Error: err.Error()}
	}
	defer response.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(response.Body, maxProbeBody))
	status := response.StatusCode
	return probeResult{Status: &status, Body: string(body)}
}

// A health check follows no redirect: the answer is the upstream's own. Connections are not
// kept: a probe every interval is one request.
var (
	tcpClient = &http.Client{
		Transport:     &http.Transport{DisableKeepAlives: true, MaxResponseHeaderBytes: 16 * 1024},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	// One client for every Unix socket, the path in the request's context: a client per
	// socket, kept, grew with every member that ever joined (39.8 MiB over 10,000).
	unixClient = &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 16 * 1024,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				path, _ := ctx.Value(socketPathKey{}).(string)
				var dialer net.Dialer
				return dialer.DialContext(ctx, "unix", path)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
)

// socketPathKey carries a probe's Unix socket path to unixClient's dialer.
type socketPathKey struct{}
