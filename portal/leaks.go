package portal

import (
	"time"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// A key a secret scanner reported found in a public place (see package
// leak) is shown as leaked: where, when, and what the gateway did. Its
// owner rotates it with one click: the leaked secret stops at once (no
// grace, it is public), and the key works again with a new one.

// leakView is a key's leak as the pages show it.
type leakView struct {
	At, URL, Source string
	// Done says what the gateway did, in words.
	Done string
	// Link is URL when it is an http(s) address, to be linked to.
	Link bool
}

var leakDone = map[string]string{
	string(keystore.LeakRevoke): "the key was revoked",
	string(keystore.LeakPause):  "the key was paused",
	string(keystore.LeakNotify): "the key was left working; rotate it now",
}

// leakOf is the record's leak, or nil.
func leakOf(rec keystore.Record) *leakView {
	if rec.LeakedAt == "" {
		return nil
	}
	lv := &leakView{At: rec.LeakedAt, URL: rec.LeakURL, Source: rec.LeakSource, Done: leakDone[rec.LeakAction]}
	if t, err := time.Parse(time.RFC3339, rec.LeakedAt); err == nil {
		lv.At = t.UTC().Format("2006-01-02 15:04 UTC")
	}
	lv.Link = len(lv.URL) > 8 && (lv.URL[:8] == "https://" || lv.URL[:7] == "http://")
	return lv
}

// rotateLeaked gives a leaked key a new secret and puts it back to work.
func (v *visit) rotateLeaked(id string) {
	now := v.s.now().UTC()
	var rec keystore.Record
	key, err := keystore.RotateLeaked(v.r.Context(), v.s.backend.Store, id, func(r *keystore.Record) error {
		if err := v.mine(r); err != nil {
			return err
		}
		if err := v.renew(r, now); err != nil {
			return err
		}
		rec = *r
		return nil
	})
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	rec.Revoked, rec.PausedAt, rec.LeakedAt, rec.LeakURL, rec.LeakSource, rec.LeakAction = false, "", "", "", "", ""
	v.changed(id, audit.Entry{"event": "key.rotated", "key_id": id, "after_leak": true})
	v.showKey("replaced", "Your key's new secret", key, rec, time.Time{})
}
