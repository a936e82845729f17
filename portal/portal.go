// Package portal is the developer portal: web pages on which developers
// create, scope, rotate and revoke their own keys within an operator's
// policy, see their usage and try the gateway, and on which administrators
// approve and revoke keys. It serves HTML only; who the visitor is comes
// from the authentication in front of it.
package portal

import (
	"context"
	"embed"
	"errors"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/usage"
)

//go:embed templates/*.html
var templateFiles embed.FS

//go:embed assets
var assetFiles embed.FS

// Backend is what the portal reads and changes, provided by the gateway.
type Backend struct {
	// Store is where keys are kept and changed.
	Store keystore.Store
	// Lookup finds the key with a digest, as the gateway does; the
	// playground sends only keys the visitor owns (administrators: any).
	// Nil: the visitor's own records are searched.
	Lookup func(ctx context.Context, d keystore.Digest) (keystore.Match, error)
	// Changed makes the gateway see a change to a key at once.
	Changed func(id string)
	// Usage answers usage queries: cluster-wide when counts are shared.
	Usage func(ctx context.Context, q usage.Query) ([]usage.Row, error)
	// Activity is the activity of the store's keys, on this instance: their
	// refusals by reason, use per model and last requests, and the events
	// the gateway tells their owners of. nil: neither.
	Activity *activity.Tracker
	// Quota is a key's use of today's quota; ok is false when unknown.
	Quota func(ctx context.Context, k *keystore.Key) (q Quota, ok bool)
	// Audit records a change; nil when there is no audit log.
	Audit func(e audit.Entry) error
	// RecentAudit returns the audit log's last n entries, newest last.
	RecentAudit func(n int) ([]audit.Entry, error)
	// Gateway is the base URL the playground sends requests to, e.g.
	// "http://127.0.0.1:8080"; "" means the address that accepted the
	// portal's own request, with the same scheme.
	Gateway string
	// WebhooksFile is where developers' webhooks (URL and secret) are
	// kept; "" keeps them in memory only.
	WebhooksFile string
	// WebhooksLoopback lets webhooks go to http://127.0.0.1, [::1] and
	// localhost (for tests and local receivers); off, only https to public
	// addresses.
	WebhooksLoopback bool
	// Logger gets the portal's failures; never a key.
	Logger *zap.Logger
}

// Quota is a key's use of its daily quota.
type Quota struct {
	Used, Limit int64
	Reset       time.Time
}

// Server serves the portal's pages under a base path.
type Server struct {
	base    string
	policy  Policy
	backend Backend
	pages   map[string]*template.Template
	assets  http.Handler
	mux     *http.ServeMux
	now     func() time.Time

	// creating serializes key creation per owner on this instance, so
	// that two tabs cannot both pass the max_keys check.
	creating sync.Map // owner -> *sync.Mutex

	// showings are new secrets waiting for their one showing.
	showings showings

	// notes tells developers of what administrators did to their keys.
	notes *notifier
	// keyEvents are the gateway's events about keys (keyevents.go).
	keyEvents *keyEvents
	// sweep looks for keys about to expire (expirysweep.go).
	sweep *expirySweep
	// teamNotes are the notices about teams' keys (teams.go).
	teamNotes teamNotices
}

// New makes a portal served under base (e.g. "/portal").
func New(base string, policy Policy, backend Backend) (*Server, error) {
	if err := policy.check(); err != nil {
		return nil, err
	}
	if backend.Store == nil {
		return nil, errors.New("the portal needs a key store")
	}
	if backend.Logger == nil {
		backend.Logger = zap.NewNop()
	}
	base = "/" + strings.Trim(base, "/")
	if base == "/" {
		base = ""
	}
	s := &Server{base: base, policy: policy, backend: backend, now: time.Now}
	s.notes = newNotifier(backend.WebhooksFile, backend.WebhooksLoopback, backend.Logger)
	var err error
	if s.pages, err = parsePages(); err != nil {
		return nil, err
	}
	sub, err := fs.Sub(assetFiles, "assets")
	if err != nil {
		return nil, err
	}
	s.assets = http.StripPrefix(base+"/assets/", http.FileServer(http.FS(sub)))
	s.mux = s.routes()
	s.listenForKeyEvents()
	s.startExpirySweep()
	return s, nil
}

// securityHeaders are on every answer: no script or style from anywhere
// but the portal's own files, no framing, nothing cached, no referrer.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "+
		"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	// same-origin, not no-referrer: with no-referrer browsers send "Origin: null"
	// on form posts, and the origin check needs the origin. No page URL holds a secret.
	h.Set("Referrer-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
}

// ServeHTTP serves one request from the visitor named user (the identity
// the authentication in front of the portal established).
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request, user string) {
	s.ServeMember(w, r, user, "")
}

// ServeMember serves one request from the visitor named user, whom the
// identity provider puts in groups (separated by commas or white space;
// see teams.go).
func (s *Server) ServeMember(w http.ResponseWriter, r *http.Request, user, groups string) {
	securityHeaders(w.Header())
	path, ok := strings.CutPrefix(r.URL.Path, s.base)
	if !ok || (path != "" && path[0] != '/') {
		s.fail(w, nil, http.StatusNotFound, "There is no portal page here.")
		return
	}
	if strings.HasPrefix(path, "/assets/") && !strings.HasSuffix(path, "/") && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
		w.Header().Set("Cache-Control", "no-cache")
		s.assets.ServeHTTP(w, r)
		return
	}
	if user == "" {
		s.fail(w, nil, http.StatusUnauthorized, "Sign in first: the portal knows you from the sign-in in front of it, and there was none.")
		return
	}
	if len(user) > keystore.MaxOwnerLength {
		s.fail(w, nil, http.StatusForbidden, "Your user name is too long to own keys here.")
		return
	}
	v := &visit{s: s, w: w, r: r, user: user, admin: s.policy.isAdmin(user), csrf: csrfToken(w, r, s.base, user),
		teams: s.policy.teamsOf(user, groups)}
	if r.Method == http.MethodPost {
		if err := checkPost(r, user); err != nil {
			s.fail(w, v, http.StatusForbidden, err.Error())
			return
		}
	}
	s.route(v)
}

// visit is one request's visitor and answer.
type visit struct {
	s     *Server
	w     http.ResponseWriter
	r     *http.Request
	user  string
	admin bool
	csrf  string
	// teams are the teams the visitor is a member of now, sorted.
	teams []string
	// notice is what an administrator's change tells the key's owner,
	// once it is made (see notifications.go).
	notice *ownerNotice
}
