package admin_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moodmnky/caddy-apikey/internal/gatewaytest"
)

// TestAuditHead: GET /apikey/audit/head gives the head of the running
// config's audit log, the one `caddy apikey audit head` prints and `audit
// verify --head` takes.
func TestAuditHead(t *testing.T) {
	g := gatewaytest.StartOps(t, gatewaytest.OpsOptions{Log: true})
	for range 3 {
		gatewaytest.Send(t, "GET", g.Base+"/ollama/api/tags", g.Keys["revoked"].Bearer()...)
	}
	gatewaytest.WaitForLogCount(t, g.AuditLog, `"decision":"revoked_key"`, 3)
	// The queued lines are written in batches: wait for the head to settle.
	var head string
	gatewaytest.WaitUntil(t, "the head file holds 3 lines", 2*time.Second, func() bool {
		out, _, _ := gatewaytest.CLI(t, "", "audit", "head", g.AuditLog)
		head = strings.TrimSpace(out)
		return strings.HasPrefix(head, "3:")
	})
	code, body := gatewaytest.Admin(t, "GET", g.Admin, "/apikey/audit/head")
	if code != 200 {
		t.Fatalf("GET /apikey/audit/head: %d %s", code, body)
	}
	var got struct {
		Logs []struct {
			Path     string `json:"path"`
			Lines    int64  `json:"lines"`
			SHA256   string `json:"sha256"`
			Head     string `json:"head"`
			Recorded bool   `json:"recorded"`
		} `json:"logs"`
	}
	if err := json.Unmarshal([]byte(body), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Logs) != 1 || got.Logs[0].Path != g.AuditLog || got.Logs[0].Head != head || !got.Logs[0].Recorded ||
		fmt.Sprintf("%d:%s", got.Logs[0].Lines, got.Logs[0].SHA256) != head {
		t.Fatalf("GET /apikey/audit/head: %s, want the head %s of %s", body, head, g.AuditLog)
	}
	if out, errOut, code := gatewaytest.CLI(t, "", "audit", "verify", "--head", got.Logs[0].Head, g.AuditLog); code != 0 {
		t.Errorf("verify --head with the admin API's head: exit %d\n%s%s", code, out, errOut)
	}
	if code, _ := gatewaytest.Admin(t, "POST", g.Admin, "/apikey/audit/head"); code != 405 {
		t.Errorf("POST /apikey/audit/head: %d, want 405", code)
	}
}
