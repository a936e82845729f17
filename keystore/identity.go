package keystore

// Identified is a Store that tells two values of one store from two
// stores: values with equal identities read and change the same records
// (the same key file, the same Redis under the same prefix), though each
// route and portal holds a value of its own.
type Identified interface {
	// Identity is a comparable value, equal for values of the same store.
	Identity() any
}

// IdentityOf is the store's Identity, or the store itself when it is not
// Identified: what the admin API and the portal match stores by, never
// their descriptions.
func IdentityOf(s Store) any {
	if id, ok := s.(Identified); ok {
		return id.Identity()
	}
	return s
}
