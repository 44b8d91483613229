package beacon

// The registry's commands, typed: one struct per variant of the Command enum in
// rust/beacon-registry/src/registry.rs, field for field, each carrying its "op" tag. The shared
// vectors under rust/beacon-registry/vectors/ decode every command into these types and send it
// through the real .wasm (vectors_test.go), and `cargo test` runs the same files against the
// registry natively, so a field renamed on one side fails a test on the other.

const (
	opConfigure = "configure"
	opCommit    = "commit"
	opRelease   = "release"
	opHost      = "host"
	opRegister  = "register"
	opRenew     = "renew"
	opDrain     = "drain"
	opRemove    = "remove"
	opWeight    = "weight"
	opProbed    = "probed"
	opTick      = "tick"
	opOffer     = "offer"
	opPools     = "pools"
)

// configureCommand stages a claim on a pool while a config loads (see the registry's
// declarations.rs), with its health thresholds, slow-start window and admission list.
type configureCommand struct {
	Op          string   `json:"op"`
	Pool        string   `json:"pool"`
	Claim       uint64   `json:"claim"`
	Passes      *int     `json:"passes,omitempty"`
	Fails       *int     `json:"fails,omitempty"`
	SlowStartMs int64    `json:"slow_start_ms,omitempty"`
	Allow       []string `json:"allow,omitempty"`
}

// claimCommand commits a staged claim once its config runs (opCommit), or releases it when its
// config is unloaded (opRelease).
type claimCommand struct {
	Op    string `json:"op"`
	Claim uint64 `json:"claim"`
}

// hostCommand tells the registry where this Caddy listens ("ip:port", "unix//path") and this
// host's own addresses, for admission (see hostfacts.go).
type hostCommand struct {
	Op             string   `json:"op"`
	Listeners      []string `json:"listeners,omitempty"`
	LocalAddresses []string `json:"local_addresses,omitempty"`
}

// registerCommand joins (or re-joins) an address; LeaseMs nil asks for the registry's default,
// Weight nil keeps (or defaults) the weight. Resolved is what a DNS name resolved to and
// Listeners the socket the request came in on, for the pool's admission policy.
type registerCommand struct {
	Op        string   `json:"op"`
	Pool      string   `json:"pool"`
	Address   string   `json:"address"`
	LeaseMs   *int64   `json:"lease_ms,omitempty"`
	Weight    *int64   `json:"weight,omitempty"`
	Resolved  []string `json:"resolved,omitempty"`
	Listeners []string `json:"listeners,omitempty"`
	NowMs     int64    `json:"now_ms"`
}

// weightCommand sets an address's weight (0: standby).
type weightCommand struct {
	Op      string `json:"op"`
	Pool    string `json:"pool"`
	Address string `json:"address"`
	Weight  int64  `json:"weight"`
	NowMs   int64  `json:"now_ms"`
}

// renewCommand extends a lease; Resolved is what a DNS name resolves to now (judged again).
type renewCommand struct {
	Op       string   `json:"op"`
	Pool     string   `json:"pool"`
	Address  string   `json:"address"`
	Resolved []string `json:"resolved,omitempty"`
	NowMs    int64    `json:"now_ms"`
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

// offerCommand asks for the members to offer for a pool now, in order, with their weights.
type offerCommand struct {
	Op    string `json:"op"`
	Pool  string `json:"pool"`
	NowMs int64  `json:"now_ms"`
}

// commandFor is the typed command for an op, empty, for decoding (nil for an unknown op).
func commandFor(op string) any {
	switch op {
	case opConfigure:
		return &configureCommand{}
	case opCommit, opRelease:
		return &claimCommand{}
	case opHost:
		return &hostCommand{}
	case opRegister:
		return &registerCommand{}
	case opRenew:
		return &renewCommand{}
	case opWeight:
		return &weightCommand{}
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
