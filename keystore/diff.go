package keystore

import "sort"

// Change is one difference between two versions of a key set, named the
// way the audit log names management changes.
type Change struct {
	// Event is key.created, key.removed, key.revoked, key.unrevoked,
	// key.rotated (a new secret) or key.updated (role, services, limits…).
	Event string
	ID    string
}

// Diff lists what changed from old to new, by key id, in id order.
func Diff(old, new *Set) []Change {
	before := map[string]*Key{}
	if old != nil {
		for _, k := range old.keys {
			before[k.ID] = k
		}
	}
	var changes []Change
	seen := map[string]bool{}
	for _, k := range new.keys {
		seen[k.ID] = true
		prev := before[k.ID]
		switch {
		case prev == nil:
			changes = append(changes, Change{"key.created", k.ID})
			continue
		case !prev.Revoked && k.Revoked:
			changes = append(changes, Change{"key.revoked", k.ID})
		case prev.Revoked && !k.Revoked:
			changes = append(changes, Change{"key.unrevoked", k.ID})
		}
		if prev.Digest != k.Digest {
			changes = append(changes, Change{"key.rotated", k.ID})
		}
		if prev.grantSum != k.grantSum {
			changes = append(changes, Change{"key.updated", k.ID})
		}
	}
	for id := range before {
		if !seen[id] {
			changes = append(changes, Change{"key.removed", id})
		}
	}
	sort.SliceStable(changes, func(i, j int) bool { return changes[i].ID < changes[j].ID })
	return changes
}
