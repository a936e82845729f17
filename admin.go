package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/keylist"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/keystore/keycache"
	"github.com/moodmnky/caddy-apikey/keystore/keyservice"
	"github.com/moodmnky/caddy-apikey/ratelimit"
	"github.com/moodmnky/caddy-apikey/usage"
)

func init() {
	caddy.RegisterModule(adminAPI{})
}

// active are the provisioned handlers, for the admin API. During a reload
// the old and the new config's handlers are both here for a moment; they
// share their sources, stores and usage counts.
var active = struct {
	mu       sync.Mutex
	handlers map[*Handler]struct{}
}{handlers: map[*Handler]struct{}{}}

func register(h *Handler) {
	active.mu.Lock()
	active.handlers[h] = struct{}{}
	active.mu.Unlock()
}

func unregister(h *Handler) {
	active.mu.Lock()
	delete(active.handlers, h)
	active.mu.Unlock()
}

func activeHandlers() []*Handler {
	active.mu.Lock()
	defer active.mu.Unlock()
	hs := make([]*Handler, 0, len(active.handlers))
	for h := range active.handlers {
		hs = append(hs, h)
	}
	return hs
}

// adminAPI serves /apikey/ on Caddy's admin endpoint:
//
//	GET    /apikey/keys                  the keys (never their hashes), status and today's quota use
//	GET    /apikey/usage?key=&service=&from=&to=&by=hour|day
//	POST   /apikey/keys/<id>/revoke      revokes a key in its key file
//	POST   /apikey/cache/purge[?id=]     drops cached key-service answers
//	DELETE /apikey/quota/<id>            resets a key's counters
//	GET    /apikey/audit/head            the head of each audit log, to record elsewhere
type adminAPI struct{}

// CaddyModule returns the Caddy module information.
func (adminAPI) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.apikey",
		New: func() caddy.Module { return new(adminAPI) },
	}
}

// Routes returns the admin routes.
func (a adminAPI) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{{Pattern: "/apikey/", Handler: caddy.AdminHandlerFunc(a.serve)}}
}

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

func (a adminAPI) serve(w http.ResponseWriter, r *http.Request) error {
	// A key (or its hash) pasted where a key id belongs is refused before
	// anything else, and never repeated: not in the answer, not in a log
	// line, not in the audit log.
	if looksSecret(r.RequestURI) || looksSecret(r.URL.Path) || looksSecret(r.URL.RawQuery) {
		return apiError(http.StatusBadRequest, "that looks like a key or a key's hash, not a key id; never send a key to the admin API (this answer does not repeat it)")
	}
	// The path is split as sent, and each part unescaped on its own, so
	// that an id is the exact bytes given ("%2F" is a slash in an id, not a
	// step of the path). Nothing is trimmed or normalised: an id that no
	// key may have (white space around it, a character that does not
	// show) is refused, never read as another key's id.
	path := strings.TrimSuffix(strings.TrimPrefix(r.URL.EscapedPath(), "/apikey/"), "/")
	parts := strings.Split(path, "/")
	for i := range parts {
		part, err := url.PathUnescape(parts[i])
		if err != nil {
			return apiError(http.StatusBadRequest, "the path holds a bad escape")
		}
		parts[i] = part
	}
	path = strings.Join(parts, "/")
	if len(parts) > 1 && (parts[0] == "keys" || parts[0] == "quota") && parts[1] != "" {
		if err := givenID(parts[1]); err != nil {
			return err
		}
	}
	for _, name := range []string{"id", "key"} {
		if q := r.URL.Query(); q.Get(name) != "" {
			if err := givenID(q.Get(name)); err != nil {
				return err
			}
		}
	}
	switch {
	case path == "audit/head":
		return expect(r, http.MethodGet, func() error { return a.auditHeads(w) })
	case path == "keys":
		return expect(r, http.MethodGet, func() error { return a.keys(w, r) })
	case path == "usage":
		return expect(r, http.MethodGet, func() error { return a.usage(w, r) })
	case len(parts) == 3 && parts[0] == "keys" && parts[2] == "revoke" && parts[1] != "":
		return expect(r, http.MethodPost, func() error { return a.revoke(w, r, parts[1]) })
	case path == "cache/purge":
		return expect(r, http.MethodPost, func() error { return a.purge(w, r.URL.Query().Get("id")) })
	case len(parts) == 2 && parts[0] == "quota" && parts[1] != "":
		return expect(r, http.MethodDelete, func() error { return a.resetQuota(w, r, parts[1]) })
	}
	return apiError(http.StatusNotFound, "no apikey admin endpoint %s", r.URL.Path)
}

// givenID refuses an id no key may have (see keystore.CheckID) with 400,
// naming the character: the admin API acts on exactly the id it is given,
// so " k_abc" or "k_abc" and a zero-width space are never read as k_abc.
func givenID(id string) error {
	if err := keystore.CheckID(id); err != nil {
		return apiError(http.StatusBadRequest, "key id %s: %v; ids are matched exactly, and no key has such an id", strconv.QuoteToASCII(id), err)
	}
	return nil
}

// looksSecret reports whether a request URI (or part of one) holds
// something shaped like a key or a key's hash (keystore.LooksLikeSecret),
// percent-encoded once, twice or not at all.
func looksSecret(s string) bool {
	for range 4 {
		if keystore.LooksLikeSecret(s) {
			return true
		}
		decoded := lenientUnescape(s)
		if decoded == s {
			return false
		}
		s = decoded
	}
	return false
}

func expect(r *http.Request, method string, serve func() error) error {
	if r.Method != method {
		return apiError(http.StatusMethodNotAllowed, "%s needs %s, not %s", r.URL.Path, method, r.Method)
	}
	return serve()
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// keyEntry is one key in GET /apikey/keys.
type keyEntry struct {
	keylist.Entry
	Source string `json:"source"`
}

// editableStores are the stores of the running config's editable sources,
// each once, with a handler that reads it (for its counters and limits).
func editableStores() map[string]storeOwner {
	stores := map[string]storeOwner{}
	for _, h := range activeHandlers() {
		if src, ok := h.source.(keystore.Editable); ok {
			st := src.Store()
			if _, dup := stores[st.Describe()]; !dup {
				stores[st.Describe()] = storeOwner{store: st, src: src, h: h}
			}
		}
	}
	return stores
}

type storeOwner struct {
	store keystore.Store
	src   keystore.Editable
	h     *Handler
}

// keys answers GET /apikey/keys[?owner=&after=&limit=]: a page of the keys
// of every store in use (key files, Redis), in id order, never a hash.
func (adminAPI) keys(w http.ResponseWriter, r *http.Request) error {
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
		owner storeOwner
	}
	var all []candidate
	more := false
	for _, so := range editableStores() {
		if lister, ok := so.src.(keystore.KeyLister); ok {
			keys, next := lister.ListKeys(q)
			more = more || next != ""
			for _, k := range keys {
				all = append(all, candidate{k, so})
			}
			continue
		}
		page, err := so.store.List(ctx, q)
		if err != nil {
			return apiError(http.StatusServiceUnavailable, "listing %s: %v", so.store.Describe(), err)
		}
		more = more || page.Next != ""
		for _, rec := range page.Records {
			if k, err := keystore.Compile(rec); err == nil {
				all = append(all, candidate{k, so}) // a store checks what it writes
			}
		}
	}
	sort.Slice(all, func(i, j int) bool { return all[i].key.ID < all[j].key.ID })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	list := make([]keyEntry, 0, len(all))
	for _, c := range all {
		k := c.key
		e := keyEntry{Entry: keylist.Of(k, now), Source: c.owner.store.Describe()}
		h := c.owner.h
		if k.Type != 0 {
			if res, err := h.counters.Peek(ctx, k.ID, h.limits.policy(k, k.Type)); err == nil && !res.Uncounted {
				e.Quota = keylist.QuotaOf(res)
			}
			list = append(list, e)
			continue
		}
		// A record without type: the prefix of the key presented decides
		// which type's limits apply, and the record's hash cannot tell
		// which it is, so each type the route accepts is shown.
		for _, t := range []keystore.Type{keystore.Dev, keystore.Prod} {
			if h.allowTypes&(1<<t) == 0 {
				continue
			}
			if res, err := h.counters.Peek(ctx, k.ID, h.limits.policy(k, t)); err == nil && !res.Uncounted {
				if e.QuotaByType == nil {
					e.QuotaByType = map[string]*keylist.Quota{}
				}
				e.QuotaByType[t.String()] = keylist.QuotaOf(res)
			}
		}
		list = append(list, e)
	}
	answer := map[string]any{"keys": list}
	if more && len(list) > 0 {
		answer["next"] = list[len(list)-1].ID
	}
	return writeJSON(w, answer)
}

func (adminAPI) usage(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	query := usage.Query{KeyID: q.Get("key"), Service: q.Get("service"), To: time.Now()}
	var err error
	inRange := func(name string, t time.Time) error {
		if t.Year() < 2000 || t.Year() > 9999 {
			return apiError(http.StatusBadRequest, "%s: %s is out of range", name, t.UTC().Format(time.RFC3339))
		}
		return nil
	}
	if s := q.Get("to"); s != "" {
		if query.To, err = parseTimeParam(s); err != nil {
			return apiError(http.StatusBadRequest, "to: %v", err)
		}
		if err := inRange("to", query.To); err != nil {
			return err
		}
		if len(s) == len(dateParam) {
			// A date as "to" takes in that day: from=2026-12-02&to=2026-12-02
			// is December 2nd.
			query.To = query.To.Add(24 * time.Hour)
		}
	}
	query.From = query.To.Add(-24 * time.Hour)
	if s := q.Get("from"); s != "" {
		if query.From, err = parseTimeParam(s); err != nil {
			return apiError(http.StatusBadRequest, "from: %v", err)
		}
	}
	if err := inRange("from", query.From); err != nil {
		return err
	}
	if !query.From.Before(query.To) {
		return apiError(http.StatusBadRequest, "from must be before to")
	}
	// Only the hours a usage store still keeps are read: a range wider
	// than the retention would cost a Redis read an hour for nothing.
	query, clamped := query.Clamp(time.Now(), usageRetention())
	switch by := q.Get("by"); by {
	case "", "hour":
	case "day":
		// Whole UTC days, so no day's row counts only part of it.
		query.ByDay = true
		query.From = query.From.UTC().Truncate(24 * time.Hour)
		if end := query.To.UTC().Truncate(24 * time.Hour); !end.Equal(query.To) {
			query.To = end.Add(24 * time.Hour)
		}
	default:
		return apiError(http.StatusBadRequest, "by: %q is not hour or day", by)
	}
	limit := defaultUsagePage
	if s := q.Get("limit"); s != "" {
		if limit, err = strconv.Atoi(s); err != nil || limit < 1 || limit > maxUsagePage {
			return apiError(http.StatusBadRequest, "limit: %q is not a whole number from 1 to %d", s, maxUsagePage)
		}
	}
	var after *usage.Row
	if s := q.Get("cursor"); s != "" {
		if after, err = usage.ParseCursor(s); err != nil {
			return apiError(http.StatusBadRequest, "cursor: not one this endpoint gave")
		}
	}
	for name := range q {
		switch name {
		case "key", "service", "from", "to", "by", "limit", "cursor":
		default:
			return apiError(http.StatusBadRequest, "unknown parameter %q (want key, service, from, to, by, limit, cursor)", name)
		}
	}
	rows, err := usageRows(r.Context(), query)
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "%v", err)
	}
	page, next := usage.Page(rows, after, limit)
	by := "hour"
	if query.ByDay {
		by = "day"
	}
	answer := map[string]any{"from": query.From.UTC(), "to": query.To.UTC(), "by": by, "rows": page}
	if clamped {
		answer["clamped"] = true
	}
	if next != "" {
		answer["next_cursor"] = next
	}
	return writeJSON(w, answer)
}

// usageRows answers a usage query from every usage file in use, sorted:
// counts shared on Redis answer for the whole cluster (with what this
// instance counted and Redis does not hold yet), the others for this
// instance.
func usageRows(ctx context.Context, query usage.Query) ([]usage.Row, error) {
	rows := []usage.Row{}
	seen := map[*usageTracker]bool{}
	clusters := map[string]bool{}
	for _, h := range activeHandlers() {
		if h.usage == nil || seen[h.usage] {
			continue
		}
		seen[h.usage] = true
		cl := h.usage.cluster.Load()
		if cl == nil {
			rows = append(rows, h.usage.Report(query)...)
			continue
		}
		name := h.usage.clusterName()
		sums, err := h.usage.clusterReport(ctx, cl, query, !clusters[name])
		if err != nil {
			return nil, fmt.Errorf("reading usage from redis: %w", err)
		}
		clusters[name] = true
		rows = append(rows, sums...)
	}
	return usage.MergeRows(rows), nil
}

// usageRetention is the longest usage_retention of the usage files in use
// (the default when none is): no store holds hours older than that.
func usageRetention() time.Duration {
	var longest time.Duration
	for _, h := range activeHandlers() {
		if h.usage != nil {
			longest = max(longest, h.usage.retention)
		}
	}
	if longest == 0 {
		longest = usage.DefaultRetention
	}
	return longest
}

// Usage pages: rows per answer by default, and at most.
const (
	defaultUsagePage = 1000
	maxUsagePage     = 10000
)

// dateParam is the layout of a date in a query.
const dateParam = "2006-01-02"

// parseTimeParam reads RFC 3339 or a date (YYYY-MM-DD, UTC midnight).
func parseTimeParam(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse(dateParam, s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a date such as 2026-11-27", s)
}

// revoke answers POST /apikey/keys/<id>/revoke: the key is revoked in
// every store in use that holds its id (a key file and Redis both may,
// during a migration), in the stores' name order, and the answer lists
// them. A store that cannot be reached fails the request (503) after the
// others were tried, naming what was revoked and what was not: revoking
// again is safe, and finishes the job.
func (adminAPI) revoke(w http.ResponseWriter, r *http.Request, id string) error {
	stores := editableStores()
	names := make([]string, 0, len(stores))
	for name := range stores {
		names = append(names, name)
	}
	sort.Strings(names)
	revoked := []string{}
	var failed []string
	for _, name := range names {
		so := stores[name]
		_, err := so.store.Update(r.Context(), id, func(rec *keystore.Record) error {
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
		so.src.Changed(id)
		auditAll(audit.Entry{"event": "key.revoked", "key_id": id, "store": name})
		revoked = append(revoked, name)
	}
	if len(failed) > 0 {
		return apiError(http.StatusServiceUnavailable, "revoking %q: revoked in %d store(s) %v; failed in %s; try again",
			id, len(revoked), revoked, strings.Join(failed, "; "))
	}
	if len(revoked) > 0 {
		return writeJSON(w, map[string]any{"id": id, "revoked": true, "stores": revoked})
	}
	for _, h := range activeHandlers() {
		if src, ok := h.source.(*keyservice.HTTPSource); ok && src.CacheOf().Knows(id) {
			return apiError(http.StatusNotImplemented, "key %q comes from a key service, which is read-only here: revoke it in the service, then purge the cache", id)
		}
	}
	return apiError(http.StatusNotFound, "no key has id %q", id)
}

func (adminAPI) purge(w http.ResponseWriter, id string) error {
	if id != "" && !knownID(id) {
		return apiError(http.StatusNotFound, "no key has id %q (in a key file, or in a key service's cache)", id)
	}
	caches := map[*keycache.Cache]bool{}
	for _, h := range activeHandlers() {
		if src, ok := h.source.(interface{ CacheOf() *keycache.Cache }); ok {
			caches[src.CacheOf()] = true
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
	auditAll(entry)
	return writeJSON(w, map[string]any{"purged": what, "caches": len(caches)})
}

func (adminAPI) resetQuota(w http.ResponseWriter, r *http.Request, id string) error {
	if !knownID(id) {
		return apiError(http.StatusNotFound, "no key has id %q (in a key file, or in a key service's cache)", id)
	}
	forgetWarnings(id)
	stores := map[ratelimit.Resetter]bool{}
	for _, h := range activeHandlers() {
		if rs, ok := h.counters.(ratelimit.Resetter); ok {
			stores[rs] = true
		}
	}
	for s := range stores {
		if err := s.Reset(r.Context(), id); err != nil {
			return apiError(http.StatusServiceUnavailable, "resetting the counters of %q: %v", id, err)
		}
	}
	auditAll(audit.Entry{"event": "quota.reset", "key_id": id})
	return writeJSON(w, map[string]any{"id": id, "reset": true, "stores": len(stores)})
}

// knownID reports whether a store in use (a key file, Redis) holds the id,
// or a key service's cache has seen it.
func knownID(id string) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, so := range editableStores() {
		if _, err := so.store.Get(ctx, id); err == nil {
			return true
		}
	}
	for _, h := range activeHandlers() {
		if src, ok := h.source.(*keyservice.HTTPSource); ok && src.CacheOf().Knows(id) {
			return true
		}
	}
	return false
}

// auditHeads answers GET /apikey/audit/head: the head of every audit log
// the running config names, to record somewhere the log's writers cannot
// change (see audit.Head).
func (adminAPI) auditHeads(w http.ResponseWriter) error {
	seen := map[string]bool{}
	heads := []audit.HeadReport{}
	for _, h := range activeHandlers() {
		if h.audit == nil || seen[h.audit.Path()] {
			continue
		}
		seen[h.audit.Path()] = true
		head, err := audit.ReportHead(h.audit.Path())
		if err != nil {
			return apiError(http.StatusInternalServerError, "audit log %s: %v", h.audit.Path(), err)
		}
		heads = append(heads, head)
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].Path < heads[j].Path })
	return writeJSON(w, map[string]any{"logs": heads})
}

// auditAll records a management change, made through the admin API, in
// every audit log the running config names.
func auditAll(e audit.Entry) {
	e["actor"] = "admin_api"
	seen := map[*audit.Writer]bool{}
	for _, h := range activeHandlers() {
		if h.audit != nil && !seen[h.audit] {
			seen[h.audit] = true
			entry := audit.Entry{}
			for k, v := range e {
				entry[k] = v
			}
			if err := h.audit.LogNow(entry); err != nil {
				caddy.Log().Named("admin.api.apikey").Error("writing the audit log failed")
			}
		}
	}
}

// Interface guard
var _ caddy.AdminRouter = (*adminAPI)(nil)
