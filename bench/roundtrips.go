package bench

import (
	"context"
	"strings"
	"sync/atomic"

	"github.com/redis/go-redis/v9"
)

// RoundTrips counts what a go-redis client sends: one per command and one per
// pipeline (a MULTI/EXEC or pipeline is a single write and a single read).
type RoundTrips struct{ n atomic.Int64 }

// Load returns the round trips counted so far.
func (r *RoundTrips) Load() int64 { return r.n.Load() }

func (r *RoundTrips) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r *RoundTrips) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmd)
	}
}

func (r *RoundTrips) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r.n.Add(1)
		return next(ctx, cmds)
	}
}

var _ redis.Hook = (*RoundTrips)(nil)

// Client is a go-redis client of its own for one contender, so that its
// round trips and its SLOWLOG entries (by client name) are its own.
type Client struct {
	*redis.Client
	Trips *RoundTrips
	Name  string
}

// NewClient opens a client on url named name (CLIENT SETNAME, which SLOWLOG
// entries carry) with a round-trip counter. poolSize 0 keeps go-redis's
// default.
func NewClient(url, name string, poolSize int) (*Client, error) {
	opt, err := redis.ParseURL(url)
	if err != nil {
		return nil, err
	}
	name = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '-'
	}, name) // CLIENT SETNAME refuses spaces and most punctuation
	opt.ClientName = name
	// depcache refuses clients that ignore context deadlines; the option
	// changes nothing for calls without one, so every contender gets it.
	opt.ContextTimeoutEnabled = true
	if poolSize > 0 {
		opt.PoolSize = poolSize
	}
	c := redis.NewClient(opt)
	trips := &RoundTrips{}
	c.AddHook(trips)
	return &Client{Client: c, Trips: trips, Name: name}, nil
}
