package beacon

// The shared vectors (rust/beacon-registry/vectors, see its README): the registry's commands
// decoded into this host's typed commands, encoded back to the same JSON, and sent through the
// real embedded .wasm; the admin routes served by this host's handlers with a fixed clock.
// `cargo test` runs the registry vectors natively, and the companion reads the admin vectors
// with its own types: a field renamed anywhere fails a test somewhere.

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2"
)

const vectorsDir = "../rust/beacon-registry/vectors"

type registryVector struct {
	About string `json:"about"`
	Steps []struct {
		Raw     bool            `json:"raw"`
		Command json.RawMessage `json:"command"`
		Reply   json.RawMessage `json:"reply"`
	} `json:"steps"`
}

// sameJSON compares two documents as values (key order and spacing aside).
func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %s: %v", b, err)
	}
	return reflect.DeepEqual(x, y)
}

// withoutOp is a command's JSON without its op: the typed commands carry it in their type.
func withoutOp(t *testing.T, command []byte) []byte {
	t.Helper()
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(command, &fields); err != nil {
		t.Fatalf("not a JSON object: %s: %v", command, err)
	}
	delete(fields, "op")
	raw, _ := json.Marshal(fields)
	return raw
}

// readVector reads a vector file into v, refusing fields v does not have.
func readVector(t *testing.T, file string, v any) {
	t.Helper()
	text, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := strictly(text, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

// strictly decodes into v, refusing fields v does not have.
func strictly(data []byte, v any) error {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.DisallowUnknownFields()
	return decoder.Decode(v)
}

func TestRegistryVectorsThroughTheWasmWithTypedCommands(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join(vectorsDir, "registry", "*.json"))
	sort.Strings(files)
	if len(files) < 3 {
		t.Fatalf("the vectors are missing from %s", vectorsDir)
	}
	for _, file := range files {
		var vector registryVector
		readVector(t, file, &vector)
		g, err := startGuest(registryWasm)
		if err != nil {
			t.Fatal(err)
		}
		for i, step := range vector.Steps {
			var input []byte
			if step.Raw {
				var asText string
				if json.Unmarshal(step.Command, &asText) == nil {
					input = []byte(asText)
				} else {
					var value any
					_ = json.Unmarshal(step.Command, &value)
					input, _ = json.Marshal(value)
				}
			} else {
				var tagged struct {
					Op string `json:"op"`
				}
				_ = json.Unmarshal(step.Command, &tagged)
				typed := commandFor(tagged.Op)
				if typed == nil {
					t.Fatalf("%s step %d: no typed command for op %q", file, i, tagged.Op)
				}
				if err := strictly(withoutOp(t, step.Command), typed); err != nil {
					t.Fatalf("%s step %d: the typed %T does not read %s: %v", file, i, typed, step.Command, err)
				}
				if input, err = encodeCommand(typed); err != nil {
					t.Fatal(err)
				}
				if !sameJSON(t, input, step.Command) {
					t.Fatalf("%s step %d: %T encodes %s, the registry reads %s", file, i, typed, input, step.Command)
				}
			}
			raw, err := g.raw(input)
			if err != nil {
				t.Fatalf("%s step %d: %v", file, i, err)
			}
			if !sameJSON(t, raw, step.Reply) {
				t.Fatalf("%s step %d: %s\n  got  %s\n  want %s", file, i, step.Command, raw, step.Reply)
			}
			// The host's reading of the reply knows every field the registry sends.
			var out reply
			if err := strictly(raw, &out); err != nil {
				t.Fatalf("%s step %d: the host's reply type does not read %s: %v", file, i, raw, err)
			}
			if strings.Contains(string(step.Command), `"op":"pools"`) && out.Status == http.StatusOK {
				var view described
				if err := strictly(out.Data, &view); err != nil {
					t.Fatalf("%s step %d: the host's pools view does not read %s: %v", file, i, out.Data, err)
				}
			}
		}
	}
}

type adminVector struct {
	About string `json:"about"`
	Pool  string `json:"pool"`
	NowMs int64  `json:"now_ms"`
	Steps []struct {
		Request struct {
			Method string          `json:"method"`
			Path   string          `json:"path"`
			Body   json.RawMessage `json:"body,omitempty"`
		} `json:"request"`
		Response *struct {
			Status int             `json:"status"`
			Body   json.RawMessage `json:"body"`
		} `json:"response"`
	} `json:"steps"`
}

// serveAdmin calls the route's handler as Caddy's admin server does and renders an error the
// way it does: the APIError's status, and {"error": message}.
func serveAdmin(method, path string, body []byte) (int, []byte) {
	request := httptest.NewRequest(method, path, bytes.NewReader(body))
	request.Header.Set("Content-Type", "application/json")
	recorder := httptest.NewRecorder()
	handler := Admin{}.handlePoolAction
	if path == "/beacon/pools" {
		handler = Admin{}.handlePools
	}
	if err := handler(recorder, request); err != nil {
		var apiErr caddy.APIError
		if !errors.As(err, &apiErr) {
			return http.StatusInternalServerError, []byte(`{"error":"` + err.Error() + `"}`)
		}
		rendered, _ := json.Marshal(map[string]string{"error": apiErr.Err.Error()})
		return apiErr.HTTPStatus, rendered
	}
	return recorder.Code, recorder.Body.Bytes()
}

// onlyPool keeps `pool` of a GET /beacon/pools answer: other tests' pools share the registry.
func onlyPool(t *testing.T, body []byte, pool string) []byte {
	t.Helper()
	var view map[string]map[string]json.RawMessage
	if err := json.Unmarshal(body, &view); err != nil {
		t.Fatalf("GET /beacon/pools: %s: %v", body, err)
	}
	kept, _ := json.Marshal(map[string]map[string]json.RawMessage{"pools": {pool: view["pools"][pool]}})
	return kept
}

func TestAdminVectorsServedWithAFixedClock(t *testing.T) {
	file := filepath.Join(vectorsDir, "admin_api.json")
	var vector adminVector
	readVector(t, file, &vector)
	realClock := nowMillis
	nowMillis = func() int64 { return vector.NowMs }
	defer func() { nowMillis = realClock }()
	passes, fails := 1, 2
	declare(t, vector.Pool, func(c *configureCommand) { c.Passes, c.Fails = &passes, &fails })
	bless := os.Getenv("BEACON_VECTORS_BLESS") != ""
	var blessed []map[string]any
	for i, step := range vector.Steps {
		status, body := serveAdmin(step.Request.Method, step.Request.Path, step.Request.Body)
		if step.Request.Path == "/beacon/pools" && status == http.StatusOK {
			body = onlyPool(t, body, vector.Pool)
		}
		if bless {
			var request, response any
			raw, _ := json.Marshal(step.Request)
			_ = json.Unmarshal(raw, &request)
			_ = json.Unmarshal(body, &response)
			blessed = append(blessed, map[string]any{"request": request, "response": map[string]any{"status": status, "body": response}})
			continue
		}
		if step.Response == nil {
			t.Fatalf("%s step %d has no response: BEACON_VECTORS_BLESS=1 go test -run Vectors writes it", file, i)
		}
		if status != step.Response.Status || !sameJSON(t, body, step.Response.Body) {
			t.Fatalf("%s step %d: %s %s\n  got  %d %s\n  want %d %s", file, i, step.Request.Method, step.Request.Path, status, body, step.Response.Status, step.Response.Body)
		}
	}
	if bless {
		lines := make([]string, len(blessed))
		for i, step := range blessed {
			raw, _ := json.Marshal(step)
			lines[i] = "    " + string(raw)
		}
		about, _ := json.Marshal(vector.About)
		pool, _ := json.Marshal(vector.Pool)
		out := "{\n  \"about\": " + string(about) + ",\n  \"pool\": " + string(pool) + ",\n  \"now_ms\": " + strings.TrimSpace(string(mustJSON(vector.NowMs))) +
			",\n  \"steps\": [\n" + strings.Join(lines, ",\n") + "\n  ]\n}\n"
		if err := os.WriteFile(file, []byte(out), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func mustJSON(v any) []byte {
	raw, _ := json.Marshal(v)
	return raw
}
