package portal_test

import (
	"net/http"
	"regexp"
	"testing"
)

var versionInput = regexp.MustCompile(`name="version" value="([0-9a-f]+)"`)

// TestPortalEditIsACompareAndSet: a developer opens a key's page in two
// tabs, saves a new name in the first, then a new role in the second. The
// second form was filled in over the version before the rename: it is
// refused (409) rather than saved, which would put the old name back; the
// rename stays. A form opened after the rename saves.
func TestPortalEditIsACompareAndSet(t *testing.T) {
	base, keys, _ := portalSite(t, "")
	alice := newVisitor(t, base, "alice")
	id, _ := alice.create(devForm())
	version := func() string {
		t.Helper()
		_, page := alice.get("/portal/keys/" + id)
		m := versionInput.FindStringSubmatch(page)
		if m == nil {
			t.Error("the edit form carries no version of the record")
			return ""
		}
		return m[1]
	}
	first, second := version(), version()

	if status, body := alice.post("/portal/keys/"+id, devForm("name", "renamed", "version", first)); status != http.StatusSeeOther {
		t.Fatalf("saving the rename: %d %s", status, errorText(body))
	}
	status, body := alice.post("/portal/keys/"+id, devForm("role", "writer", "version", second))
	if status != http.StatusConflict {
		t.Errorf("saving a form filled in before the rename: %d %s, want 409", status, errorText(body))
	}
	rec, err := keystoreGet(keys, id)
	if err != nil || rec.Name != "renamed" || rec.Role != "reader" {
		t.Fatalf("after the second tab: name %q, role %q, %v; want the rename kept and nothing else saved", rec.Name, rec.Role, err)
	}

	if status, body := alice.post("/portal/keys/"+id, devForm("name", "renamed", "role", "writer", "version", version())); status != http.StatusSeeOther {
		t.Fatalf("saving over the current version: %d %s", status, errorText(body))
	}
	if rec, _ := keystoreGet(keys, id); rec.Role != "writer" {
		t.Fatalf("role %q after a save over the current version", rec.Role)
	}
}
