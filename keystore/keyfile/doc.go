// Package keyfile is the key file: the "file" key source (loaded, watched
// and reloaded, keeping the last good version), and the store that the
// commands, the admin API and the portal edit under a lock, atomically.
package keyfile
