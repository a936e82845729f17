package portal

import (
	"net/http"
	"net/url"
	"strings"
)

// linkable reports whether s is a link the pages may show: an absolute
// http or https URL, or a path on the portal's host.
func linkable(s string) bool {
	if strings.HasPrefix(s, "/") && !strings.HasPrefix(s, "//") {
		_, err := url.Parse(s)
		return err == nil
	}
	u, err := url.Parse(s)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}

// catalog lists the services a key may be given: what each is, where it
// answers on the gateway, how it reads the key, and its documentation.
func (v *visit) catalog() {
	v.render(http.StatusOK, "catalog.html", "catalog", "APIs", map[string]any{"Services": v.s.policy.Services})
}
