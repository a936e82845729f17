package keyfile

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/moodmnky/caddy-apikey/keystore"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
)

func init() {
	caddy.RegisterModule(FileSource{})
}

// FileSource reads keys from a JSON key file: one object with a "keys" array
// of key records. The file is read when the config loads; a file that cannot
// be read or has a bad record fails the config load with an error naming the
// file, the record and the field.
//
// While Caddy runs, the file is watched: a change (an in-place write, or a
// new file renamed over it) takes effect within about a second, without a
// reload. A changed file that fails to parse or validate is rejected whole
// and logged; the last good keys stay in force until a good version appears.
// Every route naming the same file shares one loaded copy and one watcher.
// The watcher compares the file's size, modification and change times and
// identity every 500 ms, and its content every minute. A file over 256 MiB
// is refused, naming the file and the cap.
type FileSource struct {
	// Path of the key file. A relative path is relative to Caddy's working
	// directory.
	Path string `json:"path,omitempty"`

	keys    *watchedFile
	poolKey string
}

// CaddyModule returns the Caddy module information.
func (FileSource) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.apikey.sources.file",
		New: func() caddy.Module { return new(FileSource) },
	}
}

// Provision loads the key file, or joins the routes that already watch it.
func (f *FileSource) Provision(caddy.Context) error {
	if f.Path == "" {
		return errors.New("key file: path is required")
	}
	path, err := filepath.Abs(f.Path)
	if err != nil {
		return fmt.Errorf("key file %s: %w", f.Path, err)
	}
	val, _, err := filePool.LoadOrNew(path, func() (caddy.Destructor, error) {
		return watchFile(f.Path, path)
	})
	if err != nil {
		return err
	}
	f.keys, f.poolKey = val.(*watchedFile), path
	return nil
}

// Cleanup lets go of the shared copy; the last route to let go stops the
// watcher. It copes with a source whose Provision failed.
func (f *FileSource) Cleanup() error {
	if f.poolKey == "" {
		return nil
	}
	_, err := filePool.Delete(f.poolKey)
	f.poolKey = ""
	return err
}

// Lookup finds a key by digest in the current version of the file. A file
// source never fails a lookup.
func (f *FileSource) Lookup(_ context.Context, d keystore.Digest) (keystore.Match, error) {
	return f.keys.set.Load().Lookup(d), nil
}

// Reload reads the file now if it changed, rather than at the next poll;
// for changes made by the admin API.
func (f *FileSource) Reload() { f.keys.check() }

// OnChange calls fn with the changes of every new version of the file that
// loads. Registrations share a name (e.g. the audit log they write to), so
// that routes using the same file and log record each change once. It
// returns the function that lets go.
func (f *FileSource) OnChange(name string, fn func([]keystore.Change)) (cancel func()) {
	return f.keys.onChange(name, fn)
}

// Store is the key file as a store, for changes.
func (f *FileSource) Store() keystore.Store { return NewStore(f.keys.path) }

// Changed reads the file now, so a change made through Store applies at once.
func (f *FileSource) Changed(string) { f.keys.check() }

// AbsPath is the file's absolute path.
func (f *FileSource) AbsPath() string { return f.keys.path }

// ListKeys lists the current version's keys, a page at a time, from
// memory: a listing of a large file reads nothing from disk.
func (f *FileSource) ListKeys(q keystore.ListQuery) ([]*keystore.Key, string) {
	return f.keys.set.Load().Page(q)
}

// Keys returns the keys of the current version of the file.
func (f *FileSource) Keys() []*keystore.Key { return f.keys.set.Load().Keys() }

// UnmarshalCaddyfile sets up the source from Caddyfile tokens. Syntax:
//
//	keys file <path>
func (f *FileSource) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // source name
	if !d.NextArg() {
		return d.ArgErr()
	}
	f.Path = d.Val()
	if d.NextArg() {
		return d.Errf("keys file takes one path, found another argument %q", d.Val())
	}
	if d.NextBlock(0) {
		return d.Errf("keys file takes no block, found %q", d.Val())
	}
	return nil
}

// LoadFile reads and validates a key file.
func LoadFile(path string) (*keystore.Set, error) {
	l, _, err := loadKeyFile(path, path, nil, false)
	if err != nil {
		return nil, err
	}
	return l.set, nil
}

// parseKeyFile validates a key file's content; errors name the file.
func parseKeyFile(name string, data []byte) (*keystore.Set, error) {
	set, err := keystore.ParseAndValidate(data)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", name, err)
	}
	return set, nil
}

// Interface guards
var (
	_ keystore.Editable     = (*FileSource)(nil)
	_ caddy.Provisioner     = (*FileSource)(nil)
	_ caddy.CleanerUpper    = (*FileSource)(nil)
	_ caddyfile.Unmarshaler = (*FileSource)(nil)
)
