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
		go func(address string) {
			defer wg.Done()
			result := probeOne(ctx, address, settings)
			if ctx.Err() != nil {
				return
			}
			_, _ = apply(probedCommand{Op: opProbed, Pool: p.name, Address: address, NowMs: nowMillis(), Result: result})
		}(upstream.Address)
	}
	wg.Wait()
}

// probeResult is the registry's ProbeResult.
type probeResult struct {
	Status *int   `json:"status"`
	Body   string `json:"body"`
	Error  string `json:"error,omitempty"`
}

func probeOne(ctx context.Context, address string, settings checks) probeResult {
	ctx, cancel := context.WithTimeout(ctx, settings.timeout)
	defer cancel()
	client, target := clientFor(address)
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, target+settings.uri, nil)
	if err != nil {
		return probeResult{Error: err.Error()}
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

var (
	tcpClient = &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, MaxResponseHeaderBytes: 16 * 1024},
		// A health check follows no redirect: the answer is the upstream's own.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	unixClients sync.Map // path -> *http.Client
)

// clientFor returns the client and URL prefix that reach `address` (host:port or unix//path).
func clientFor(address string) (*http.Client, string) {
	path, isUnix := strings.CutPrefix(address, "unix/")
	if !isUnix {
		return tcpClient, "http://" + address
	}
	if client, ok := unixClients.Load(path); ok {
		return client.(*http.Client), "http://localhost"
	}
	client := &http.Client{
		Transport: &http.Transport{
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: 16 * 1024,
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dialer net.Dialer
				return dialer.DialContext(ctx, "unix", path)
			},
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	actual, _ := unixClients.LoadOrStore(path, client)
	return actual.(*http.Client), "http://localhost"
}
