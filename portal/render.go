package portal

import (
	"bytes"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
)

// page is what every template gets.
type page struct {
	Title string
	Base  string
	User  string
	Admin bool
	CSRF  string
	Nav   string
	Data  any
	// Logout is where Sign out goes; "" for no link.
	Logout string
	// others is an administrator other than the visitor, who approves
	// their own keys; "" for none.
	others string
}

var funcs = template.FuncMap{
	"join": strings.Join,
	"add":  func(a, b int) int { return a + b },
	// decision is what the pending list's form shows of a key.
	"decision": func(p page, kv keyView) decisionView { return decisionView{Page: p, Key: kv} },
}

// parsePages parses each page with the layout around it.
func parsePages() (map[string]*template.Template, error) {
	names, err := fs.Glob(templateFiles, "templates/*.html")
	if err != nil {
		return nil, err
	}
	pages := map[string]*template.Template{}
	for _, name := range names {
		base := strings.TrimPrefix(name, "templates/")
		if base == "layout.html" || strings.HasPrefix(base, "_") {
			continue
		}
		// Files named _*.html hold parts several pages use.
		t, err := template.New(base).Funcs(funcs).ParseFS(templateFiles, "templates/layout.html", "templates/_*.html", name)
		if err != nil {
			return nil, fmt.Errorf("portal template %s: %w", base, err)
		}
		pages[base] = t
	}
	return pages, nil
}

// render writes a page; nav names the menu entry it belongs to.
func (v *visit) render(status int, name, nav, title string, data any) {
	v.s.write(v.w, v, status, name, nav, title, data)
}

func (s *Server) write(w http.ResponseWriter, v *visit, status int, name, nav, title string, data any) {
	p := page{Title: title, Base: s.base, Nav: nav, Data: data, Logout: s.policy.LogoutURL}
	if v != nil {
		p.User, p.Admin, p.CSRF = v.user, v.admin, v.csrf
		p.others = s.policy.otherAdmin(v.user)
	}
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "layout", p); err != nil {
		// A template that fails is a bug; say so without what it held.
		s.backend.Logger.Error("portal page failed to render: " + name)
		http.Error(w, "The page could not be shown.", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// fail shows a page that says what went wrong.
func (s *Server) fail(w http.ResponseWriter, v *visit, status int, message string) {
	s.write(w, v, status, "error.html", "", http.StatusText(status), map[string]any{"Status": status, "Message": message})
}
