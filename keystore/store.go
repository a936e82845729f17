package keystore

import (
	"context"
	"errors"
)

// Store is where key records are kept and changed. The commands, the admin
// API and the developer portal change keys only through it, so the same
// rules hold whichever store a gateway uses: the key file (one machine) or
// Redis (a cluster).
//
// A Store checks every record it writes (Compile), refuses a change that
// would make two records share an id or a hash, and makes each change
// atomically: a reader sees the record before it or after it, never half.
type Store interface {
	// Create adds rec. ErrIDTaken when a record has its id; ErrHashTaken
	// when one answers to its hash.
	Create(ctx context.Context, rec Record) error
	// Update changes the record with id: change gets the current record
	// and edits it in place. Nothing is written when change fails. The
	// store keeps what change does not touch (in the key file: unknown
	// fields and their order). It returns the record as written.
	// ErrUnknownID when no record has the id.
	//
	// Update is a compare and set: the record change gets is the one
	// written over, read under the key file's lock or checked unchanged
	// by the script that writes it to Redis (which reads it again and
	// calls change again when another writer came first). A caller that
	// planned a change from an earlier read compares that read with the
	// record change gets (see Same), never writes its plan back blind. A
	// change that un-revokes a record is refused (ErrUnrevoke) unless
	// ctx allows it (AllowUnrevoke).
	Update(ctx context.Context, id string, change func(*Record) error) (Record, error)
	// Get returns the record with id; ErrUnknownID when none has it.
	Get(ctx context.Context, id string) (Record, error)
	// List returns records in id order, a page at a time.
	List(ctx context.Context, q ListQuery) (Page, error)
	// Describe names the store in messages and audit entries, e.g. the key
	// file's path or "redis://host:6379/apikey:"; never a secret.
	Describe() string
	// Close lets go of what the store holds open.
	Close() error
}

// Editable is a Source whose records can be changed, through its Store.
type Editable interface {
	Source
	// Store is where the source's records are changed.
	Store() Store
	// Changed makes the source see a change to the key id at once, rather
	// than at its next poll or message.
	Changed(id string)
}

// ListQuery selects a page of records.
type ListQuery struct {
	// Owner, when set, keeps only the records with this owner.
	Owner string
	// Team, when set, keeps only the records of this team (Record.Team).
	// Stores index them, as they do owners.
	Team string
	// Waiting, when set, keeps only the records that wait for an
	// administrator's approval (Record.Waiting). Stores index them, so
	// finding them does not read every record.
	Waiting bool
	// After is the id the previous page ended with; "" for the first page.
	After string
	// Limit is the most records a page holds; 0 means DefaultListLimit.
	Limit int
}

// DefaultListLimit is a page's size when a query names none; MaxListLimit
// is the largest a query may ask for.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// Page is one page of records.
type Page struct {
	Records []Record
	// Next is the After of the next page, or "" when this is the last.
	Next string
}

// Errors a Store returns, to be told apart with errors.Is.
var (
	ErrUnknownID = errors.New("no key has this id")
	ErrIDTaken   = errors.New("a key with this id already exists")
	ErrHashTaken = errors.New("another key already answers to this hash")
)

// PageOf cuts a page out of records sorted by id: for stores that hold all
// their records at hand.
func PageOf(sorted []Record, q ListQuery) Page {
	limit := q.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	var page Page
	for i := range sorted {
		r := &sorted[i] // not a copy of each record: a listing may pass many
		if r.ID <= q.After && q.After != "" {
			continue
		}
		if q.Owner != "" && r.Owner != q.Owner {
			continue
		}
		if q.Team != "" && r.Team != q.Team {
			continue
		}
		if q.Waiting && !r.Waiting() {
			continue
		}
		if len(page.Records) == limit {
			page.Next = page.Records[limit-1].ID
			break
		}
		page.Records = append(page.Records, *r)
	}
	return page
}
