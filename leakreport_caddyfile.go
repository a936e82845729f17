package apikey

import (
	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
)

func init() {
	httpcaddyfile.RegisterHandlerDirective("apikey_leak_report", parseLeakReportCaddyfile)
	// With respond: it answers the request itself, and a scanner has no
	// API key, so it sits in a route of its own, apikey not in front.
	httpcaddyfile.RegisterDirectiveOrder("apikey_leak_report", httpcaddyfile.Before, "respond")
}

func parseLeakReportCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	l := new(LeakReport)
	err := l.UnmarshalCaddyfile(h.Dispenser)
	return l, err
}

// UnmarshalCaddyfile sets up the leak report endpoint from Caddyfile
// tokens. Syntax:
//
//	apikey_leak_report [<matcher>] {
//	    keys file <path> | keys redis { … }
//	    public_keys <file>
//	    public_keys_url <url> [<refresh>]
//	    hmac <secret>
//	    action [dev|prod] revoke|pause|notify
//	    rate <n>/s|m|h
//	    audit_log <path>
//	}
func (l *LeakReport) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // the directive
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for d.NextBlock(0) {
		sub := d.Val()
		if seen[sub] && sub != "action" {
			return d.Errf("apikey_leak_report: %s given more than once", sub)
		}
		seen[sub] = true
		switch sub {
		case "keys":
			raw, err := unmarshalEditableKeys(d, "apikey_leak_report")
			if err != nil {
				return err
			}
			l.KeysRaw = raw
		case "public_keys":
			if !d.AllArgs(&l.PublicKeys) {
				return d.ArgErr()
			}
		case "public_keys_url":
			args := d.RemainingArgs()
			if len(args) < 1 || len(args) > 2 {
				return d.ArgErr()
			}
			l.PublicKeysURL = args[0]
			if len(args) == 2 {
				dur, err := caddy.ParseDuration(args[1])
				if err != nil || dur <= 0 {
					return d.Errf("public_keys_url: refresh %q is not a positive duration such as 1h", args[1])
				}
				l.PublicKeysRefresh = caddy.Duration(dur)
			}
		case "hmac":
			if !d.AllArgs(&l.HMAC) {
				return d.ArgErr()
			}
		case "action":
			args := d.RemainingArgs()
			switch len(args) {
			case 1:
				if l.Action != "" {
					return d.Err("apikey_leak_report: action given more than once")
				}
				l.Action = args[0]
			case 2:
				if args[0] != "dev" && args[0] != "prod" {
					return d.Errf("apikey_leak_report: action %s: the type is dev or prod", args[0])
				}
				if l.ActionByType == nil {
					l.ActionByType = map[string]string{}
				}
				l.ActionByType[args[0]] = args[1]
			default:
				return d.ArgErr()
			}
		case "rate":
			if !d.AllArgs(&l.Rate) {
				return d.ArgErr()
			}
		case "audit_log":
			if !d.AllArgs(&l.AuditLog) {
				return d.ArgErr()
			}
		default:
			return d.Errf("unrecognized apikey_leak_report subdirective %q", sub)
		}
	}
	if l.KeysRaw == nil {
		return d.Err("apikey_leak_report: keys is required: keys file <path> or keys redis {…}")
	}
	if l.PublicKeys == "" && l.PublicKeysURL == "" && l.HMAC == "" {
		return d.Err("apikey_leak_report: give public_keys <file>, public_keys_url <url> or hmac <secret>")
	}
	return nil
}

// Interface guard
var _ caddyfile.Unmarshaler = (*LeakReport)(nil)
