package depcache_test

import (
	"bytes"
	"context"
	"slices"
	"testing"

	"github.com/depcache/go-depcache/depcache"
	"github.com/depcache/go-depcache/keys"
)

// A []byte result is stored as it is, not through the codec (JSON would
// store it in base64, a third larger, and decode it on every hit); a hit
// hands out a copy the caller may modify, and nil and empty stay apart.
func TestBytesResultsAreStoredAsTheyAre(t *testing.T) {
	ctx := context.Background()
	for _, codec := range []depcache.Codec{depcache.JSON, depcache.Msgpack, depcache.Gob} {
		t.Run(codec.Name(), func(t *testing.T) {
			m, store := newManager(t, depcache.WithCodec(codec))
			data := bytes.Repeat([]byte{0, 1, 2, 0xff}, 50)
			var calls counter
			get := depcache.Memoize(func(ctx context.Context, which string) ([]byte, error) {
				calls.n.Add(1)
				depcache.AddDependency(ctx, "blob")
				switch which {
				case "nil":
					return nil, nil
				case "empty":
					return []byte{}, nil
				}
				return bytes.Clone(data), nil
			}, depcache.Using(m), depcache.KeyName("blob"))

			get(ctx, "data")
			hit, err := get(ctx, "data")
			if err != nil || !bytes.Equal(hit, data) || calls.calls() != 1 {
				t.Fatalf("hit = %x, %v after %d calls; want the bytes from the cache", hit, err, calls.calls())
			}
			hit[0] = 42
			if again, _ := get(ctx, "data"); !bytes.Equal(again, data) {
				t.Fatalf("modifying a hit's bytes changed the next hit: %x", again)
			}
			l, err := store.Lookup(ctx, m.Prefix(), "blob:"+keys.Of("data"))
			if err != nil || !l.Found || len(l.Entry.Value) != len(data)+1 {
				t.Fatalf("stored value: found %v, %d bytes, %v; want the %d bytes and a kind byte", l.Found, len(l.Entry.Value), err, len(data))
			}
			for _, which := range []string{"nil", "empty"} {
				get(ctx, which)
				before := calls.calls()
				v, err := get(ctx, which)
				if err != nil || calls.calls() != before {
					t.Fatalf("%s: second call ran the function (%v)", which, err)
				}
				if (v == nil) != (which == "nil") || len(v) != 0 {
					t.Errorf("%s: hit = %#v", which, v)
				}
			}
		})
	}
}

// Manager.Get of a []byte into another type reads it as the codec would
// have: the bytes JSON-encoded, then decoded into the destination.
func TestBytesReadIntoAnotherTypeAsTheCodecWould(t *testing.T) {
	ctx := context.Background()
	m, _ := newManager(t)
	if err := m.Set(ctx, "k", []byte("hello"), 0, "t"); err != nil {
		t.Fatal(err)
	}
	var s string
	found, err := m.Get(ctx, "k", &s)
	if err != nil || !found || s != "aGVsbG8=" {
		t.Fatalf("Get into a string = %q, %v, %v; want JSON's base64 of the bytes", s, found, err)
	}
	var b []byte
	if found, err := m.Get(ctx, "k", &b); err != nil || !found || string(b) != "hello" {
		t.Fatalf("Get into []byte = %q, %v, %v", b, found, err)
	}
}

// sealCodec stands for a codec of the user's that transforms every value
// (compression, encryption): it reverses the JSON bytes.
type sealCodec struct{ marshals *counter }

func (sealCodec) Name() string { return "seal" }
func (c sealCodec) Marshal(v any) ([]byte, error) {
	c.marshals.n.Add(1)
	b, err := depcache.JSON.Marshal(v)
	slices.Reverse(b)
	return b, err
}
func (sealCodec) Unmarshal(b []byte, v any) error {
	r := slices.Clone(b)
	slices.Reverse(r)
	return depcache.JSON.Unmarshal(r, v)
}

// A codec of the user's gets []byte values too: one that encrypts must not
// be bypassed for them.
func TestBytesGoThroughAUsersCodec(t *testing.T) {
	ctx := context.Background()
	var marshals counter
	m, store := newManager(t, depcache.WithCodec(sealCodec{&marshals}))
	secret := []byte("secret bytes")
	if err := m.Set(ctx, "k", secret, 0, "d"); err != nil {
		t.Fatal(err)
	}
	if marshals.calls() != 1 {
		t.Fatalf("the user's codec marshalled %d values, want 1", marshals.calls())
	}
	l, err := store.Lookup(ctx, m.Prefix(), "k")
	if err != nil || !l.Found || bytes.Contains(l.Entry.Value, secret) {
		t.Fatalf("stored value %q (found %v, %v): the codec was bypassed", l.Entry.Value, l.Found, err)
	}
	var got []byte
	if found, err := m.Get(ctx, "k", &got); err != nil || !found || !bytes.Equal(got, secret) {
		t.Fatalf("Get = %q, %v, %v; want the secret back", got, found, err)
	}
}
