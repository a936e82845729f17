package admin

import (
	"net/http"
	"sort"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
)

// auditHeads answers GET /apikey/audit/head: the head of every audit log
// the running config names, to record somewhere the log's writers cannot
// change (see audit.Head).
func auditHeads(w http.ResponseWriter, _ *http.Request, running *app.App) error {
	heads := []audit.HeadReport{}
	for _, log := range running.Audits() {
		head, err := audit.ReportHead(log.Path())
		if err != nil {
			return apiError(http.StatusInternalServerError, "audit log %s: %v", log.Path(), err)
		}
		heads = append(heads, head)
	}
	sort.Slice(heads, func(i, j int) bool { return heads[i].Path < heads[j].Path })
	return writeJSON(w, map[string]any{"logs": heads})
}

// auditAll records a management change, made through the admin API, in
// every audit log the running config names.
func auditAll(running *app.App, e audit.Entry) {
	e["actor"] = "admin_api"
	for _, log := range running.Audits() {
		entry := audit.Entry{}
		for k, v := range e {
			entry[k] = v
		}
		if err := log.LogNow(entry); err != nil {
			caddy.Log().Named("admin.api.apikey").Error("writing the audit log failed")
		}
	}
}
