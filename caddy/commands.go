package beacon

// The registry's commands, typed: one struct per variant of the Command enum in
// rust/beacon-registry/src/registry.rs, field for field, each carrying its "op" tag. The shared
// vectors under rust/beacon-registry/vectors/ decode every command into these types and send it
// through the real .wasm (vectors_test.go), and `cargo test` runs the same files against the
// registry natively, so a field renamed on one side fails a test on the other.

const (
	opConfigure = "configure"
	opRegister  = "register"
	opRenew     = "renew"
	opDrain     = "drain"
	opRemove    = "remove"
	opProbed    = "probed"
	opTick      = "tick"
	opOffer     = "offer"
	opPools     = "pools"
)

// configureCommand declares a pool (a config load), with its health thresholds.
type configureCommand struct {
	Op     string `json:"op"`
	Pool   string `json:"pool"`
	Passes *int   `json:"passes,omitempty"`
	Fails  *int   `json:"fails,omitempty"`
}

// registerCommand joins (or re-joins) an address; LeaseMs nil asks for the registry's default.
type registerCommand struct {
	Op      string `json:"op"`
	Pool    string `json:"pool"`
	Address string `json:"address"`
	LeaseMs *int64 `json:"lease_ms,omitempty"`
	NowMs   int64  `json:"now_ms"`
}

// renewCommand extends a lease.
type renewCommand struct {
	Op      string `json:"op"`
	Pool    string `json:"pool"`
	Address string `json:"address"`
	NowMs   int64  `json:"now_ms"`
}

// memberCommand drains or removes an address (opDrain, opRemove).
type memberCommand struct {
	Op      string `json:"op"`
	Pool    string `json:"pool"`
	Address string `json:"address"`
}

// probedCommand reports one active check of an address.
type probedCommand struct {
	Op      string      `json:"op"`
	Pool    string      `json:"pool"`
	Address string      `json:"address"`
	NowMs   int64       `json:"now_ms"`
	Result  probeResult `json:"result"`
}

// clockCommand carries only the time: opTick ends expired leases, opPools describes every pool.
type clockCommand struct {
	Op    string `json:"op"`
	NowMs int64  `json:"now_ms"`
}

// offerCommand asks for the addresses to offer for a pool, in order.
type offerCommand struct {
	Op   string `json:"op"`
	Pool string `json:"pool"`
}

// commandFor is the typed command for an op, empty, for decoding (nil for an unknown op).
func commandFor(op string) any {
	switch op {
	case opConfigure:
		return &configureCommand{}
	case opRegister:
		return &registerCommand{}
	case opRenew:
		return &renewCommand{}
	case opDrain, opRemove:
		return &memberCommand{}
	case opProbed:
		return &probedCommand{}
	case opTick, opPools:
		return &clockCommand{}
	case opOffer:
		return &offerCommand{}
	}
	return nil
}
