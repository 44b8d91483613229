//go:build linux

package beacon

import (
	"net"
	"path/filepath"
	"slices"
	"testing"
)

// The process's own listening sockets, as /proc shows them: a TCP socket on loopback, one on
// all interfaces, a Unix socket; not a socket that only connects.
func TestOwnListenersAreReadOffTheProcess(t *testing.T) {
	loopback, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer loopback.Close()
	everywhere, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	defer everywhere.Close()
	socket := filepath.Join(t.TempDir(), "admin.sock")
	unix, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close()
	client, err := net.Dial("tcp", loopback.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	own := ownListeners()
	for _, want := range []string{loopback.Addr().String(), "[::]:" + portOf(everywhere), "unix/" + socket} {
		if !slices.Contains(own, want) {
			t.Errorf("%s is not among %v", want, own)
		}
	}
	if slices.Contains(own, client.LocalAddr().String()) {
		t.Errorf("a connecting socket (%s) counted as listening", client.LocalAddr())
	}
	facts := currentHostFacts()
	if !slices.Contains(facts.Listeners, loopback.Addr().String()) || !slices.Contains(facts.LocalAddresses, "127.0.0.1") {
		t.Errorf("host facts: %+v", facts)
	}
}

func portOf(listener net.Listener) string {
	_, port, _ := net.SplitHostPort(listener.Addr().String())
	return port
}

func TestProcAddressesDecode(t *testing.T) {
	for text, want := range map[string]string{
		"0100007F":                         "127.0.0.1",
		"00000000":                         "0.0.0.0",
		"00000000000000000000000001000000": "::1",
		"0000000000000000FFFF00000100007F": "127.0.0.1", // ::ffff:127.0.0.1
	} {
		if got := procIP(text); got == nil || !got.Equal(net.ParseIP(want)) {
			t.Errorf("%s: got %v, want %s", text, got, want)
		}
	}
	for _, bad := range []string{"", "0100007", "zz00007F", "0100007F00"} {
		if procIP(bad) != nil {
			t.Errorf("%q decoded", bad)
		}
	}
}
