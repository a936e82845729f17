package portal

import (
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// A new secret (of a created or rotated key) is shown on a page of its own:
// the POST that makes it keeps it in server memory and redirects, and the
// GET it redirects to takes it out and shows it. Reloading that page, or
// going Back to it, finds nothing to show, so it says the secret was shown
// already: no form is sent again, so no second key is made and no second
// rotation done. The secret is never in a URL, a cookie or a log.

const (
	// maxShowings bounds how many secrets wait to be shown, over all
	// visitors; past it the oldest waiting one is dropped.
	maxShowings = 1024
	// showingTTL is how long a secret waits for its page to be loaded.
	showingTTL = 5 * time.Minute
)

// showing is a secret waiting for its one showing.
type showing struct {
	what, title string // "created" or "rotated", and the page's title
	key         string
	rec         keystore.Record
	graceUntil  time.Time
	expires     time.Time
}

// showings are the secrets waiting to be shown, by the session (form
// token), visitor and key they belong to.
type showings struct {
	mu    sync.Mutex
	items map[string]*showing
	order []string // keys of items, oldest first
}

func showingKey(session, user, id string) string { return session + "\x00" + user + "\x00" + id }

// put keeps sh for its one showing, dropping expired ones and, when full,
// the oldest.
func (ss *showings) put(k string, sh *showing, now time.Time) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.items == nil {
		ss.items = map[string]*showing{}
	}
	kept := ss.order[:0]
	for _, old := range ss.order {
		if it, ok := ss.items[old]; ok && now.Before(it.expires) && old != k {
			kept = append(kept, old)
		} else if old != k {
			delete(ss.items, old)
		}
	}
	ss.order = kept
	for len(ss.order) >= maxShowings {
		delete(ss.items, ss.order[0])
		ss.order = ss.order[1:]
	}
	sh.expires = now.Add(showingTTL)
	ss.items[k] = sh
	ss.order = append(ss.order, k)
}

// take returns and forgets the secret waiting under k, if it has not
// expired.
func (ss *showings) take(k string, now time.Time) (*showing, bool) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sh, ok := ss.items[k]
	if !ok {
		return nil, false
	}
	delete(ss.items, k)
	for i, o := range ss.order {
		if o == k {
			ss.order = append(ss.order[:i], ss.order[i+1:]...)
			break
		}
	}
	return sh, now.Before(sh.expires)
}

// showKey keeps a key's new secret for its one showing, and sends the
// visitor to the page that shows it.
func (v *visit) showKey(what, title, key string, rec keystore.Record, graceUntil time.Time) {
	v.s.showings.put(showingKey(v.csrf, v.user, rec.ID),
		&showing{what: what, title: title, key: key, rec: rec, graceUntil: graceUntil}, v.s.now())
	http.Redirect(v.w, v.r, v.s.base+"/keys/"+url.PathEscape(rec.ID)+"/secret", http.StatusSeeOther)
}

// secretPage shows a key's new secret, once; after that it says the
// secret was shown already.
func (v *visit) secretPage(id string) {
	sh, ok := v.s.showings.take(showingKey(v.csrf, v.user, id), v.s.now())
	if !ok {
		v.render(http.StatusGone, "shown.html", "keys", "Already shown", map[string]any{"ID": id})
		return
	}
	if !v.holds(sh.rec) {
		// A team's key, made or rotated by a member who has left the team
		// since: its secret is the team's now, as its other pages are.
		v.notFoundOr(errNotYours)
		return
	}
	data := map[string]any{"What": sh.what, "Key": sh.key, "Record": v.view(sh.rec, nil), "Snippets": v.s.snippets(sh.key, origin(v.r), sh.rec)}
	if !sh.graceUntil.IsZero() {
		data["GraceUntil"] = sh.graceUntil.UTC().Format("2006-01-02 15:04 UTC")
	}
	v.render(http.StatusOK, "secret.html", "keys", sh.title, data)
}
