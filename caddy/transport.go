package beacon

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func init() {
	caddy.RegisterModule(Transport{})
}

// Transport is `transport beacon`: Caddy's own HTTP transport, with every option of `transport
// http` (it is that transport, embedded), which also sees each attempt a beacon pool's member
// gets. The upstream source (`dynamic beacon`) decides who is in the pool; only a transport sees
// how each attempt went, so what depends on that lives here: per-member proxy metrics
// (member_stats.go), responses by status class, the time to response headers, failures by kind.
//
// Which failed attempts Caddy retries stays Caddy's rule: every failed dial, and a GET (or what
// lb_retry_match allows) whose connection failed after it was made, such as a replica killed
// mid-flight. The retry goes to a member the request has not tried (retry.go). A transport
// cannot widen that rule (Caddy's DialError, which marks an attempt as safe to retry, cannot
// be made outside its package): HEAD and OPTIONS are retried with `lb_retry_match { method GET
// HEAD OPTIONS }`.
//
// Caddyfile:
//
//	reverse_proxy {
//		dynamic beacon <pool>
//		transport beacon {
//			# any option of `transport http`
//		}
//	}
//
// Requests to upstreams that are not a beacon pool's members pass through untouched.
type Transport struct {
	reverseproxy.HTTPTransport
}

// CaddyModule returns the Caddy module information.
func (Transport) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.reverse_proxy.transport.beacon",
		New: func() caddy.Module { return new(Transport) },
	}
}

// UnmarshalCaddyfile reads `transport beacon { ... }` as `transport http { ... }`.
func (t *Transport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	return t.HTTPTransport.UnmarshalCaddyfile(d)
}

// RoundTrip proxies one attempt and counts it for the member it went to.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	// Load reports are between this proxy and its members: a client's own ask is not passed
	// on (the request's headers are Caddy's copy for this attempt).
	if _, asked := req.Header[loadAskHeader]; asked {
		req.Header.Del(loadAskHeader)
	}
	var stats *memberStats
	if dial, ok := reverseproxy.GetDialInfo(req.Context()); ok {
		stats = statsOf(dial.Upstream)
	}
	if stats == nil {
		res, err := t.HTTPTransport.RoundTrip(req)
		if res != nil {
			res.Header.Del(loadReportHeader)
		}
		return res, err
	}
	ask := stats.dueForReport()
	if ask {
		req.Header.Set(loadAskHeader, "TEXT")
	}
	start := time.Now()
	res, err := t.HTTPTransport.RoundTrip(req)
	if err == nil {
		stats.responded(res.StatusCode, time.Since(start).Seconds())
		// Never passed on to the client, asked for or not.
		if report := res.Header.Get(loadReportHeader); report != "" {
			res.Header.Del(loadReportHeader)
			if ask {
				stats.reported(report)
			}
		}
		return res, nil
	}
	kind := failureKind(err)
	if kind == "" {
		return nil, err // the client went away: not the member's failure
	}
	stats.failures[kind].Inc()
	stats.failed()
	return nil, err
}

// failureKind sorts an attempt's error: "" when the client cancelled it.
func failureKind(err error) string {
	var dial reverseproxy.DialError
	switch {
	case errors.Is(err, context.Canceled):
		return ""
	case errors.As(err, &dial):
		return failedDial
	case errors.Is(err, context.DeadlineExceeded):
		return failedTimeout
	}
	var timeout net.Error
	if errors.As(err, &timeout) && timeout.Timeout() {
		return failedTimeout
	}
	// The connection was closed or reset before the response headers (EOF, ECONNRESET), or
	// whatever else ends a round trip without a response (a TLS handshake, a malformed
	// response): the member gave no answer.
	return failedClosed
}

// Interface guards.
var (
	_ http.RoundTripper     = (*Transport)(nil)
	_ caddy.Provisioner     = (*Transport)(nil)
	_ caddy.CleanerUpper    = (*Transport)(nil)
	_ caddyfile.Unmarshaler = (*Transport)(nil)
)
