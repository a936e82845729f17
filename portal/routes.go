package portal

import (
	"context"
	"net/http"
)

// routes are the portal's pages, by method and path under the base path.
// A GET pattern answers HEAD as well.
func (s *Server) routes() *http.ServeMux {
	mux := http.NewServeMux()
	page := func(pattern string, fn func(v *visit)) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			v := r.Context().Value(visitKey{}).(*visit)
			v.w, v.r = w, r
			fn(v)
		})
	}
	withID := func(fn func(v *visit, id string)) func(v *visit) {
		return func(v *visit) { fn(v, v.r.PathValue("id")) }
	}
	b := s.base
	if b != "" {
		page("GET "+b, (*visit).home)
	}
	page("GET "+b+"/{$}", (*visit).home)
	page("GET "+b+"/keys", (*visit).myKeys)
	page("POST "+b+"/keys", (*visit).create)
	page("GET "+b+"/keys/new", func(v *visit) { v.newKeyForm(nil, http.StatusOK) })
	page("GET "+b+"/keys/{id}", withID((*visit).keyPage))
	page("POST "+b+"/keys/{id}", withID((*visit).edit))
	page("POST "+b+"/keys/{id}/rotate", withID((*visit).rotate))
	page("POST "+b+"/keys/{id}/extend", withID((*visit).extend))
	page("POST "+b+"/keys/{id}/pause", withID(func(v *visit, id string) { v.pause(id, true) }))
	page("POST "+b+"/keys/{id}/resume", withID(func(v *visit, id string) { v.pause(id, false) }))
	page("GET "+b+"/keys/{id}/secret", withID((*visit).secretPage))
	page("GET "+b+"/keys/{id}/revoke", withID((*visit).confirmRevoke))
	page("POST "+b+"/keys/{id}/revoke", withID((*visit).revoke))
	page("GET "+b+"/usage", (*visit).usagePage)
	page("GET "+b+"/catalog", (*visit).catalog)
	page("GET "+b+"/usage.csv", (*visit).usageCSV)
	page("GET "+b+"/notifications", func(v *visit) { v.notificationsPage(http.StatusOK, "", nil) })
	page("POST "+b+"/notifications", (*visit).setWebhook)
	page("GET "+b+"/keys.csv", (*visit).keysCSV)
	page("GET "+b+"/playground", func(v *visit) { v.playground(nil) })
	page("POST "+b+"/playground", (*visit).try)
	page("GET "+b+"/admin", (*visit).adminPage)
	page("GET "+b+"/admin/keys.csv", (*visit).adminKeysCSV)
	page("GET "+b+"/admin/audit.csv", (*visit).auditCSV)
	page("POST "+b+"/admin/keys/{id}/approve", withID(func(v *visit, id string) { v.decide(id, true) }))
	page("POST "+b+"/admin/keys/{id}/deny", withID(func(v *visit, id string) { v.decide(id, false) }))
	return mux
}

// visitKey carries a visit to the page the router chose.
type visitKey struct{}

// route serves the page the visit's method and path name. Where there is
// none, the router's own answer says which is missing (the page, or the
// method: 405 with Allow), told on a portal page.
func (s *Server) route(v *visit) {
	h, pattern := s.mux.Handler(v.r)
	if pattern == "" {
		var answer noPage
		answer.header = http.Header{}
		h.ServeHTTP(&answer, v.r)
		if answer.status == http.StatusMethodNotAllowed {
			v.w.Header().Set("Allow", answer.header.Get("Allow"))
			s.fail(v.w, v, http.StatusMethodNotAllowed, "This page does not take "+v.r.Method+".")
			return
		}
		s.fail(v.w, v, http.StatusNotFound, "There is no portal page here.")
		return
	}
	s.mux.ServeHTTP(v.w, v.r.WithContext(context.WithValue(v.r.Context(), visitKey{}, v)))
}

// noPage records the router's answer when no page matched: its status and
// headers (Allow), not its plain-text body.
type noPage struct {
	header http.Header
	status int
}

func (n *noPage) Header() http.Header         { return n.header }
func (n *noPage) Write(b []byte) (int, error) { return len(b), nil }
func (n *noPage) WriteHeader(status int)      { n.status = status }

// home sends the visitor to their keys.
func (v *visit) home() {
	http.Redirect(v.w, v.r, v.s.base+"/keys", http.StatusSeeOther)
}
