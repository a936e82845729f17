package apikey

import (
	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Placeholder values for roles and types, boxed once.
var (
	roleValues = [...]any{keystore.Reader: "reader", keystore.Writer: "writer", keystore.Admin: "admin", keystore.Custom: "custom"}
	typeValues = [...]any{keystore.Dev: "dev", keystore.Prod: "prod"}
)

// userIDPlaceholder is the placeholder Caddy's access log reads for
// user_id.
const userIDPlaceholder = "http.auth.user.id"

// setPlaceholders makes the admitted key's placeholders known to the
// request's replacer: {http.auth.user.id} and {http.apikey.id}, .name,
// .role, .type and .service.
//
// They are answered by one function added to the replacer's providers,
// which reads them from the key when asked, rather than by six
// Replacer.Set calls, which each lock the replacer and grow its map of
// static values (the first allocates the map's table): one small
// allocation per request instead, and no work for placeholders nobody
// reads. A value Set in the static map is found before any provider, so
// when another handler already answers {http.auth.user.id} (an earlier
// apikey on the same request, basic_auth, or vars), the values are Set as
// before, and this key's win as they did.
func (h *Handler) setPlaceholders(repl *caddy.Replacer, k *keystore.Key, t keystore.Type) {
	if _, taken := repl.Get(userIDPlaceholder); taken {
		repl.Set(userIDPlaceholder, k.IDValue)
		repl.Set("http.apikey.id", k.IDValue)
		repl.Set("http.apikey.name", k.NameValue)
		repl.Set("http.apikey.role", roleValues[k.Role])
		repl.Set("http.apikey.type", typeValues[t])
		repl.Set("http.apikey.service", h.serviceValue)
		return
	}
	repl.Map(func(name string) (any, bool) {
		switch name {
		case userIDPlaceholder, "http.apikey.id":
			return k.IDValue, true
		case "http.apikey.name":
			return k.NameValue, true
		case "http.apikey.role":
			return roleValues[k.Role], true
		case "http.apikey.type":
			return typeValues[t], true
		case "http.apikey.service":
			return h.serviceValue, true
		}
		return nil, false
	})
}
