package admin

import (
	"net/http"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
)

// purge answers POST /apikey/cache/purge[?id=]: the key sources' caches
// drop what they hold of the key (of every key, without an id).
func purge(w http.ResponseWriter, r *http.Request, running *app.App) error {
	id := r.URL.Query().Get("id")
	if id != "" && !knownID(running, id) {
		return apiError(http.StatusNotFound, "no key has id %q (in a key file, or in a key service's cache)", id)
	}
	caches := map[*keycache.Cache]bool{}
	for _, route := range running.Routes() {
		if c := route.Cache(); c != nil {
			caches[c] = true
		}
	}
	for c := range caches {
		if id == "" {
			c.PurgeAll()
		} else {
			c.Purge(id)
		}
	}
	entry := audit.Entry{"event": "cache.purged", "caches": len(caches)}
	what := "all"
	if id != "" {
		entry["key_id"], what = id, id
	}
	auditAll(running, entry)
	return writeJSON(w, map[string]any{"purged": what, "caches": len(caches)})
}
