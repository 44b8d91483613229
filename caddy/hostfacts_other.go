//go:build !linux

package beacon

// processSocketsKnown: ownListeners sees nothing here.
const processSocketsKnown = false

// ownListeners cannot read the process's sockets off this system: the registry then knows
// Caddy's default admin address, and for each registration the admin socket it came in on.
func ownListeners() []string {
	return nil
}
