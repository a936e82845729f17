package apikey

import (
	"encoding/json"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

// unmarshalEditableKeys reads the keys block of a directive that changes
// keys (the portal, the leak report endpoint): keys file <path> or keys
// redis {…}, the sources whose keys can be changed.
func unmarshalEditableKeys(d *caddyfile.Dispenser, directive string) (json.RawMessage, error) {
	if !d.NextArg() {
		return nil, d.ArgErr()
	}
	name := d.Val()
	if name != "file" && name != "redis" {
		return nil, d.Errf("%s: keys %s cannot be changed; use keys file <path> or keys redis {…}", directive, name)
	}
	keys, err := caddyfile.UnmarshalModule(d, "http.apikey.sources."+name)
	if err != nil {
		return nil, err
	}
	return caddyconfig.JSONModuleObject(keys, "source", name, nil), nil
}
