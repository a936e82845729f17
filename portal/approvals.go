package portal

import (
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// maxReason bounds an administrator's reason, in characters.
const maxReason = 500

// otherAdmin is an administrator other than user, from the configured
// admins list; "" when user is the only one. An administrator's own
// production key waits for another administrator when there is one.
func (p *Policy) otherAdmin(user string) string {
	if i := slices.IndexFunc(p.Admins, func(a string) bool { return a != user }); i >= 0 {
		return p.Admins[i]
	}
	return ""
}

// approvedByOthers reports whether the visitor's own changes to a
// production key wait for approval: a developer's do, and so do an
// administrator's when there is another administrator to approve them.
func (v *visit) approvedByOthers() bool { return !v.admin || v.s.policy.otherAdmin(v.user) != "" }

// reason is the administrator's reason from the form, checked: at most
// maxReason characters of text, without control characters.
func (v *visit) reason() (string, error) {
	r := strings.TrimSpace(v.r.PostFormValue("reason"))
	if n := utf8.RuneCountInString(r); n > maxReason || !utf8.ValidString(r) {
		return "", refuse("reason", "is %d characters long or not valid text; at most %d", n, maxReason)
	}
	if hasControl(strings.ReplaceAll(strings.ReplaceAll(r, "\r\n", " "), "\n", " ")) {
		return "", refuse("reason", "has control or invisible formatting characters")
	}
	if keystore.LooksLikeSecret(r) {
		// The owner's pages and the audit log show it.
		return "", refuse("reason", "looks like it holds a key; a reason is shown to the key's owner and written to the audit log")
	}
	return strings.Join(strings.Fields(r), " "), nil
}

// decide approves (approve true) or denies what a key waits for, with the
// administrator's reason, which its owner sees. Denying a key waiting for
// its first approval revokes it; denying a wider grant drops the request,
// and the key keeps working with what it had.
func (v *visit) decide(id string, approve bool) {
	if !v.admin {
		v.s.fail(v.w, v, http.StatusForbidden, "Only the portal's administrators approve keys.")
		return
	}
	why, err := v.reason()
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	action := "approved"
	_, err = v.s.backend.Store.Update(v.r.Context(), id, func(rec *keystore.Record) error {
		if !rec.Waiting() {
			return refuse("key", "is not waiting for approval")
		}
		if approve && v.holds(*rec) {
			if other := v.s.policy.otherAdmin(v.user); other != "" {
				return refuse("key", "is your own; another administrator (such as %s) approves it", other)
			}
		}
		switch {
		case approve && rec.PendingGrant != nil:
			g := rec.PendingGrant
			rec.Role, rec.Services, rec.Permissions, rec.AllowedIPs = g.Role, g.Services, g.Permissions, g.AllowedIPs
			grantLimits(*g).apply(rec)
			rec.PendingGrant, rec.Pending = nil, false
		case approve:
			rec.Pending = false
		case rec.PendingGrant != nil && !rec.Pending:
			rec.PendingGrant, action = nil, "denied the wider grant asked for on"
		default:
			rec.Revoked, rec.PendingGrant, action = true, nil, "denied"
		}
		v.noteAdminChange(rec, action)
		if rec.AdminChange != nil && !v.holds(*rec) {
			rec.AdminChange.Reason = why
		}
		return nil
	})
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	event := map[bool]string{true: "key.approved", false: "key.denied"}[approve]
	e := audit.Entry{"event": event, "key_id": id}
	if why != "" {
		e["reason"] = why
	}
	v.changed(id, e)
	http.Redirect(v.w, v.r, v.s.base+"/admin?done="+map[bool]string{true: "approved", false: "denied"}[approve], http.StatusSeeOther)
}

// wholeGrant says in words everything a key may do: role, services,
// permissions, addresses, its own limits and its expiry.
func wholeGrant(rec keystore.Record) string {
	g := keystore.Grant{Role: rec.Role, Services: rec.Services, Permissions: rec.Permissions, AllowedIPs: rec.AllowedIPs}
	recordLimits(rec).toGrant(&g)
	text := grantText(g)
	if t, err := time.Parse(time.RFC3339, rec.ExpiresAt); err == nil {
		text += " · expires " + t.UTC().Format("2006-01-02")
	} else {
		text += " · never expires"
	}
	return text
}

// decisionView is a key waiting for approval, with the page it is on.
type decisionView struct {
	Page page
	Key  keyView
}

// OthersApprove is the administrator who approves the visitor's own key
// instead of them; "" when they approve it themselves.
func (d decisionView) OthersApprove() string {
	if d.Key.Others {
		return ""
	}
	return d.Page.others
}
