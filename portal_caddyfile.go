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
func (p *Portal) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && sub != "service" && sub != "admins" && sub != "models" && sub != "team" && sub != "team_groups" {
			return d.Errf("apikey_portal: %s given more than once", sub)
		}
		seen[sub] = true
		switch sub {
		case "keys":
			raw, err := unmarshalEditableKeys(d, "apikey_portal")
			if err != nil {
				return err
			}
			p.KeysRaw = raw
		case "base_path":
			if !d.AllArgs(&p.BasePath) {
				return d.ArgErr()
			}
			if p.BasePath == "" || p.BasePath[0] != '/' {
				return d.Errf("base_path %q must start with /", p.BasePath)
			}
		case "service":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 4 {
				return d.Errf("want service <name> [<path> [<Header> [<scheme>]]], got %d arguments", len(args))
			}
			svc := PortalService{Name: args[0]}
			if len(args) > 1 {
				svc.Path = args[1]
			}
			if len(args) > 2 {
				svc.Header = args[2]
			}
			if len(args) > 3 {
				svc.Scheme = args[3]
			}
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
		case "types":
			p.Types = d.RemainingArgs()
			if len(p.Types) == 0 {
				return d.ArgErr()
			}
		case "max_role":
			if !d.AllArgs(&p.MaxRole) {
				return d.ArgErr()
			}
		case "custom_permissions":
			if d.NextArg() {
				return d.ArgErr()
			}
			p.CustomPermissions = true
		case "max_keys":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			n, err := strconv.Atoi(v)
			if err != nil || n < 1 {
				return d.Errf("max_keys %q is not a positive whole number", v)
			}
			p.MaxKeys = n
		case "expiry", "rotation_grace":
			var v string
			if !d.AllArgs(&v) {
				return d.ArgErr()
			}
			dur, err := caddy.ParseDuration(v)
			if err != nil || dur <= 0 {
				return d.Errf("%s %q is not a positive duration such as 90d or 24h", sub, v)
			}
			if sub == "expiry" {
				p.Expiry = caddy.Duration(dur)
			} else {
				p.RotationGrace = caddy.Duration(dur)
			}
		case "approve_prod":
			if d.NextArg() {
				return d.ArgErr()
			}
			p.ApproveProd = true
		case "admins":
			users := d.RemainingArgs()
			if len(users) == 0 {
				return d.ArgErr()
			}
			p.Admins = append(p.Admins, users...)
		case "audit_log":
			if !d.AllArgs(&p.AuditLog) {
				return d.ArgErr()
			}
		case "user":
			if !d.AllArgs(&p.User) {
				return d.ArgErr()
			}
		case "groups":
			if !d.AllArgs(&p.Groups) {
				return d.Errf("groups: want groups <placeholder>, e.g. groups {http.request.header.X-Auth-Request-Groups}")
			}
		case "team_groups":
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
		case "team":
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
		case "playground_url":
			if !d.AllArgs(&p.PlaygroundURL) {
				return d.ArgErr()
			}
		case "logout_url":
			if !d.AllArgs(&p.LogoutURL) {
				return d.ArgErr()
			}
		case "max_rate":
			if !d.AllArgs(&p.MaxRate) {
				return d.ArgErr()
			}
			if _, err := rate.Parse(p.MaxRate); err != nil {
				return d.Errf("max_rate: %v", err)
			}
		case "max_quota_per_day", "max_tokens_per_day", "max_tokens_per_minute":
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
		case "models":
			models := d.RemainingArgs()
			if len(models) == 0 {
				return d.Errf("models: name the models (or patterns such as llama3*) developers may allow their keys")
			}
			p.Models = append(p.Models, models...)
		case "webhooks_file":
			if !d.AllArgs(&p.WebhooksFile) {
				return d.ArgErr()
			}
		case "webhooks_loopback":
			if d.NextArg() {
				return d.ArgErr()
			}
			p.WebhooksLoopback = true
		default:
			return d.Errf("unrecognized apikey_portal subdirective %q", sub)
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

// Interface guard
var _ caddyfile.Unmarshaler = (*Portal)(nil)
