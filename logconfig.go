package apikey

import (
	"reflect"
	"strings"

	"go.uber.org/zap/zapcore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/modules/logging"
)

// configuredLog is one of Caddy's logs (the "logging" config's "logs"), as
// far as the provision warnings need it: which entries it writes, and which
// request fields its filter keeps out.
type configuredLog struct {
	name             string
	level            zapcore.Level
	include, exclude []string
	// hidden are the fields a delete or replace filter of the log's
	// "filter" encoder covers, e.g. "request>headers>X-Api-Key"; hashed,
	// those a hash filter covers.
	hidden, hashed map[string]bool
}

// loadedLogs reads the logs of the config being loaded. Caddy keeps a
// context's config, and a log's loaded encoder, in unexported fields (the
// raw JSON is gone once modules are loaded), so they are read by
// reflection, read-only, once per handler provision; ok is false if a
// future Caddy moves them, and the callers then warn as if no log had a
// filter.
func loadedLogs(ctx caddy.Context) (logs []configuredLog, ok bool) {
	cfg := reflect.ValueOf(&ctx).Elem().FieldByName("cfg")
	if !cfg.IsValid() || cfg.Kind() != reflect.Pointer || cfg.IsNil() {
		return nil, false
	}
	lg := cfg.Elem().FieldByName("Logging")
	if !lg.IsValid() || lg.Kind() != reflect.Pointer || lg.IsNil() {
		return nil, false
	}
	m := lg.Elem().FieldByName("Logs")
	if !m.IsValid() || m.Kind() != reflect.Map {
		return nil, false
	}
	for it := m.MapRange(); it.Next(); {
		cl := it.Value()
		if cl.Kind() != reflect.Pointer || cl.IsNil() {
			continue
		}
		cl = cl.Elem()
		level, include, exclude, enc := cl.FieldByName("Level"), cl.FieldByName("Include"), cl.FieldByName("Exclude"), cl.FieldByName("encoder")
		if !level.IsValid() || level.Kind() != reflect.String || !include.IsValid() || !exclude.IsValid() || !enc.IsValid() {
			return nil, false
		}
		l := configuredLog{name: it.Key().String(), level: parseLogLevel(level.String()),
			include: stringsOf(include), exclude: stringsOf(exclude)}
		if l.hidden, l.hashed, ok = hiddenFields(enc); !ok {
			return nil, false
		}
		logs = append(logs, l)
	}
	return logs, true
}

// parseLogLevel reads a log's level as Caddy does; what Caddy would refuse
// never gets here.
func parseLogLevel(s string) zapcore.Level {
	s, _ = caddy.NewReplacer().ReplaceOrErr(s, true, true)
	var l zapcore.Level
	if l.UnmarshalText([]byte(strings.ToLower(s))) != nil || s == "" {
		return zapcore.InfoLevel
	}
	return l
}

func stringsOf(v reflect.Value) []string {
	if v.Kind() != reflect.Slice {
		return nil
	}
	out := make([]string, v.Len())
	for i := range out {
		out[i] = v.Index(i).String()
	}
	return out
}

var (
	filterEncoderType = reflect.TypeOf(&logging.FilterEncoder{})
	// hidingFilters are the field filters that keep a value out of the
	// log: the value is dropped or replaced.
	hidingFilters = map[reflect.Type]bool{
		reflect.TypeOf(&logging.DeleteFilter{}):  true,
		reflect.TypeOf(logging.DeleteFilter{}):   true,
		reflect.TypeOf(&logging.ReplaceFilter{}): true,
		reflect.TypeOf(logging.ReplaceFilter{}):  true,
	}
	// hashingFilters write the first 8 hex digits of the value's SHA-256:
	// enough to hide an upstream's credential, but of a client's key that
	// is the start of the digest the key store keeps, which a log must
	// never hold.
	hashingFilters = map[reflect.Type]bool{
		reflect.TypeOf(&logging.HashFilter{}): true,
		reflect.TypeOf(logging.HashFilter{}):  true,
	}
)

// hiddenFields lists the fields a log's encoder keeps out: none unless it
// is a filter encoder. A filter nested in another's "wrap" is not read.
func hiddenFields(enc reflect.Value) (hidden, hashed map[string]bool, ok bool) {
	if enc.Kind() != reflect.Interface {
		return nil, nil, false
	}
	if enc.IsNil() || enc.Elem().Type() != filterEncoderType || enc.Elem().IsNil() {
		return nil, nil, true
	}
	fields := enc.Elem().Elem().FieldByName("Fields")
	if !fields.IsValid() || fields.Kind() != reflect.Map {
		return nil, nil, false
	}
	hidden, hashed = map[string]bool{}, map[string]bool{}
	for it := fields.MapRange(); it.Next(); {
		f := it.Value()
		if f.Kind() != reflect.Interface || f.IsNil() {
			continue
		}
		switch t := f.Elem().Type(); {
		case hidingFilters[t]:
			hidden[it.Key().String()] = true
		case hashingFilters[t]:
			hashed[it.Key().String()] = true
		}
	}
	return hidden, hashed, true
}

// writes reports whether the log writes the request header (canonical
// form) of an entry at level from logger: it takes the entry, and no
// filter covers the header or an object holding it (a hash filter counts
// only when hashOK). Caddy logs header names in canonical form, and its
// filters match field names exactly.
func (l configuredLog) writes(logger string, level zapcore.Level, header string, hashOK bool) bool {
	if level < l.level || !loggerAllowed(l.include, l.exclude, logger) {
		return false
	}
	covers := func(field string) bool { return l.hidden[field] || (hashOK && l.hashed[field]) }
	return !covers("request") && !covers("request>headers") && !covers("request>headers>"+header)
}

// hashes reports whether the log's filter hashes the header (or the
// request, or its headers).
func (l configuredLog) hashes(header string) bool {
	return l.hashed["request"] || l.hashed["request>headers"] || l.hashed["request>headers>"+header]
}

// misspelt returns a field of the log's filter that names the header in
// another case, which Caddy's filter does not match: "" if none.
func (l configuredLog) misspelt(header string) string {
	want := "request>headers>" + header
	for f := range l.hidden {
		if f != want && strings.EqualFold(f, want) {
			return f
		}
	}
	for f := range l.hashed {
		if f != want && strings.EqualFold(f, want) {
			return f
		}
	}
	return ""
}

// loggerAllowed is Caddy's CustomLog.loggerAllowed for a logger name (not
// a module), which Caddy does not export: whether a log with these
// include and exclude lists takes entries from logger.
func loggerAllowed(include, exclude []string, name string) bool {
	if len(include) == 0 && len(exclude) == 0 {
		return true
	}
	if name != "" && name != "*" && name != "." {
		name += "."
	}
	var longestAccept, longestReject int
	if len(include) > 0 {
		for _, ns := range include {
			if strings.HasPrefix(name, ns+".") && len(ns) > longestAccept {
				longestAccept = len(ns)
			}
		}
		if longestAccept == 0 {
			return false
		}
	}
	for _, ns := range exclude {
		if (ns == "*" && name != ".") || (ns == "." && name == ".") {
			return false
		}
		if strings.HasPrefix(name, ns+".") && len(ns) > longestReject {
			longestReject = len(ns)
		}
	}
	if longestReject > longestAccept {
		return false
	}
	return longestAccept > longestReject || (len(include) == 0 && longestReject == 0)
}
