// Command caddy is Caddy with its standard modules and the beacon module: what `make caddy`
// builds into target/caddy/caddy (the same as `xcaddy build --with
// github.com/caddy-beacon/caddy-beacon/caddy`).
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/caddy-beacon/caddy-beacon/caddy"
)

func main() {
	caddycmd.Main()
}
