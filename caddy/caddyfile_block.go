package beacon

import (
	"errors"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// errUnknownOption is what a block's handler answers for an option it does not know.
var errUnknownOption = errors.New("unknown option")

// parseBlock reads `name { option value ... }`: each option takes one value, except the flags
// listed, which take none (their value is ""). handle sets one option; the errors say which
// option and value, and list the known ones (`known`) for an unknown option.
func parseBlock(d *caddyfile.Dispenser, name, known string, flags []string, handle func(option, value string) error) error {
	if d.NextArg() {
		return d.ArgErr()
	}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		option, value := d.Val(), ""
		isFlag := false
		for _, flag := range flags {
			isFlag = isFlag || flag == option
		}
		if !isFlag {
			if !d.NextArg() {
				return d.ArgErr()
			}
			value = d.Val()
		}
		if d.NextArg() {
			return d.ArgErr()
		}
		if err := handle(option, value); errors.Is(err, errUnknownOption) {
			return d.Errf("%s: unknown option %q (%s)", name, option, known)
		} else if err != nil {
			return d.Errf("%s %s %s: %v", name, option, value, err)
		}
	}
	return nil
}
