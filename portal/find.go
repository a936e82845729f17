package portal

import (
	"cmp"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// keyFilter is what a key list's search form asks for: a GET query, so
// that a search is a link and needs no script.
type keyFilter struct {
	// Q is searched for in a key's id, name and hint, in any case.
	Q string
	// Status is one of statusChoices' values; "" for any.
	Status string
	// Type is dev or prod; "" for both.
	Type string
	// Sort is created (newest first, the default), name or used (most
	// recently used first).
	Sort string
	// Stopped shows revoked and expired keys, which are hidden otherwise.
	Stopped bool
	// Owner keeps one developer's keys (the admin page only).
	Owner string
	// Team keeps one team's keys (onlyMine: personal keys only).
	Team string
	// Secret says the search text was a whole key, which is dropped.
	Secret bool
}

// choice is an option of a select.
type choice struct{ Value, Label string }

// statusChoices are the statuses a list may be filtered by, as keyView's
// Status names them.
// onlyMine is the team filter's value for the visitor's personal keys
// only: "!" is in no team's name (keystore.CheckTeam), so no team can be
// taken for it.
const onlyMine = "!me"

var statusChoices = []choice{{"active", "active"}, {"expiring", "expiring soon"},
	{keystore.StatusRotationGrace, "in rotation grace"}, {keystore.StatusPending, "waiting for approval"},
	{keystore.StatusPaused, "paused"}, {keystore.StatusLeaked, "leaked"},
	{keystore.StatusRevoked, "revoked"}, {keystore.StatusExpired, "expired"}}

var sortChoices = []choice{{"created", "newest first"}, {"name", "name"}, {"used", "last used"}}

// maxSearch bounds the search text a query may carry.
const maxSearch = 200

// readFilter reads a list's query; anything not among the choices is
// dropped, so what is shown back is one of them.
func readFilter(r *http.Request) keyFilter {
	q := r.URL.Query()
	f := keyFilter{Q: strings.TrimSpace(clip(q.Get("q"), maxSearch)), Sort: "created", Stopped: q.Get("stopped") == "1",
		Owner: strings.TrimSpace(q.Get("owner")), Team: q.Get("team")}
	if i := strings.LastIndex(f.Q, "…"); i >= 0 {
		// A masked key, as the lists show it: its hint.
		f.Q = f.Q[i+len("…"):]
	}
	if keystore.LooksLikeSecret(f.Q) {
		// A whole key is never searched for, nor shown back: a key's hint
		// is its last characters.
		f.Q, f.Secret = "", true
	}
	if len(f.Owner) > keystore.MaxOwnerLength {
		f.Owner = ""
	}
	if f.Team != onlyMine && keystore.CheckTeam(f.Team) != nil {
		f.Team = ""
	}
	if s := q.Get("status"); slices.ContainsFunc(statusChoices, func(c choice) bool { return c.Value == s }) {
		f.Status = s
	}
	if t := q.Get("type"); t == keystore.Dev.String() || t == keystore.Prod.String() {
		f.Type = t
	}
	if s := q.Get("sort"); slices.ContainsFunc(sortChoices, func(c choice) bool { return c.Value == s }) {
		f.Sort = s
	}
	return f
}

// showsStopped reports whether revoked and expired keys are listed: when
// asked for, or when the status asked for is one of theirs.
func (f keyFilter) showsStopped() bool {
	return f.Stopped || f.Status == keystore.StatusRevoked || f.Status == keystore.StatusExpired || f.Status == keystore.StatusLeaked
}

// keeps reports whether a key is listed.
func (f keyFilter) keeps(kv keyView) bool {
	if hidden(kv) && !f.showsStopped() {
		return false
	}
	if f.Status != "" && kv.Status != f.Status {
		return false
	}
	if f.Type != "" && kv.Type != f.Type {
		return false
	}
	if f.Owner != "" && kv.Owner != f.Owner {
		return false
	}
	if f.Team == onlyMine && kv.Team != "" || f.Team != onlyMine && f.Team != "" && kv.Team != f.Team {
		return false
	}
	if f.Q != "" {
		q := strings.ToLower(f.Q)
		if !strings.Contains(strings.ToLower(kv.ID), q) && !strings.Contains(strings.ToLower(kv.Name), q) &&
			!strings.Contains(strings.ToLower(kv.Masked), q) {
			return false
		}
	}
	return true
}

// sortViews orders a list as the filter asks; ties keep their order
// (newest first).
func (f keyFilter) sortViews(views []keyView) {
	switch f.Sort {
	case "name":
		slices.SortStableFunc(views, func(a, b keyView) int {
			// Unnamed keys last.
			if (a.Name == "") != (b.Name == "") {
				return cmp.Compare(len(b.Name), len(a.Name))
			}
			return strings.Compare(strings.ToLower(a.Name), strings.ToLower(b.Name))
		})
	case "used":
		// LastUsed is "2006-01-02 15:00 UTC": its text sorts as its time.
		slices.SortStableFunc(views, func(a, b keyView) int { return strings.Compare(b.LastUsed, a.LastUsed) })
	}
}

// values is the filter as a query, for links that keep it.
func (f keyFilter) values() url.Values {
	v := url.Values{}
	for name, val := range map[string]string{"q": f.Q, "status": f.Status, "type": f.Type, "owner": f.Owner, "team": f.Team} {
		if val != "" {
			v.Set(name, val)
		}
	}
	if f.Sort != "created" {
		v.Set("sort", f.Sort)
	}
	if f.Stopped {
		v.Set("stopped", "1")
	}
	return v
}

// findView is what a list's search form shows.
type findView struct {
	// Action is the list's page; Admin says it is the admin page's
	// list of every developer's keys.
	Action   string
	Admin    bool
	Filter   keyFilter
	Statuses []choice
	Sorts    []choice
	// Hidden is how many revoked or expired keys the list leaves out.
	Hidden int
	// Shown and Of are how many keys are listed, of how many there are.
	Shown, Of int
	// Teams are the visitor's teams, which My keys may be filtered by.
	Teams []string
}

func newFindView(f keyFilter) findView {
	return findView{Action: "/keys", Filter: f, Statuses: statusChoices, Sorts: sortChoices}
}

// find filters and sorts a developer's keys.
func (f keyFilter) find(views []keyView) ([]keyView, findView) {
	fv := newFindView(f)
	fv.Of = len(views)
	var out []keyView
	for _, kv := range views {
		if hidden(kv) && !f.showsStopped() {
			fv.Hidden++
		}
		if f.keeps(kv) {
			out = append(out, kv)
		}
	}
	f.sortViews(out)
	fv.Shown = len(out)
	return out, fv
}

// Bounds of the admin page's filtered list: each load reads at most
// adminScan records (pages of keystore.MaxListLimit) and lists at most
// adminPageSize of those that match; a link goes on from where it stopped.
const adminScan = 5 * keystore.MaxListLimit

// adminList is a page of the admin page's list of every key.
type adminList struct {
	Keys []keyView
	// Next goes on to the next page, with the same filter; "" at the end.
	Next template.URL
	// Scanned is how many records a filtered page looked through, and
	// From and To the ids it looked from and to; 0 without a filter.
	Scanned  int
	From, To string
}

// adminKeys is a page of every key (of one owner, with the filter's
// owner) that the filter keeps: the matches among the next adminScan
// records, read a page at a time (the first of adminPageSize, so that a
// list without a filter reads little more than it shows).
func (v *visit) adminKeys(f keyFilter, after string, used map[string]time.Time) (adminList, error) {
	ctx := v.r.Context()
	out := adminList{From: after}
	q := keystore.ListQuery{Owner: f.Owner, After: after, Limit: adminPageSize, Waiting: f.Status == keystore.StatusPending}
	if f.Team != onlyMine {
		q.Team = f.Team
	}
	now := v.s.now()
	for {
		page, err := v.s.backend.Store.List(ctx, q)
		if err != nil {
			return out, err
		}
		for i, rec := range page.Records {
			out.Scanned++
			out.To = rec.ID
			if f.keepsRecord(rec, now) {
				out.Keys = append(out.Keys, v.view(rec, used))
			}
			if len(out.Keys) == adminPageSize || out.Scanned == adminScan {
				if i < len(page.Records)-1 || page.Next != "" {
					q := f.values()
					q.Set("after", rec.ID)
					out.Next = template.URL(v.s.base + "/admin?" + q.Encode())
				}
				return out, nil
			}
		}
		if page.Next == "" {
			return out, nil
		}
		q.After, q.Limit = page.Next, keystore.MaxListLimit
	}
}

// keepsRecord is keeps on a record, without the work of a view (usage,
// quota): the admin page looks through thousands.
func (f keyFilter) keepsRecord(rec keystore.Record, now time.Time) bool {
	kv := keyView{ID: rec.ID, Name: rec.Name, Owner: rec.Owner, Team: rec.Team, Type: rec.Type, Masked: keystore.MaskedHint(rec)}
	k, err := keystore.Compile(rec)
	if err != nil {
		kv.Status = "invalid"
	} else {
		kv.Status, kv.Stopped = statusOf(k, now), k.Stopped(now)
	}
	return f.keeps(kv)
}

// statusOf is a key's status as the pages name it: the store's, and
// "expiring" for an active key that expires within expiringSoon.
func statusOf(k *keystore.Key, now time.Time) string {
	s := k.Status(now)
	if s == keystore.StatusActive && !k.ExpiresAt.IsZero() && k.ExpiresAt.Sub(now) < expiringSoon {
		return "expiring"
	}
	return s
}

// hidden reports whether a list leaves a key out unless asked: revoked
// and expired keys, but not a leaked one (its page offers the rotation
// that brings it back).
func hidden(kv keyView) bool { return kv.Stopped && kv.Status != keystore.StatusLeaked }
