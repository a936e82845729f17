package portal

import (
	"errors"
	"net/http"
	"strings"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// ownerNotice is a notice waiting for the change that makes it to be made.
type ownerNotice struct {
	owner, team string
	notice      Notice
}

// noticeFor readies the notice of an administrator's action on rec, sent
// by sendNotice once the change is saved (a store's update may run its
// function more than once, or fail).
func (v *visit) noticeFor(rec *keystore.Record, action string) {
	v.notice = &ownerNotice{owner: rec.Owner, team: rec.Team, notice: Notice{Event: "key." + action, KeyID: rec.ID, By: v.user,
		Time: v.s.now().UTC(), Text: "Your key " + rec.ID + " was " + action + " by the administrator " + v.user + "."}}
}

// sendNotice tells the owner of the change just made, if it was an
// administrator's.
func (v *visit) sendNotice() {
	switch {
	case v.notice == nil:
		return
	case v.notice.team != "":
		v.s.tellTeam(v.notice.team, v.notice.notice)
	default:
		v.s.notes.notify(v.notice.owner, v.notice.notice)
	}
	v.notice = nil
}

// Close stops listening for the gateway's key events and delivering
// notices.
func (s *Server) Close() {
	s.stopExpirySweep()
	s.stopKeyEvents()
	s.notes.close()
}

// notificationsPage shows the visitor's webhook, notices and deliveries;
// secret is a new webhook secret, shown this once.
func (v *visit) notificationsPage(status int, secret string, ferr error) {
	url, notices, deliveries := v.s.notes.of(v.user)
	notices = v.noticesOf(notices)
	form := url
	if ferr != nil {
		form = v.r.PostFormValue("url")
	}
	v.render(status, "notifications.html", "notifications", "Notifications", map[string]any{
		"URL": url, "Form": form, "Secret": secret, "Error": fieldMessage(ferr), "Notices": notices, "Deliveries": deliveries,
		"Loopback": v.s.notes.loopback, "Header": SignatureHeader, "EventHeader": EventHeader,
		"MaxAttempts": MaxAttempts, "MaxNotices": MaxNotices, "MaxDeliveries": MaxDeliveries,
	})
}

// setWebhook sets, changes or removes the visitor's webhook. A new secret
// is made the first time (or when asked) and shown once, on the answer to
// the POST; sending the same form again (a reload) makes no other.
func (v *visit) setWebhook() {
	raw := strings.TrimSpace(v.r.PostFormValue("url"))
	if v.r.PostFormValue("remove") != "" {
		if err := v.s.notes.removeWebhook(v.user); err != nil {
			v.storeFailed(err)
			return
		}
		v.notificationsPage(http.StatusOK, "", nil)
		return
	}
	if err := v.s.notes.checkWebhookURL(raw); err != nil {
		v.notificationsPage(http.StatusUnprocessableEntity, "", err)
		return
	}
	secret, err := v.s.notes.setWebhook(v.user, raw, v.r.PostFormValue("new_secret") != "")
	var s sentence
	if errors.As(err, &s) {
		v.notificationsPage(http.StatusConflict, "", err)
		return
	}
	if err != nil {
		v.storeFailed(err)
		return
	}
	v.notificationsPage(http.StatusOK, secret, nil)
}

// fieldMessage is an error in words, or "".
func fieldMessage(err error) string {
	var fe *formError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &fe):
		return "The webhook URL " + fe.Message + "."
	}
	return err.Error()
}
