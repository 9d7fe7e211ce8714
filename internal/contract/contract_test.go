package contract_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"gorm.io/gorm"

	"github.com/depcache/go-depcache/backends"
	"github.com/depcache/go-depcache/backends/memory"
	"github.com/depcache/go-depcache/backends/redisbackend"
	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/gormplugin"
	"github.com/depcache/go-depcache/gormplugin/pgcdc"
	"github.com/depcache/go-depcache/keys"
)

// A and R instantiate the generic functions of the contract.
type (
	A = int
	R = string
)

var (
	_ func(backends.Backend, ...depcache.Option) *depcache.Manager = depcache.New
	_ func(string) depcache.Option                                 = depcache.WithName
	_ func(string) depcache.Option                                 = depcache.WithPrefix
	_ func(time.Duration) depcache.Option                          = depcache.WithDefaultTTL
	_ func(depcache.Codec) depcache.Option                         = depcache.WithCodec
	_ func(func(depcache.Event)) depcache.Option                   = depcache.WithObserver
	_ func(*slog.Logger) depcache.Option                           = depcache.WithLogger
	_ func() depcache.Option                                       = depcache.WithStrictErrors
	_ func(bool) depcache.Option                                   = depcache.WithEnabled
	_ func(int) depcache.Option                                    = depcache.WithLocalCache
	_ func(backends.Backend) depcache.Option                       = depcache.WithBackend

	_ func(*depcache.Manager) string                                                        = (*depcache.Manager).Name
	_ func(*depcache.Manager, context.Context, string, any) (bool, error)                   = (*depcache.Manager).Get
	_ func(*depcache.Manager, context.Context, string, any, time.Duration, ...string) error = (*depcache.Manager).Set
	_ func(*depcache.Manager, context.Context, ...string) (int, error)                      = (*depcache.Manager).Delete
	_ func(*depcache.Manager, context.Context, ...string) (int, error)                      = (*depcache.Manager).InvalidateDependency
	_ func(*depcache.Manager, context.Context) (int, error)                                 = (*depcache.Manager).Clear
	_ func(*depcache.Manager, context.Context, string) (bool, error)                        = (*depcache.Manager).Exists
	_ func(*depcache.Manager, context.Context, string) (time.Duration, error)               = (*depcache.Manager).TTL
	_ func(*depcache.Manager) depcache.Stats                                                = (*depcache.Manager).Stats
	_ func(*depcache.Manager) error                                                         = (*depcache.Manager).Close

	_ func(string, ...depcache.Option) (*depcache.Manager, error) = depcache.GetOrCreate
	_ func(string) (*depcache.Manager, bool)                      = depcache.Lookup
	_ func() (*depcache.Manager, error)                           = depcache.Default

	_ func(func(context.Context, A) (R, error), ...depcache.MemoOption) func(context.Context, A) (R, error)                 = depcache.Memoize[A, R]
	_ func(func(context.Context) (R, error), ...depcache.MemoOption) func(context.Context) (R, error)                       = depcache.Memoize0[R]
	_ func(func(context.Context, A, A) (R, error), ...depcache.MemoOption) func(context.Context, A, A) (R, error)           = depcache.Memoize2[A, A, R]
	_ func(func(context.Context, A, A, A) (R, error), ...depcache.MemoOption) func(context.Context, A, A, A) (R, error)     = depcache.Memoize3[A, A, A, R]
	_ func(context.Context, *depcache.Manager, string, func(context.Context) (R, error), ...depcache.MemoOption) (R, error) = depcache.Fetch[R]

	_ func(*depcache.Manager) depcache.MemoOption     = depcache.Using
	_ func(string) depcache.MemoOption                = depcache.ManagerName
	_ func(time.Duration) depcache.MemoOption         = depcache.TTL
	_ func(...string) depcache.MemoOption             = depcache.Deps
	_ func(...error) depcache.MemoOption              = depcache.CacheErrors
	_ func() depcache.MemoOption                      = depcache.CacheErrorsAs[error]
	_ func(func(depcache.Result)) depcache.MemoOption = depcache.OnResult
	_ func(string) depcache.MemoOption                = depcache.KeyName

	_ func(context.Context, ...string)                         = depcache.AddDependency
	_ func(context.Context, string, ...string)                 = depcache.AddDependencyTo
	_ func(context.Context, time.Duration)                     = depcache.SetTTL
	_ func(context.Context) string                             = depcache.CurrentKey
	_ func(context.Context) *depcache.Manager                  = depcache.CurrentManager
	_ func(context.Context, string)                            = depcache.SkipFill
	_ func(context.Context) context.Context                    = depcache.Bypass
	_ func(context.Context) (context.Context, *depcache.Trace) = depcache.Track
	_ func(depcache.Codec)                                     = depcache.RegisterCodec
	_ error                                                    = depcache.ErrNotFound
	_ time.Duration                                            = depcache.NoExpiry

	_ func(string, func() (backends.Backend, error)) = backends.Register
	_ func(...any) string                            = keys.Of

	// DESIGN.md's shape returns gorm.Plugin; New returns *Plugin (its
	// FlushOutbox, InvalidateDependency and Close), which is one.
	_                                             = func(m *depcache.Manager, opts ...gormplugin.Option) gorm.Plugin { return gormplugin.New(m, opts...) }
	_ func(time.Duration) func(*gorm.DB) *gorm.DB = gormplugin.Cached
	_ func(string, ...any) string                 = gormplugin.RowTag
	_ func(string) string                         = gormplugin.ListTag
	_ func(string) string                         = gormplugin.TableTag
	_ func(*gorm.DB) context.Context              = gormplugin.TxContext
	_ func() gormplugin.Option                    = gormplugin.WithOutbox

	_ func(*depcache.Manager, string, ...pgcdc.Option) (*pgcdc.Listener, error) = pgcdc.New
	_ func(*pgcdc.Listener, context.Context) error                              = (*pgcdc.Listener).Run

	_ func(redis.UniversalClient, ...redisbackend.Option) *redisbackend.Backend = redisbackend.New
	_ func() (*redisbackend.Backend, error)                                     = redisbackend.FromEnv
	_ func(...memory.Option) *memory.Backend                                    = memory.New
)

var _ keys.CacheKeyer

// TestContract checks the struct fields of the contract; the declarations
// above check the functions by compiling.
func TestContract(t *testing.T) {
	r := depcache.Result{Func: "", Key: "", Manager: "", Args: nil, Hit: false, Value: nil, Err: nil}
	e := depcache.Event{Kind: depcache.EventKind(0), Key: "", Deps: nil, TTL: 0, Count: 0, Err: nil}
	s := depcache.Stats{}
	var _ uint64 = s.Hits + s.Misses + s.Sets + s.Deletes + s.Invalidations + s.Errors
	var tr depcache.Trace
	_, _ = tr.Hits(), tr.Misses()
	_, _ = r, e
	if depcache.NoExpiry != -1 {
		t.Errorf("NoExpiry = %v, want -1", depcache.NoExpiry)
	}
}
