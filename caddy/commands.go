package beacon

import (
	"encoding/json"
	"fmt"
)

// The registry's commands, typed: one struct per variant of the Command enum in
// rust/beacon-registry/src/registry.rs, field for field, each naming its own op (the JSON
// tag), so that nothing but a command can be sent and no caller spells an op. The shared
// vectors under rust/beacon-registry/vectors/ decode every command into these types and send
// it through the real .wasm (vectors_test.go), and `cargo test` runs the same files against
// the registry natively, so a field renamed on one side fails a test on the other.

// command is one of the registry's commands.
type command interface {
	op() string
}

// encodeCommand is a command's JSON as the registry reads it: its op, then its fields.
func encodeCommand(c command) ([]byte, error) {
	fields, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	if len(fields) < 2 || fields[0] != '{' {
		return nil, fmt.Errorf("beacon: command %T does not encode to an object", c)
	}
	encoded := []byte(`{"op":` + fmt.Sprintf("%q", c.op()))
	if len(fields) > 2 {
		encoded = append(encoded, ',')
	}
	return append(encoded, fields[1:]...), nil
}

// configureCommand stages a claim on a pool while a config loads (see the registry's
// declarations.rs), with its health thresholds, slow-start window and admission list.
type configureCommand struct {
	Pool        string           `json:"pool"`
	Claim       uint64           `json:"claim"`
	Passes      *int             `json:"passes,omitempty"`
	Fails       *int             `json:"fails,omitempty"`
	SlowStartMs int64            `json:"slow_start_ms,omitempty"`
	Allow       []string         `json:"allow,omitempty"`
	Outlier     *outlierSettings `json:"outlier,omitempty"`
	Load        *loadSettings    `json:"load,omitempty"`
}

// claimFields name a staged claim.
type claimFields struct {
	Claim uint64 `json:"claim"`
}

// commitCommand commits a staged claim once its config runs.
type commitCommand struct{ claimFields }

// releaseCommand releases a claim when its config is unloaded.
type releaseCommand struct{ claimFields }

// hostCommand tells the registry where this Caddy listens ("ip:port", "unix//path") and this
// host's own addresses, for admission (see hostfacts.go).
type hostCommand struct {
	Listeners      []string `json:"listeners,omitempty"`
	LocalAddresses []string `json:"local_addresses,omitempty"`
}

// registerCommand joins (or re-joins) an address; LeaseMs nil asks for the registry's default,
// Weight nil keeps (or defaults) the weight. Resolved is what a DNS name resolved to and
// Listeners the socket the request came in on, for the pool's admission policy.
type registerCommand struct {
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
	Pool    string `json:"pool"`
	Address string `json:"address"`
	Weight  int64  `json:"weight"`
	NowMs   int64  `json:"now_ms"`
}

// renewCommand extends a lease; Resolved is what a DNS name resolves to now (judged again).
type renewCommand struct {
	Pool     string   `json:"pool"`
	Address  string   `json:"address"`
	Resolved []string `json:"resolved,omitempty"`
	NowMs    int64    `json:"now_ms"`
}

// memberFields name one member of a pool.
type memberFields struct {
	Pool    string `json:"pool"`
	Address string `json:"address"`
}

// drainCommand stops new requests to a member.
type drainCommand struct{ memberFields }

// removeCommand forgets a member.
type removeCommand struct{ memberFields }

// syncCommand is what a source (a Kubernetes Service) lists for a pool now, whole (see the
// registry's sources.rs).
type syncCommand struct {
	Pool      string           `json:"pool"`
	Source    string           `json:"source"`
	Endpoints []sourceEndpoint `json:"endpoints"`
	NowMs     int64            `json:"now_ms"`
}

// sourceEndpoint is one endpoint a source lists.
type sourceEndpoint struct {
	Address string `json:"address"`
	Ready   bool   `json:"ready"`
}

// probedCommand reports one active check of an address.
type probedCommand struct {
	Pool    string      `json:"pool"`
	Address string      `json:"address"`
	NowMs   int64       `json:"now_ms"`
	Result  probeResult `json:"result"`
}

// tickCommand ends expired leases.
type tickCommand struct {
	NowMs int64 `json:"now_ms"`
}

// poolsCommand describes every pool.
type poolsCommand struct {
	NowMs int64 `json:"now_ms"`
}

// offerCommand asks for the members to offer for a pool now, in order, with their weights.
type offerCommand struct {
	Pool  string `json:"pool"`
	NowMs int64  `json:"now_ms"`
}

func (configureCommand) op() string { return "configure" }
func (commitCommand) op() string    { return "commit" }
func (releaseCommand) op() string   { return "release" }
func (hostCommand) op() string      { return "host" }
func (registerCommand) op() string  { return "register" }
func (weightCommand) op() string    { return "weight" }
func (renewCommand) op() string     { return "renew" }
func (drainCommand) op() string     { return "drain" }
func (removeCommand) op() string    { return "remove" }
func (probedCommand) op() string    { return "probed" }
func (syncCommand) op() string      { return "sync" }
func (tickCommand) op() string      { return "tick" }
func (poolsCommand) op() string     { return "pools" }
func (offerCommand) op() string     { return "offer" }

// commandFor is the typed command for an op, empty, for decoding (nil for an unknown op).
func commandFor(op string) command {
	for _, c := range []command{
		&configureCommand{}, &commitCommand{}, &releaseCommand{}, &hostCommand{}, &registerCommand{},
		&weightCommand{}, &renewCommand{}, &drainCommand{}, &removeCommand{}, &probedCommand{}, &syncCommand{},
		&tickCommand{}, &poolsCommand{}, &offerCommand{}, &failingCommand{}, &loadsCommand{},
	} {
		if c.op() == op {
			return c
		}
	}
	return nil
}
