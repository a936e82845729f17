package portal

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/moodmnky/caddy-apikey/keystore"
)

// Policy is what developers may do with their own keys: the operator's
// rules, enforced on every change the portal makes, whatever a form sent.
type Policy struct {
	// Services developers may give their keys, with where each is reached.
	Services []Service
	// Types developers may create; default both.
	Types []keystore.Type
	// MaxRole is the highest role a developer may give a key: reader,
	// writer or admin. Default writer.
	MaxRole keystore.Role
	// CustomPermissions lets developers narrow a key to "METHOD /path"
	// permissions (role custom), within MaxRole's methods.
	CustomPermissions bool
	// MaxKeys is how many keys that still work (not revoked, not expired)
	// a developer may hold. Default 10.
	MaxKeys int
	// Expiry is a new key's lifetime, and the longest a developer may
	// choose. Default 90 days.
	Expiry time.Duration
	// RotationGrace is how long a rotated key's old secret keeps working.
	// Default 24 hours.
	RotationGrace time.Duration
	// ApproveProd makes production keys wait for an administrator's
	// approval before they work.
	ApproveProd bool
	// Admins are the users who see every key, approve and revoke any.
	Admins []string
	// Limits bound the limits developers may give their keys.
	Limits Limits
	// LogoutURL is where Sign out goes; "" for no link.
	LogoutURL string
	// Teams are the operator's teams, whose members share their keys
	// (teams.go).
	Teams []Team
	// TeamGroups, when set, are the only groups of the identity
	// provider's groups that count as teams; empty: every group does.
	TeamGroups []string
}

// Service is one service developers may choose, and how its route is called.
type Service struct {
	// Name as routes and records name it, e.g. "ollama".
	Name string
	// Path is a path on the gateway that the service answers, for the
	// playground and the snippets, e.g. "/ollama/api/tags".
	Path string
	// Header and Scheme say how the route reads the key, e.g.
	// "Authorization" and "Bearer"; default Authorization: Bearer.
	Header, Scheme string
	// Description and Docs (a link) are shown on the API catalog.
	Description, Docs string
}

// Defaults.
const (
	DefaultMaxKeys       = 10
	DefaultExpiry        = 90 * 24 * time.Hour
	DefaultRotationGrace = 24 * time.Hour
	// expiringSoon is how close to its expiry a key is shown as expiring.
	expiringSoon = 14 * 24 * time.Hour
	// maxPermissions and maxAllowedIPs bound what a form may add to a record.
	maxPermissions = 32
	maxAllowedIPs  = 32
)

func (p *Policy) check() error {
	if len(p.Services) == 0 {
		return errors.New("the portal needs at least one service developers may choose")
	}
	seen := map[string]bool{}
	for i := range p.Services {
		svc := &p.Services[i]
		if svc.Name == "" || svc.Name == "*" || strings.ContainsAny(svc.Name, " \t,") {
			return fmt.Errorf("service %q: a service is named by one word", svc.Name)
		}
		if seen[svc.Name] {
			return fmt.Errorf("service %q is listed twice", svc.Name)
		}
		seen[svc.Name] = true
		if svc.Path != "" && !strings.HasPrefix(svc.Path, "/") {
			return fmt.Errorf("service %s: path %q must start with /", svc.Name, svc.Path)
		}
		if svc.Header == "" {
			svc.Header, svc.Scheme = "Authorization", "Bearer"
		}
		if svc.Docs != "" && !linkable(svc.Docs) {
			return fmt.Errorf("service %s: docs %q is not an http(s) URL or a path starting with /", svc.Name, svc.Docs)
		}
		if len(svc.Description) > 1000 || hasControl(svc.Description) {
			return fmt.Errorf("service %s: the description is over 1,000 bytes or has control characters", svc.Name)
		}
	}
	if len(p.Types) == 0 {
		p.Types = []keystore.Type{keystore.Dev, keystore.Prod}
	}
	switch p.MaxRole {
	case 0:
		p.MaxRole = keystore.Writer
	case keystore.Reader, keystore.Writer, keystore.Admin:
	default:
		return fmt.Errorf("max_role %s: want reader, writer or admin", p.MaxRole)
	}
	if p.MaxKeys == 0 {
		p.MaxKeys = DefaultMaxKeys
	}
	if p.MaxKeys < 0 {
		return errors.New("max_keys must be positive")
	}
	if p.Expiry == 0 {
		p.Expiry = DefaultExpiry
	}
	if p.Expiry < 24*time.Hour {
		return errors.New("expiry must be at least a day")
	}
	if p.RotationGrace == 0 {
		p.RotationGrace = DefaultRotationGrace
	}
	if p.RotationGrace < 0 {
		return errors.New("rotation_grace must not be negative")
	}
	if err := p.checkTeams(); err != nil {
		return err
	}
	if p.LogoutURL != "" && !linkable(p.LogoutURL) {
		return fmt.Errorf("logout_url %q is not an http(s) URL or a path starting with /", p.LogoutURL)
	}
	return p.Limits.check()
}

func (p *Policy) isAdmin(user string) bool { return slices.Contains(p.Admins, user) }

func (p *Policy) service(name string) (Service, bool) {
	for _, s := range p.Services {
		if s.Name == name {
			return s, true
		}
	}
	return Service{}, false
}

// roles are the roles a developer may choose, lowest first.
func (p *Policy) roles() []string {
	var names []string
	for r := keystore.Reader; r <= p.MaxRole; r++ {
		names = append(names, r.String())
	}
	if p.CustomPermissions {
		names = append(names, keystore.Custom.String())
	}
	return names
}

// maxDays is the longest expiry a developer may choose, in days.
func (p *Policy) maxDays() int { return int(p.Expiry / (24 * time.Hour)) }

// keyForm is what the create and edit forms send, before it is checked.
type keyForm struct {
	Name        string
	Team        string // the team a new key is made for; "" for the visitor
	Type        string
	Role        string
	Services    []string
	Permissions string // one "METHOD /path" a line
	AllowedIPs  string // one CIDR or address a line, or comma separated
	Days        string
	Limits      limitsForm
}

// grant is a checked keyForm.
type grant struct {
	name        string
	typ         keystore.Type
	role        keystore.Role
	services    []string
	permissions []string
	allowedIPs  []string
	days        int
	limits      keyLimits
}

// formError is a refusal to show the developer, naming the field.
type formError struct{ Field, Message string }

func (e *formError) Error() string { return e.Field + ": " + e.Message }

func refuse(field, format string, args ...any) error {
	return &formError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// checkForm checks a form against the policy. creating says whether the
// type and expiry are being chosen (they cannot be edited).
func (p *Policy) checkForm(f keyForm, creating bool) (grant, error) {
	var g grant
	g.name = strings.TrimSpace(f.Name)
	if n := utf8.RuneCountInString(g.name); n > 200 || !utf8.ValidString(g.name) {
		return g, refuse("name", "is %d characters long or not valid text; at most 200", n)
	}
	if hasControl(g.name) {
		// Names are printed by caddy apikey list too, where a control
		// character could forge a line.
		return g, refuse("name", "has control or invisible formatting characters")
	}
	if creating {
		t, err := keystore.ParseType(f.Type)
		if err != nil || !slices.Contains(p.Types, t) {
			return g, refuse("type", "%q is not a key type you may create (you may: %s)", f.Type, p.typeNames())
		}
		g.typ = t
		g.days = p.maxDays()
		if d := strings.TrimSpace(f.Days); d != "" {
			n, err := strconv.Atoi(d)
			if err != nil || n < 1 || n > p.maxDays() {
				return g, refuse("expiry", "%q is not a whole number of days from 1 to %d", d, p.maxDays())
			}
			g.days = n
		}
	}
	role, err := keystore.ParseRole(f.Role)
	if err != nil || !slices.Contains(p.roles(), f.Role) {
		return g, refuse("role", "%q is not a role you may give a key (you may: %s)", f.Role, strings.Join(p.roles(), ", "))
	}
	g.role = role
	if len(f.Services) == 0 {
		return g, refuse("services", "choose at least one service")
	}
	for _, name := range f.Services {
		if _, ok := p.service(name); !ok {
			return g, refuse("services", "%q is not a service you may choose", name)
		}
		if !slices.Contains(g.services, name) {
			g.services = append(g.services, name)
		}
	}
	slices.Sort(g.services)
	for _, line := range splitLines(f.Permissions) {
		if len(g.permissions) == maxPermissions {
			return g, refuse("permissions", "at most %d permissions", maxPermissions)
		}
		method, path, ok := strings.Cut(line, " ")
		method, path = strings.ToUpper(method), strings.TrimSpace(path)
		if !ok || !strings.HasPrefix(path, "/") || len(line) > 512 || strings.ContainsAny(path, " \t") || hasControl(line) {
			return g, refuse("permissions", "%q is not \"METHOD /path\" (e.g. GET /ollama/api/*)", line)
		}
		if !p.methodWithin(method) {
			return g, refuse("permissions", "%s is beyond the highest role you may give (%s)", method, p.MaxRole)
		}
		g.permissions = append(g.permissions, method+" "+path)
	}
	if role == keystore.Custom && len(g.permissions) == 0 {
		return g, refuse("permissions", "a custom role needs at least one permission")
	}
	if len(g.permissions) > 0 && !p.CustomPermissions {
		return g, refuse("permissions", "your operator does not let developers set permissions")
	}
	if role != keystore.Custom && len(g.permissions) > 0 {
		// Permissions narrow a role: each must allow something the role
		// allows, or the key could do nothing with it.
		for _, perm := range g.permissions {
			method, _, _ := strings.Cut(perm, " ")
			if !roleAllows(role, method) {
				return g, refuse("permissions", "%s is beyond the %s role; choose a higher role or custom", method, role)
			}
		}
	}
	for _, line := range splitLines(strings.ReplaceAll(f.AllowedIPs, ",", "\n")) {
		if len(g.allowedIPs) == maxAllowedIPs {
			return g, refuse("allowed_ips", "at most %d addresses or ranges", maxAllowedIPs)
		}
		if pfx, err := netip.ParsePrefix(line); err == nil {
			g.allowedIPs = append(g.allowedIPs, pfx.Masked().String())
			continue
		}
		if addr, err := netip.ParseAddr(line); err == nil && addr.Zone() == "" {
			g.allowedIPs = append(g.allowedIPs, addr.String())
			continue
		}
		return g, refuse("allowed_ips", "%q is not an address or a CIDR range such as 203.0.113.0/24", clip(line, 60))
	}
	if g.limits, err = p.checkLimits(f.Limits); err != nil {
		return g, err
	}
	// The store checks every record it writes; check the same way here,
	// so a refusal names the field rather than failing the write.
	check := keystore.Record{ID: "k_check", Hash: checkHash, Name: g.name, Role: g.role.String(), Services: g.services,
		Permissions: g.permissions, AllowedIPs: g.allowedIPs}
	g.limits.apply(&check)
	if _, err := keystore.Compile(check); err != nil {
		var fe *keystore.FieldError
		if errors.As(err, &fe) {
			return g, refuse(strings.TrimRightFunc(fe.Field, func(r rune) bool { return r == ']' || r == '[' || ('0' <= r && r <= '9') }), "%v", fe.Err)
		}
		return g, refuse("key", "%v", err)
	}
	return g, nil
}

// checkHash is a well-formed hash for checking a form's record: the hash
// of no key (any text hashes to a well-formed hash).
var checkHash = keystore.Sum("form check").Encode()

// methodWithin reports whether a permission's method stays within the
// highest role a developer may give.
func (p *Policy) methodWithin(method string) bool { return roleAllows(p.MaxRole, method) }

func (p *Policy) typeNames() string {
	names := make([]string, len(p.Types))
	for i, t := range p.Types {
		names[i] = t.String()
	}
	return strings.Join(names, ", ")
}

func splitLines(s string) []string {
	var out []string
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// clip shortens what a visitor typed before it is shown back.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// roleAllows reports whether a role's own methods include method.
func roleAllows(r keystore.Role, method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS":
		return true
	case "POST", "PUT", "PATCH":
		return r >= keystore.Writer
	}
	return r >= keystore.Admin
}

// hasControl reports control characters and invisible formatting ones
// (bidirectional overrides among them).
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return unicode.IsControl(r) || unicode.Is(unicode.Cf, r) })
}
