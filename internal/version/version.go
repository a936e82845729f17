// Package version is the caddy-apikey plugin's version, read by the
// commands (caddy apikey version) and by any package that reports it.
package version

// Version is the plugin's release, a semantic version tagged in git as it
// is written here.
const Version = "v0.1.0"
