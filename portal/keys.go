package portal

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// keyView is a key as the pages show it: never its hash.
type keyView struct {
	ID, Name, Owner, Type, Role string
	// Team is the team the key belongs to; "" for a personal key.
	Team                  string
	Services, Permissions []string
	AllowedIPs            []string
	Created, Expires      string
	Status, StatusText    string
	GraceUntil            string
	LastUsed              string
	Quota                 *Quota
	QuotaPercent          int
	Revoked, Pending      bool
	// Stopped is a revoked or expired key: it counts against no limit
	// and can no longer be edited; Expired is an expired one.
	Stopped, Expired bool
	// Leak is where the key was reported found and what was done, or nil.
	Leak *leakView
	// Requested is a wider grant waiting for approval, in words; "" for none.
	Requested string
	// Version is the record's version (keystore.Version), which the edit
	// form sends back.
	Version string
	// Masked is the key as far as the record's hint shows it,
	// "DEV_API_…abcd"; "" for a key without a hint.
	Masked string
	// CreatedAt is when the key was made, to the minute.
	CreatedAt string
	// Notice is what an administrator last did to the key, for its owner;
	// "" for nothing.
	Notice string
	// Grant is everything the key may do, in words (role, services,
	// permissions, addresses, limits, expiry).
	Grant string
	// Limits are the key's own limits in words; "" for none.
	Limits string
	// Others is a key of someone else that an administrator looks at: they
	// may approve and revoke it, not edit or rotate it.
	Others bool
}

// maxOwnKeys bounds how many of a developer's records (revoked ones too)
// the pages read.
const maxOwnKeys = 1000

func (v *visit) view(rec keystore.Record, lastUsed map[string]time.Time) keyView {
	now := v.s.now()
	kv := keyView{Version: keystore.Version(rec), ID: rec.ID, Name: rec.Name, Owner: rec.Owner, Team: rec.Team, Type: rec.Type, Role: rec.Role,
		Services: rec.Services, Permissions: rec.Permissions, AllowedIPs: rec.AllowedIPs,
		Created: day(rec.CreatedAt), Expires: day(rec.ExpiresAt), Revoked: rec.Revoked, Pending: rec.Pending}
	if g := rec.PendingGrant; g != nil {
		kv.Requested = grantText(*g)
	}
	kv.Grant = wholeGrant(rec)
	kv.Others = !v.holds(rec)
	kv.Masked = keystore.MaskedHint(rec)
	kv.Limits = limitsText(rec.Rate, rec.QuotaPerDay, rec.TokensPerDay, rec.TokensPerMinute, rec.Models)
	if t, err := time.Parse(time.RFC3339, rec.CreatedAt); err == nil {
		kv.CreatedAt = t.UTC().Format("2006-01-02 15:04 UTC")
	}
	if c := rec.AdminChange; c != nil {
		kv.Notice = "An administrator, " + c.By + ", " + c.Action + " this key"
		if t, err := time.Parse(time.RFC3339, c.At); err == nil {
			kv.Notice += " on " + t.UTC().Format("2006-01-02 15:04 UTC")
		}
		if c.Reason != "" {
			kv.Notice += ", saying: “" + c.Reason + "”"
		}
		kv.Notice += "."
	}
	k, err := keystore.Compile(rec)
	if err != nil {
		kv.Status, kv.StatusText = "invalid", "invalid record"
		return kv
	}
	kv.Status = statusOf(k, now)
	kv.StatusText = map[string]string{"expiring": "expiring soon", keystore.StatusActive: "active", keystore.StatusExpired: "expired",
		keystore.StatusRevoked: "revoked", keystore.StatusRotationGrace: "in rotation grace",
		keystore.StatusPending: "waiting for approval", keystore.StatusPaused: "paused",
		keystore.StatusLeaked: "leaked"}[kv.Status]
	kv.Stopped, kv.Expired = k.Stopped(now), k.Expired(now)
	kv.Leak = leakOf(rec)
	// A revoked or expired key has no working old secret to announce.
	if !kv.Stopped {
		var until time.Time
		for _, p := range k.Previous {
			if now.Before(p.ValidUntil) && p.ValidUntil.After(until) {
				until = p.ValidUntil
			}
		}
		if !until.IsZero() {
			kv.GraceUntil = until.UTC().Format("2006-01-02 15:04 UTC")
		}
	}
	if t, ok := lastUsed[rec.ID]; ok {
		kv.LastUsed = t.Format("2006-01-02 15:00 UTC")
	}
	if v.s.backend.Quota != nil && !kv.Stopped {
		if q, ok := v.s.backend.Quota(v.r.Context(), k); ok {
			kv.Quota = &q
			if q.Limit > 0 {
				kv.QuotaPercent = int(min(100, q.Used*100/q.Limit))
			}
		}
	}
	return kv
}

func day(rfc3339 string) string {
	if t, err := time.Parse(time.RFC3339, rfc3339); err == nil {
		return t.UTC().Format("2006-01-02")
	}
	return ""
}

func newestFirst(a, b keystore.Record) int { return strings.Compare(b.CreatedAt, a.CreatedAt) }

// ownRecords are the records q selects (an owner's, a team's), the newest
// maxOwnKeys of them, newest first; every one of them is read, so that
// none is missed however many revoked ones came before.
func (s *Server) ownRecords(ctx context.Context, q keystore.ListQuery) ([]keystore.Record, error) {
	var recs []keystore.Record
	err := s.eachRecord(ctx, q, 0, func(rec keystore.Record) {
		recs = append(recs, rec)
		if len(recs) >= 2*maxOwnKeys {
			slices.SortStableFunc(recs, newestFirst)
			recs = recs[:maxOwnKeys]
		}
	})
	if err != nil {
		return nil, err
	}
	slices.SortStableFunc(recs, newestFirst)
	return recs[:min(len(recs), maxOwnKeys)], nil
}

// eachRecord calls fn with every record q selects, page by page, up to
// limit records (0: all).
func (s *Server) eachRecord(ctx context.Context, q keystore.ListQuery, limit int, fn func(keystore.Record)) error {
	q.Limit = keystore.MaxListLimit
	n := 0
	for {
		page, err := s.backend.Store.List(ctx, q)
		if err != nil {
			return err
		}
		for _, rec := range page.Records {
			fn(rec)
			if n++; limit > 0 && n >= limit {
				return nil
			}
		}
		if page.Next == "" {
			return nil
		}
		q.After = page.Next
	}
}

// lastUsed is, per key, the last hour it was used in, within the usage
// kept (hour by hour).
func (s *Server) lastUsed(ctx context.Context) map[string]time.Time {
	out := map[string]time.Time{}
	if s.backend.Usage == nil {
		return out
	}
	now := s.now()
	rows, err := s.backend.Usage(ctx, usageQuery(now.Add(-30*24*time.Hour), now, false))
	if err != nil {
		return out
	}
	for _, r := range rows {
		if r.Time.After(out[r.KeyID]) {
			out[r.KeyID] = r.Time
		}
	}
	return out
}

// errNotYours answers for a key the visitor may not see, the same way as
// for a key that does not exist, so ids cannot be probed.
var errNotYours error = sentence("You have no key with this id.")

// ownKey is the record with id, if the visitor may see and change it.
func (v *visit) ownKey(id string) (keystore.Record, error) {
	rec, err := v.s.backend.Store.Get(v.r.Context(), id)
	if errors.Is(err, keystore.ErrUnknownID) || (err == nil && !v.mayTouch(rec)) {
		return keystore.Record{}, errNotYours
	}
	return rec, err
}

func (v *visit) mayTouch(rec keystore.Record) bool { return v.admin || v.holds(rec) }

// mine refuses, inside a store's update, a record the visitor may not change.
func (v *visit) mine(rec *keystore.Record) error {
	if !v.mayTouch(*rec) {
		return errNotYours
	}
	return nil
}

func (v *visit) myKeys() {
	recs, err := v.myRecords(v.r.Context())
	if err != nil {
		v.storeFailed(err)
		return
	}
	used := v.s.lastUsed(v.r.Context())
	views := make([]keyView, len(recs))
	for i, rec := range recs {
		views[i] = v.view(rec, used)
	}
	var notices []keyView
	for _, kv := range views {
		if kv.Notice != "" {
			notices = append(notices, kv)
		}
	}
	listed, find := readFilter(v.r).find(views)
	find.Teams = v.teams
	personal := slices.DeleteFunc(slices.Clone(views), func(kv keyView) bool { return kv.Team != "" })
	v.render(http.StatusOK, "keys.html", "keys", "My keys", map[string]any{
		"Keys": listed, "Find": find, "Flash": flash(v.r), "Working": working(personal), "MaxKeys": v.s.policy.MaxKeys, "Notices": notices,
		"Teams": v.teams})
}

// working counts the keys that count against max_keys.
func working(views []keyView) int {
	n := 0
	for _, kv := range views {
		if !kv.Stopped {
			n++
		}
	}
	return n
}

// flash is a message named in the query of a redirect after a change:
// chosen from a fixed list, so no text a link carries is shown.
func flash(r *http.Request) string {
	return map[string]string{"saved": "Saved. The gateway applies the change from the next request.",
		"requested": "Saved. The wider permissions wait for an administrator's approval; until then the key keeps working with what it had.",
		"approved":  "Approved: the key works from the next request.",
		"paused":    "Paused: the gateway refuses the key (403, reason paused) from the next request, until it is resumed.",
		"resumed":   "Resumed: the key works again from the next request.",
		"denied":    "Denied: the owner sees your reason on the key's page.",
		"extended":  "Extended: the key's new expiry applies from the next request; its secret is unchanged."}[r.URL.Query().Get("done")]
}

type formView struct {
	Policy   *Policy
	Form     keyForm
	Error    *formError
	Editing  bool
	Key      keyView
	Services []serviceChoice
	Roles    []string
	Types    []string
	MaxDays  int
	// Owners are the owners a new key may have (the visitor, their
	// teams); none when the visitor is in no team.
	Owners []ownerChoice
}

type serviceChoice struct {
	Name    string
	Checked bool
}

func (v *visit) formView(f keyForm, ferr error) formView {
	fv := formView{Policy: &v.s.policy, Form: f, Roles: v.s.policy.roles(), MaxDays: v.s.policy.maxDays(), Owners: v.ownerChoices(f.Team)}
	for _, t := range v.s.policy.Types {
		fv.Types = append(fv.Types, t.String())
	}
	for _, svc := range v.s.policy.Services {
		fv.Services = append(fv.Services, serviceChoice{svc.Name, slices.Contains(f.Services, svc.Name)})
	}
	errors.As(ferr, &fv.Error)
	return fv
}

func (v *visit) newKeyForm(ferr error, status int) {
	f := keyForm{Type: v.s.policy.Types[0].String(), Role: keystore.Reader.String()}
	if ferr != nil {
		f = readForm(v.r)
	}
	v.render(status, "new.html", "new", "Create a key", v.formView(f, ferr))
}

func readForm(r *http.Request) keyForm {
	return keyForm{Name: r.PostFormValue("name"), Team: r.PostFormValue("team"), Type: r.PostFormValue("type"), Role: r.PostFormValue("role"),
		Services: r.PostForm["services"], Permissions: r.PostFormValue("permissions"),
		AllowedIPs: r.PostFormValue("allowed_ips"), Days: r.PostFormValue("expiry_days"),
		Limits: limitsForm{Rate: r.PostFormValue("rate"), QuotaPerDay: r.PostFormValue("quota_per_day"),
			TokensPerDay: r.PostFormValue("tokens_per_day"), TokensPerMinute: r.PostFormValue("tokens_per_minute"),
			Models: r.PostFormValue("models")}}
}

func (v *visit) create() {
	f := readForm(v.r)
	g, err := v.s.policy.checkForm(f, true)
	if err == nil && keystore.LooksLikeSecret(f.Name) {
		err = refuse("name", "looks like a key; a name describes a key and is shown to others")
	}
	if err != nil {
		v.newKeyForm(err, http.StatusBadRequest)
		return
	}
	if f.Team != "" && !v.inTeam(f.Team) {
		v.newKeyForm(refuse("owner", "%v", errNotInTeam), http.StatusForbidden)
		return
	}
	// One creation at a time per developer (per team, for a team's key)
	// on this instance, so the count below holds until the record is
	// written. A team's keys count against max_keys for the team, not
	// their maker.
	holder, q := v.user, keystore.ListQuery{Owner: v.user}
	if f.Team != "" {
		holder, q = "\x00team "+f.Team, keystore.ListQuery{Team: f.Team}
	}
	mu, _ := v.s.creating.LoadOrStore(holder, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()
	n := 0
	err = v.s.eachRecord(v.r.Context(), q, 0, func(rec keystore.Record) {
		if rec.Team == f.Team && !v.stopped(rec) {
			n++
		}
	})
	if err != nil {
		v.storeFailed(err)
		return
	}
	if n >= v.s.policy.MaxKeys {
		who := "you already hold"
		if f.Team != "" {
			who = "team " + f.Team + " already holds"
		}
		v.newKeyForm(refuse("keys", "%s %d working keys, the most allowed; revoke one first", who, n), http.StatusForbidden)
		return
	}
	key, err := keystore.Generate(g.typ)
	if err != nil {
		v.storeFailed(err)
		return
	}
	now := v.s.now().UTC()
	rec := keystore.Record{Name: g.name, Hash: keystore.Sum(key).Encode(), Type: g.typ.String(), Role: g.role.String(),
		Services: g.services, Permissions: g.permissions, AllowedIPs: g.allowedIPs, Owner: v.user, Team: f.Team,
		Hint: keystore.HintOf(key), CreatedAt: now.Format(time.RFC3339), ExpiresAt: now.Add(time.Duration(g.days) * 24 * time.Hour).Format(time.RFC3339),
		Pending: g.typ == keystore.Prod && v.s.policy.ApproveProd && v.approvedByOthers()}
	g.limits.apply(&rec)
	for tries := 0; tries < 5; tries++ {
		rec.ID = keystore.NewID()
		if err = v.s.backend.Store.Create(v.r.Context(), rec); !errors.Is(err, keystore.ErrIDTaken) {
			break
		}
	}
	if err != nil {
		v.changeFailed("", err)
		return
	}
	created := audit.Entry{"event": "key.created", "key_id": rec.ID, "type": rec.Type, "role": rec.Role,
		"services": rec.Services, "owner": rec.Owner, "pending": rec.Pending}
	if rec.Team != "" { // a personal key has no team: no "team" field
		created["team"] = rec.Team
	}
	v.changed(rec.ID, created)
	v.showKey("created", "Your new key", key, rec, time.Time{})
}

// stopped reports whether a record is revoked or expired: it counts
// against no limit (an invalid record counts, as it may be fixed).
func (v *visit) stopped(rec keystore.Record) bool {
	k, err := keystore.Compile(rec)
	return err == nil && k.Stopped(v.s.now())
}

func (v *visit) keyPage(id string) {
	rec, err := v.ownKey(id)
	if err != nil {
		v.notFoundOr(err)
		return
	}
	v.keyPageWith(rec, formOf(rec), nil, http.StatusOK)
}

// formOf is the edit form filled in with what rec holds.
func formOf(rec keystore.Record) keyForm {
	return keyForm{Name: rec.Name, Role: rec.Role, Services: rec.Services,
		Permissions: strings.Join(rec.Permissions, "\n"), AllowedIPs: strings.Join(rec.AllowedIPs, "\n"), Limits: limitsOf(rec)}
}

// errStale refuses an edit filled in over a version of the record that
// has changed since: saving it would undo that change.
var errStale = refuse("key", "was changed since you opened this page (in another tab, or by someone else), so nothing "+
	"was saved. The form below shows the key as it is now: make your change again and save")

func (v *visit) keyPageWith(rec keystore.Record, f keyForm, ferr error, status int) {
	fv := v.formView(f, ferr)
	fv.Editing = true
	fv.Key = v.view(rec, v.s.lastUsed(v.r.Context()))
	v.render(status, "key.html", "keys", "Key "+rec.ID, map[string]any{"Form": fv, "Flash": flash(v.r),
		"Grace": humanDuration(v.s.policy.RotationGrace), "Extend": v.mayExtend(rec, v.s.now()) == ""})
}

func (v *visit) edit(id string) {
	f := readForm(v.r)
	g, err := v.s.policy.checkForm(f, false)
	if err == nil && keystore.LooksLikeSecret(f.Name) {
		err = refuse("name", "looks like a key; a name describes a key and is shown to others")
	}
	if err != nil {
		rec, gerr := v.ownKey(id)
		if gerr != nil {
			v.notFoundOr(gerr)
			return
		}
		v.keyPageWith(rec, f, err, http.StatusBadRequest)
		return
	}
	shown := v.r.PostFormValue("version")
	waits := false
	_, err = v.s.backend.Store.Update(v.r.Context(), id, func(rec *keystore.Record) error {
		if err := v.mine(rec); err != nil {
			return err
		}
		if !v.holds(*rec) {
			return refuse("key", "belongs to %s; only its owner edits it (an administrator may approve or revoke it)", ownerText(*rec))
		}
		if rec.Revoked {
			return refuse("key", "is revoked; a revoked key cannot be changed")
		}
		if shown != "" && shown != keystore.Version(*rec) {
			return errStale
		}
		if rec.Pending && v.approvedByOthers() {
			// What the administrator approves must be what they saw.
			return refuse("key", "waits for approval, and cannot be changed until it is approved")
		}
		if !v.admin && !v.s.policy.withinPolicy(*rec) {
			// A key an operator gave more than the policy allows is
			// theirs to change, not the developer's.
			return refuse("key", "was given more than the portal's policy allows, so only an operator may change it")
		}
		asked := keystore.Grant{Role: g.role.String(), Services: g.services, Permissions: g.permissions, AllowedIPs: g.allowedIPs}
		v.s.policy.Limits.keepUnoffered(&g.limits, recordLimits(*rec))
		g.limits.toGrant(&asked)
		rec.Name, rec.PendingGrant = g.name, nil
		if rec.Type == keystore.Prod.String() && v.s.policy.ApproveProd && v.approvedByOthers() && widens(*rec, asked) {
			// A production key's wider grant needs approval; until then
			// the key keeps working with what it had.
			rec.PendingGrant, waits = &asked, true
			return nil
		}
		rec.Role, rec.Services, rec.Permissions, rec.AllowedIPs = asked.Role, asked.Services, asked.Permissions, asked.AllowedIPs
		g.limits.apply(rec)
		return nil
	})
	if errors.Is(err, errStale) {
		// The key as it is now, to make the change again over.
		rec, gerr := v.ownKey(id)
		if gerr != nil {
			v.notFoundOr(gerr)
			return
		}
		v.keyPageWith(rec, formOf(rec), errStale, http.StatusConflict)
		return
	}
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	v.changed(id, audit.Entry{"event": "key.updated", "key_id": id, "role": g.role.String(), "services": g.services,
		"permissions": len(g.permissions), "allowed_ips": len(g.allowedIPs), "pending": waits})
	done := "saved"
	if waits {
		done = "requested"
	}
	http.Redirect(v.w, v.r, v.s.base+"/keys/"+url.PathEscape(id)+"?done="+done, http.StatusSeeOther)
}

// withinPolicy reports whether a record's grant is one a developer could
// have chosen.
func (p *Policy) withinPolicy(rec keystore.Record) bool {
	_, err := p.checkForm(keyForm{Name: rec.Name, Role: rec.Role, Services: rec.Services,
		Permissions: strings.Join(rec.Permissions, "\n"), AllowedIPs: strings.Join(rec.AllowedIPs, "\n"), Limits: p.Limits.offered(limitsOf(rec))}, false)
	// A key with a model_tokens_per_day of its own was given it by an
	// operator: the forms offer none.
	return err == nil && len(rec.ModelTokensPerDay) == 0
}

func (v *visit) rotate(id string) {
	if rec, err := v.ownKey(id); err == nil && rec.LeakedAt != "" {
		v.rotateLeaked(id)
		return
	}
	now := v.s.now().UTC()
	var rec keystore.Record
	key, until, err := keystore.Rotate(v.r.Context(), v.s.backend.Store, id, v.s.policy.RotationGrace, func(r *keystore.Record) error {
		if err := v.mine(r); err != nil {
			return err
		}
		if !v.holds(*r) {
			// The new secret would be shown to the administrator, and the
			// owner's would stop working: rotating is the owner's.
			return refuse("key", "belongs to %s; only its owner rotates it (an administrator may approve or revoke it)", ownerText(*r))
		}
		if r.Revoked {
			return refuse("key", "is revoked; a revoked key cannot be rotated")
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
	v.changed(id, audit.Entry{"event": "key.rotated", "key_id": id, "old_valid_until": until.Format(time.RFC3339)})
	v.showKey("rotated", "Your key's new secret", key, rec, until)
}

func (v *visit) confirmRevoke(id string) {
	rec, err := v.ownKey(id)
	if err != nil {
		v.notFoundOr(err)
		return
	}
	v.render(http.StatusOK, "revoke.html", "keys", "Revoke "+id, map[string]any{"Key": v.view(rec, nil)})
}

func (v *visit) revoke(id string) {
	_, err := v.s.backend.Store.Update(v.r.Context(), id, func(r *keystore.Record) error {
		if err := v.mine(r); err != nil {
			return err
		}
		if r.Revoked {
			return refuse("key", "is revoked already")
		}
		r.Revoked = true
		v.noteAdminChange(r, "revoked")
		return nil
	})
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	v.changed(id, audit.Entry{"event": "key.revoked", "key_id": id})
	v.render(http.StatusOK, "revoked.html", "keys", "Key revoked", map[string]any{"ID": id})
}

// pause pauses a key (the gateway refuses it, 403 paused) or resumes it.
// Its owner and administrators may pause it; a key an administrator paused
// is resumed by an administrator.
func (v *visit) pause(id string, pause bool) {
	_, err := v.s.backend.Store.Update(v.r.Context(), id, func(r *keystore.Record) error {
		if err := v.mine(r); err != nil {
			return err
		}
		if r.Revoked {
			return refuse("key", "is revoked; a revoked key cannot be paused or resumed")
		}
		if pause == (r.PausedAt != "") {
			return refuse("key", "is %s already", map[bool]string{true: "paused", false: "active"}[pause])
		}
		if !pause && !v.admin && r.AdminChange != nil && r.AdminChange.Action == "paused" {
			return refuse("key", "was paused by an administrator, %s; ask them to resume it", r.AdminChange.By)
		}
		r.PausedAt = ""
		action := "resumed"
		if pause {
			r.PausedAt, action = v.s.now().UTC().Format(time.RFC3339), "paused"
		}
		v.noteAdminChange(r, action)
		return nil
	})
	if err != nil {
		v.changeFailed(id, err)
		return
	}
	event := map[bool]string{true: "key.paused", false: "key.resumed"}[pause]
	v.changed(id, audit.Entry{"event": event, "key_id": id})
	http.Redirect(v.w, v.r, v.s.base+"/keys/"+url.PathEscape(id)+"?done="+map[bool]string{true: "paused", false: "resumed"}[pause], http.StatusSeeOther)
}

// noteAdminChange records, on a key of someone else, what the visiting
// administrator did, for its owner to see.
func (v *visit) noteAdminChange(rec *keystore.Record, action string) {
	if v.holds(*rec) || (rec.Owner == "" && rec.Team == "") {
		return
	}
	rec.AdminChange = &keystore.AdminChange{Action: action, By: v.user, At: v.s.now().UTC().Format(time.RFC3339)}
	v.noticeFor(rec, action)
}

// changed tells the gateway and the audit log of a change the visitor made.
func (v *visit) changed(id string, e audit.Entry) {
	if v.s.backend.Changed != nil {
		v.s.backend.Changed(id)
	}
	v.sendNotice()
	v.audit(id, e)
}

// audit writes what the visitor did to the audit log, with them as actor.
func (v *visit) audit(id string, e audit.Entry) {
	if v.s.backend.Audit == nil {
		return
	}
	e["actor"] = "portal:" + v.user
	e["store"] = v.s.backend.Store.Describe()
	if err := v.s.backend.Audit(e); err != nil {
		v.s.backend.Logger.Error("writing the portal's change to the audit log failed", zap.String("key_id", id), zap.Error(err))
	}
}

// changeFailed explains a refused or failed change; the store is unchanged.
func (v *visit) changeFailed(id string, err error) {
	var ferr *formError
	switch {
	case errors.Is(err, errNotYours), errors.Is(err, keystore.ErrUnknownID):
		v.notFoundOr(errNotYours)
	case errors.As(err, &ferr):
		v.s.fail(v.w, v, http.StatusConflict, "Key "+id+" "+ferr.Message+".")
	default:
		var fieldErr *keystore.FieldError
		if errors.As(err, &fieldErr) {
			v.s.fail(v.w, v, http.StatusBadRequest, "The change was refused: "+fieldErr.Error()+".")
			return
		}
		v.storeFailed(err)
	}
}

func (v *visit) notFoundOr(err error) {
	if errors.Is(err, errNotYours) {
		v.s.fail(v.w, v, http.StatusNotFound, errNotYours.Error())
		return
	}
	v.storeFailed(err)
}

func (v *visit) storeFailed(err error) {
	v.s.backend.Logger.Error("the portal could not reach its key store", zap.String("store", v.s.backend.Store.Describe()), zap.Error(err))
	v.s.fail(v.w, v, http.StatusServiceUnavailable, "The key store is unavailable right now; nothing was changed. Try again shortly.")
}

// origin is where the visitor reached the portal, and so the gateway.
func origin(r *http.Request) string {
	if r.TLS != nil {
		return "https://" + r.Host
	}
	return "http://" + r.Host
}

// humanDuration says a duration in words: "24 hours", "7 days",
// "1 hour 30 minutes".
func humanDuration(d time.Duration) string {
	unit := func(n int64, one string) string {
		if n == 1 {
			return "1 " + one
		}
		return strconv.FormatInt(n, 10) + " " + one + "s"
	}
	var parts []string
	if d >= 48*time.Hour && d%(24*time.Hour) == 0 {
		return unit(int64(d/(24*time.Hour)), "day")
	}
	if h := int64(d / time.Hour); h > 0 {
		parts = append(parts, unit(h, "hour"))
	}
	if m := int64(d % time.Hour / time.Minute); m > 0 {
		parts = append(parts, unit(m, "minute"))
	}
	if s := int64(d % time.Minute / time.Second); s > 0 || len(parts) == 0 {
		parts = append(parts, unit(s, "second"))
	}
	return strings.Join(parts, " ")
}

// renew gives a key being rotated a whole lifetime from now: rotating is
// how a key is kept. Not a key that has expired (rotating must not bring
// it, or its old secret, back, nor get round max_keys), and not the expiry
// of a key an operator gave more than the policy allows: that is the
// operator's.
func (v *visit) renew(r *keystore.Record, now time.Time) error {
	if exp, err := time.Parse(time.RFC3339, r.ExpiresAt); err == nil && !now.Before(exp) {
		return refuse("key", "has expired; create a new key instead")
	}
	if r.ExpiresAt != "" && (v.admin || v.s.policy.withinPolicy(*r)) {
		r.ExpiresAt = now.Add(v.s.policy.Expiry).Format(time.RFC3339)
	}
	return nil
}
