package beacon

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
)

// memberBody is a pool action's body: one JSON object whose keys are exactly those the action
// takes. Go's decoder alone is looser than a route that decides where traffic goes may be: it
// matches keys without regard to case, keeps the last of duplicate keys and ignores whatever
// follows the first value. Each of those is refused here with a 400 naming it.
type memberBody struct {
	Address string
	LeaseMs *int64
	Weight  *int64
}

// keysOf is what each action's body may hold (address always).
var keysOf = map[string][]string{
	actionRegister: {"address", "lease_ms", "weight"},
	actionRenew:    {"address"},
	actionWeight:   {"address", "weight"},
	actionDrain:    {"address"},
	actionRemove:   {"address"},
}

// readMemberBody reads and checks the body of `op` from r (at most maxAdminBody bytes).
func readMemberBody(w http.ResponseWriter, r *http.Request, op string) (memberBody, error) {
	var body memberBody
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxAdminBody))
	if err != nil {
		var tooLarge *http.MaxBytesError
		if errors.As(err, &tooLarge) {
			return body, apiError(http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is larger than %d bytes", maxAdminBody))
		}
		return body, apiError(http.StatusBadRequest, "reading the body: "+err.Error())
	}
	fields, err := strictObject(raw, keysOf[op])
	if err != nil {
		return body, apiError(http.StatusBadRequest, "malformed JSON: "+err.Error())
	}
	address, ok := fields["address"]
	if !ok {
		return body, apiError(http.StatusBadRequest, `the body needs "address"`)
	}
	if err := json.Unmarshal(address, &body.Address); err != nil {
		return body, apiError(http.StatusBadRequest, `"address" must be a string`)
	}
	for key, into := range map[string]**int64{"lease_ms": &body.LeaseMs, "weight": &body.Weight} {
		if value, ok := fields[key]; ok {
			var n int64
			if err := json.Unmarshal(value, &n); err != nil {
				return body, apiError(http.StatusBadRequest, fmt.Sprintf("%q must be an integer, got %s", key, value))
			}
			*into = &n
		}
	}
	return body, nil
}

// strictObject parses data as exactly one JSON object with no duplicate keys, each key one of
// `allowed` (compared exactly), and nothing after it but whitespace.
func strictObject(data []byte, allowed []string) (map[string]json.RawMessage, error) {
	decoder := json.NewDecoder(bytes.NewReader(data))
	decoder.UseNumber()
	start, err := decoder.Token()
	if err != nil {
		return nil, err
	}
	if start != json.Delim('{') {
		return nil, fmt.Errorf("the body must be a JSON object")
	}
	fields := map[string]json.RawMessage{}
	for decoder.More() {
		token, err := decoder.Token()
		if err != nil {
			return nil, err
		}
		key, _ := token.(string)
		if !slices.Contains(allowed, key) {
			return nil, fmt.Errorf("unknown field %q (this route takes %s)", key, strings.Join(allowed, ", "))
		}
		if _, seen := fields[key]; seen {
			return nil, fmt.Errorf("%q appears twice", key)
		}
		var value json.RawMessage
		if err := decoder.Decode(&value); err != nil {
			return nil, err
		}
		fields[key] = value
	}
	if _, err := decoder.Token(); err != nil { // the closing brace
		return nil, err
	}
	if _, err := decoder.Token(); err != io.EOF {
		return nil, fmt.Errorf("data after the JSON object")
	}
	return fields, nil
}
