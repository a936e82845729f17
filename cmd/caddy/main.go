// Command caddy is Caddy with its standard modules and the apikey plugin, so
// that `go run ./cmd/caddy` is a working gateway without xcaddy.
package main

import (
	caddycmd "github.com/caddyserver/caddy/v2/cmd"

	_ "github.com/caddyserver/caddy/v2/modules/standard"

	_ "github.com/moodmnky/caddy-apikey"
)

func main() {
	caddycmd.Main()
}
