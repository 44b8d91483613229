package beacon

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/caddyserver/caddy/v2/modules/caddyhttp/reverseproxy"
)

func dials(list []*reverseproxy.Upstream) []string {
	out := make([]string, len(list))
	for i, u := range list {
		out[i] = u.Dial
	}
	return out
}

func TestARetryAvoidsTheMembersTheRequestTried(t *testing.T) {
	even := newOffer(dialing("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), []uint64{1, 1, 1}, nil)
	got := dials(even.excluding(even.pick(0), []string{"10.0.0.2:80"}))
	if fmt.Sprint(got) != "[10.0.0.1:80 10.0.0.3:80]" {
		t.Fatalf("whole pool offered: the tried member stays out, got %v", got)
	}
	// One member per request (weights differ): the rotation's pick was tried, so every untried
	// member with a weight is offered instead.
	weighted := newOffer(dialing("10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"), []uint64{10, 10, 0}, nil)
	picked := weighted.pick(0)
	got = dials(weighted.excluding(picked, []string{picked[0].Dial}))
	if len(got) != 1 || got[0] == picked[0].Dial || got[0] == "10.0.0.3:80" {
		t.Fatalf("weighted: want the other weighted member, got %v (picked %v)", got, picked[0].Dial)
	}
	// Every member tried: a tried member beats none.
	got = dials(even.excluding(even.pick(0), []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}))
	if len(got) != 3 {
		t.Fatalf("all tried: want the pick as it was, got %v", got)
	}
	// Unix sockets are tried under the path Caddy's placeholder gives.
	sockets := newOffer(dialing("unix//run/a.sock", "unix//run/b.sock"), []uint64{1, 1}, nil)
	if got := dials(sockets.excluding(sockets.pick(0), []string{"/run/a.sock"})); fmt.Sprint(got) != "[unix//run/b.sock]" {
		t.Fatalf("unix: got %v", got)
	}
}

type timeoutError struct{}

func (timeoutError) Error() string   { return "i/o timeout" }
func (timeoutError) Timeout() bool   { return true }
func (timeoutError) Temporary() bool { return true }

var _ net.Error = timeoutError{}

// wrapped carries an error whose own message cannot be read (a DialError made outside Caddy's
// package has no error inside).
type wrapped struct{ inner error }

func (wrapped) Error() string   { return "dial tcp: connection refused" }
func (w wrapped) Unwrap() error { return w.inner }

func TestFailuresAreSortedByKind(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{context.Canceled, ""},
		{fmt.Errorf("round trip: %w", context.Canceled), ""},
		{wrapped{reverseproxy.DialError{}}, failedDial},
		{context.DeadlineExceeded, failedTimeout},
		{&net.OpError{Op: "read", Err: timeoutError{}}, failedTimeout},
		{io.EOF, failedClosed},
		{&net.OpError{Op: "read", Err: syscall.ECONNRESET}, failedClosed},
		{errors.New("malformed HTTP response"), failedClosed},
	} {
		if got := failureKind(c.err); got != c.want {
			t.Errorf("failureKind(%v) = %q, want %q", c.err, got, c.want)
		}
	}
}
