package keystore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net/http"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

// Record is one key as written in a key file or returned by a key service.
type Record struct {
	// ID names the key in logs, metrics and placeholders. Required, unique.
	ID string `json:"id"`
	// Name is a human description, for example the owner.
	Name string `json:"name,omitempty"`
	// Hash is "sha256:" and the lowercase hex SHA-256 of the whole key. Required.
	Hash string `json:"hash"`
	// Type is "dev" or "prod". It defaults to the type of the key's prefix; a
	// record whose type contradicts the presented key's prefix does not match.
	Type string `json:"type,omitempty"`
	// Role is reader, writer, admin or custom. Required.
	Role string `json:"role"`
	// Services the key may reach; "*" means all. Empty means none once a
	// route names a service.
	Services []string `json:"services,omitempty"`
	// Permissions are "METHOD PATH" entries (METHOD may be "*"; PATH follows
	// Caddy's path matcher, e.g. "/api/*"). For role custom they are all the
	// key may do; for the other roles they narrow what the role allows.
	Permissions []string `json:"permissions,omitempty"`
	// AllowedIPs are CIDRs or single addresses the key may be used from,
	// matched against Caddy's client IP. Empty means any.
	AllowedIPs []string `json:"allowed_ips,omitempty"`
	// ExpiresAt is an RFC 3339 time after which the key is refused.
	ExpiresAt string `json:"expires_at,omitempty"`
	// Revoked refuses the key.
	Revoked bool `json:"revoked,omitempty"`
	// Pending refuses the key (403, reason pending_approval) until an
	// administrator approves it: the developer portal sets it on keys its
	// policy says need approval.
	Pending bool `json:"pending,omitempty"`
	// PausedAt is the RFC 3339 time the key was paused: a paused key is
	// refused (403, reason paused) until it is resumed (paused_at
	// emptied). Empty means the key is not paused.
	PausedAt string `json:"paused_at,omitempty"`
	// LeakedAt is the RFC 3339 time a secret scanner reported the key
	// found in a public place (see docs/leak-reports.md); empty when
	// none did. LeakURL is where it was found, LeakSource where the
	// scanner looked ("content", "commit", "npm", …), and LeakAction
	// what the gateway did: revoke, pause or notify.
	LeakedAt   string `json:"leaked_at,omitempty"`
	LeakURL    string `json:"leak_url,omitempty"`
	LeakSource string `json:"leak_source,omitempty"`
	LeakAction string `json:"leak_action,omitempty"`
	// PendingGrant is a wider grant asked for (in the developer portal) on
	// a key already approved: it waits for an administrator's approval,
	// and until then the key keeps working with the grant above. The
	// gateway does not read it.
	PendingGrant *Grant `json:"pending_grant,omitempty"`
	// PreviousHashes keep old secrets of a rotated key working, as the same
	// key, until their valid_until.
	PreviousHashes []PreviousHash `json:"previous_hashes,omitempty"`
	// QuotaPerDay overrides the route's daily quota for this key.
	QuotaPerDay *int64 `json:"quota_per_day,omitempty"`
	// Rate overrides the route's burst rate for this key, e.g. "20/s".
	Rate string `json:"rate,omitempty"`
	// TokensPerDay overrides the route's daily token budget for this key
	// (routes with tokens).
	TokensPerDay *int64 `json:"tokens_per_day,omitempty"`
	// TokensPerMinute overrides the route's per-minute token budget.
	TokensPerMinute *int64 `json:"tokens_per_minute,omitempty"`
	// Models are the models the key may ask for on routes with tokens,
	// exact or with * and ? patterns, e.g. "llama3*". Empty allows any.
	Models []string `json:"models,omitempty"`
	// ModelTokensPerDay gives models (names or patterns) a daily token
	// budget of their own, e.g. {"gpt-4*": 20000}, spent besides the
	// key's tokens_per_day.
	ModelTokensPerDay map[string]int64 `json:"model_tokens_per_day,omitempty"`
	// Owner is who the key belongs to: the identity of the developer who
	// created it in the portal, or any name an operator gives.
	Owner string `json:"owner,omitempty"`
	// Team is the team the key belongs to, when it is a team's key (a
	// service account): every member of the team sees and manages it in the
	// developer portal, whoever made it (Owner). At most MaxTeamLength
	// bytes of letters, digits and . _ - @ : / +. The gateway does not read
	// it.
	Team string `json:"team,omitempty"`
	// CreatedAt is the RFC 3339 time the key was created.
	CreatedAt string `json:"created_at,omitempty"`
	// Hint is the secret's last HintLength characters, kept when the
	// developer portal creates a key and whenever a key is rotated, so
	// that people can tell their keys apart ("DEV_API_…abcd"). Never
	// more of the secret.
	Hint string `json:"hint,omitempty"`
	// AdminChange is the last change an administrator made to someone
	// else's key in the developer portal (approved, paused, resumed,
	// revoked), which the
	// portal shows the key's owner. The gateway does not read it.
	AdminChange *AdminChange `json:"admin_change,omitempty"`
}

// AdminChange is a change an administrator made to a developer's key.
type AdminChange struct {
	// Action is what was done: "approved", "denied", "paused",
	// "resumed" or "revoked".
	Action string `json:"action"`
	// By is the administrator's identity.
	By string `json:"by"`
	// At is the RFC 3339 time of the change.
	At string `json:"at"`
	// Reason is what the administrator gave as the reason, for the
	// owner; "" for none.
	Reason string `json:"reason,omitempty"`
}

// HintLength is how many of a secret's last characters a record keeps.
const HintLength = 4

// HintOf is the hint a record keeps of key: its last HintLength characters.
func HintOf(key string) string { return key[max(0, len(key)-HintLength):] }

// Waiting reports whether the record waits for an administrator's
// approval: a key not yet approved, or a wider grant asked for, on a key
// not revoked.
func (r *Record) Waiting() bool { return (r.Pending || r.PendingGrant != nil) && !r.Revoked }

// Grant is what a key may do, as a record's role, services, permissions and
// allowed IPs say.
type Grant struct {
	// Role is reader, writer, admin or custom.
	Role string `json:"role"`
	// Services, Permissions and AllowedIPs are as the record's fields.
	Services    []string `json:"services,omitempty"`
	Permissions []string `json:"permissions,omitempty"`
	AllowedIPs  []string `json:"allowed_ips,omitempty"`
	// Rate, QuotaPerDay, TokensPerDay, TokensPerMinute and Models are the
	// key's own limits, as the record's fields.
	Rate            string   `json:"rate,omitempty"`
	QuotaPerDay     *int64   `json:"quota_per_day,omitempty"`
	TokensPerDay    *int64   `json:"tokens_per_day,omitempty"`
	TokensPerMinute *int64   `json:"tokens_per_minute,omitempty"`
	Models          []string `json:"models,omitempty"`
}

// PreviousHash is a secret a key had before a rotation.
type PreviousHash struct {
	// Hash of the old key, in the same form as Record.Hash.
	Hash string `json:"hash"`
	// ValidUntil is the RFC 3339 time the old key stops working.
	ValidUntil string `json:"valid_until"`
}

// Role decides which methods a key may use.
type Role uint8

// Roles, from least to most.
const (
	Reader Role = iota + 1
	Writer
	Admin
	Custom
)

var roleNames = [...]string{Reader: "reader", Writer: "writer", Admin: "admin", Custom: "custom"}

// String returns the role as written in records.
func (r Role) String() string {
	if int(r) < len(roleNames) {
		return roleNames[r]
	}
	return ""
}

// ParseRole reads a role name.
func ParseRole(s string) (Role, error) {
	for r, name := range roleNames {
		if name != "" && name == s {
			return Role(r), nil
		}
	}
	return 0, fmt.Errorf("unknown role %q (want reader, writer, admin or custom)", s)
}

// allowsMethod reports whether the role itself allows the method.
func (r Role) allowsMethod(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return r == Reader || r == Writer || r == Admin
	case http.MethodPost, http.MethodPut, http.MethodPatch:
		return r == Writer || r == Admin
	}
	return r == Admin
}

// Bounds on the texts of a record: they are logged, listed and indexed.
const (
	MaxIDLength    = 128
	MaxOwnerLength = 256
	MaxNameLength  = 1024
	// MaxTeamLength bounds a team's name (Record.Team).
	MaxTeamLength = 64
)

// CheckTeam reports whether name may name a team: 1 to MaxTeamLength
// bytes of ASCII letters, digits and . _ - @ : / + (what identity
// providers' group names are made of; no spaces or commas, which separate
// groups in a header).
func CheckTeam(name string) error {
	if name == "" || len(name) > MaxTeamLength {
		return fmt.Errorf("a team's name is 1 to %d bytes long", MaxTeamLength)
	}
	for _, c := range name {
		alnum := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
		if !alnum && !strings.ContainsRune("._-@:/+", c) {
			return fmt.Errorf("a team's name is made of ASCII letters, digits and . _ - @ : / +; %q is not", c)
		}
	}
	return nil
}

// Key is a validated record, ready to authorize requests.
type Key struct {
	ID   string
	Name string
	// Owner is who the key belongs to, as the record says.
	Owner string
	// Team is the team the key belongs to, as the record says; "" for none.
	Team string
	// Type is the record's type, or 0 when the prefix decides.
	Type    Type
	Role    Role
	Revoked bool
	// Pending keys wait for an administrator's approval and are refused.
	Pending bool
	// Paused keys are refused until resumed (Record.PausedAt).
	Paused bool
	// Leaked keys were reported found in a public place (leaked_at).
	Leaked    bool
	ExpiresAt time.Time // zero: never
	Digest    Digest
	Previous  []PreviousDigest

	// QuotaPerDay is the key's own daily quota, when HasQuota.
	QuotaPerDay int64
	HasQuota    bool
	// Rate is the key's own burst rate; the zero Rate when it has none.
	Rate rate.Rate

	// TokensPerDay and TokensPerMinute are the key's own token budgets,
	// when HasTokensPerDay and HasTokensPerMinute.
	TokensPerDay, TokensPerMinute       int64
	HasTokensPerDay, HasTokensPerMinute bool

	// IDValue and NameValue are ID and Name as interface values, made once
	// so that setting placeholders costs no allocation per request.
	IDValue, NameValue any

	// grantSum is a digest of what the record allows (grant), for telling
	// versions apart without keeping the whole record.
	grantSum    uint64
	services    []string
	allServices bool
	permissions []permission
	allowedIPs  []netip.Prefix
	// models and modelBudgets are the record's models and
	// model_tokens_per_day, budgets most specific first.
	models       []modelRule
	modelBudgets []modelRule
}

// PreviousDigest is a parsed PreviousHash.
type PreviousDigest struct {
	Digest     Digest
	ValidUntil time.Time
}

type permission struct {
	method string // upper case, or "*"
	path   caddyhttp.MatchPath
}

// FieldError says which field of a record is wrong. Its message never holds
// a hash or a key.
type FieldError struct {
	Field string
	Err   error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, format string, args ...any) error {
	return &FieldError{Field: field, Err: fmt.Errorf(format, args...)}
}

// Compile validates a record and turns it into a Key.
func Compile(rec Record) (*Key, error) {
	k := &Key{ID: rec.ID, Name: rec.Name, Owner: rec.Owner, Team: rec.Team, Revoked: rec.Revoked, Pending: rec.Pending, Paused: rec.PausedAt != "", Leaked: rec.LeakedAt != "", IDValue: rec.ID, NameValue: rec.Name, grantSum: grantSum(rec)}
	if strings.TrimSpace(rec.ID) == "" {
		return nil, fieldErr("id", "is required")
	}
	if strings.Contains(rec.ID, Dev.Prefix()) || strings.Contains(rec.ID, Prod.Prefix()) {
		// Ids are logged and audited; a key pasted as an id would be too.
		return nil, fieldErr("id", "looks like a key; an id names a key and is not secret")
	}
	if err := CheckID(rec.ID); err != nil {
		return nil, err
	}
	for _, f := range []struct {
		name, value string
		max         int
	}{{"id", rec.ID, MaxIDLength}, {"owner", rec.Owner, MaxOwnerLength}, {"name", rec.Name, MaxNameLength}} {
		if len(f.value) > f.max {
			return nil, fieldErr(f.name, "is %d bytes long; at most %d", len(f.value), f.max)
		}
	}
	if rec.Team != "" {
		if err := CheckTeam(rec.Team); err != nil {
			return nil, &FieldError{Field: "team", Err: err}
		}
	}
	if rec.Hash == "" {
		return nil, fieldErr("hash", "is required")
	}
	d, err := ParseDigest(rec.Hash)
	if err != nil {
		return nil, &FieldError{Field: "hash", Err: err}
	}
	k.Digest = d
	if rec.Type != "" {
		if k.Type, err = ParseType(rec.Type); err != nil {
			return nil, &FieldError{Field: "type", Err: err}
		}
	}
	if rec.Role == "" {
		return nil, fieldErr("role", "is required")
	}
	if k.Role, err = ParseRole(rec.Role); err != nil {
		return nil, &FieldError{Field: "role", Err: err}
	}
	for i, s := range rec.Services {
		switch {
		case s == "*":
			k.allServices = true
		case strings.TrimSpace(s) == "":
			return nil, fieldErr(fmt.Sprintf("services[%d]", i), "is empty")
		default:
			k.services = append(k.services, s)
		}
	}
	for i, p := range rec.Permissions {
		perm, err := parsePermission(p)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("permissions[%d]", i), Err: err}
		}
		k.permissions = append(k.permissions, perm)
	}
	if k.Role == Custom && len(k.permissions) == 0 {
		return nil, fieldErr("permissions", "role custom needs at least one permission")
	}
	for i, s := range rec.AllowedIPs {
		prefix, err := parseIPOrCIDR(s)
		if err != nil {
			return nil, &FieldError{Field: fmt.Sprintf("allowed_ips[%d]", i), Err: err}
		}
		k.allowedIPs = append(k.allowedIPs, prefix)
	}
	for _, f := range []struct{ name, value string }{{"created_at", rec.CreatedAt}, {"paused_at", rec.PausedAt}, {"leaked_at", rec.LeakedAt}} {
		if f.value != "" {
			if _, err := parseTime(f.value); err != nil {
				return nil, &FieldError{Field: f.name, Err: err}
			}
		}
	}
	if rec.LeakAction != "" {
		if _, err := ParseLeakAction(rec.LeakAction); err != nil {
			return nil, &FieldError{Field: "leak_action", Err: err}
		}
	}
	if rec.ExpiresAt != "" {
		if k.ExpiresAt, err = parseTime(rec.ExpiresAt); err != nil {
			return nil, &FieldError{Field: "expires_at", Err: err}
		}
	}
	if rec.QuotaPerDay != nil {
		if *rec.QuotaPerDay < 0 {
			return nil, fieldErr("quota_per_day", "must not be negative")
		}
		k.QuotaPerDay, k.HasQuota = *rec.QuotaPerDay, true
	}
	if rec.Rate != "" {
		if k.Rate, err = rate.Parse(rec.Rate); err != nil {
			return nil, &FieldError{Field: "rate", Err: err}
		}
	}
	if err := compileModels(k, rec); err != nil {
		return nil, err
	}
	for i, ph := range rec.PreviousHashes {
		field := fmt.Sprintf("previous_hashes[%d]", i)
		pd, err := ParseDigest(ph.Hash)
		if err != nil {
			return nil, &FieldError{Field: field + ".hash", Err: err}
		}
		if pd == d {
			return nil, fieldErr(field+".hash", "is the key's current hash")
		}
		for j, earlier := range k.Previous {
			if earlier.Digest == pd {
				return nil, fieldErr(field+".hash", "repeats previous_hashes[%d]", j)
			}
		}
		if ph.ValidUntil == "" {
			return nil, fieldErr(field+".valid_until", "is required")
		}
		until, err := parseTime(ph.ValidUntil)
		if err != nil {
			return nil, &FieldError{Field: field + ".valid_until", Err: err}
		}
		k.Previous = append(k.Previous, PreviousDigest{Digest: pd, ValidUntil: until})
	}
	return k, nil
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not an RFC 3339 time such as 2027-01-01T00:00:00Z", s)
	}
	return t, nil
}

func parseIPOrCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return netip.Prefix{}, fmt.Errorf("%q is not a valid CIDR", s)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q is not a valid IP address or CIDR", s)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var errPermissionForm = errors.New(`want "METHOD /path", e.g. "GET /api/*" or "* /v1/*"`)

func parsePermission(s string) (permission, error) {
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return permission{}, fmt.Errorf("%q: %w", s, errPermissionForm)
	}
	method, path := strings.ToUpper(fields[0]), fields[1]
	if method != "*" {
		for _, c := range method {
			if c < 'A' || c > 'Z' {
				return permission{}, fmt.Errorf("%q: method %q is not an HTTP method", s, fields[0])
			}
		}
	}
	if path != "*" && !strings.HasPrefix(path, "/") && !strings.HasPrefix(path, "*") {
		return permission{}, fmt.Errorf("%q: path must start with / or *", s)
	}
	m := caddyhttp.MatchPath{path}
	if err := m.Provision(caddy.Context{}); err != nil {
		return permission{}, fmt.Errorf("%q: %v", s, err)
	}
	return permission{method: method, path: m}, nil
}

// AllowsService reports whether the key may reach the named service.
func (k *Key) AllowsService(service string) bool {
	if k.allServices {
		return true
	}
	for _, s := range k.services {
		if s == service {
			return true
		}
	}
	return false
}

// AllowsIP reports whether the key may be used from addr. A key without
// allowed_ips may be used from anywhere.
func (k *Key) AllowsIP(addr netip.Addr) bool {
	if len(k.allowedIPs) == 0 {
		return true
	}
	addr = addr.Unmap()
	for _, p := range k.allowedIPs {
		if p.Contains(addr) {
			return true
		}
	}
	return false
}

// Permits reports whether the key's role and permissions allow the request's
// method on its path. r must carry Caddy's replacer, as requests in a handler do.
func (k *Key) Permits(r *http.Request) bool { return k.PermitsMethod(r, r.Method) }

// PermitsMethod reports whether the key's role and permissions allow method
// on the request's path, e.g. a method the request asks to be run as.
func (k *Key) PermitsMethod(r *http.Request, method string) bool {
	if k.Role != Custom && !k.Role.allowsMethod(method) {
		return false
	}
	if len(k.permissions) == 0 {
		return true
	}
	for _, p := range k.permissions {
		if p.method != "*" && p.method != method {
			continue
		}
		if ok, _ := p.path.MatchWithError(r); ok {
			return true
		}
	}
	return false
}

// Expired reports whether the key is past its expires_at at now.
func (k *Key) Expired(now time.Time) bool {
	return !k.ExpiresAt.IsZero() && !now.Before(k.ExpiresAt)
}

// HasPermissions reports whether the key's paths are limited by
// permissions.
func (k *Key) HasPermissions() bool { return len(k.permissions) > 0 }

// RestrictsIP reports whether the key has allowed_ips.
func (k *Key) RestrictsIP() bool { return len(k.allowedIPs) > 0 }

// Key statuses, as the CLI and the admin API report them.
const (
	StatusActive        = "active"
	StatusExpired       = "expired"
	StatusRevoked       = "revoked"
	StatusRotationGrace = "rotation_grace"
	StatusPending       = "pending_approval"
	StatusPaused        = "paused"
	StatusLeaked        = "leaked"
)

// Status is the key's state at now: leaked (reported found in a public
// place, whatever was done about it), revoked, expired, waiting for
// approval, paused, in rotation grace (an old secret still works), or
// active. Working tells whether the gateway may still admit the key.
func (k *Key) Status(now time.Time) string {
	switch {
	case k.Leaked:
		return StatusLeaked
	case k.Revoked:
		return StatusRevoked
	case k.Expired(now):
		return StatusExpired
	case k.Pending:
		return StatusPending
	case k.Paused:
		return StatusPaused
	}
	for _, p := range k.Previous {
		if now.Before(p.ValidUntil) {
			return StatusRotationGrace
		}
	}
	return StatusActive
}

// Stopped reports whether the key is revoked or expired at now: it works
// nowhere again (a paused or pending key may).
func (k *Key) Stopped(now time.Time) bool { return k.Revoked || k.Expired(now) }

// Services returns the services the key may reach; ["*"] for all.
func (k *Key) Services() []string {
	if k.allServices {
		return []string{"*"}
	}
	return k.services
}

// grantSum digests what a record allows: every field but its secrets and
// revocation (see Diff), each written with its length, so that no two
// different records write the same bytes.
func grantSum(r Record) uint64 {
	h := fnv.New64a()
	write := func(s string) {
		var n [8]byte
		binary.LittleEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		io.WriteString(h, s)
	}
	for _, s := range []string{r.ID, r.Name, r.Type, r.Role, r.ExpiresAt, r.Rate, r.Owner, r.CreatedAt} {
		write(s)
	}
	for _, list := range [][]string{r.Services, r.Permissions, r.AllowedIPs} {
		write(strconv.Itoa(len(list)))
		for _, s := range list {
			write(s)
		}
	}
	if r.QuotaPerDay != nil {
		write(strconv.FormatInt(*r.QuotaPerDay, 10))
	} else {
		write("-")
	}
	write(strconv.FormatBool(r.Pending))
	for _, s := range []string{r.PausedAt, r.LeakedAt, r.LeakURL, r.LeakSource, r.LeakAction} {
		write(s)
	}
	for _, n := range []*int64{r.TokensPerDay, r.TokensPerMinute} {
		if n != nil {
			write(strconv.FormatInt(*n, 10))
		} else {
			write("-")
		}
	}
	write(strconv.Itoa(len(r.Models)))
	for _, m := range r.Models {
		write(m)
	}
	models := make([]string, 0, len(r.ModelTokensPerDay))
	for m := range r.ModelTokensPerDay {
		models = append(models, m)
	}
	sort.Strings(models)
	write(strconv.Itoa(len(models)))
	for _, m := range models {
		write(m)
		write(strconv.FormatInt(r.ModelTokensPerDay[m], 10))
	}
	if r.Team != "" {
		// Only when set, so that the digests of records without a team
		// stay what they were.
		write("team")
		write(r.Team)
	}
	return h.Sum64()
}
