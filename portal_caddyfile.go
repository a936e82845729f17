package apikey

import (
	"strconv"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"

	"github.com/moodmnky/caddy-apikey/keystore"
	"github.com/moodmnky/caddy-apikey/ratelimit/rate"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("apikey_portal", parsePortalCaddyfile)
	// After forward_auth (and basic_auth): the portal needs the identity
	// they establish.
	httpcaddyfile.RegisterDirectiveOrder("apikey_portal", httpcaddyfile.After, "forward_auth")
}

func parsePortalCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	p := new(Portal)
	err := p.UnmarshalCaddyfile(h.Dispenser)
	return p, err
}

// UnmarshalCaddyfile sets up the portal from Caddyfile tokens. Syntax:
//
//	apikey_portal [<matcher>] {
//	    keys file <path> | keys redis { … }
//	    base_path <path>
//	    service <name> [<path> [<Header> [<scheme>]]] [{
//	        description <text>
//	        docs <url>
//	    }]
//	    types dev|prod ...
//	    max_role reader|writer|admin
//	    custom_permissions
//	    max_keys <n>
//	    expiry <duration>
//	    rotation_grace <duration>
//	    approve_prod
//	    admins <user> ...
//	    audit_log <path>
//	    user <placeholder>
//	    groups <placeholder>
//	    team_groups <group> ...
//	    team <name> <member> ...
//	    playground_url <url>
//	    logout_url <url>
//	    max_rate <n>/s|m|h
//	    max_quota_per_day <n>
//	    max_tokens_per_day <n>
//	    max_tokens_per_minute <n>
//	    models <model|pattern> ...
//	    webhooks_file <path>
//	    webhooks_loopback
//	}
//
// service, admins, team_groups, team and models may repeat; every other
// subdirective is given at most once.
func (p *Portal) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && !portalRepeatable[sub] {
			return d.Errf("apikey_portal: %s given more than once", sub)
		}
		seen[sub] = true
		parse, ok := portalSubdirectives[sub]
		if !ok {
			return d.Errf("unrecognized apikey_portal subdirective %q", sub)
		}
		if err := parse(p, d); err != nil {
			return err
		}
	}
	if p.KeysRaw == nil {
		return d.Err("apikey_portal: keys is required: keys file <path> or keys redis {…}")
	}
	if len(p.Services) == 0 {
		return d.Err("apikey_portal: name at least one service developers may choose: service <name> <path>")
	}
	return nil
}

// portalRepeatable may be given more than once; every other subdirective
// once.
var portalRepeatable = map[string]bool{"service": true, "admins": true, "team_groups": true, "team": true, "models": true}

// portalSubdirectives reads each subdirective of the apikey_portal block;
// each function starts on the subdirective's name.
var portalSubdirectives = map[string]func(*Portal, *caddyfile.Dispenser) error{
	"keys":                  (*Portal).parseKeys,
	"base_path":             (*Portal).parseBasePath,
	"service":               (*Portal).parseService,
	"types":                 (*Portal).parseTypes,
	"max_role":              (*Portal).parseWord,
	"custom_permissions":    (*Portal).parseFlag,
	"max_keys":              (*Portal).parseMaxKeys,
	"expiry":                (*Portal).parseDuration,
	"rotation_grace":        (*Portal).parseDuration,
	"approve_prod":          (*Portal).parseFlag,
	"admins":                (*Portal).parseAdmins,
	"audit_log":             (*Portal).parseWord,
	"user":                  (*Portal).parseWord,
	"groups":                (*Portal).parseGroups,
	"team_groups":           (*Portal).parseTeamGroups,
	"team":                  (*Portal).parseTeam,
	"playground_url":        (*Portal).parseWord,
	"logout_url":            (*Portal).parseWord,
	"max_rate":              (*Portal).parseMaxRate,
	"max_quota_per_day":     (*Portal).parseMaxLimit,
	"max_tokens_per_day":    (*Portal).parseMaxLimit,
	"max_tokens_per_minute": (*Portal).parseMaxLimit,
	"models":                (*Portal).parseModels,
	"webhooks_file":         (*Portal).parseWord,
	"webhooks_loopback":     (*Portal).parseFlag,
}

// parseKeys reads keys file <path> or keys redis {…}.
func (p *Portal) parseKeys(d *caddyfile.Dispenser) error {
	raw, err := unmarshalEditableKeys(d, "apikey_portal")
	if err != nil {
		return err
	}
	p.KeysRaw = raw
	return nil
}

// parseWord reads the subdirectives that take one word as it is:
// max_role, audit_log, user, playground_url, logout_url and webhooks_file.
func (p *Portal) parseWord(d *caddyfile.Dispenser) error {
	field := map[string]*string{"max_role": &p.MaxRole, "audit_log": &p.AuditLog, "user": &p.User,
		"playground_url": &p.PlaygroundURL, "logout_url": &p.LogoutURL, "webhooks_file": &p.WebhooksFile}[d.Val()]
	if !d.AllArgs(field) {
		return d.ArgErr()
	}
	return nil
}

// parseFlag reads the subdirectives that take no argument and turn
// something on: custom_permissions, approve_prod and webhooks_loopback.
func (p *Portal) parseFlag(d *caddyfile.Dispenser) error {
	field := map[string]*bool{"custom_permissions": &p.CustomPermissions, "approve_prod": &p.ApproveProd,
		"webhooks_loopback": &p.WebhooksLoopback}[d.Val()]
	if d.NextArg() {
		return d.ArgErr()
	}
	*field = true
	return nil
}

// parseBasePath reads base_path <path>.
func (p *Portal) parseBasePath(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&p.BasePath) {
		return d.ArgErr()
	}
	if p.BasePath == "" || p.BasePath[0] != '/' {
		return d.Errf("base_path %q must start with /", p.BasePath)
	}
	return nil
}

// parseService reads service <name> [<path> [<Header> [<scheme>]]], and
// its block of description and docs.
func (p *Portal) parseService(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 1 || len(args) > 4 {
		return d.Errf("want service <name> [<path> [<Header> [<scheme>]]], got %d arguments", len(args))
	}
	args = append(args, "", "", "") // the ones not given are empty
	svc := PortalService{Name: args[0], Path: args[1], Header: args[2], Scheme: args[3]}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		switch d.Val() {
		case "description":
			if !d.AllArgs(&svc.Description) {
				return d.Errf("service %s: want description \"<text>\" (quoted when it has spaces)", svc.Name)
			}
		case "docs":
			if !d.AllArgs(&svc.Docs) {
				return d.ArgErr()
			}
		default:
			return d.Errf("service %s: unrecognized option %q (want description or docs)", svc.Name, d.Val())
		}
	}
	p.Services = append(p.Services, svc)
	return nil
}

// parseTypes reads types dev|prod ....
func (p *Portal) parseTypes(d *caddyfile.Dispenser) error {
	p.Types = d.RemainingArgs()
	if len(p.Types) == 0 {
		return d.ArgErr()
	}
	return nil
}

// parseMaxKeys reads max_keys <n>.
func (p *Portal) parseMaxKeys(d *caddyfile.Dispenser) error {
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return d.Errf("max_keys %q is not a positive whole number", v)
	}
	p.MaxKeys = n
	return nil
}

// parseDuration reads expiry <duration> and rotation_grace <duration>.
func (p *Portal) parseDuration(d *caddyfile.Dispenser) error {
	sub := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	dur, err := caddy.ParseDuration(v)
	if err != nil || dur <= 0 {
		return d.Errf("%s %q is not a positive duration such as 90d or 24h", sub, v)
	}
	*map[string]*caddy.Duration{"expiry": &p.Expiry, "rotation_grace": &p.RotationGrace}[sub] = caddy.Duration(dur)
	return nil
}

// parseAdmins reads admins <user> ....
func (p *Portal) parseAdmins(d *caddyfile.Dispenser) error {
	users := d.RemainingArgs()
	if len(users) == 0 {
		return d.ArgErr()
	}
	p.Admins = append(p.Admins, users...)
	return nil
}

// parseGroups reads groups <placeholder>.
func (p *Portal) parseGroups(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&p.Groups) {
		return d.Errf("groups: want groups <placeholder>, e.g. groups {http.request.header.X-Auth-Request-Groups}")
	}
	return nil
}

// parseTeamGroups reads team_groups <group> ....
func (p *Portal) parseTeamGroups(d *caddyfile.Dispenser) error {
	groups := d.RemainingArgs()
	if len(groups) == 0 {
		return d.Errf("team_groups: name the groups that count as teams")
	}
	for _, g := range groups {
		if err := keystore.CheckTeam(g); err != nil {
			return d.Errf("team_groups %q: %v", g, err)
		}
	}
	p.TeamGroups = append(p.TeamGroups, groups...)
	return nil
}

// parseTeam reads team <name> <member> ..., one line per team.
func (p *Portal) parseTeam(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	if len(args) < 2 {
		return d.Errf("team: want team <name> <member> ..., got %d arguments", len(args))
	}
	if err := keystore.CheckTeam(args[0]); err != nil {
		return d.Errf("team %q: %v", args[0], err)
	}
	for _, t := range p.Teams {
		if t.Name == args[0] {
			return d.Errf("team %s is defined twice; list all its members on one line", args[0])
		}
	}
	p.Teams = append(p.Teams, PortalTeam{Name: args[0], Members: args[1:]})
	return nil
}

// parseMaxRate reads max_rate <n>/s|m|h.
func (p *Portal) parseMaxRate(d *caddyfile.Dispenser) error {
	if !d.AllArgs(&p.MaxRate) {
		return d.ArgErr()
	}
	if _, err := rate.Parse(p.MaxRate); err != nil {
		return d.Errf("max_rate: %v", err)
	}
	return nil
}

// parseMaxLimit reads max_quota_per_day <n>, max_tokens_per_day <n> and
// max_tokens_per_minute <n>.
func (p *Portal) parseMaxLimit(d *caddyfile.Dispenser) error {
	sub := d.Val()
	var v string
	if !d.AllArgs(&v) {
		return d.ArgErr()
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 1 {
		return d.Errf("%s %q is not a positive whole number", sub, v)
	}
	*map[string]*int64{"max_quota_per_day": &p.MaxQuotaPerDay, "max_tokens_per_day": &p.MaxTokensPerDay,
		"max_tokens_per_minute": &p.MaxTokensPerMinute}[sub] = n
	return nil
}

// parseModels reads models <model|pattern> ....
func (p *Portal) parseModels(d *caddyfile.Dispenser) error {
	models := d.RemainingArgs()
	if len(models) == 0 {
		return d.Errf("models: name the models (or patterns such as llama3*) developers may allow their keys")
	}
	p.Models = append(p.Models, models...)
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*Portal)(nil)
