package apikey

// The admin API is its own package; importing it here registers it with
// every build of the handler (xcaddy --with github.com/moodmnky/caddy-apikey).
import _ "github.com/moodmnky/caddy-apikey/admin"
