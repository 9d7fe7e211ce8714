package memory

import (
	"context"
	"fmt"

	"github.com/depcache/go-depcache/backends"
)

var _ backends.Sets = (*Backend)(nil)

// AddMember implements backends.Sets. Sets live beside the namespaces'
// entries and survive Clear; Close drops them with everything else.
func (b *Backend) AddMember(ctx context.Context, ns, name, member string, limit int) (bool, error) {
	if name == "" || limit < 1 {
		return false, fmt.Errorf("memory: set %q limit %d: %w", name, limit, backends.ErrBadSet)
	}
	if err := ctx.Err(); err != nil {
		return false, err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return false, backends.ErrClosed
	}
	if b.sets == nil {
		b.sets = map[setKey]map[string]struct{}{}
	}
	k := setKey{ns, name}
	s := b.sets[k]
	if _, ok := s[member]; ok {
		return true, nil
	}
	if len(s) >= limit {
		return false, nil
	}
	if s == nil {
		s = map[string]struct{}{}
		b.sets[k] = s
	}
	s[member] = struct{}{}
	return true, nil
}

// Members implements backends.Sets.
func (b *Backend) Members(ctx context.Context, ns, name string) ([]string, error) {
	if name == "" {
		return nil, fmt.Errorf("memory: set %q: %w", name, backends.ErrBadSet)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed.Load() {
		return nil, backends.ErrClosed
	}
	s := b.sets[setKey{ns, name}]
	out := make([]string, 0, len(s))
	for m := range s {
		out = append(out, m)
	}
	return out, nil
}

// RemoveSet implements backends.Sets.
func (b *Backend) RemoveSet(ctx context.Context, ns, name string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return backends.ErrClosed
	}
	delete(b.sets, setKey{ns, name})
	return nil
}

type setKey struct{ ns, name string }
