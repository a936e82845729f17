package apikey

// The caddy apikey command registers itself with Caddy's command line, as
// Caddy's own commands do: importing this package brings it along, so that
// xcaddy build --with github.com/moodmnky/caddy-apikey has it.
import _ "github.com/moodmnky/caddy-apikey/command"
