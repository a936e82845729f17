package admin

import (
	"net/http"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/ratelimit"
)

// resetQuota answers DELETE /apikey/quota/<id>: the key's counters start
// again, in every counter store in use, and its quota warnings are sent
// again when it reaches them.
func resetQuota(w http.ResponseWriter, r *http.Request, running *app.App) error {
	id := r.PathValue("id")
	if !knownID(running, id) {
		return apiError(http.StatusNotFound, "no key has id %q (in a key file, or in a key service's cache)", id)
	}
	stores := map[ratelimit.Resetter]bool{}
	marks := map[*app.Marks]bool{}
	for _, route := range running.Routes() {
		if route.Marks != nil && !marks[route.Marks] {
			marks[route.Marks] = true
			route.Marks.Forget(id)
		}
		if rs, ok := route.Counters.(ratelimit.Resetter); ok {
			stores[rs] = true
		}
	}
	for s := range stores {
		if err := s.Reset(r.Context(), id); err != nil {
			return apiError(http.StatusServiceUnavailable, "resetting the counters of %q: %v", id, err)
		}
	}
	auditAll(running, audit.Entry{"event": "quota.reset", "key_id": id})
	return writeJSON(w, map[string]any{"id": id, "reset": true, "stores": len(stores)})
}
