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
	var before, after []*Key
	if old != nil {
		before = old.keys
	}
	if new != nil {
		after = new.keys
	}
	// A new version of a large file shares the keys its change left as
	// they were (see NewSetOfKeys): the keys both versions hold at the same
	// place at either end are unchanged, and, since ids are unique in each
	// version, none of their ids is in the rest. Only the rest is compared
	// by id, without maps the size of the whole set.
	for len(before) > 0 && len(after) > 0 && before[0] == after[0] {
		before, after = before[1:], after[1:]
	}
	for len(before) > 0 && len(after) > 0 && before[len(before)-1] == after[len(after)-1] {
		before, after = before[:len(before)-1], after[:len(after)-1]
	}
	byID := make(map[string]*Key, len(before))
	for _, k := range before {
		byID[k.ID] = k
	}
	var changes []Change
	seen := make(map[string]bool, len(after))
	for _, k := range after {
		seen[k.ID] = true
		prev := byID[k.ID]
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
	for id := range byID {
		if !seen[id] {
			changes = append(changes, Change{"key.removed", id})
		}
	}
	sort.SliceStable(changes, func(i, j int) bool { return changes[i].ID < changes[j].ID })
	return changes
}
