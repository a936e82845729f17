// Package keycache is the ristretto cache in front of remote key sources
// (a key service, Redis): answers are kept for a while, misses too, and a
// source that cannot answer is never taken for "no such key".
package keycache
