package portal

import (
	"encoding/csv"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Every table the portal shows a developer (the usage table, today's
// quotas, a key's refusals, models and request log, and My keys), and an
// administrator (every key, the recent audit entries), can be downloaded
// as CSV from a link beside it: the same rows, as the page's query
// selects them, served as an attachment.

// csvTables are the usage page's tables, by the name the link gives.
var csvTables = []string{"usage", "quotas", "refusals", "models", "requestlog"}

// csvLinks are the links of the usage page's tables, with the page's query.
func (v *visit) csvLinks() map[string]string {
	q := url.Values{}
	for name, vals := range v.r.URL.Query() {
		if name != "table" {
			q[name] = vals
		}
	}
	links := map[string]string{}
	for _, table := range csvTables {
		q.Set("table", table)
		links[table] = v.s.base + "/usage.csv?" + q.Encode()
	}
	return links
}

// usageCSV serves one of the usage page's tables as CSV.
func (v *visit) usageCSV() {
	table := v.r.URL.Query().Get("table")
	data, ok := v.usageData()
	if !ok {
		return
	}
	var rows [][]string
	switch table {
	case "usage":
		rows = append(rows, []string{"key", "service", "method", "endpoint", "requests", "prompt_tokens", "completion_tokens"})
		for _, r := range data["Table"].([]tableRow) {
			rows = append(rows, []string{r.KeyID, r.Service, r.Method, r.Endpoint, itoa(r.Requests), itoa(r.PromptTokens), itoa(r.CompletionTokens)})
		}
	case "quotas":
		rows = append(rows, []string{"key", "used", "limit", "resets"})
		for _, kv := range data["Quotas"].([]keyView) {
			rows = append(rows, []string{kv.ID, itoa(kv.Quota.Used), itoa(kv.Quota.Limit), kv.Quota.Reset.UTC().Format(time.RFC3339)})
		}
	case "refusals", "models", "requestlog":
		av, _ := data["Activity"].(*activityView)
		if av == nil {
			v.s.fail(v.w, v, http.StatusNotFound, "Choose one of your keys: this table is a key's.")
			return
		}
		switch table {
		case "refusals":
			rows = append(rows, []string{"reason", "status", "refusals"})
			for _, r := range av.Refusals {
				rows = append(rows, []string{r.Reason, strconv.Itoa(r.Status), itoa(r.Count)})
			}
		case "models":
			rows = append(rows, []string{"model", "requests", "tokens"})
			for _, m := range av.Models {
				rows = append(rows, []string{m.Name, itoa(m.Requests), itoa(m.Tokens)})
			}
		default:
			rows = append(rows, []string{"time", "method", "path", "status", "reason", "tokens"})
			for _, l := range av.Log {
				rows = append(rows, []string{l.Time.Format(time.RFC3339), l.Method, l.Path, strconv.Itoa(l.Status), l.Reason, itoa(l.Tokens)})
			}
		}
	default:
		v.s.fail(v.w, v, http.StatusNotFound, "There is no such table.")
		return
	}
	v.writeCSV(table, rows)
}

// keysCSV serves My keys as CSV.
func (v *visit) keysCSV() {
	recs, err := v.myRecords(v.r.Context())
	if err != nil {
		v.storeFailed(err)
		return
	}
	used := v.s.lastUsed(v.r.Context())
	rows := [][]string{{"id", "name", "key", "type", "role", "services", "allowed_ips", "created", "expires", "status", "last_used", "used_today", "daily_limit"}}
	for _, rec := range recs {
		kv := v.view(rec, used)
		var today, limit string
		if kv.Quota != nil {
			today, limit = itoa(kv.Quota.Used), itoa(kv.Quota.Limit)
		}
		rows = append(rows, []string{kv.ID, kv.Name, kv.Masked, kv.Type, kv.Role, strings.Join(kv.Services, " "),
			strings.Join(kv.AllowedIPs, " "), kv.CreatedAt, kv.Expires, kv.Status, kv.LastUsed, today, limit})
	}
	v.writeCSV("keys", rows)
}

// adminKeysCSV serves the admin page's list of every key as CSV: the same
// page of it (at most adminPageSize keys, from at most adminScan records
// looked through), with the page's filter and place.
func (v *visit) adminKeysCSV() {
	if !v.admin {
		v.s.fail(v.w, v, http.StatusForbidden, "Only the portal's administrators see this page.")
		return
	}
	used := v.s.lastUsed(v.r.Context())
	list, err := v.adminKeys(readFilter(v.r), v.r.URL.Query().Get("after"), used)
	if err != nil {
		v.storeFailed(err)
		return
	}
	rows := [][]string{{"id", "name", "key", "owner", "type", "role", "services", "created", "expires", "status", "last_used", "used_today", "daily_limit"}}
	for _, kv := range list.Keys {
		var today, limit string
		if kv.Quota != nil {
			today, limit = itoa(kv.Quota.Used), itoa(kv.Quota.Limit)
		}
		rows = append(rows, []string{kv.ID, kv.Name, kv.Masked, kv.Owner, kv.Type, kv.Role, strings.Join(kv.Services, " "),
			kv.CreatedAt, kv.Expires, kv.Status, kv.LastUsed, today, limit})
	}
	v.writeCSV("all-keys", rows)
}

// auditCSV serves the admin page's recent audit entries as CSV.
func (v *visit) auditCSV() {
	if !v.admin {
		v.s.fail(v.w, v, http.StatusForbidden, "Only the portal's administrators see this page.")
		return
	}
	if v.s.backend.RecentAudit == nil {
		v.s.fail(v.w, v, http.StatusNotFound, "No audit log is configured (audit_log).")
		return
	}
	trail, errText := v.auditTrail()
	if errText != "" && len(trail) == 0 {
		v.s.fail(v.w, v, http.StatusServiceUnavailable, errText)
		return
	}
	rows := [][]string{{"time", "event", "key", "actor", "detail"}}
	for _, l := range trail {
		rows = append(rows, []string{l.Time, l.Event, l.KeyID, l.Actor, l.Detail})
	}
	v.writeCSV("audit", rows)
}

// writeCSV sends rows as a CSV attachment named after the table, each cell
// made safe for spreadsheets (csvCell).
func (v *visit) writeCSV(table string, rows [][]string) {
	h := v.w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8")
	h.Set("Content-Disposition", `attachment; filename="`+table+"-"+v.s.now().UTC().Format("20060102-1504")+`.csv"`)
	cw := csv.NewWriter(v.w)
	for _, row := range rows {
		for i, cell := range row {
			row[i] = csvCell(cell)
		}
		_ = cw.Write(row)
	}
	cw.Flush()
}

// csvCell defuses a cell a spreadsheet would read as a formula (CSV
// injection): one that starts with =, +, -, @, a tab or a carriage return
// gets a leading '.
func csvCell(s string) string {
	if s != "" && strings.ContainsRune("=+-@\t\r", rune(s[0])) {
		return "'" + s
	}
	return s
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
