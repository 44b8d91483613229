//go:build !linux

package beacon

// ownListeners cannot read the process's sockets off this system: the registry then knows
// Caddy's default admin address, and for each registration the admin socket it came in on.
func ownListeners() []string {
	return nil
}
