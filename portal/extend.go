package portal

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// mayExtend is why a key's owner may not give it a new expiry, or "" when
// they may: only a key that works or may work again (not revoked, not
// expired: an expired key is not brought back, as by a rotation), that
// has an expiry, within the policy, and not waiting for its first
// approval (what an administrator approves is what they saw).
func (v *visit) mayExtend(rec keystore.Record, now time.Time) string {
	exp, err := time.Parse(time.RFC3339, rec.ExpiresAt)
	switch {
	case !v.holds(rec):
		return "belongs to " + ownerText(rec) + "; only its owner changes its expiry"
	case rec.Revoked:
		return "is revoked; a revoked key cannot be extended"
	case rec.ExpiresAt == "" || err != nil:
		return "never expires"
	case !now.Before(exp):
		return "has expired; an expired key cannot be extended: create a new key instead"
	case rec.Pending:
		return "waits for approval, and cannot be changed until it is approved"
	case !v.admin && !v.s.policy.withinPolicy(rec):
		return "was given more than the portal's policy allows, so only an operator may change its expiry"
	}
	return ""
}

// extend gives a key a new expiry, from 1 day to the policy's expiry from
// now, without rotating it: its secret stays the same.
func (v *visit) extend(id string) {
	d := strings.TrimSpace(v.r.PostFormValue("days"))
	days, err := strconv.Atoi(d)
	if err != nil || days < 1 || days > v.s.policy.maxDays() {
		v.s.fail(v.w, v, http.StatusBadRequest, "days: "+strconv.Quote(clip(d, 20))+" is not a whole number of days from 1 to "+
			strconv.Itoa(v.s.policy.maxDays())+" (the longest the portal's policy allows); nothing was changed.")
		return
	}
	now := v.s.now().UTC()
	expires := now.Add(time.Duration(days) * 24 * time.Hour).Format(time.RFC3339)
	_, err = v.s.backend.Store.Update(v.r.Context(), id, func(rec *keystore.Record) error {
		if err := v.mine(rec); err != nil {
			return err
		}
		if why := v.mayExtend(*rec, now); why != "" {
			return refuse("key", "%s", why)
		}
		rec.ExpiresAt = expires
		return nil
	})
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	v.changed(id, audit.Entry{"event": "key.extended", "key_id": id, "expires_at": expires})
	http.Redirect(v.w, v.r, v.s.base+"/keys/"+url.PathEscape(id)+"?done=extended", http.StatusSeeOther)
}
