package backends

import (
	"context"
	"errors"
)

// Sets is implemented by stores that keep small shared sets of strings
// for the users of a namespace: metadata that every process sharing the
// store must see (the GORM plugin keeps there the column sets its cached
// queries filter on, so that every writer knows which tags to invalidate).
//
// A set only grows: nothing but the store's loss of data removes a member,
// not Clear, not pruning, not eviction (a store whose metadata may be
// evicted does not implement Sets, or fails its calls). A caller may
// therefore remember a member it saw for the life of the store.
//
// AddMember and Members act on the store's primary copy (never a replica),
// and AddMember returns only once the member is as durable as an
// invalidation (on a Redis with replicas, once one has it): a reader that
// added a member before it read the database can rely on every later
// Members seeing it.
type Sets interface {
	// AddMember adds member to the set name of namespace ns unless the set
	// already holds limit members; it reports whether the set holds member
	// when it returns. A limit below 1 is an error wrapping ErrBadSet.
	AddMember(ctx context.Context, ns, name, member string, limit int) (bool, error)

	// Members returns the members of the set name of namespace ns (none if
	// it does not exist), in no particular order.
	Members(ctx context.Context, ns, name string) ([]string, error)

	// RemoveSet deletes the set name of namespace ns: for tests, and for
	// an operator retiring a namespace, never while a process that relies
	// on the set's members runs.
	RemoveSet(ctx context.Context, ns, name string) error
}

// ErrBadSet reports a Sets call with an empty set name or a limit below 1.
var ErrBadSet = errors.New("depcache: bad set arguments")
