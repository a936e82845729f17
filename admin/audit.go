package admin

import (
	"net/http"
	"sort"

	"github.com/caddyserver/caddy/v2"

	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
)

// auditHead is one audit log's head in GET /apikey/audit/head.
type auditHead struct {
	Path     string `json:"path"`
	Lines    int64  `json:"lines"`
	SHA256   string `json:"sha256"`
	Head     string `json:"head"`
	Recorded bool   `json:"recorded"`
}

// auditHeads answers GET /apikey/audit/head: the head of every audit log
// the running config names, to record somewhere the log's writers cannot
// change (see audit.Head).
func auditHeads(w http.ResponseWriter, _ *http.Request, running *app.App) error {
	heads := []auditHead{}
	for _, log := range running.Audits() {
		head, recorded, err := audit.ReadHead(log.Path())
		if err != nil {
			return apiError(http.StatusInternalServerError, "audit log %s: %v", log.Path(), err)
		}
		heads = append(heads, auditHead{Path: log.Path(), Lines: head.Lines, SHA256: head.SHA256,
			Head: head.String(), Recorded: recorded})
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
