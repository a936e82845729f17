package apikey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/app"
	"github.com/moodmnky/caddy-apikey/audit"
	"github.com/moodmnky/caddy-apikey/internal/keylist"
	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/portal"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

func init() {
	caddy.RegisterModule(Portal{})
}

// Portal serves the developer portal: pages on which developers sign in
// (through the authentication in front of it, e.g. basic_auth or
// forward_auth), create keys within the operator's policy, edit their
// permissions, rotate and revoke them, see their usage and try the gateway.
// Administrators also approve production keys, revoke any key and read the
// audit trail. The visitor is whoever {http.auth.user.id} names; the portal
// stores no passwords.
//
// It changes keys in the same store as the gateway (a key file or Redis),
// so the gateway sees each change from the next request.
type Portal struct {
	// Keys is the key store developers' keys are kept in, named by its
	// "source" field: {"source": "file", "path": …} or {"source": "redis",
	// …}, the same as the apikey handler's. Required; it must be editable.
	KeysRaw json.RawMessage `json:"keys,omitempty" caddy:"namespace=http.apikey.sources inline_key=source"`

	// BasePath is the path the portal is mounted on, e.g. "/portal" (the
	// default) for `handle /portal/* { … apikey_portal … }`.
	BasePath string `json:"base_path,omitempty"`

	// Services are the services developers may give their keys. Required.
	Services []PortalService `json:"services,omitempty"`

	// Types are the key types developers may create: "dev", "prod".
	// Default both.
	Types []string `json:"types,omitempty"`

	// MaxRole is the highest role developers may give a key: reader,
	// writer or admin. Default writer.
	MaxRole string `json:"max_role,omitempty"`

	// CustomPermissions lets developers narrow a key to "METHOD /path"
	// permissions, and choose the custom role, within max_role's methods.
	CustomPermissions bool `json:"custom_permissions,omitempty"`

	// MaxKeys is how many working keys (not revoked, not expired) a
	// developer may hold. Default 10.
	MaxKeys int `json:"max_keys,omitempty"`

	// Expiry is a new key's lifetime, and the longest a developer may
	// choose; rotating a key renews it. Default 90 days.
	Expiry caddy.Duration `json:"expiry,omitempty"`

	// RotationGrace is how long a rotated key's old secret keeps working.
	// Default 24h.
	RotationGrace caddy.Duration `json:"rotation_grace,omitempty"`

	// ApproveProd makes the production keys developers create wait for an
	// administrator's approval; until then the gateway refuses them with
	// 403, reason pending_approval.
	ApproveProd bool `json:"approve_prod,omitempty"`

	// Admins are the users ({http.auth.user.id}) who administer the portal.
	Admins []string `json:"admins,omitempty"`

	// AuditLog is the audit log the portal writes every change to, with
	// the visitor as actor, and whose recent entries administrators see.
	// Default: the audit_log of an apikey handler using the same store.
	AuditLog string `json:"audit_log,omitempty"`

	// User is the visitor's identity, as a placeholder. Default
	// "{http.auth.user.id}", which basic_auth and caddy-security set; with
	// forward_auth, name the header its copy_headers sets, e.g.
	// "{http.request.header.X-Auth-Request-Email}" (forward_auth removes
	// that header from the client's request first, so it cannot be forged).
	User string `json:"user,omitempty"`

	// Groups is the visitor's groups at the identity provider, as a
	// placeholder, e.g. "{http.request.header.X-Auth-Request-Groups}"
	// (forward_auth's copy_headers, from oauth2-proxy): a list separated
	// by commas or spaces. Each group is a team whose members share its
	// keys (at most 64 teams a visitor, names of at most 64 letters,
	// digits and . _ - @ : / +; others are ignored). Unset: teams come
	// from Teams only.
	Groups string `json:"groups,omitempty"`

	// TeamGroups, when set, are the only groups (of Groups) that count as
	// teams: an identity provider may send many groups. Empty: every group
	// does.
	TeamGroups []string `json:"team_groups,omitempty"`

	// Teams are teams the operator defines, with their members: besides
	// (or instead of) the identity provider's groups.
	Teams []PortalTeam `json:"teams,omitempty"`

	// PlaygroundURL is where the playground sends its requests, e.g.
	// "http://127.0.0.1:8080". Default: the address that accepted the
	// visitor's request, with the same scheme and Host.
	PlaygroundURL string `json:"playground_url,omitempty"`

	// LogoutURL is where the portal's Sign out link goes: the identity
	// provider's sign-out (e.g. oauth2-proxy's "/oauth2/sign_out"). Unset:
	// no link.
	LogoutURL string `json:"logout_url,omitempty"`

	// MaxRate is the fastest burst rate a developer may give a key
	// ("<n>/s", "/m" or "/h"): the key's own rate, which overrides the
	// route's. Unset: the forms offer no rate.
	MaxRate string `json:"max_rate,omitempty"`

	// MaxQuotaPerDay is the largest daily quota of requests a developer
	// may give a key (its quota_per_day). 0: the forms offer none.
	MaxQuotaPerDay int64 `json:"max_quota_per_day,omitempty"`

	// MaxTokensPerDay and MaxTokensPerMinute are the largest token
	// budgets a developer may give a key (its tokens_per_day and
	// tokens_per_minute, on routes with tokens). 0: the forms offer none.
	MaxTokensPerDay    int64 `json:"max_tokens_per_day,omitempty"`
	MaxTokensPerMinute int64 `json:"max_tokens_per_minute,omitempty"`

	// Models are the models (names, or patterns with * and ?) a developer
	// may allow a key (its models, on routes with tokens); a key given
	// none is given all of these. Empty: the forms offer no models, and
	// keys allow any.
	Models []string `json:"models,omitempty"`
	// WebhooksFile is where developers' webhooks (URL and signing secret)
	// are kept. Default: apikey/portal-webhooks.json in Caddy's data
	// directory.
	WebhooksFile string `json:"webhooks_file,omitempty"`

	// WebhooksLoopback lets developers' webhooks go to http(s)://127.0.0.1,
	// [::1] and localhost, for tests and local receivers. Off by default:
	// only https URLs of public addresses.
	WebhooksLoopback bool `json:"webhooks_loopback,omitempty"`

	server       *portal.Server
	source       keystore.Editable
	audit        *audit.Writer
	auditRelease func() error
	// activity is the activity of the store's keys, which its routes record.
	activity        *activity.Tracker
	activityRelease func() error
	// app is the config's apikey app: the routes whose counters and audit
	// log serve the portal's store.
	app *app.App
}

// PortalTeam is a team an operator defines.
type PortalTeam struct {
	// Name names the team, as key records' team field: at most 64
	// letters, digits and . _ - @ : / +.
	Name string `json:"name"`
	// Members are the users (as User names them) in the team.
	Members []string `json:"members"`
}

// PortalService is a service developers may choose.
type PortalService struct {
	// Name is the service's name, as the apikey handler's service.
	Name string `json:"name"`
	// Path is a path on the gateway the service answers (used by the
	// playground and the code snippets), e.g. "/ollama/api/tags".
	Path string `json:"path,omitempty"`
	// Header is the request header the service's route reads the key
	// from. Default Authorization.
	Header string `json:"header,omitempty"`
	// Scheme comes before the key in Header, e.g. "Bearer" (the default
	// with Authorization); "" sends the key alone.
	Scheme string `json:"scheme,omitempty"`
	// Description says what the service is, on the portal's API catalog.
	Description string `json:"description,omitempty"`
	// Docs is a link to the service's documentation (http, https, or a
	// path on the portal's host), on the API catalog.
	Docs string `json:"docs,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (Portal) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.apikey_portal",
		New: func() caddy.Module { return new(Portal) },
	}
}

// Provision loads the key store and prepares the pages.
func (p *Portal) Provision(ctx caddy.Context) error {
	var err error
	if p.app, err = app.Of(ctx); err != nil {
		return err
	}
	src, err := loadEditable(ctx, p, p.KeysRaw, "the portal")
	if err != nil {
		return err
	}
	p.source = src
	policy, err := p.policy()
	if err != nil {
		return err
	}
	if p.AuditLog != "" {
		if p.audit, p.auditRelease, err = app.OpenAudit(p.AuditLog); err != nil {
			return fmt.Errorf("audit_log: %w", err)
		}
	}
	if p.PlaygroundURL != "" {
		u, err := url.Parse(p.PlaygroundURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
			return fmt.Errorf("playground_url: %q is not an http(s)://host[:port] URL", p.PlaygroundURL)
		}
	}
	store := src.Store()
	if p.activity, p.activityRelease, err = app.HoldActivity(store); err != nil {
		return err
	}
	backend := portal.Backend{
		Store:       store,
		Lookup:      src.Lookup,
		Changed:     src.Changed,
		Usage:       p.app.UsageRows,
		Activity:    p.activity,
		Quota:       func(ctx context.Context, k *keystore.Key) (portal.Quota, bool) { return p.todaysQuota(ctx, store, k) },
		Audit:       p.writeAudit,
		RecentAudit: p.recentAudit,
		Gateway:     p.PlaygroundURL,
		Logger:      ctx.Logger(),

		WebhooksFile:     p.WebhooksFile,
		WebhooksLoopback: p.WebhooksLoopback,
	}
	if backend.WebhooksFile == "" {
		backend.WebhooksFile = filepath.Join(caddy.AppDataDir(), "apikey", "portal-webhooks.json")
	}
	if err := os.MkdirAll(filepath.Dir(backend.WebhooksFile), 0o700); err != nil {
		return fmt.Errorf("webhooks_file: %w", err)
	}
	base := p.BasePath
	if base == "" {
		base = "/portal"
	}
	p.server, err = portal.New(base, policy, backend)
	return err
}

func (p *Portal) policy() (portal.Policy, error) {
	pol := portal.Policy{CustomPermissions: p.CustomPermissions, MaxKeys: p.MaxKeys, Expiry: time.Duration(p.Expiry),
		RotationGrace: time.Duration(p.RotationGrace), ApproveProd: p.ApproveProd, Admins: p.Admins}
	for _, t := range p.Types {
		typ, err := keystore.ParseType(t)
		if err != nil {
			return pol, fmt.Errorf("types: %w", err)
		}
		pol.Types = append(pol.Types, typ)
	}
	if p.MaxRole != "" {
		role, err := keystore.ParseRole(p.MaxRole)
		if err != nil || role == keystore.Custom {
			return pol, fmt.Errorf("max_role: %q is not reader, writer or admin", p.MaxRole)
		}
		pol.MaxRole = role
	}
	if p.MaxRate != "" {
		maxRate, err := rate.Parse(p.MaxRate)
		if err != nil {
			return pol, fmt.Errorf("max_rate: %w", err)
		}
		pol.Limits.MaxRate = maxRate
	}
	for name, n := range map[string]int64{"max_quota_per_day": p.MaxQuotaPerDay, "max_tokens_per_day": p.MaxTokensPerDay, "max_tokens_per_minute": p.MaxTokensPerMinute} {
		if n < 0 {
			return pol, fmt.Errorf("%s: %d is negative", name, n)
		}
	}
	pol.Limits.MaxQuotaPerDay, pol.Limits.MaxTokensPerDay, pol.Limits.MaxTokensPerMinute = p.MaxQuotaPerDay, p.MaxTokensPerDay, p.MaxTokensPerMinute
	pol.Limits.Models = p.Models
	pol.LogoutURL = p.LogoutURL
	pol.TeamGroups = p.TeamGroups
	for _, t := range p.Teams {
		pol.Teams = append(pol.Teams, portal.Team{Name: t.Name, Members: t.Members})
	}
	for _, s := range p.Services {
		pol.Services = append(pol.Services, portal.Service{Name: s.Name, Path: s.Path, Header: s.Header, Scheme: s.Scheme,
			Description: s.Description, Docs: s.Docs})
	}
	return pol, nil
}

// auditLog is the portal's own audit log, or that of a route of its
// config using its store.
func (p *Portal) auditLog() *audit.Writer {
	if p.audit != nil {
		return p.audit
	}
	if r, ok := p.app.RouteOf(p.source.Store()); ok {
		return r.Audit
	}
	return nil
}

func (p *Portal) writeAudit(e audit.Entry) error {
	w := p.auditLog()
	if w == nil {
		return nil
	}
	return w.LogNow(e)
}

func (p *Portal) recentAudit(n int) ([]audit.Entry, error) {
	w := p.auditLog()
	if w == nil {
		return nil, nil
	}
	return audit.Tail(w.Path(), n)
}

// todaysQuota is a key's use of today's quota, read from the counters of
// a route of the portal's config that uses the same store.
func (p *Portal) todaysQuota(ctx context.Context, store keystore.Store, k *keystore.Key) (portal.Quota, bool) {
	r, ok := p.app.RouteOf(store)
	if !ok || k.Type == 0 {
		return portal.Quota{}, false
	}
	res, err := r.Counters.Peek(ctx, k.ID, r.Policy(k, k.Type))
	if err != nil || res.Uncounted {
		return portal.Quota{}, false
	}
	q := keylist.QuotaOf(res)
	reset, _ := time.Parse(time.RFC3339, q.Reset)
	return portal.Quota{Used: q.Used, Limit: q.Limit, Reset: reset}, true
}

// ServeHTTP serves a portal page to the visitor User names.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request, _ caddyhttp.Handler) error {
	repl, _ := r.Context().Value(caddy.ReplacerCtxKey).(*caddy.Replacer)
	user, groups := "", ""
	if repl != nil {
		if p.Groups != "" {
			groups = repl.ReplaceAll(p.Groups, "")
		}
		if p.User == "" {
			user, _ = repl.GetString("http.auth.user.id")
		} else {
			// Unknown placeholders become "", so a typo or a missing
			// header is no identity, never a shared one.
			user = repl.ReplaceAll(p.User, "")
		}
	}
	if r.Method == http.MethodPost {
		r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	}
	p.server.ServeMember(w, r, user, groups)
	return nil
}

// Cleanup lets go of the audit log and the keys' activity, and stops
// delivering notices.
func (p *Portal) Cleanup() error {
	if p.server != nil {
		p.server.Close()
	}
	return errors.Join(letGo(&p.auditRelease), letGo(&p.activityRelease))
}

// Interface guards
var (
	_ caddy.Provisioner           = (*Portal)(nil)
	_ caddy.CleanerUpper          = (*Portal)(nil)
	_ caddyhttp.MiddlewareHandler = (*Portal)(nil)
)
