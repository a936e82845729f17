package keyfile

import (
	"errors"
	"fmt"
	"io/fs"
)

// MissingError is Caddy's error for a key file that does not exist when the
// config loads: one line that names the file and the command that makes it,
// instead of the open call's "no such file or directory". It unwraps to
// fs.ErrNotExist.
type MissingError struct {
	// Path is the key file as the config names it.
	Path string
}

// Error names the file and the command that creates it with a first key.
func (e *MissingError) Error() string {
	return fmt.Sprintf("key file %s does not exist: create it with `caddy apikey new --keys %s --type prod --role admin` (prints a first key), or an empty one with `echo '{\"keys\": []}' > %s`",
		e.Path, e.Path, e.Path)
}

// Unwrap lets errors.Is(err, fs.ErrNotExist) hold.
func (e *MissingError) Unwrap() error { return fs.ErrNotExist }

// missingAsError turns a load error for a file that does not exist into a
// MissingError; other errors pass as they are.
func missingAsError(name string, err error) error {
	if err != nil && errors.Is(err, fs.ErrNotExist) {
		return &MissingError{Path: name}
	}
	return err
}
