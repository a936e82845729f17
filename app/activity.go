package app

import (
	"github.com/moodmnky/caddy-apikey/activity"
	"github.com/moodmnky/caddy-apikey/keystore"
)

// activityKey is a store's activity tracker's place in the shared pool:
// one tracker a store (keystore.IdentityOf), so that the routes, the
// portal and the leak endpoint of one store meet in it, and the keys of
// two stores with the same ids never do.
type activityKey struct{ store any }

// HoldActivity returns the activity tracker of store's keys (their
// refusals, models and last requests, and the events told to their
// owners), and the function that lets go of it. It outlives a reload.
func HoldActivity(store keystore.Store) (*activity.Tracker, func() error, error) {
	return load(sharedPool, activityKey{keystore.IdentityOf(store)}, func() (*activity.Tracker, error) {
		return activity.New(), nil
	})
}
