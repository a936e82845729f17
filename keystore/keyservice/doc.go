// Package keyservice is the "http" key source: keys looked up by their
// hash at a key service over HTTP, behind a cache.
package keyservice
