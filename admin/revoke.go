package admin

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keyservice"
)

// revoke answers POST /apikey/keys/<id>/revoke: the key is revoked in
// every store in use that holds its id (a key file and Redis both may,
// during a migration), in the stores' name order, and the answer lists
// them. A store that cannot be reached fails the request (503) after the
// others were tried, naming what was revoked and what was not: revoking
// again is safe, and finishes the job.
func revoke(w http.ResponseWriter, r *http.Request, running *app.App) error {
	id := r.PathValue("id")
	stores := running.EditableStores()
	sort.SliceStable(stores, func(i, j int) bool { return stores[i].Store.Describe() < stores[j].Store.Describe() })
	revoked := []string{}
	var failed []string
	for _, es := range stores {
		name := es.Store.Describe()
		_, err := es.Store.Update(r.Context(), id, func(rec *keystore.Record) error {
			rec.Revoked = true
			return nil
		})
		if errors.Is(err, keystore.ErrUnknownID) {
			continue
		}
		if err != nil {
			failed = append(failed, fmt.Sprintf("%s: %v", name, err))
			continue
		}
		es.Source.Changed(id)
		auditAll(running, audit.Entry{"event": "key.revoked", "key_id": id, "store": name})
		revoked = append(revoked, name)
	}
	if len(failed) > 0 {
		return apiError(http.StatusServiceUnavailable, "revoking %q: revoked in %d store(s) %v; failed in %s; try again",
			id, len(revoked), revoked, strings.Join(failed, "; "))
	}
	if len(revoked) > 0 {
		return writeJSON(w, map[string]any{"id": id, "revoked": true, "stores": revoked})
	}
	if fromService(running, id) {
		return apiError(http.StatusNotImplemented, "key %q comes from a key service, which is read-only here: revoke it in the service, then purge the cache", id)
	}
	return apiError(http.StatusNotFound, "no key has id %q", id)
}

// fromService reports whether a key service's cache has seen the id.
func fromService(running *app.App, id string) bool {
	for _, r := range running.Routes() {
		if src, ok := r.Source.(*keyservice.HTTPSource); ok && src.CacheOf().Knows(id) {
			return true
		}
	}
	return false
}

// knownID reports whether a store in use (a key file, Redis) holds the id,
// or a key service's cache has seen it.
func knownID(running *app.App, id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, es := range running.EditableStores() {
		if _, err := es.Store.Get(ctx, id); err == nil {
			return true
		}
	}
	return fromService(running, id)
}
