// Package scanning holds no code: its folder ships rules that let the
// secret scanners people already run find this gateway's keys, and the
// tests that hold them to it.
//
//   - gitleaks.toml: a gitleaks rule, tested with the real gitleaks
//     (gitleaks_test.go): it finds a key planted in a repository's history,
//     and nothing in this project's own files but its public demo keys,
//     which it allows.
//   - trufflehog.yaml: a TruffleHog custom detector with the same regular
//     expression, entropy floor and allowed keys, tested from Go
//     (trufflehog_test.go), as TruffleHog itself cannot be installed here.
//
// docs/scanning.md tells how to use them, and caddy apikey scan, which
// also checks each key's checksum.
package scanning
