package admin

import (
	"context"
	"net/http"
	"sort"
	"strconv"
	"time"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/internal/keylist"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// keyEntry is one key in GET /apikey/keys.
type keyEntry struct {
	keylist.Entry
	Source string `json:"source"`
}

// keys answers GET /apikey/keys[?owner=&after=&limit=]: a page of the keys
// of every store in use (key files, Redis), in id order, never a hash.
func keys(w http.ResponseWriter, r *http.Request, running *app.App) error {
	q := keystore.ListQuery{Owner: r.URL.Query().Get("owner"), After: r.URL.Query().Get("after")}
	if s := r.URL.Query().Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > keystore.MaxListLimit {
			return apiError(http.StatusBadRequest, "limit: %q is not a whole number from 1 to %d", s, keystore.MaxListLimit)
		}
		q.Limit = n
	}
	for name := range r.URL.Query() {
		switch name {
		case "owner", "after", "limit":
		default:
			return apiError(http.StatusBadRequest, "unknown parameter %q (want owner, after, limit)", name)
		}
	}
	limit := q.Limit
	if limit == 0 {
		limit = keystore.DefaultListLimit
	}
	now := time.Now()
	ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
	defer cancel()

	// A page from each store, merged in id order: the first limit of them
	// are this page. Sources that hold their keys in memory (a key file)
	// list from there; the others from their store.
	type candidate struct {
		key   *keystore.Key
		store app.EditableStore
	}
	var all []candidate
	more := false
	for _, es := range running.EditableStores() {
		if lister, ok := es.Source.(keystore.KeyLister); ok {
			keys, next := lister.ListKeys(q)
			more = more || next != ""
			for _, k := range keys {
				all = append(all, candidate{k, es})
			}
			continue
		}
		page, err := es.Store.List(ctx, q)
		if err != nil {
			return apiError(http.StatusServiceUnavailable, "listing %s: %v", es.Store.Describe(), err)
		}
		more = more || page.Next != ""
		for _, rec := range page.Records {
			if k, err := keystore.Compile(rec); err == nil {
				all = append(all, candidate{k, es}) // a store checks what it writes
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].key.ID < all[j].key.ID })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	list := make([]keyEntry, 0, len(all))
	for _, c := range all {
		e := keyEntry{Entry: keylist.Of(c.key, now), Source: c.store.Store.Describe()}
		quotas(ctx, &e, c.key, c.store.Route)
		list = append(list, e)
	}
	answer := map[string]any{"keys": list}
	if more && len(list) > 0 {
		answer["next"] = list[len(list)-1].ID
	}
	return writeJSON(w, answer)
}

// quotas fills in the key's use of today's quota, from the counters of a
// route that reads its store.
func quotas(ctx context.Context, e *keyEntry, k *keystore.Key, route *app.Route) {
	if k.Type != 0 {
		if res, err := route.Counters.Peek(ctx, k.ID, route.Policy(k, k.Type)); err == nil && !res.Uncounted {
			e.Quota = keylist.QuotaOf(res)
		}
		return
	}
	// A record without type: the prefix of the key presented decides
	// which type's limits apply, and the record's hash cannot tell which
	// it is, so each type the route accepts is shown.
	for _, t := range route.Types {
		if res, err := route.Counters.Peek(ctx, k.ID, route.Policy(k, t)); err == nil && !res.Uncounted {
			if e.QuotaByType == nil {
				e.QuotaByType = map[string]*keylist.Quota{}
			}
			e.QuotaByType[t.String()] = keylist.QuotaOf(res)
		}
	}
}
