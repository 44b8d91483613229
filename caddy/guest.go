package beacon

import (
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// registryWasm is rust/beacon-registry built for wasm32-wasip1 (`make caddy` refreshes it; it is
// committed so that `xcaddy build --with github.com/caddy-beacon/caddy-beacon/caddy` needs no
// Rust toolchain).
//
//go:embed beacon_registry.wasm
var registryWasm []byte

// guest is the one instance of the registry inside this Caddy process. It lives at package
// level so that registrations survive config reloads; calls are serialized (the guest is
// single-threaded) and never made on the request path.
type guest struct {
	mu     sync.Mutex
	ctx    context.Context
	module api.Module
	alloc  api.Function
	free   api.Function
	call   api.Function
}

var theGuest struct {
	once sync.Once
	g    *guest
	err  error
}

// registry returns the process' registry instance, starting it on first use.
func registry() (*guest, error) {
	theGuest.once.Do(func() { theGuest.g, theGuest.err = startGuest(registryWasm) })
	return theGuest.g, theGuest.err
}

func startGuest(wasm []byte) (*guest, error) {
	ctx := context.Background()
	runtime := wazero.NewRuntime(ctx)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, runtime); err != nil {
		return nil, fmt.Errorf("beacon: starting WASI: %v", err)
	}
	// A reactor module (a Rust cdylib): _initialize sets it up, nothing runs main.
	config := wazero.NewModuleConfig().WithName("beacon-registry").WithStartFunctions("_initialize")
	module, err := runtime.InstantiateWithConfig(ctx, wasm, config)
	if err != nil {
		return nil, fmt.Errorf("beacon: loading the registry module: %v", err)
	}
	g := &guest{ctx: ctx, module: module, alloc: module.ExportedFunction("beacon_alloc"), free: module.ExportedFunction("beacon_free"), call: module.ExportedFunction("beacon_call")}
	if g.alloc == nil || g.free == nil || g.call == nil {
		return nil, fmt.Errorf("beacon: the registry module lacks beacon_alloc/beacon_free/beacon_call")
	}
	return g, nil
}

// reply is what the registry answers (see rust/beacon-registry/src/registry.rs).
type reply struct {
	Status  int             `json:"status"`
	Error   string          `json:"error,omitempty"`
	Changed []string        `json:"changed"`
	Events  []event         `json:"events"`
	Data    json.RawMessage `json:"data"`
}

// event is something that happened to an upstream.
type event struct {
	Name    string `json:"name"`
	Pool    string `json:"pool"`
	Address string `json:"address"`
	Reason  string `json:"reason,omitempty"`
}

// command sends one command and returns the
// reply. An error means the guest itself failed, not that the command was refused.
func (g *guest) command(cmd command) (*reply, error) {
	input, err := encodeCommand(cmd)
	if err != nil {
		return nil, err
	}
	raw, err := g.raw(input)
	if err != nil {
		return nil, err
	}
	var out reply
	if err := json.Unmarshal(raw, &out); err != nil {
		return nil, fmt.Errorf("beacon: unreadable reply from the registry: %v", err)
	}
	return &out, nil
}

// raw passes bytes in and out of the guest's memory.
func (g *guest) raw(input []byte) ([]byte, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	size := uint64(len(input))
	allocated, err := g.alloc.Call(g.ctx, size)
	if err != nil {
		return nil, fmt.Errorf("beacon: registry alloc: %v", err)
	}
	pointer := allocated[0]
	if !g.module.Memory().Write(uint32(pointer), input) {
		return nil, fmt.Errorf("beacon: writing %d bytes into the registry's memory failed", len(input))
	}
	result, err := g.call.Call(g.ctx, pointer, size)
	// The input buffer is ours to free whatever happened.
	_, _ = g.free.Call(g.ctx, pointer, size)
	if err != nil {
		return nil, fmt.Errorf("beacon: registry call: %v", err)
	}
	outPointer, outSize := uint32(result[0]>>32), uint32(result[0])
	bytes, ok := g.module.Memory().Read(outPointer, outSize)
	if !ok {
		return nil, fmt.Errorf("beacon: reading the registry's reply failed")
	}
	out := append([]byte(nil), bytes...)
	_, _ = g.free.Call(g.ctx, uint64(outPointer), uint64(outSize))
	return out, nil
}
