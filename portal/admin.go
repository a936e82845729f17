package portal

import (
	"fmt"
	"net/http"
	"sort"
	"time"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// adminPageSize is how many keys the admin page lists at a time.
const adminPageSize = 100

// auditShown is how many of the audit log's last entries the admin page shows.
const auditShown = 50

// auditLine is one audit entry as the admin page shows it.
type auditLine struct {
	Time, Event, KeyID, Actor, Detail string
}

func (v *visit) adminPage() {
	if !v.admin {
		v.s.fail(v.w, v, http.StatusForbidden, "Only the portal's administrators see this page.")
		return
	}
	ctx := v.r.Context()
	used := v.s.lastUsed(ctx)
	filter := readFilter(v.r)
	list, err := v.adminKeys(filter, v.r.URL.Query().Get("after"), used)
	if err != nil {
		v.storeFailed(err)
		return
	}
	// Keys waiting for approval: the store's index of them, the first
	// adminPageSize in id order.
	var pending []keyView
	if v.s.policy.ApproveProd {
		waiting, err := v.s.backend.Store.List(ctx, keystore.ListQuery{Waiting: true, Limit: adminPageSize})
		if err != nil {
			v.storeFailed(err)
			return
		}
		for _, rec := range waiting.Records {
			pending = append(pending, v.view(rec, used))
		}
	}
	trail, auditErr := v.auditTrail()
	csvQuery := filter.values()
	if after := v.r.URL.Query().Get("after"); after != "" {
		csvQuery.Set("after", after)
	}
	keysCSV := v.s.base + "/admin/keys.csv"
	if len(csvQuery) > 0 {
		keysCSV += "?" + csvQuery.Encode()
	}
	v.render(http.StatusOK, "admin.html", "admin", "Administration", map[string]any{
		"List": list, "Find": findView{Action: "/admin", Admin: true, Filter: filter, Statuses: statusChoices}, "Pending": pending, "Audit": trail, "AuditError": auditErr,
		"HasAudit": v.s.backend.RecentAudit != nil, "Flash": flash(v.r), "Now": v.s.now().UTC().Format(time.RFC3339), "KeysCSV": keysCSV})
}

// auditTrail is the audit log's last auditShown entries, newest first, as
// the admin page shows them; errText says when the log could not be read.
func (v *visit) auditTrail() (trail []auditLine, errText string) {
	if v.s.backend.RecentAudit == nil {
		return nil, ""
	}
	entries, err := v.s.backend.RecentAudit(auditShown)
	if err != nil {
		errText = "The audit log could not be read."
	}
	for i := len(entries) - 1; i >= 0; i-- {
		e := entries[i]
		line := auditLine{Time: str(e["ts"]), Event: str(e["event"]), KeyID: str(e["key_id"]), Actor: str(e["actor"])}
		var details []string
		for _, name := range []string{"decision", "reason", "status", "client_ip", "service", "role", "owner"} {
			if s := str(e[name]); s != "" {
				details = append(details, name+"="+s)
			}
		}
		sort.Strings(details)
		line.Detail = fmt.Sprint(details)
		trail = append(trail, line)
	}
	return trail, errText
}

func str(x any) string {
	switch x := x.(type) {
	case nil:
		return ""
	case string:
		return clip(x, 200)
	default:
		return clip(fmt.Sprint(x), 200)
	}
}
