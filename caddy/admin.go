package beacon

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net"
	"net/http"
	"strings"

	"github.com/caddyserver/caddy/v2"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(Admin{})
}

// Admin serves the beacon routes on Caddy's admin server (its origin checks apply). None of
// them changes Caddy's config or reloads it.
//
//	GET  /beacon/pools                  every pool and upstream: address, healthy, draining,
//	                                    in_flight, lease_expires_in_ms, passes, fails, last_error
//	POST /beacon/pools/<pool>/register  {"address": "10.0.0.5:8000", "lease_ms": 15000, "weight": 100}
//	                                    joins (or renews, or un-drains); 200 {"created": bool, "lease_ms": n, "weight": n}
//	POST /beacon/pools/<pool>/renew     {"address": ...}  extends the lease; 404 once it ended
//	POST /beacon/pools/<pool>/weight    {"address": ..., "weight": 10}  0 (standby) to 10000
//	POST /beacon/pools/<pool>/drain     {"address": ...}  no new requests; stays listed
//	POST /beacon/pools/<pool>/remove    {"address": ...}  forgets it
//
// Errors are Caddy's admin JSON, `{"error": "..."}`: 400 (malformed JSON, an address that is not
// one, a weight out of range, a name that does not resolve), 403 (the pool's admission policy
// refuses the address; a renewal refused because its name now resolves somewhere refused also
// removes the member), 404 (unknown pool or upstream), 409 (pool full), 413 (body over
// 64 KiB), 415 (not JSON). A member registered by name is dialled at the address it resolved
// to (the listing's "dial"), resolved again at every renewal.
type Admin struct{}

// maxAdminBody bounds what a registration may send.
const maxAdminBody = 64 * 1024

// maxWeight is the registry's MAX_WEIGHT.
const maxWeight = 10000

// CaddyModule returns the Caddy module information.
func (Admin) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.beacon",
		New: func() caddy.Module { return new(Admin) },
	}
}

// Routes returns the beacon routes.
func (a Admin) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/beacon/pools", Handler: caddy.AdminHandlerFunc(a.handlePools)},
		{Pattern: "/beacon/pools/", Handler: caddy.AdminHandlerFunc(a.handlePoolAction)},
	}
}

func (Admin) handlePools(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return apiError(http.StatusMethodNotAllowed, "use GET")
	}
	view, err := describePools()
	if err != nil {
		return apiError(http.StatusInternalServerError, err.Error())
	}
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(view)
}

// The routes' actions, the last segment of /beacon/pools/<pool>/<action>.
const (
	actionRegister = "register"
	actionRenew    = "renew"
	actionWeight   = "weight"
	actionDrain    = "drain"
	actionRemove   = "remove"
)

// isAction is true for the path segments that name an action.
func isAction(segment string) bool {
	_, ok := keysOf[segment]
	return ok
}

func (Admin) handlePoolAction(w http.ResponseWriter, r *http.Request) error {
	rest := strings.TrimPrefix(r.URL.Path, "/beacon/pools/")
	poolName, op, found := strings.Cut(rest, "/")
	if !found || !isAction(op) || poolName == "" {
		return apiError(http.StatusNotFound, "expected POST /beacon/pools/<pool>/{register,renew,weight,drain,remove}")
	}
	if r.Method != http.MethodPost {
		return apiError(http.StatusMethodNotAllowed, "use POST")
	}
	if mediaType, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mediaType != "application/json" {
		return apiError(http.StatusUnsupportedMediaType, "the body must be application/json")
	}
	body, err := readMemberBody(w, r, op)
	if err != nil {
		return err
	}
	if body.LeaseMs != nil && *body.LeaseMs <= 0 {
		return apiError(http.StatusBadRequest, "lease_ms must be positive")
	}
	if body.Weight != nil && (*body.Weight < 0 || *body.Weight > maxWeight) {
		return apiError(http.StatusBadRequest, fmt.Sprintf("weight must be 0 (standby) to %d, got %d", maxWeight, *body.Weight))
	}
	var cmd command
	member := memberFields{Pool: poolName, Address: body.Address}
	switch op {
	case actionRegister:
		resolved, err := resolve(r.Context(), body.Address)
		if err != nil {
			return apiError(http.StatusBadRequest, err.Error())
		}
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		cmd = registerCommand{
			Pool: poolName, Address: body.Address, LeaseMs: body.LeaseMs, Weight: body.Weight,
			Resolved: resolved, Listeners: requestListener(local), NowMs: nowMillis(),
		}
	case actionWeight:
		if body.Weight == nil {
			return apiError(http.StatusBadRequest, `a weight is required: {"address": ..., "weight": 0 to 10000}`)
		}
		cmd = weightCommand{Pool: poolName, Address: body.Address, Weight: *body.Weight, NowMs: nowMillis()}
	case actionRenew:
		// A name is judged again by what it resolves to now; one that does not resolve this
		// time keeps the address it was admitted at.
		resolved, _ := resolve(r.Context(), body.Address)
		cmd = renewCommand{Pool: poolName, Address: body.Address, Resolved: resolved, NowMs: nowMillis()}
	case actionDrain:
		cmd = drainCommand{member}
	default: // remove
		cmd = removeCommand{member}
	}
	out, err := apply(cmd)
	if err != nil {
		return apiError(http.StatusInternalServerError, err.Error())
	}
	if out.Status == http.StatusForbidden {
		refusals.WithLabelValues(poolName).Inc()
		caddy.Log().Named("beacon").Warn(op+" refused", zap.String("pool", poolName), zap.String("reason", out.Error))
	}
	if out.Status != http.StatusOK {
		return apiError(out.Status, out.Error)
	}
	w.Header().Set("Content-Type", "application/json")
	data := out.Data
	if len(data) == 0 || string(data) == "null" {
		data = json.RawMessage(`{}`)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

func apiError(status int, message string) error {
	return caddy.APIError{HTTPStatus: status, Err: errors.New(message)}
}

// Interface guards
var (
	_ caddy.AdminRouter = (*Admin)(nil)
)
