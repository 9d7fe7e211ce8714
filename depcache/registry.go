package depcache

import (
	"errors"
	"fmt"
	"sync"

	"github.com/depcache/go-depcache/backends"
)

// A Registry holds managers by name, and the backends it opened from the
// environment for them, one per distinct configuration. The package-level
// GetOrCreate, Lookup and Default use DefaultRegistry; tests create their
// own with NewRegistry and Close it.
type Registry struct {
	mu       sync.Mutex
	managers map[string]*Manager
	shared   map[string]*sharedBackend
}

type sharedBackend struct {
	b    backends.Backend
	refs int
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{managers: map[string]*Manager{}, shared: map[string]*sharedBackend{}}
}

var defaultRegistry = NewRegistry()

// DefaultRegistry returns the registry the package-level functions use.
func DefaultRegistry() *Registry { return defaultRegistry }

// GetOrCreate returns the manager registered under name, or creates and
// registers one. An existing name returns the existing manager and ignores
// opts. The name argument wins over a WithName option. Without WithBackend
// the backend comes from the environment (DEP_CACHE_BACKEND, REDIS_URL, …),
// shared with other managers configured alike; nothing is dialled until
// first use.
func GetOrCreate(name string, opts ...Option) (*Manager, error) {
	return defaultRegistry.GetOrCreate(name, opts...)
}

// Lookup returns the manager registered under name.
func Lookup(name string) (*Manager, bool) { return defaultRegistry.Lookup(name) }

// Default returns the manager named "default", configured from the
// environment.
func Default() (*Manager, error) { return defaultRegistry.Default() }

// GetOrCreate is the package-level GetOrCreate on r.
func (r *Registry) GetOrCreate(name string, opts ...Option) (*Manager, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: GetOrCreate needs a name", ErrInvalidOption)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if m, ok := r.managers[name]; ok && !m.closed.Load() {
		return m, nil
	}
	// A manager closing right now is replaced: a closed one is never
	// handed out (its Close removes it under r.mu, and finds it replaced).
	cfg := buildConfig(opts)
	if cfg.configErr != nil {
		return nil, cfg.configErr
	}
	cfg.name = name
	// The backend first: newManager checks the prefix against it and
	// starts the in-process tier on it (WithLocalCache).
	b := cfg.backend
	var release, drop func() error
	if b == nil {
		var err error
		if b, release, drop, err = r.openShared(); err != nil {
			return nil, err
		}
	}
	m := newManager(cfg, b, release)
	if m.cfg.configErr != nil {
		if drop != nil {
			drop()
		}
		return nil, m.cfg.configErr
	}
	m.registry = r
	r.managers[name] = m
	return m, nil
}

// openShared returns the backend the environment names, opening it on the
// first call for its configuration, and two ways to give it back: release,
// for the manager's Close, and drop, the same with r.mu held. Called with
// r.mu held.
func (r *Registry) openShared() (b backends.Backend, release, drop func() error, err error) {
	name, err := envBackendName()
	if err != nil {
		return nil, nil, nil, err
	}
	key := backendConfigKey(name)
	shared, ok := r.shared[key]
	if !ok {
		open, _ := backends.Opener(name)
		b, err := open()
		if err != nil {
			return nil, nil, nil, fmt.Errorf("depcache: open backend %q: %w", name, err)
		}
		shared = &sharedBackend{b: b}
		r.shared[key] = shared
	}
	shared.refs++
	var once sync.Once
	drop = func() (err error) {
		once.Do(func() {
			shared.refs--
			if shared.refs == 0 {
				delete(r.shared, key)
				err = shared.b.Close()
			}
		})
		return err
	}
	release = func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		return drop()
	}
	return shared.b, release, drop, nil
}

// Lookup returns the manager registered under name.
func (r *Registry) Lookup(name string) (*Manager, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	m, ok := r.managers[name]
	if ok && m.closed.Load() {
		return nil, false
	}
	return m, ok
}

// Default returns r's manager named "default", creating it from the
// environment.
func (r *Registry) Default() (*Manager, error) { return r.GetOrCreate("default") }

// Close closes every manager in r and the backends r opened.
func (r *Registry) Close() error {
	r.mu.Lock()
	ms := make([]*Manager, 0, len(r.managers))
	for _, m := range r.managers {
		ms = append(ms, m)
	}
	r.mu.Unlock()
	var errs []error
	for _, m := range ms {
		errs = append(errs, m.Close())
	}
	return errors.Join(errs...)
}

func (r *Registry) forget(m *Manager) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.managers[m.name] == m {
		delete(r.managers, m.name)
	}
}
